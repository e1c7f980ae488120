"""Standard errors and confidence intervals for corpus-level scores.

Everything is vectorised with numpy and processed in chunks of at most `chunk_bytes`, so
100,000 bootstrap iterations over 10,000 documents take milliseconds for the common case
(few distinct rows: accuracy, (pred, gold) pairs, MME images) and bounded memory otherwise.
Every random number comes from `np.random.default_rng(seed)`: same seed, same `Estimate`.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional

import numpy as np

# Memory one chunk of resamples may take (shared with `compare.py`'s sign-flip test).
CHUNK_BYTES = 64 * 2**20
# Above this many distinct values the multinomial trick costs more than index resampling.
_MAX_UNIQUE = 64


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error, a confidence interval, and `n`: how many resampling
    units (documents; MME images; clusters) it was computed from. stderr and the interval are nan when
    undefined. `method` says what the stderr and the interval are (results.json `standard_errors`)."""

    value: float
    stderr: float
    ci_lower: float
    ci_upper: float
    n: int
    method: "Optional[SEMethod]" = None


@dataclass(frozen=True)
class SEMethod:
    """How an Estimate's uncertainty was computed: `stderr` "analytic" (CLT), "bootstrap", "cluster-robust"
    (the analytic cluster-robust standard error of a mean) or "cluster-bootstrap"; `interval` "normal",
    "percentile" or "cluster-percentile"; with clusters, their key and count, the other standard errors for
    comparison (the cluster bootstrap's, and the naive one that treats documents as independent)."""

    stderr: str
    interval: str
    cluster_key: Optional[str] = None
    clusters: Optional[int] = None
    bootstrap_stderr: Optional[float] = None
    naive_stderr: Optional[float] = None


def mean_stderr(values: np.ndarray | list[float]) -> float:
    """Analytic standard error of the mean: sample std (ddof=1) / sqrt(n).

    Returns nan for n < 2: one document says nothing about the spread, and nan (unlike the 0
    lm-evaluation-harness reports) cannot be mistaken for a perfectly certain score.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    return float(x.std(ddof=1) / np.sqrt(x.size))


def cluster_mean_stderr(values: np.ndarray | list[float], clusters: np.ndarray | list) -> float:
    """Analytic cluster-robust standard error of the mean (the sandwich estimator with the G/(G-1) small-sample
    factor): sqrt(G/(G-1) * sum_g (sum_{i in g} (x_i - mean))^2) / n. Documents in one cluster (two questions
    about one image) are not independent; this is the closed form that allows for it. nan for fewer than 2 clusters.

    >>> round(cluster_mean_stderr([1, 1, 0, 0], ["a", "a", "b", "b"]), 4)  # two perfectly correlated pairs
    0.5
    >>> round(cluster_mean_stderr([1, 0, 1, 0], [0, 1, 2, 3]), 4) == round(mean_stderr([1, 0, 1, 0]), 4)
    True
    """
    x = np.asarray(values, dtype=np.float64)
    index, g = cluster_index(clusters)
    if g < 2:
        return float("nan")
    sums = np.bincount(index, weights=x - x.mean(), minlength=g)
    return float(np.sqrt(g / (g - 1) * np.sum(sums**2)) / x.size)


def cluster_index(clusters: np.ndarray | list) -> tuple[np.ndarray, int]:
    """Each document's cluster as 0..G-1 (in order of the sorted keys), and G.

    >>> cluster_index(["b", "a", "b"])
    (array([1, 0, 1]), 2)
    """
    _, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    return index.reshape(-1), int(index.max()) + 1 if len(index) else 0


def bootstrap_cluster_counts_statistics(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    values: np.ndarray | list,
    clusters: np.ndarray | list,
    iters: int = 100_000,
    seed: int = 1234,
    chunk_bytes: int = CHUNK_BYTES,
) -> np.ndarray:
    """The `iters` cluster-bootstrap replicates of a statistic of counts, shape (iters,): each replicate draws
    G clusters with replacement (Multinomial(G, 1/G) multiplicities) and counts every document as often as its
    cluster was drawn, so documents of one cluster always travel together."""
    x = np.asarray(values)
    index, g = cluster_index(clusters)
    rng = np.random.default_rng(seed)
    out = []
    for size in chunks(iters, 8 * (g + len(x)), chunk_bytes):
        drawn = rng.multinomial(g, np.full(g, 1.0 / g), size=size).astype(np.float64)  # (size, G)
        out.append(statistic(x, drawn[:, index]))
    return np.concatenate(out)


def bootstrap_cluster_counts(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    values: np.ndarray | list,
    clusters: np.ndarray | list,
    iters: int = 100_000,
    seed: int = 1234,
    confidence: float = 0.95,
    chunk_bytes: int = CHUNK_BYTES,
) -> Estimate:
    """Cluster-bootstrap estimate of a statistic of counts; `n` is the number of clusters."""
    x = np.asarray(values)
    _check(len(x), iters, confidence)
    _, g = cluster_index(clusters)
    stats = bootstrap_cluster_counts_statistics(statistic, x, clusters, iters, seed, chunk_bytes)
    return _summarize(statistic_of_sample(statistic, x), stats, g, confidence)


def percentile_ci(stats: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap statistics, e.g. the 2.5th and 97.5th for 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = 100.0 * (1.0 - confidence) / 2.0
    lower, upper = np.percentile(stats, [tail, 100.0 - tail])
    return float(lower), float(upper)


def resample_indices(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """`size` resamples of `n` indices drawn with replacement, shape (size, n).

    The only place index resampling draws from `rng`, so tests can replay the exact indices.
    """
    return rng.integers(0, n, size=(size, n))


def chunks(iters: int, bytes_per_iter: int, chunk_bytes: int) -> Iterator[int]:
    """Sizes of consecutive chunks of iterations that each fit in `chunk_bytes` (at least 1)."""
    rows = max(1, chunk_bytes // max(1, bytes_per_iter))
    for start in range(0, iters, rows):
        yield min(rows, iters - start)


def _summarize(value: float, stats: np.ndarray, n: int, confidence: float) -> Estimate:
    if n < 2:  # resampling one value is degenerate: no information about uncertainty
        return Estimate(value, float("nan"), float("nan"), float("nan"), n)
    lower, upper = percentile_ci(stats, confidence)
    return Estimate(value, float(stats.std(ddof=1)), lower, upper, n)


def _check(n: int, iters: int, confidence: float) -> None:
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    if iters < 2:
        raise ValueError(f"need at least 2 bootstrap iterations, got {iters}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """`size` index resamples of `n` rows as counts of each row, shape (size, n), float64."""
    indices = resample_indices(rng, n, size) + (np.arange(size) * n)[:, None]
    return np.bincount(indices.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def bootstrap_counts_statistics(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    values: np.ndarray | list,
    iters: int = 100_000,
    seed: int = 1234,
    chunk_bytes: int = CHUNK_BYTES,
) -> np.ndarray:
    """The `iters` bootstrap replicates of a statistic of counts, shape (iters,).

    `statistic(rows, counts)` scores resamples given as `counts` (batch, k) of each of the k `rows`
    (k, ...), e.g. `counts @ rows / counts.sum(1)` for a mean. Resampling n rows with replacement only
    changes how often each distinct row is drawn, and those counts are Multinomial(n, frequencies):
    with at most 64 distinct rows (accuracy, (pred, gold) pairs, MME images) they are drawn directly
    at cost O(iters * k) instead of O(iters * n). Otherwise index resamples are counted per row.
    """
    x = np.asarray(values)
    n = len(x)
    rng = np.random.default_rng(seed)
    rows, frequencies = np.unique(x, axis=0, return_counts=True)
    out = []
    if len(rows) <= _MAX_UNIQUE:
        for size in chunks(iters, 16 * len(rows), chunk_bytes):
            out.append(statistic(rows, rng.multinomial(n, frequencies / n, size=size).astype(np.float64)))
    else:
        for size in chunks(iters, 24 * n, chunk_bytes):  # indices, then counts
            out.append(statistic(x, resample_counts(rng, n, size)))
    return np.concatenate(out)


def bootstrap_counts(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    values: np.ndarray | list,
    iters: int = 100_000,
    seed: int = 1234,
    confidence: float = 0.95,
    chunk_bytes: int = CHUNK_BYTES,
) -> Estimate:
    """Bootstrap estimate of a statistic of counts (see `bootstrap_counts_statistics`); `value` is the
    statistic of the original sample (each row once)."""
    x = np.asarray(values)
    _check(len(x), iters, confidence)
    stats = bootstrap_counts_statistics(statistic, x, iters, seed, chunk_bytes)
    return _summarize(statistic_of_sample(statistic, x), stats, len(x), confidence)


def statistic_of_sample(statistic: Callable[[np.ndarray, np.ndarray], np.ndarray], values: np.ndarray) -> float:
    """A statistic of counts on the sample itself: every row counted once."""
    return float(statistic(values, np.ones((1, len(values))))[0])


def mean_of_counts(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return counts @ rows / counts.sum(axis=1)


def scalars(values: np.ndarray | list[float]) -> np.ndarray:
    """Per-document numbers as a float64 vector; anything else (pairs, nested lists) is an error.

    >>> scalars([1, 0.5, True])
    array([1. , 0.5, 1. ])
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected one number per document, got an array of shape {x.shape}")
    return x


def bootstrap_mean_statistics(
    values: np.ndarray | list[float],
    iters: int = 100_000,
    seed: int = 1234,
    chunk_bytes: int = CHUNK_BYTES,
) -> np.ndarray:
    """The `iters` bootstrap means of `values`, shape (iters,): exact multinomial resampling for up to
    64 distinct values (see `bootstrap_counts_statistics`)."""
    return bootstrap_counts_statistics(mean_of_counts, scalars(values), iters, seed, chunk_bytes)


def bootstrap_mean(
    values: np.ndarray | list[float],
    iters: int = 100_000,
    seed: int = 1234,
    confidence: float = 0.95,
    chunk_bytes: int = CHUNK_BYTES,
) -> Estimate:
    """Bootstrap estimate of the mean of `values` (see `bootstrap_mean_statistics`).

    `value` is the mean of the original sample; `stderr` is the std (ddof=1) of the bootstrap
    means; the interval is the percentile interval. stderr and the interval are nan for n < 2.
    """
    return bootstrap_counts(mean_of_counts, scalars(values), iters, seed, confidence, chunk_bytes)


def bootstrap_statistics(
    statistic: Callable[[np.ndarray], np.ndarray],
    values: np.ndarray | list,
    iters: int = 1_000,
    seed: int = 1234,
    vectorized: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> np.ndarray:
    """The `iters` bootstrap replicates of `statistic`, shape (iters,).

    Each chunk draws `resample_indices(rng, n, rows)` and gathers rows of `values` along the
    first axis; see `bootstrap` for the contract `statistic` must meet.
    """
    x = np.asarray(values)
    n = len(x)
    rng = np.random.default_rng(seed)
    row_bytes = x.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
    out = []
    for rows in chunks(iters, n * (8 + row_bytes), chunk_bytes):
        samples = np.take(x, resample_indices(rng, n, rows), axis=0)  # (rows, n, ...)
        out.append(_apply(statistic, samples, vectorized))
    return np.concatenate(out)


def _apply(
    statistic: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, vectorized: bool
) -> np.ndarray:
    if vectorized:
        result = np.asarray(statistic(samples), dtype=np.float64)
    else:
        result = np.array([statistic(s) for s in samples], dtype=np.float64)
    if result.shape != (len(samples),):
        raise ValueError(
            f"statistic returned shape {result.shape} for a batch of {len(samples)} samples; "
            "a vectorised statistic must reduce every axis but the first "
            "(e.g. `lambda s: s.mean(axis=1)`), or pass vectorized=False"
        )
    return result


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    values: np.ndarray | list,
    iters: int = 1_000,
    seed: int = 1234,
    confidence: float = 0.95,
    vectorized: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> Estimate:
    """Bootstrap estimate of an arbitrary corpus-level statistic (F1, BLEU over pairs, ...).

    `values` holds one entry per document along the first axis: a 1-D array of scores, or a
    2-D array of rows such as (pred, gold) pairs. Documents are resampled with replacement.

    `statistic` must be vectorised over a leading batch axis: it receives `samples` of shape
    (batch, n, ...) and returns shape (batch,), one value per resample. That lets thousands of
    resamples be scored in one numpy call; chunks of at most `chunk_bytes` bound the memory.
    With `vectorized=False`, `statistic` instead takes one (n, ...) sample and returns a float;
    this is simpler to write but runs a Python loop over iterations.

    `value` is the statistic on the original sample, `stderr` the std (ddof=1) of the
    replicates, and the interval their percentile interval (nan for n < 2).
    """
    x = np.asarray(values)
    _check(len(x), iters, confidence)
    value = float(_apply(statistic, x[None], vectorized)[0])
    stats = bootstrap_statistics(statistic, x, iters, seed, vectorized, chunk_bytes)
    return _summarize(value, stats, len(x), confidence)
