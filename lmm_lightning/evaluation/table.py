"""The results table printed at the end of a run: lm-evaluation-harness's, with the 95% interval added."""

import math
from typing import Any, Optional

from lmm_lightning.evaluation.result import EvaluationResult, MetricKey
from lmm_lightning.metrics import Estimate

HEADER = "| Tasks | Version | Filter | n-shot | Metric |   | Value |   | Stderr | 95% CI |"


def format_table(result: EvaluationResult) -> str:
    """One row per metric of each task, then of each group; name, version and n-shot on its first row only."""
    lines = [HEADER, "|" + "|".join("---" for _ in range(10)) + "|"]
    for task in result.tasks:
        spec = task.task.spec
        lines += _rows(task.name, spec.version, spec.num_fewshot, task.metrics, task.higher_is_better)
    for group in result.groups:
        lines += _rows(group.name, None, None, group.metrics, group.higher_is_better)
    return "\n".join(lines)


def _rows(
    name: str, version: Any, n_shot: Optional[int], metrics: dict[MetricKey, Estimate], higher_is_better: dict[str, bool]
) -> list[str]:
    rows = []
    for i, (key, estimate) in enumerate(metrics.items()):
        first = i == 0
        cells = [
            name if first else "",
            _cell(version) if first else "",
            key.filter,
            _cell(n_shot) if first else "",
            key.metric,
            "↑" if higher_is_better.get(key.metric, True) else "↓",
            _number(estimate.value),
            "±",
            _number(estimate.stderr),
            f"[{_number(estimate.ci_lower)}, {_number(estimate.ci_upper)}]",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: float) -> str:
    """A table cell: four decimals, or N/A for an undefined number.

    >>> _number(0.5), _number(float("nan"))
    ('0.5000', 'N/A')
    """
    return f"{value:.4f}" if math.isfinite(value) else "N/A"
