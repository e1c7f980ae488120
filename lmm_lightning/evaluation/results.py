"""results.json and samples_<task>.jsonl in the lm-evaluation-harness layout, and the printed table."""

import hashlib
import json
import math
import os
import subprocess
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from lmm_lightning.errors import InputError
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


def _write_file(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_folder(folder: Path) -> None:
    """Make renames and removals in `folder` durable (a crash cannot bring back an old file)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: Union[str, bytes]) -> None:
    """Write a temporary file beside `path`, fsync it, then rename: readers see the old file or the whole
    new one, never part of it. Created with mode 0666 less the umask (0644 under umask 022), like any file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            _write_file(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def strict_json(value: Any) -> Any:
    """JSON has no NaN or infinity (strict parsers reject `NaN`, `-Infinity`): non-finite numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return strict_json(value.tolist())
    return value


def dumps(value: Any, **options: Any) -> str:
    """Strict JSON; the walk that replaces non-finite numbers runs only when there is one (rare)."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=False, **options)
    except ValueError:
        return json.dumps(strict_json(value), default=_json_default, allow_nan=False, **options)


def samples_jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(dumps(r, ensure_ascii=False) + "\n" for r in records)


def remove_outputs(output_dir: Path) -> None:
    """Remove an earlier run's outputs, results.json first: without it, leftover samples are an unfinished
    run, never part of a finished one. Temporary files left by a crashed write go too."""
    (output_dir / "results.json").unlink(missing_ok=True)
    _fsync_folder(output_dir)
    for pattern in ("samples_*.jsonl", ".results.json.*.tmp", ".samples_*.jsonl.*.tmp"):
        for path in output_dir.glob(pattern):
            path.unlink(missing_ok=True)


def write_outputs(
    output_dir: Path, results_doc: dict[str, Any], task_results: list[TaskResult], log_samples: bool
) -> dict[str, Any]:
    """One run's outputs as one unit: the earlier run's removed, samples written, results.json last.

    results.json lists the samples files of its run with their sha256 (`samples_files`), so a reader
    can tell that they belong together; a folder without results.json holds no finished run. A write
    that fails (a full disk) removes what this call wrote and is one InputError naming the file.
    Returns the results document as written.
    """
    written: dict[str, dict[str, Any]] = {}
    path = output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_outputs(output_dir)
        if log_samples:
            for result in task_results:
                path = output_dir / f"samples_{result.name}.jsonl"
                data = samples_jsonl(result.records).encode("utf-8")
                write_atomic(path, data)
                written[path.name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        document = {**results_doc, "samples_files": written}
        path = output_dir / "results.json"
        write_atomic(path, dumps(document, indent=2))
    except OSError as err:
        for name in written:
            (output_dir / name).unlink(missing_ok=True)
        raise InputError(
            f"evaluation.output_dir: cannot write {path}: {err.strerror or err}; no results.json was written "
            "(the responses are kept in the store: a rerun writes the outputs without computing them again)"
        ) from None
    return document


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
