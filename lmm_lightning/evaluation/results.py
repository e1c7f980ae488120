"""results.json and samples_<task>.jsonl in the lm-evaluation-harness layout, and the printed table."""

import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional

from lmm_lightning.evaluation.scoring import TaskResult, finite_or_none
from lmm_lightning.tasks import Task

_Z95 = 1.959964


def stderr_or_na(value: float) -> Any:
    """An undefined standard error (one document) is "N/A", as lm-evaluation-harness writes it."""
    value = finite_or_none(value)
    return "N/A" if value is None else value


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_results(
    results: list[TaskResult],
    tasks: dict[str, Task],
    n_original: dict[str, int],
    config: dict[str, Any],
    world_size: int,
    groups: Optional[dict[str, dict[tuple[str, str], tuple[float, float, int]]]] = None,
    group_subtasks: Optional[dict[str, list[str]]] = None,
) -> dict[str, Any]:
    """The results document: harness keys first, our additions beside them under their own keys."""
    groups = groups or {}
    out: dict[str, Any] = {
        "results": {},
        "groups": {},
        "group_subtasks": {**{r.name: [] for r in results}, **(group_subtasks or {})},
        "configs": {},
        "versions": {},
        "n-shot": {},
        "higher_is_better": {},
        "n-samples": {},
        "config": config,
        "git_hash": _git_hash(),
        "date": time.time(),
        "confidence_intervals": {},
        "world_size": world_size,
        "integrity": {},
        "splits": {},
    }
    for result in results:
        task = tasks[result.name]
        entry: dict[str, Any] = {"alias": result.name, "samples": len(result.records)}
        intervals = {}
        for (name, filt), est in result.metrics.items():
            entry[f"{name},{filt}"] = finite_or_none(est.value)
            entry[f"{name}_stderr,{filt}"] = stderr_or_na(est.stderr)
            intervals[f"{name},{filt}"] = [finite_or_none(est.ci_lower), finite_or_none(est.ci_upper)]
        out["results"][result.name] = entry
        out["confidence_intervals"][result.name] = intervals
        out["configs"][result.name] = task.spec.to_dict()
        out["versions"][result.name] = task.spec.version
        out["n-shot"][result.name] = task.spec.num_fewshot
        out["higher_is_better"][result.name] = {m.metric: m.higher_is_better for m in task.metrics}
        out["n-samples"][result.name] = {"original": n_original[result.name], "effective": len(result.records)}
        out["integrity"][result.name] = asdict(result.integrity)
        out["splits"][result.name] = {
            "evaluated": task.spec.evaluated_split,
            "fewshot": task.spec.fewshot_source if task.spec.num_fewshot else None,
        }
    for group, scores in groups.items():
        entry = {"alias": group, "samples": max((size for _, _, size in scores.values()), default=0)}
        intervals = {}
        for (name, filt), (value, stderr, _) in scores.items():
            entry[f"{name},{filt}"] = finite_or_none(value)
            entry[f"{name}_stderr,{filt}"] = stderr_or_na(stderr)
            intervals[f"{name},{filt}"] = [finite_or_none(value - _Z95 * stderr), finite_or_none(value + _Z95 * stderr)]
        out["groups"][group] = entry
        out["results"][group] = entry
        out["confidence_intervals"][group] = intervals
        out["versions"][group] = None
        out["n-shot"][group] = None
        subtasks = (group_subtasks or {}).get(group, [])
        out["higher_is_better"][group] = {k: v for t in subtasks for k, v in out["higher_is_better"].get(t, {}).items()}
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def samples_jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, default=_json_default, ensure_ascii=False) + "\n" for r in records)


def write_outputs(output_dir: Path, results_doc: dict[str, Any], task_results: list[TaskResult], log_samples: bool) -> None:
    """Samples first, results.json last: a results.json on disk means the run is complete."""
    if log_samples:
        for result in task_results:
            write_atomic(output_dir / f"samples_{result.name}.jsonl", samples_jsonl(result.records))
    write_atomic(output_dir / "results.json", json.dumps(results_doc, indent=2, default=_json_default))


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def format_table(results_doc: dict[str, Any]) -> str:
    """A markdown table like lm-evaluation-harness prints, with the confidence interval added."""
    header = "| Tasks | Version | Filter | n-shot | Metric |   | Value |   | Stderr | 95% CI |"
    lines = [header, "|" + "|".join("---" for _ in range(10)) + "|"]
    fmt = lambda v: "N/A" if v is None or isinstance(v, str) else f"{v:.4f}"
    for name, entry in results_doc["results"].items():
        first = True
        hib = results_doc["higher_is_better"].get(name) or {}
        for key, value in entry.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = entry.get(f"{metric}_stderr,{filt}")
            low, high = results_doc["confidence_intervals"][name].get(key, [None, None])
            arrow = "↑" if hib.get(metric, True) else "↓"
            cells = [
                name if first else "",
                _cell(results_doc["versions"].get(name)) if first else "",
                filt,
                _cell(results_doc["n-shot"].get(name)) if first else "",
                metric,
                arrow,
                fmt(value),
                "±",
                fmt(stderr),
                f"[{fmt(low)}, {fmt(high)}]",
            ]
            lines.append("| " + " | ".join(cells) + " |")
            first = False
    return "\n".join(lines)
