"""Clustered standard errors against known truth: 1,000 simulated evaluations each, the 95 % interval's coverage
of the true mean within 93-97 % for independent documents and for clustered ones (questions sharing an image),
and the interval that treats clustered documents as independent shown to under-cover."""

import numpy as np
import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.metrics.bootstrap import cluster_mean_stderr, mean_stderr

SIMULATIONS = 1000
CLUSTERS, PER_CLUSTER = 100, 5
TRUE_MEAN = 0.6


def clustered_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """0/1 scores of 5 questions on each of 100 images; an image's questions share its difficulty p ~ Beta(1.2, 0.8)
    (mean 0.6, intra-cluster correlation 1/3: the design effect is 1 + 4/3)."""
    p = rng.beta(1.2, 0.8, size=CLUSTERS)
    scores = (rng.random((CLUSTERS, PER_CLUSTER)) < p[:, None]).astype(float).ravel()
    return scores, np.repeat(np.arange(CLUSTERS), PER_CLUSTER)


def coverage(intervals: list[tuple[float, float]], truth: float) -> float:
    return float(np.mean([low <= truth <= high for low, high in intervals]))


@pytest.fixture(scope="module")
def clustered_runs() -> dict[str, list]:
    rng = np.random.default_rng(20261203)
    out: dict[str, list] = {"clustered": [], "naive": [], "analytic": []}
    for i in range(SIMULATIONS):
        scores, images = clustered_sample(rng)
        ids = [f"img{j}" for j in images]
        clustered = aggregate("mean", list(scores), 1000, seed=i, clusters=ids, cluster_key="image_id")
        naive = aggregate("mean", list(scores), 1000, seed=i)
        out["clustered"].append(clustered)
        out["naive"].append(naive)
        half = 1.959964 * clustered.stderr
        out["analytic"].append((clustered.value - half, clustered.value + half))
    return out


def test_the_cluster_interval_covers_the_true_mean_95_percent_of_the_time(clustered_runs):
    covered = coverage([(e.ci_lower, e.ci_upper) for e in clustered_runs["clustered"]], TRUE_MEAN)
    assert 0.93 <= covered <= 0.97, covered
    assert 0.93 <= coverage(clustered_runs["analytic"], TRUE_MEAN) <= 0.97  # the cluster-robust stderr, normal interval


def test_the_interval_that_ignores_the_clusters_under_covers_clustered_data(clustered_runs):
    covered = coverage([(e.ci_lower, e.ci_upper) for e in clustered_runs["naive"]], TRUE_MEAN)
    assert covered < 0.88, covered  # the design effect 2.33 makes its interval 1.53 times too narrow (about 80 %)
    ratio = np.median([c.stderr / n.stderr for c, n in zip(clustered_runs["clustered"], clustered_runs["naive"])])
    assert 1.35 < ratio < 1.7  # sqrt(2.33) = 1.53


def test_independent_documents_are_covered_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    intervals = []
    for i in range(SIMULATIONS):
        scores = (rng.random(CLUSTERS * PER_CLUSTER) < TRUE_MEAN).astype(float)
        estimate = aggregate("mean", list(scores), 1000, seed=i)
        intervals.append((estimate.ci_lower, estimate.ci_upper))
    assert 0.93 <= coverage(intervals, TRUE_MEAN) <= 0.97


def test_each_document_its_own_cluster_is_the_plain_analytic_error_and_the_method_is_named():
    rng = np.random.default_rng(3)
    scores = (rng.random(300) < 0.7).astype(float)
    alone = aggregate("mean", list(scores), 2000, seed=1, clusters=list(range(300)), cluster_key="doc")
    assert alone.stderr == pytest.approx(mean_stderr(scores), rel=1e-12)  # sqrt(n/(n-1) * sum e^2) / n = s / sqrt(n)
    assert alone.method.stderr == "cluster-robust" and alone.method.interval == "cluster-percentile"
    assert alone.method.clusters == 300 and alone.method.cluster_key == "doc" and alone.n == 300
    assert alone.method.bootstrap_stderr == pytest.approx(alone.stderr, rel=0.1)
    plain = aggregate("mean", list(scores), 2000, seed=1)
    assert plain.method.stderr == "analytic" and plain.method.interval == "percentile" and plain.method.cluster_key is None
    f1 = aggregate("f1", [(1, 1), (0, 1), (1, 0), (1, 1)] * 10, 500, seed=1, clusters=[i // 2 for i in range(40)], cluster_key="c")
    assert f1.method.stderr == "cluster-bootstrap" and f1.n == 20


def test_cluster_robust_stderr_matches_its_closed_form_by_hand():
    # clusters {a: 1, 1}, {b: 0}, {c: 1, 0, 0}: mean 1/2; residual sums a: 1, b: -1/2, c: -1/2
    values, clusters = [1, 1, 0, 1, 0, 0], ["a", "a", "b", "c", "c", "c"]
    expected = np.sqrt(3 / 2 * (1 + 0.25 + 0.25)) / 6
    assert cluster_mean_stderr(values, clusters) == pytest.approx(expected)
    assert np.isnan(cluster_mean_stderr([1, 0, 1], ["x", "x", "x"]))  # one cluster: nothing to say about the spread


def test_a_warning_when_the_analytic_and_bootstrap_errors_disagree():
    import warnings

    from lmm_lightning.evaluation.result import MetricKey
    from lmm_lightning.evaluation.scoring import StatisticsWarning, warn_if_errors_disagree

    two = aggregate("mean", [0.0, 1.0], 4000, seed=1)  # analytic 0.5, bootstrap about 0.35: two documents say little
    with pytest.warns(StatisticsWarning, match=r"t acc,none: the analytic standard error 0.5 and the bootstrap's 0.3\d+ differ by 2\d%"):
        warn_if_errors_disagree("t", MetricKey("acc", "none"), two)
    many = aggregate("mean", list((np.random.default_rng(1).random(400) < 0.3).astype(float)), 4000, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_errors_disagree("t", MetricKey("acc", "none"), many)
