"""Corpus-level aggregations: per-document values in, one `Estimate` with a bootstrap error out.

Each `Aggregation` pairs a `to_array` (per-document values -> one numeric row per resampling
unit) with a statistic of counts `fn(rows, counts)`: rows (k, ...) and how often each is drawn,
counts (batch, k) -> (batch,). The same `fn` scores the corpus (every row once) and thousands of
bootstrap resamples in one numpy call, and because a resample enters only through its counts, rows
with few distinct values (accuracy, (pred, gold) pairs, MME images) are resampled as multinomial
counts in O(iterations x distinct rows). Every aggregation gets a standard error; none is N/A.

Per-document values each aggregation expects:

- mean, median: a float.
- perplexity: a log-likelihood (score = exp(-mean)).
- f1: (pred, gold), both 0/1 (1 = positive class).
- pope_precision, pope_recall, pope_f1, pope_yes_ratio: (pred_is_yes, gold_is_yes), both 0/1.
- weighted_perplexity: (log-likelihood, n_units), units are words or bytes (`word_perplexity`,
  `byte_perplexity` in `sample.py`).
- bits_per_byte: (log-likelihood, n_bytes).
- mme_perception, mme_cognition: (category, pair, correct) per question; see `mme_rows`.
"""

import math
import warnings
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lmm_lightning.metrics.bootstrap import (
    Estimate, SEMethod, bootstrap_cluster_counts, bootstrap_counts, cluster_index, cluster_mean_stderr, mean_of_counts,
    mean_stderr, scalars, statistic_of_sample,
)

MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
# A category index in an MME per-document value indexes this tuple.
MME_CATEGORIES = MME_PERCEPTION + MME_COGNITION

@dataclass(frozen=True)
class Aggregation:
    """How to turn per-document values into one corpus score.

    `to_array` converts the list of per-document values into an array with one row per
    resampling unit (a document, or an MME image); `fn(rows, counts)` maps resamples given as
    counts (batch, k) of rows (k, ...) to scores (batch,) and is passed unchanged to `bootstrap_counts`.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    to_array: Callable[[list], np.ndarray]


def is_number(value: Any) -> bool:
    """A per-document value that aggregates as one number: a bool, int, float or numpy number.

    >>> [is_number(v) for v in (1, 0.5, True, np.float32(2), "1", None, (1, 0))]
    [True, True, True, True, False, False, False]
    """
    return isinstance(value, (int, float, bool, np.number))


# --- conversions -----------------------------------------------------------------------------


def _pairs(values: list) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"expected one (a, b) pair per document, got an array of shape {array.shape}")
    return array


def _binary_pairs(values: list) -> np.ndarray:
    array = _pairs(values)
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError("expected (prediction, gold) pairs of 0/1 (or booleans)")
    return array


def _category_index(category: Any) -> int:
    if isinstance(category, str):
        if category not in MME_CATEGORIES:
            raise ValueError(f"unknown MME category {category!r}; known: {list(MME_CATEGORIES)}")
        return MME_CATEGORIES.index(category)
    index = int(category)
    if not 0 <= index < len(MME_CATEGORIES):
        raise ValueError(f"MME category index {index} out of range 0..{len(MME_CATEGORIES) - 1}")
    return index


def mme_rows(values: list) -> np.ndarray:
    """Group per-question (category, pair, correct) values into one row per image.

    `category` is a name in `MME_CATEGORIES` or its index there; `pair` identifies the image
    within its category (its two questions share it); `correct` is 0/1. Returns an array of
    shape (n_images, 2) of (category index, number of correct answers in 0..2), in order of
    first appearance. Bootstrapping these rows resamples images, which keeps each question pair
    together as acc_plus requires.
    """
    correct: dict[tuple[int, Any], list[float]] = {}
    for category, pair, right in values:
        correct.setdefault((_category_index(category), pair), []).append(float(right))
    incomplete = [key for key, scores in correct.items() if len(scores) != 2]
    if any(len(correct[key]) > 2 for key in incomplete):
        category, pair = next(key for key in incomplete if len(correct[key]) > 2)
        raise ValueError(
            f"MME scores question pairs: image {pair!r} of category {MME_CATEGORIES[category]!r} "
            f"has {len(correct[(category, pair)])} questions, expected 2"
        )
    if incomplete:  # a limit/offset cut a pair: score whole pairs only, and say so
        warnings.warn(f"MME: {len(incomplete)} image(s) with only one of their two questions left out of the score")
    rows = [(key[0], sum(scores)) for key, scores in correct.items() if len(scores) == 2]
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


# --- statistics of counts: rows (k, ...), counts (batch, k) -> (batch,) -------------------------


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _median(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """np.median of each resample: the mean of the values at sorted positions floor((n+1)/2) and n/2+1."""
    order = np.argsort(rows, kind="stable")
    values, cumulative = rows[order], counts[:, order].cumsum(axis=1)
    n = cumulative[:, -1:]
    lower = values[(cumulative < np.floor((n + 1) / 2)).sum(axis=1)]
    upper = values[(cumulative < np.floor(n / 2) + 1).sum(axis=1)]
    return (lower + upper) / 2


def _perplexity(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.exp(-mean_of_counts(rows, counts))


def _confusion(rows: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gold = rows[:, 0], rows[:, 1]
    return counts @ (pred * gold), counts @ (pred * (1 - gold)), counts @ ((1 - pred) * gold)


def _f1(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = _confusion(rows, counts)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _precision(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    tp, fp, _ = _confusion(rows, counts)
    return _ratio(tp, tp + fp)


def _recall(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    tp, _, fn = _confusion(rows, counts)
    return _ratio(tp, tp + fn)


def _yes_ratio(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return mean_of_counts(rows[:, 0], counts)


def _weighted_perplexity(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.exp(-(counts @ rows[:, 0]) / (counts @ rows[:, 1]))


def _bits_per_byte(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return -(counts @ rows[:, 0]) / (counts @ rows[:, 1]) / math.log(2)


def _mme_score(categories: tuple[str, ...]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Sum over `categories` of 100 * acc + 100 * acc_plus, on rows from `mme_rows`.

    A category with no image in a (re)sample contributes 0, as it does in lmms-eval's sum over
    the categories present. With MME's 30+ images per category a resample of the whole benchmark
    misses a category with negligible probability.
    """
    indices = [MME_CATEGORIES.index(c) for c in categories]

    def score(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
        category, n_correct = rows[:, 0], rows[:, 1]
        total = np.zeros(counts.shape[0])
        for index in indices:
            mask = (category == index).astype(np.float64)
            images = counts @ mask
            acc = _ratio(counts @ (n_correct * mask), 2 * images)
            acc_plus = _ratio(counts @ ((n_correct == 2) * mask), images)
            total += 100.0 * (acc + acc_plus)
        return total

    return score


AGGREGATIONS: dict[str, Aggregation] = {
    "mean": Aggregation("mean", mean_of_counts, scalars),
    "median": Aggregation("median", _median, scalars),
    "perplexity": Aggregation("perplexity", _perplexity, scalars),
    "f1": Aggregation("f1", _f1, _binary_pairs),
    "pope_precision": Aggregation("pope_precision", _precision, _binary_pairs),
    "pope_recall": Aggregation("pope_recall", _recall, _binary_pairs),
    "pope_f1": Aggregation("pope_f1", _f1, _binary_pairs),
    "pope_yes_ratio": Aggregation("pope_yes_ratio", _yes_ratio, _binary_pairs),
    "weighted_perplexity": Aggregation("weighted_perplexity", _weighted_perplexity, _pairs),
    "bits_per_byte": Aggregation("bits_per_byte", _bits_per_byte, _pairs),
    "mme_perception": Aggregation("mme_perception", _mme_score(MME_PERCEPTION), mme_rows),
    "mme_cognition": Aggregation("mme_cognition", _mme_score(MME_COGNITION), mme_rows),
}


def get_aggregation(name: str) -> Aggregation:
    """The aggregation called `name`, or an error listing the known ones."""
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {name!r}; known aggregations: {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[name]


def _analytic_mean(array: np.ndarray, confidence: float) -> Estimate:
    """Mean with the analytic stderr and a normal interval: the answer without resampling."""
    value = float(array.mean())
    stderr = mean_stderr(array)
    z = statistics.NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    return Estimate(value, stderr, value - z * stderr, value + z * stderr, len(array), SEMethod("analytic", "normal"))


def _cluster_analytic_mean(array: np.ndarray, clusters: list, cluster_key: str, confidence: float) -> Estimate:
    """Mean with the cluster-robust stderr and a normal interval (no resampling asked for)."""
    value = float(array.mean())
    stderr = cluster_mean_stderr(array, clusters)
    z = statistics.NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    method = SEMethod("cluster-robust", "normal", cluster_key, cluster_index(clusters)[1], naive_stderr=mean_stderr(array))
    return Estimate(value, stderr, value - z * stderr, value + z * stderr, method.clusters, method)


def aggregate(
    name: str | Callable[[list], float],
    values: list,
    bootstrap_iters: int,
    seed: int,
    confidence: float = 0.95,
    clusters: list | None = None,
    cluster_key: str | None = None,
) -> Estimate:
    """Score per-document `values` with aggregation `name`, with a standard error and interval.

    Rows of `to_array(values)` are resampled by `bootstrap_counts` for the interval. A mean's stderr is
    the analytic one (sample std, n-1, over sqrt(n)), as lm-evaluation-harness reports it; every other
    aggregation's is the bootstrap's. With `bootstrap_iters` < 2 (or a
    single document) "mean" falls back to the analytic stderr and a normal interval, and every other
    aggregation reports a nan stderr and interval.

    With `clusters` (one key per document: its image, passage or video), documents of a cluster are resampled
    together (`bootstrap_cluster_counts`) and a mean's stderr is the cluster-robust one; `n` is then the number
    of clusters. An aggregation whose rows are not documents (MME's pairs) keeps its own resampling units.
    """
    if callable(name):  # a task's own `aggregation: !function`: its value; no stderr, as lm-evaluation-harness
        nan = float("nan")
        return Estimate(float(name(list(values))), nan, nan, nan, len(values))
    aggregation = get_aggregation(name)
    if len(values) == 0:
        raise ValueError(f"aggregation {name!r} got no values")
    array = aggregation.to_array(values)
    if clusters is not None and len(clusters) == len(array) == len(values):
        return _clustered(name, aggregation, array, clusters, cluster_key or "cluster", bootstrap_iters, seed, confidence)
    if name == "mean" and (bootstrap_iters < 2 or len(array) < 2):
        return _analytic_mean(array, confidence)
    if bootstrap_iters < 2:
        nan = float("nan")
        return Estimate(statistic_of_sample(aggregation.fn, array), nan, nan, nan, len(array))
    estimate = bootstrap_counts(aggregation.fn, array, iters=bootstrap_iters, seed=seed, confidence=confidence)
    if name == "mean":  # the closed form lm-evaluation-harness reports; the interval stays the bootstrap's
        method = SEMethod("analytic", "percentile", bootstrap_stderr=estimate.stderr)
        return replace(estimate, stderr=mean_stderr(array), method=method)
    return replace(estimate, method=SEMethod("bootstrap", "percentile"))


def _clustered(
    name: str, aggregation: "Aggregation", array: np.ndarray, clusters: list, cluster_key: str, bootstrap_iters: int,
    seed: int, confidence: float,
) -> Estimate:
    """`aggregate` over clusters: the cluster bootstrap's interval, and for a mean the cluster-robust stderr."""
    _, n_clusters = cluster_index(clusters)
    if name == "mean" and (bootstrap_iters < 2 or n_clusters < 2):
        return _cluster_analytic_mean(array, clusters, cluster_key, confidence)
    if bootstrap_iters < 2:
        nan = float("nan")
        return Estimate(statistic_of_sample(aggregation.fn, array), nan, nan, nan, n_clusters)
    estimate = bootstrap_cluster_counts(aggregation.fn, array, clusters, iters=bootstrap_iters, seed=seed, confidence=confidence)
    if name == "mean":
        method = SEMethod("cluster-robust", "cluster-percentile", cluster_key, estimate.n,
                          bootstrap_stderr=estimate.stderr, naive_stderr=mean_stderr(array))
        return replace(estimate, stderr=cluster_mean_stderr(array, clusters), method=method)
    return replace(estimate, method=SEMethod("cluster-bootstrap", "cluster-percentile", cluster_key, estimate.n))
