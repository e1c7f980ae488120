"""Scores of task groups (e.g. MMLU = 57 subtasks) from their subtasks' scores, stderrs and sizes."""

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
