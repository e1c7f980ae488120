"""Scores against the training step: one table (`scores.csv`) and one plot (`scores.png`) over the `step_<N>`
results folders that `BenchmarkEvaluation` and `lmm-lightning eval-checkpoints` write.

Each row is one task's metric at one step: its value, stderr and 95 % interval, and the paired change from the
previous step (after - before over the same documents, with its paired bootstrap interval), read from the
point's `change.json` (written once, when the point is compared with the one before it).
"""

import csv
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from lmm_lightning.evaluation.results import key_text, parse_key, short_name, write_atomic

CHANGE_FILE = "change.json"
POINT_PREFIX = "step_"


def point_folder(output_dir: Path, step: int) -> Path:
    """`<output_dir>/step_0000050`: zero-padded, so the folders sort by step.

    >>> point_folder(Path("bench"), 50).name
    'step_0000050'
    """
    return Path(output_dir) / f"{POINT_PREFIX}{step:07d}"


def point_step(folder: Path) -> Optional[int]:
    """The step a point folder holds, or None for another folder.

    >>> point_step(Path("bench/step_0000050")), point_step(Path("bench/other"))
    (50, None)
    """
    digits = folder.name[len(POINT_PREFIX):]
    return int(digits) if folder.name.startswith(POINT_PREFIX) and digits.isdigit() else None


def written_points(output_dir: Path) -> dict[int, Path]:
    """step -> folder of every finished point (its results.json, written last and atomically, exists)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return {}
    found = [(point_step(p), p) for p in output_dir.iterdir() if p.is_dir() and (p / "results.json").is_file()]
    return dict(sorted((step, p) for step, p in found if step is not None))


def paired_changes(before: Path, after: Path, iters: int, seed: int) -> dict[str, float]:
    """`<task>/<metric>_delta` (after - before over the documents both scored) with its paired bootstrap
    interval (`_delta_ci_lower`, `_delta_ci_upper`), for every metric with a number per document."""
    from lmm_lightning.compare import compare_task_metric
    from lmm_lightning.evaluation.results import load_run

    run_a, run_b = load_run(before), load_run(after)
    out: dict[str, float] = {}
    for task in (t for t in run_a.samples if t in run_b.samples):
        for key in (k for k in run_a.metrics.get(task, []) if k in run_b.metrics.get(task, [])):
            row, _ = compare_task_metric(run_a, run_b, task, key, iters, seed, 0.95)
            if row is None:
                continue
            out[f"{task}/{short_name(key, '_delta')}"] = row.difference
            if math.isfinite(row.ci_lower) and math.isfinite(row.ci_upper):
                out[f"{task}/{short_name(key, '_delta_ci_lower')}"] = row.ci_lower
                out[f"{task}/{short_name(key, '_delta_ci_upper')}"] = row.ci_upper
    return out


def record_change(before: Path, after: Path, iters: int, seed: int) -> dict[str, float]:
    """The paired change from `before` to `after`, kept in `after/change.json` (with the step compared to)."""
    change = paired_changes(before, after, iters, seed)
    document = {"previous": point_step(before), "iters": iters, "seed": seed, "changes": change}
    write_atomic(Path(after) / CHANGE_FILE, json.dumps(document, indent=2))
    return change


@dataclass(frozen=True)
class PointScore:
    """One metric of one task at one step."""

    step: int
    task: str
    metric: str  # as results.json names it: "acc,none"
    value: Optional[float]
    stderr: Optional[float]
    ci_lower: Optional[float]
    ci_upper: Optional[float]
    delta: Optional[float] = None  # minus the previous point, over the same documents
    delta_ci_lower: Optional[float] = None
    delta_ci_upper: Optional[float] = None


def number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def point_scores(step: int, folder: Path) -> list[PointScore]:
    """Every task and group metric of one point, with its change from the point before where recorded."""
    document = json.loads((folder / "results.json").read_text())
    change_path = folder / CHANGE_FILE
    changes = json.loads(change_path.read_text()).get("changes", {}) if change_path.is_file() else {}
    rows = []
    for task, entry in document["results"].items():
        intervals = document.get("confidence_intervals", {}).get(task, {})
        for text in entry:
            key = parse_key(text)
            if key is None:
                continue
            low, high = (intervals.get(text) or [None, None])[:2]
            delta = lambda suffix: number(changes.get(f"{task}/{short_name(key, suffix)}"))
            rows.append(PointScore(
                step, task, text, number(entry[text]), number(entry.get(key_text(key, "_stderr"))), number(low), number(high),
                delta("_delta"), delta("_delta_ci_lower"), delta("_delta_ci_upper"),
            ))
    return rows


def trajectory(output_dir: Path) -> list[PointScore]:
    """Every finished point's scores, by step."""
    return [row for step, folder in written_points(output_dir).items() for row in point_scores(step, folder)]


def write_trajectory(output_dir: Path, plot: bool = True) -> tuple[Path, Optional[Path]]:
    """`scores.csv` (every row of `trajectory`) and, with `plot`, `scores.png` (each task's metrics against the
    step, with their intervals) in `output_dir`; the plot is None when not drawn or there is no point yet."""
    output_dir = Path(output_dir)
    rows = trajectory(output_dir)
    table = output_dir / "scores.csv"
    partial = output_dir / "scores.csv.partial"
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(PointScore)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    partial.replace(table)
    return table, plot_trajectory(rows, output_dir / "scores.png") if rows and plot else None


def plot_trajectory(rows: list[PointScore], path: Path) -> Path:
    """One panel per task, a line per metric against the step, its 95 % interval shaded (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row.task for row in rows))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7, 2.6 * len(tasks)), squeeze=False, sharex=True)
    for ax, task in zip(axes[:, 0], tasks):
        mine = [row for row in rows if row.task == task and row.value is not None]
        for metric in dict.fromkeys(row.metric for row in mine):
            line = sorted((row for row in mine if row.metric == metric), key=lambda r: r.step)
            steps = [r.step for r in line]
            drawn = ax.plot(steps, [r.value for r in line], marker="o", label=metric.removesuffix(",none"))[0]
            bounded = [r for r in line if r.ci_lower is not None and r.ci_upper is not None]
            if bounded:
                ax.fill_between([r.step for r in bounded], [r.ci_lower for r in bounded], [r.ci_upper for r in bounded],
                                color=drawn.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("training step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
