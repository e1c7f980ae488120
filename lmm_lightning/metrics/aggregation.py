"""Corpus-level aggregations: per-document values in, one `Estimate` with a bootstrap error out.

Each `Aggregation` pairs a `to_array` (per-document values -> one numeric row per resampling
unit) with a vectorised `fn` ((batch, n, ...) -> (batch,)), so the same `fn` scores the corpus
and thousands of bootstrap resamples in one numpy call. Every aggregation therefore gets a
standard error; none is reported as N/A.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmm_lightning.metrics.bootstrap import Estimate, bootstrap, bootstrap_mean, mean_stderr

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
    resampling unit (a document, or an MME image); `fn` maps resamples of shape (batch, n, ...)
    to scores of shape (batch,) and is passed unchanged to `bootstrap`.
    """

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    to_array: Callable[[list], np.ndarray]


# --- conversions -----------------------------------------------------------------------------


def _scalars(values: list) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"expected one number per document, got an array of shape {array.shape}")
    return array


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


# --- vectorised statistics: (batch, n, ...) -> (batch,) ----------------------------------------


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _mean(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1)


def _median(samples: np.ndarray) -> np.ndarray:
    return np.median(samples, axis=1)


def _perplexity(samples: np.ndarray) -> np.ndarray:
    return np.exp(-samples.mean(axis=1))


def _confusion(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gold = samples[..., 0], samples[..., 1]
    tp = (pred * gold).sum(axis=1)
    fp = (pred * (1 - gold)).sum(axis=1)
    fn = ((1 - pred) * gold).sum(axis=1)
    return tp, fp, fn


def _f1(samples: np.ndarray) -> np.ndarray:
    tp, fp, fn = _confusion(samples)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _precision(samples: np.ndarray) -> np.ndarray:
    tp, fp, _ = _confusion(samples)
    return _ratio(tp, tp + fp)


def _recall(samples: np.ndarray) -> np.ndarray:
    tp, _, fn = _confusion(samples)
    return _ratio(tp, tp + fn)


def _yes_ratio(samples: np.ndarray) -> np.ndarray:
    return samples[..., 0].mean(axis=1)


def _weighted_perplexity(samples: np.ndarray) -> np.ndarray:
    return np.exp(-samples[..., 0].sum(axis=1) / samples[..., 1].sum(axis=1))


def _bits_per_byte(samples: np.ndarray) -> np.ndarray:
    return -samples[..., 0].sum(axis=1) / samples[..., 1].sum(axis=1) / math.log(2)


def _mme_score(categories: tuple[str, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Sum over `categories` of 100 * acc + 100 * acc_plus, on rows from `mme_rows`.

    A category with no image in a (re)sample contributes 0, as it does in lmms-eval's sum over
    the categories present. With MME's 30+ images per category a resample of the whole benchmark
    misses a category with negligible probability.
    """
    indices = [MME_CATEGORIES.index(c) for c in categories]

    def score(samples: np.ndarray) -> np.ndarray:
        category, n_correct = samples[..., 0], samples[..., 1]
        total = np.zeros(samples.shape[0])
        for index in indices:
            mask = category == index
            images = mask.sum(axis=1)
            acc = _ratio((n_correct * mask).sum(axis=1), 2 * images)
            acc_plus = _ratio(((n_correct == 2) & mask).sum(axis=1), images)
            total += 100.0 * (acc + acc_plus)
        return total

    return score


AGGREGATIONS: dict[str, Aggregation] = {
    "mean": Aggregation("mean", _mean, _scalars),
    "median": Aggregation("median", _median, _scalars),
    "perplexity": Aggregation("perplexity", _perplexity, _scalars),
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
    return Estimate(value, stderr, value - z * stderr, value + z * stderr)


def aggregate(
    name: str, values: list, bootstrap_iters: int, seed: int, confidence: float = 0.95
) -> Estimate:
    """Score per-document `values` with aggregation `name`, with a standard error and interval.

    "mean" uses the exact multinomial `bootstrap_mean`; with `bootstrap_iters` < 2 (or a single
    document) it falls back to the analytic stderr and a normal interval. Every other
    aggregation is bootstrapped by resampling rows of `to_array(values)`; with
    `bootstrap_iters` < 2 its stderr and interval are nan.
    """
    aggregation = get_aggregation(name)
    if len(values) == 0:
        raise ValueError(f"aggregation {name!r} got no values")
    array = aggregation.to_array(values)
    if name == "mean":
        if bootstrap_iters >= 2 and len(array) >= 2:
            return bootstrap_mean(array, iters=bootstrap_iters, seed=seed, confidence=confidence)
        return _analytic_mean(array, confidence)
    if bootstrap_iters < 2:
        value = float(aggregation.fn(array[None])[0])
        return Estimate(value, float("nan"), float("nan"), float("nan"))
    return bootstrap(aggregation.fn, array, iters=bootstrap_iters, seed=seed, confidence=confidence)
