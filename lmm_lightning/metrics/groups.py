"""Scores of task groups (e.g. MMLU = 57 subtasks) and stability over repeated samples."""

import math

import numpy as np


def pooled_stderr(stderrs: list[float], sizes: list[int]) -> float:
    """Stderr of a size-weighted group mean, as lm-evaluation-harness `pooled_sample_stderr`.

    Each subtask's sample variance is recovered as stderr^2 * size, pooled with weights
    size - 1, and divided by the total size. It approximates the stderr of the mean over all
    documents of all subtasks concatenated.
    """
    if len(stderrs) != len(sizes):
        raise ValueError(f"got {len(stderrs)} stderrs for {len(sizes)} sizes")
    degrees = sum(sizes) - len(sizes)
    if degrees <= 0:
        raise ValueError(f"pooled stderr needs more documents than subtasks, got sizes {list(sizes)}")
    pooled_variance = sum((n - 1) * s**2 * n for s, n in zip(stderrs, sizes)) / degrees
    return math.sqrt(pooled_variance / sum(sizes))


def aggregate_group(
    values: list[float], stderrs: list[float], sizes: list[int], weight_by_size: bool
) -> tuple[float, float]:
    """(score, stderr) of a group from its subtasks' scores, stderrs and document counts.

    weight_by_size=True: the mean over all documents (subtask scores weighted by size) with the
    pooled stderr. False: the plain mean of subtask scores (each subtask counts once) with the
    stderr of a mean of k independent estimates, sqrt(sum s_i^2) / k. A nan subtask stderr
    makes the group stderr nan.
    """
    if not (len(values) == len(stderrs) == len(sizes)) or len(values) == 0:
        raise ValueError(
            f"need one value, stderr and size per subtask, got {len(values)}, {len(stderrs)}, {len(sizes)}"
        )
    if weight_by_size:
        score = float(np.average(values, weights=sizes))
        return score, pooled_stderr(stderrs, sizes)
    stderr = math.sqrt(sum(s**2 for s in stderrs)) / len(stderrs)
    return float(np.mean(values)), stderr


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

    Returns arrays of shape (n_docs,):
    - expected_accuracy: mean of the k scores.
    - consensus_accuracy: majority vote over the k scores (for 0/1 scores: 1 if more than half
      are 1). The vote is over score values, not answers; a tie goes to 0, so a doc the model
      gets right only half the time is deterministically counted wrong.
    - within_question_variance: unbiased (ddof=1) variance of the k scores, the term that the
      "Adding Error Bars to Evals" (Miller, 2024) decomposition uses.
    - consistent: 1.0 if all k scores are equal, else 0.0.
    """
    x = _check_scores(scores)
    return {
        "expected_accuracy": x.mean(axis=1),
        "consensus_accuracy": _consensus(x),
        "within_question_variance": x.var(axis=1, ddof=1),
        "consistent": (x == x[:, :1]).all(axis=1).astype(np.float64),
    }


def stability(scores: np.ndarray) -> dict[str, float]:
    """Corpus stability of k repeated samples (means of `stability_per_document` over docs).

    Keys: expected_accuracy, consensus_accuracy, mean_within_question_variance,
    consistency_rate (fraction of docs whose k scores are all equal).
    """
    per_doc = stability_per_document(scores)
    return {
        "expected_accuracy": float(per_doc["expected_accuracy"].mean()),
        "consensus_accuracy": float(per_doc["consensus_accuracy"].mean()),
        "mean_within_question_variance": float(per_doc["within_question_variance"].mean()),
        "consistency_rate": float(per_doc["consistent"].mean()),
    }
