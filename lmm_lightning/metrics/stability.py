"""Stability of k repeated samples of one task (`repeats` > 1): per document, then over the corpus."""

import numpy as np

# Per-document stability statistic -> the corpus metric that averages it over documents.
STABILITY_NAMES = {
    "expected_accuracy": "expected_accuracy",
    "consensus_accuracy": "consensus_accuracy",
    "within_question_variance": "mean_within_question_variance",
    "consistent": "consistency_rate",
}


def _check_scores(scores: np.ndarray) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(f"stability needs scores of shape (n_docs >= 1, k >= 2 repeats), got {x.shape}")
    return x


def _consensus(x: np.ndarray) -> np.ndarray:
    """Per-row plurality score: the score value held by strictly more repeats than any other, else 0."""
    counts = (x[:, :, None] == x[:, None, :]).sum(axis=2)  # counts[d, i]: repeats equal to x[d, i]
    top = counts.max(axis=1, keepdims=True)
    winners = np.where(counts == top, x, np.nan)
    unique_winner = np.nanmin(winners, axis=1) == np.nanmax(winners, axis=1)
    return np.where(unique_winner, np.nanmax(winners, axis=1), 0.0)


def stability_per_document(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per-document stability of k repeated samples; `scores` has shape (n_docs, k).

    Returns arrays of shape (n_docs,), keyed as `STABILITY_NAMES`:
    - expected_accuracy: mean of the k scores.
    - consensus_accuracy: majority vote over the k scores (for 0/1 scores: 1 if more than half
      are 1). The vote is over score values, not answers; a tie goes to 0, so a doc the model
      gets right only half the time is deterministically counted wrong.
    - within_question_variance: unbiased (ddof=1) variance of the k scores, the term that the
      "Adding Error Bars to Evals" (Miller, 2024) decomposition uses.
    - consistent: 1.0 if all k scores are equal, else 0.0.

    >>> {k: v.tolist() for k, v in stability_per_document(np.array([[1.0, 1.0], [1.0, 0.0]])).items()}
    {'expected_accuracy': [1.0, 0.5], 'consensus_accuracy': [1.0, 0.0], 'within_question_variance': [0.0, 0.5], 'consistent': [1.0, 0.0]}
    """
    x = _check_scores(scores)
    return {
        "expected_accuracy": x.mean(axis=1),
        "consensus_accuracy": _consensus(x),
        "within_question_variance": x.var(axis=1, ddof=1),
        "consistent": (x == x[:, :1]).all(axis=1).astype(np.float64),
    }


def stability(scores: np.ndarray) -> dict[str, float]:
    """Corpus stability of k repeated samples: each `stability_per_document` statistic averaged over
    documents, under its corpus name in `STABILITY_NAMES`.

    >>> stability(np.array([[1.0, 1.0], [0.0, 1.0]]))["consistency_rate"]
    0.5
    """
    return {STABILITY_NAMES[stat]: float(values.mean()) for stat, values in stability_per_document(scores).items()}
