import math
import time

import numpy as np
import pytest

from lmm_lightning.metrics import (
    Estimate,
    bootstrap,
    bootstrap_mean,
    bootstrap_mean_statistics,
    bootstrap_statistics,
    mean_stderr,
    percentile_ci,
    resample_indices,
)


def _bernoulli(n: int = 10_000, p: float = 0.3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(np.float64)


def _f1(samples: np.ndarray) -> np.ndarray:
    """Vectorised binary F1 over (batch, n, 2) arrays of (pred, gold) pairs."""
    pred, gold = samples[..., 0], samples[..., 1]
    tp = np.sum(pred * gold, axis=-1)
    fp = np.sum(pred * (1 - gold), axis=-1)
    fn = np.sum((1 - pred) * gold, axis=-1)
    return 2 * tp / (2 * tp + fp + fn)


def _f1_scalar(pairs: np.ndarray) -> float:
    tp = fp = fn = 0
    for pred, gold in pairs:
        tp += pred and gold
        fp += pred and not gold
        fn += gold and not pred
    return 2 * tp / (2 * tp + fp + fn)


def test_mean_stderr_hand_computed() -> None:
    # var([1, 2, 3, 4], ddof=1) = 5/3, so stderr = sqrt(5/3) / 2.
    assert mean_stderr([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) / 2)
    assert mean_stderr([0.0, 1.0]) == pytest.approx(0.5)
    assert mean_stderr([7.0, 7.0, 7.0]) == 0.0
    assert math.isnan(mean_stderr([1.0]))
    assert math.isnan(mean_stderr([]))


def test_percentile_ci() -> None:
    stats = np.arange(101, dtype=np.float64)
    assert percentile_ci(stats, 0.95) == pytest.approx((2.5, 97.5))
    assert percentile_ci(stats, 0.9) == pytest.approx((5.0, 95.0))
    with pytest.raises(ValueError):
        percentile_ci(stats, 1.0)


def test_resample_indices_is_replayable() -> None:
    a = resample_indices(np.random.default_rng(3), 7, 5)
    b = resample_indices(np.random.default_rng(3), 7, 5)
    assert a.shape == (5, 7)
    assert a.min() >= 0 and a.max() < 7
    np.testing.assert_array_equal(a, b)


def test_bootstrap_mean_matches_analytic_stderr_binary() -> None:
    x = _bernoulli()
    est = bootstrap_mean(x, iters=100_000, seed=1234)
    assert est.value == pytest.approx(x.mean())
    # Monte Carlo error of the std estimate is ~1/sqrt(2 * iters) = 0.2%, far inside 3%.
    assert est.stderr == pytest.approx(mean_stderr(x), rel=0.03)
    assert est.ci_lower < est.value < est.ci_upper
    # For a near-normal bootstrap distribution the 95% interval is about value +- 1.96 stderr.
    assert est.ci_upper - est.ci_lower == pytest.approx(2 * 1.96 * est.stderr, rel=0.05)


def test_bootstrap_mean_matches_analytic_stderr_continuous() -> None:
    # 10,000 distinct values: exercises the chunked index-resampling fallback.
    x = np.random.default_rng(1).normal(loc=2.0, scale=3.0, size=10_000)
    iters = 2_000
    est = bootstrap_mean(x, iters=iters, seed=1234)
    # The std of `iters` draws has relative Monte Carlo error ~1/sqrt(2 * iters) = 1.6%,
    # so 5% is about three of those.
    assert est.stderr == pytest.approx(mean_stderr(x), rel=0.05)
    assert est.ci_lower < est.value < est.ci_upper


def test_bootstrap_mean_is_seeded() -> None:
    x = _bernoulli(n=2_000)
    a = bootstrap_mean(x, iters=5_000, seed=1)
    assert isinstance(a, Estimate)
    assert a == bootstrap_mean(x, iters=5_000, seed=1)
    b = bootstrap_mean(x, iters=5_000, seed=2)
    assert a != b and a.value == b.value
    y = np.random.default_rng(0).normal(size=500)  # fallback path is seeded too
    assert bootstrap_mean(y, iters=200, seed=1) == bootstrap_mean(y, iters=200, seed=1)
    assert bootstrap_mean(y, iters=200, seed=1) != bootstrap_mean(y, iters=200, seed=2)


def test_bootstrap_mean_is_fast() -> None:
    x = _bernoulli()
    bootstrap_mean(x, iters=1_000)  # warm-up
    start = time.perf_counter()
    bootstrap_mean(x, iters=100_000)
    elapsed = time.perf_counter() - start
    print(f"bootstrap_mean: 10,000 binary values x 100,000 iterations in {elapsed:.3f} s")
    assert elapsed < 1.0


@pytest.mark.parametrize("levels", [(0.0, 1.0), (0.0, 0.25, 0.5, 1.0)])
def test_multinomial_matches_index_resampling(levels: tuple[float, ...]) -> None:
    x = np.random.default_rng(5).choice(levels, size=1_000)
    iters = 20_000
    multinomial = bootstrap_mean_statistics(x, iters=iters, seed=1)
    index = bootstrap_statistics(lambda s: s.mean(axis=1), x, iters=iters, seed=2)
    # Each std has Monte Carlo error ~1/sqrt(2 * iters) = 0.5%; their ratio ~0.7%.
    assert multinomial.std(ddof=1) == pytest.approx(index.std(ddof=1), rel=0.03)
    assert multinomial.mean() == pytest.approx(index.mean(), abs=0.1 * index.std())
    np.testing.assert_allclose(
        np.percentile(multinomial, [2.5, 50, 97.5]),
        np.percentile(index, [2.5, 50, 97.5]),
        atol=0.1 * index.std(),
    )


def test_fallback_equals_generic_bootstrap_of_the_mean() -> None:
    x = np.random.default_rng(0).normal(size=500)
    for chunk_bytes in (1, 64 * 2**20):  # one iteration per chunk, and a single chunk
        np.testing.assert_allclose(  # the same indices; counted rows are summed in another order
            bootstrap_mean_statistics(x, iters=50, seed=9, chunk_bytes=chunk_bytes),
            bootstrap_statistics(lambda s: s.mean(axis=1), x, iters=50, seed=9, chunk_bytes=chunk_bytes),
            rtol=1e-12,
        )


def test_bootstrap_f1_matches_naive_loop() -> None:
    rng = np.random.default_rng(0)
    n, iters, seed = 300, 400, 42
    gold = (rng.random(n) < 0.4).astype(np.int64)
    pred = np.where(rng.random(n) < 0.8, gold, 1 - gold)
    pairs = np.stack([pred, gold], axis=1)

    indices = resample_indices(np.random.default_rng(seed), n, iters)
    naive = np.array([_f1_scalar(pairs[row]) for row in indices])

    stats = bootstrap_statistics(_f1, pairs, iters=iters, seed=seed)
    np.testing.assert_allclose(stats, naive, rtol=1e-12)

    est = bootstrap(_f1, pairs, iters=iters, seed=seed)
    assert est.value == pytest.approx(_f1_scalar(pairs))
    assert est.stderr == pytest.approx(naive.std(ddof=1), rel=1e-9)
    assert (est.ci_lower, est.ci_upper) == pytest.approx(tuple(np.percentile(naive, [2.5, 97.5])))
    assert est.ci_lower < est.value < est.ci_upper

    # A non-vectorised statistic gives the same result, just through a Python loop.
    assert bootstrap(_f1_scalar, pairs, iters=iters, seed=seed, vectorized=False) == pytest.approx(est)


def test_bootstrap_chunks_replay_the_same_indices() -> None:
    # chunk_bytes=1 forces one resample per chunk: replay them one call at a time.
    x = np.random.default_rng(0).normal(size=64)
    rng = np.random.default_rng(7)
    naive = np.array([np.median(x[resample_indices(rng, x.size, 1)[0]]) for _ in range(30)])
    stats = bootstrap_statistics(lambda s: np.median(s, axis=1), x, iters=30, seed=7, chunk_bytes=1)
    np.testing.assert_array_equal(stats, naive)


def test_bootstrap_rejects_non_vectorised_statistic() -> None:
    with pytest.raises(ValueError, match="vectorised"):
        bootstrap(np.mean, np.arange(10.0), iters=10)


def test_degenerate_inputs() -> None:
    single = bootstrap_mean([0.7], iters=10)
    assert single.value == 0.7
    assert math.isnan(single.stderr) and math.isnan(single.ci_lower) and math.isnan(single.ci_upper)
    assert math.isnan(bootstrap(lambda s: s.mean(axis=1), [0.7], iters=10).stderr)
    with pytest.raises(ValueError):
        bootstrap_mean([], iters=10)
    with pytest.raises(ValueError):
        bootstrap_mean([1.0, 2.0], iters=1)
    with pytest.raises(ValueError):
        bootstrap_mean([1.0, 2.0], confidence=0.0)
    constant = bootstrap_mean([1.0] * 50, iters=100)
    assert constant == Estimate(1.0, 0.0, 1.0, 1.0, n=50)
