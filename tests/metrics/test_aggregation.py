import math

import numpy as np
import pytest

from lmm_lightning.metrics import (
    AGGREGATIONS,
    MME_CATEGORIES,
    MME_COGNITION,
    MME_PERCEPTION,
    Estimate,
    aggregate,
    aggregate_group,
    bootstrap_mean,
    bootstrap_counts_statistics,
    bootstrap_statistics,
    mme_rows,
    pooled_stderr,
    resample_indices,
    stability,
    stability_per_document,
    yes_no,
)

# --- simple aggregations ------------------------------------------------------------------------


def test_mean_interval_is_the_bootstrap_and_its_stderr_lm_evals() -> None:
    values = [1.0, 0.0, 1.0, 1.0]
    estimate, boot = aggregate("mean", values, bootstrap_iters=1000, seed=7), bootstrap_mean(values, iters=1000, seed=7)
    assert (estimate.value, estimate.ci_lower, estimate.ci_upper, estimate.n) == (boot.value, boot.ci_lower, boot.ci_upper, boot.n)
    # lm-evaluation-harness's mean_stderr: sample std (n-1) / sqrt(n) = sqrt(0.25) / 2, not the bootstrap's 0.2157
    assert estimate.stderr == 0.25 and boot.stderr != 0.25


def test_mean_without_bootstrap_is_analytic() -> None:
    # mean 0.75; sample variance (3 * 0.0625 + 0.5625) / 3 = 0.25 -> stderr sqrt(0.25) / sqrt(4) = 0.25
    estimate = aggregate("mean", [1.0, 0.0, 1.0, 1.0], bootstrap_iters=0, seed=0)
    assert estimate.value == 0.75
    assert estimate.stderr == pytest.approx(0.25)
    assert estimate.ci_lower == pytest.approx(0.75 - 1.959964 * 0.25)
    assert estimate.ci_upper == pytest.approx(0.75 + 1.959964 * 0.25)


def test_non_mean_without_bootstrap_has_nan_stderr() -> None:
    estimate = aggregate("median", [1.0, 3.0, 2.0, 10.0], bootstrap_iters=1, seed=0)
    assert estimate.value == 2.5
    assert math.isnan(estimate.stderr) and math.isnan(estimate.ci_lower) and math.isnan(estimate.ci_upper)


def test_median_is_bootstrapped() -> None:
    estimate = aggregate("median", [1.0, 3.0, 2.0, 10.0], bootstrap_iters=500, seed=0)
    assert estimate.value == 2.5
    assert 0 < estimate.stderr < 10 and estimate.ci_lower <= 2.5 <= estimate.ci_upper


def test_perplexity() -> None:
    assert aggregate("perplexity", [-1.0, -3.0], 0, 0).value == pytest.approx(math.exp(2.0))


def test_f1() -> None:
    # (pred, gold): tp = 2, fp = 1, fn = 1 -> 2 * 2 / (4 + 1 + 1)
    pairs = [(1, 1), (1, 0), (0, 1), (1, 1), (0, 0)]
    assert aggregate("f1", pairs, 0, 0).value == pytest.approx(4 / 6)


def test_weighted_perplexity_and_bits_per_byte() -> None:
    # exp(-(-2 - 4) / (2 + 3)) = exp(1.2)
    assert aggregate("weighted_perplexity", [(-2.0, 2), (-4.0, 3)], 0, 0).value == pytest.approx(math.exp(1.2))
    # -(-12 ln 2) / 8 bytes / ln 2 = 1.5 bits per byte
    ln2 = math.log(2)
    assert aggregate("bits_per_byte", [(-8 * ln2, 4), (-4 * ln2, 4)], 0, 0).value == pytest.approx(1.5)


def _documents(n: int, seed: int = 0) -> np.ndarray:
    """(log-likelihood, units) of `n` documents of very different lengths, as a rolling task gives them."""
    rng = np.random.default_rng(seed)
    units = rng.integers(1, 400, size=n)
    return np.stack([-units * rng.uniform(1.0, 4.0, size=n), units], axis=1)


@pytest.mark.parametrize("name", ["weighted_perplexity", "bits_per_byte"])
def test_ratio_aggregations_bootstrap_whole_documents(name) -> None:
    """Each resample draws documents, each with its own log-likelihood and units: the ratio of the drawn
    sums (lm-eval's statistic on the resample), never numerators and denominators drawn apart."""
    docs, iters, seed = _documents(300), 500, 11
    ratio = lambda rows: -rows[:, 0].sum() / rows[:, 1].sum()
    statistic = (lambda rows: math.exp(ratio(rows))) if name == "weighted_perplexity" else (lambda rows: ratio(rows) / math.log(2))
    naive = np.array([statistic(docs[row]) for row in resample_indices(np.random.default_rng(seed), len(docs), iters)])
    estimate = aggregate(name, [tuple(d) for d in docs], iters, seed)
    assert estimate.value == pytest.approx(statistic(docs), rel=1e-12)
    assert estimate.stderr == pytest.approx(naive.std(ddof=1), rel=1e-9)
    assert (estimate.ci_lower, estimate.ci_upper) == pytest.approx(tuple(np.percentile(naive, [2.5, 97.5])), rel=1e-9)


def test_ratio_aggregation_with_few_distinct_documents_resamples_them_too() -> None:
    """At most 64 distinct (log-likelihood, units) rows take the multinomial path: the same distribution."""
    docs = np.repeat(_documents(5, seed=3), [1, 7, 3, 20, 9], axis=0)  # 40 documents, 5 distinct
    naive_rng = np.random.default_rng(0)
    naive = [math.exp(-docs[row, 0].sum() / docs[row, 1].sum()) for row in resample_indices(naive_rng, len(docs), 20_000)]
    estimate = aggregate("weighted_perplexity", [tuple(d) for d in docs], 20_000, seed=5)
    assert estimate.stderr == pytest.approx(np.std(naive, ddof=1), rel=0.05)
    assert estimate.ci_lower == pytest.approx(np.percentile(naive, 2.5), rel=0.02)
    assert estimate.ci_upper == pytest.approx(np.percentile(naive, 97.5), rel=0.02)


# --- POPE -------------------------------------------------------------------------------------------


def _pope_pairs() -> list[tuple[int, int]]:
    responses = ["Yes, there is a cat.", "Yes", "No, there is not.", "There is no cat"]
    golds = ["yes", "yes", "yes", "no"]
    return [(int(yes_no(r) == "yes"), int(g == "yes")) for r, g in zip(responses, golds)]


def test_pope_aggregations_by_hand() -> None:
    pairs = _pope_pairs()
    assert pairs == [(1, 1), (1, 1), (0, 1), (0, 0)]
    # tp = 2, fp = 0, fn = 1, tn = 1
    assert aggregate("pope_precision", pairs, 0, 0).value == pytest.approx(1.0)
    assert aggregate("pope_recall", pairs, 0, 0).value == pytest.approx(2 / 3)
    assert aggregate("pope_f1", pairs, 0, 0).value == pytest.approx(0.8)  # 2 * 1 * 2/3 / (1 + 2/3)
    assert aggregate("pope_yes_ratio", pairs, 0, 0).value == pytest.approx(0.5)


def test_pope_zero_division_is_zero() -> None:
    pairs = [(0, 1), (0, 0)]  # never says yes: precision 0/0 -> 0
    assert aggregate("pope_precision", pairs, 0, 0).value == 0.0
    assert aggregate("pope_f1", pairs, 0, 0).value == 0.0


def test_binary_pairs_are_checked() -> None:
    with pytest.raises(ValueError, match="0/1"):
        aggregate("pope_f1", [(0.5, 1)], 0, 0)
    with pytest.raises(ValueError, match="pair"):
        aggregate("f1", [1, 0, 1], 0, 0)


# --- MME ---------------------------------------------------------------------------------------------


def _mme_values() -> list[tuple[str, int, int]]:
    return [
        # existence: image 0 both right, image 1 one right -> acc 3/4, acc+ 1/2 -> 75 + 50 = 125
        ("existence", 0, 1), ("existence", 0, 1), ("existence", 1, 1), ("existence", 1, 0),
        # count: image 0 none right, image 1 both right -> acc 1/2, acc+ 1/2 -> 50 + 50 = 100
        ("count", 0, 0), ("count", 0, 0), ("count", 1, 1), ("count", 1, 1),
        # code_reasoning (cognition): one image, one of two right -> 50 + 0 = 50
        ("code_reasoning", 0, 0), ("code_reasoning", 0, 1),
    ]  # fmt: skip


def test_mme_scores_by_hand() -> None:
    values = _mme_values()
    assert aggregate("mme_perception", values, 0, 0).value == pytest.approx(225.0)
    assert aggregate("mme_cognition", values, 0, 0).value == pytest.approx(50.0)


def test_mme_accepts_indices_and_any_order() -> None:
    values = _mme_values()
    by_index = [(MME_CATEGORIES.index(c), pair, right) for c, pair, right in reversed(values)]
    assert aggregate("mme_perception", by_index, 0, 0).value == pytest.approx(225.0)


def test_mme_categories() -> None:
    assert len(MME_PERCEPTION) == 10 and len(MME_COGNITION) == 4
    assert MME_CATEGORIES[:10] == MME_PERCEPTION and "OCR" in MME_PERCEPTION


def test_an_estimate_counts_its_resampling_units() -> None:
    assert aggregate("mean", [1.0, 0.0, 1.0], 200, 0).n == aggregate("mean", [1.0, 0.0, 1.0], 0, 0).n == 3
    assert aggregate("mme_perception", _mme_values(), 200, 0).n == len(mme_rows(_mme_values()))  # images
    assert aggregate("f1", [(1, 1), (0, 1)], 0, 0).n == 2


def test_mme_rows_are_images() -> None:
    rows = mme_rows(_mme_values())
    assert rows.tolist() == [[0, 2], [0, 1], [1, 0], [1, 2], [13, 1]]


def test_mme_bootstrap_resamples_images() -> None:
    # Every image has both questions right or both wrong, so acc == acc_plus in any resample of
    # images and each replicate is 200 * (right images) / 5: a multiple of 40. Resampling single
    # questions would break pairs and give other values.
    values = [("scene", i, int(i < 3)) for i in range(5) for _ in range(2)]
    rows = mme_rows(values)
    stats = bootstrap_counts_statistics(AGGREGATIONS["mme_perception"].fn, rows, iters=300, seed=0)
    assert np.allclose(stats / 40, np.round(stats / 40))
    estimate = aggregate("mme_perception", values, bootstrap_iters=300, seed=0)
    assert estimate.value == pytest.approx(120.0) and estimate.stderr > 0


def test_mme_errors() -> None:
    with pytest.warns(UserWarning, match="1 image"):
        assert mme_rows([("count", 0, 1), ("count", 1, 1), ("count", 1, 0)]).tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="expected 2"):
        mme_rows([("count", 0, 1)] * 3)
    with pytest.raises(ValueError, match="unknown MME category"):
        mme_rows([("counting", 0, 1), ("counting", 0, 1)])
    with pytest.raises(ValueError, match="out of range"):
        mme_rows([(14, 0, 1), (14, 0, 1)])


# --- every aggregation gets a stderr ------------------------------------------------------------------

SAMPLES = {
    "mean": [1.0, 0.0, 1.0, 0.5],
    "median": [1.0, 0.0, 1.0, 0.5],
    "perplexity": [-1.0, -2.0, -0.5],
    "f1": [(1, 1), (0, 1), (1, 0), (1, 1), (0, 0)],
    "pope_precision": [(1, 1), (0, 1), (1, 0), (1, 1), (0, 0)],
    "pope_recall": [(1, 1), (0, 1), (1, 0), (1, 1), (0, 0)],
    "pope_f1": [(1, 1), (0, 1), (1, 0), (1, 1), (0, 0)],
    "pope_yes_ratio": [(1, 1), (0, 1), (1, 0), (1, 1), (0, 0)],
    "weighted_perplexity": [(-2.0, 2), (-4.0, 3), (-1.0, 4)],
    "bits_per_byte": [(-2.0, 2), (-4.0, 3), (-1.0, 4)],
    "mme_perception": _mme_values(),
    "mme_cognition": _mme_values() + [("text_translation", 0, 1), ("text_translation", 0, 0)],
}


def test_samples_cover_every_aggregation() -> None:
    assert set(SAMPLES) == set(AGGREGATIONS)


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_every_aggregation_has_a_stderr(name: str) -> None:
    estimate = aggregate(name, SAMPLES[name], bootstrap_iters=200, seed=0)
    assert isinstance(estimate, Estimate)
    assert math.isfinite(estimate.stderr) and estimate.stderr > 0
    assert aggregate(name, SAMPLES[name], bootstrap_iters=200, seed=0) == estimate  # same seed, same result


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_fn_of_counts_equals_fn_of_the_resampled_rows(name: str) -> None:
    """Scoring a resample through its counts gives the score of the resample itself (its rows repeated)."""
    aggregation = AGGREGATIONS[name]
    assert aggregation.name == name
    array = aggregation.to_array(SAMPLES[name])
    counts = np.random.default_rng(0).multinomial(len(array), np.ones(len(array)) / len(array), size=20).astype(float)
    stats = aggregation.fn(array, counts)
    assert stats.shape == (20,)
    for row, expected in zip(counts, stats):
        resample = np.repeat(array, row.astype(int), axis=0)
        assert aggregation.fn(resample, np.ones((1, len(resample))))[0] == pytest.approx(expected, nan_ok=True)
    assert aggregation.fn(array, np.ones((1, len(array))))[0] == pytest.approx(aggregate(name, SAMPLES[name], 0, 0).value)


def test_median_of_counts_is_numpys_median() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 8, 101):
        x = rng.normal(size=n)
        counts = rng.multinomial(n, np.ones(n) / n, size=30).astype(float)
        expected = [np.median(np.repeat(x, c.astype(int))) for c in counts]
        np.testing.assert_allclose(AGGREGATIONS["median"].fn(x, counts), expected, rtol=1e-12)


def test_counts_fast_path_matches_index_resampling_for_f1() -> None:
    """Pairs have at most 4 distinct rows, so F1 is resampled as multinomial counts: the same
    distribution as resampling documents (checked against the index-resampling bootstrap)."""
    rng = np.random.default_rng(0)
    gold = (rng.random(2_000) < 0.4).astype(float)
    pairs = np.stack([np.where(rng.random(2_000) < 0.8, gold, 1 - gold), gold], axis=1)
    fast = aggregate("f1", pairs.tolist(), bootstrap_iters=20_000, seed=1)

    def f1_of_samples(samples: np.ndarray) -> np.ndarray:
        pred, g = samples[..., 0], samples[..., 1]
        tp, fp, fn = (pred * g).sum(1), (pred * (1 - g)).sum(1), ((1 - pred) * g).sum(1)
        return 2 * tp / (2 * tp + fp + fn)

    index = bootstrap_statistics(f1_of_samples, pairs, iters=20_000, seed=2)
    assert fast.value == pytest.approx(f1_of_samples(pairs[None])[0])
    assert fast.stderr == pytest.approx(index.std(ddof=1), rel=0.03)
    assert (fast.ci_lower, fast.ci_upper) == pytest.approx(tuple(np.percentile(index, [2.5, 97.5])), abs=0.1 * index.std())


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="known aggregations"):
        aggregate("accuracy", [1.0], 0, 0)
    with pytest.raises(ValueError, match="no values"):
        aggregate("mean", [], 0, 0)
    with pytest.raises(ValueError, match="one number per document"):
        aggregate("median", [(1, 2)], 0, 0)


# --- groups -------------------------------------------------------------------------------------------


def test_pooled_stderr_formula() -> None:
    # ((10 - 1) * 0.1^2 * 10 + (20 - 1) * 0.2^2 * 20) / (30 - 2) = 16.1 / 28, then / 30, sqrt
    assert pooled_stderr([0.1, 0.2], [10, 20]) == pytest.approx(math.sqrt(16.1 / 28 / 30))
    # One subtask: its own stderr back.
    assert pooled_stderr([0.05], [100]) == pytest.approx(0.05)


def test_pooled_stderr_errors() -> None:
    with pytest.raises(ValueError, match="stderrs"):
        pooled_stderr([0.1], [10, 20])
    with pytest.raises(ValueError, match="more documents than subtasks"):
        pooled_stderr([0.1, 0.1], [1, 1])


def test_aggregate_group_weighted() -> None:
    score, stderr = aggregate_group([0.5, 0.8], [0.1, 0.2], [10, 30], weight_by_size=True)
    assert score == pytest.approx((0.5 * 10 + 0.8 * 30) / 40)  # 0.725
    assert stderr == pytest.approx(math.sqrt((9 * 0.01 * 10 + 29 * 0.04 * 30) / 38 / 40))


def test_aggregate_group_unweighted() -> None:
    score, stderr = aggregate_group([0.5, 0.8], [0.1, 0.2], [10, 30], weight_by_size=False)
    assert score == pytest.approx(0.65)
    assert stderr == pytest.approx(math.sqrt(0.01 + 0.04) / 2)


def test_aggregate_group_errors_and_nan() -> None:
    with pytest.raises(ValueError, match="per subtask"):
        aggregate_group([0.5], [0.1, 0.2], [10, 30], weight_by_size=True)
    with pytest.raises(ValueError):
        aggregate_group([], [], [], weight_by_size=False)
    assert math.isnan(aggregate_group([0.5, 0.8], [float("nan"), 0.2], [10, 30], False)[1])


# --- stability over repeats -----------------------------------------------------------------------------


SCORES = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=float)


def test_stability_per_document() -> None:
    per_doc = stability_per_document(SCORES)
    assert per_doc["expected_accuracy"] == pytest.approx([1, 1 / 3, 2 / 3, 0])
    assert per_doc["consensus_accuracy"].tolist() == [1, 0, 1, 0]
    # ddof=1: [1, 0, 0] has mean 1/3, squared deviations 4/9 + 1/9 + 1/9 = 2/3, / 2 = 1/3
    assert per_doc["within_question_variance"] == pytest.approx([0, 1 / 3, 1 / 3, 0])
    assert per_doc["consistent"].tolist() == [1, 0, 0, 1]


def test_stability() -> None:
    result = stability(SCORES)
    assert result == pytest.approx(
        {
            "expected_accuracy": 0.5,
            "consensus_accuracy": 0.5,
            "mean_within_question_variance": 1 / 6,
            "consistency_rate": 0.5,
        }
    )


def test_consensus_ties_go_to_zero() -> None:
    per_doc = stability_per_document(np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=float))
    assert per_doc["consensus_accuracy"].tolist() == [0, 1, 0, 0]
    # Non-binary scores vote over values: a strict plurality wins, a tie gives 0.
    per_doc = stability_per_document(np.array([[0.3, 0.3, 1.0], [0.3, 1.0, 0.6]]))
    assert per_doc["consensus_accuracy"] == pytest.approx([0.3, 0.0])


def test_stability_needs_repeats() -> None:
    with pytest.raises(ValueError, match="k >= 2"):
        stability(np.ones((3, 1)))
    with pytest.raises(ValueError, match="k >= 2"):
        stability(np.ones(3))
