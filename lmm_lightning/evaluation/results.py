"""results.json and samples_<task>.jsonl in the lm-evaluation-harness layout: an `EvaluationResult`
written as one unit (`write_outputs`), and a results folder read back (`load_run`).

The one place where a `MetricKey` becomes text, and text a `MetricKey`: "<metric>,<filter>" and
"<metric>_stderr,<filter>" in results.json, the metric's bare name in the records of a task with
one filter, and the short name of the loggers and `compare` (",none" left out).
"""

import hashlib
import json
import math
import os
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from lmm_lightning.errors import InputError
from lmm_lightning.evaluation.result import EvaluationResult, GroupResult, MetricKey, TaskResult
from lmm_lightning.metrics import Estimate


# --- metric keys as text ------------------------------------------------------------------------
def key_text(key: MetricKey, suffix: str = "") -> str:
    """A metric as results.json names it, optionally with a suffix on the metric's name.

    >>> key_text(MetricKey("acc", "none")), key_text(MetricKey("acc", "none"), "_stderr")
    ('acc,none', 'acc_stderr,none')
    """
    return f"{key.metric}{suffix},{key.filter}"


def short_name(key: MetricKey, suffix: str = "") -> str:
    """A metric as the loggers and `compare` name it: as results.json does, less ",none".

    >>> short_name(MetricKey("acc", "none"), "_stderr"), short_name(MetricKey("exact_match", "strict-match"))
    ('acc_stderr', 'exact_match,strict-match')
    """
    return f"{key.metric}{suffix}" if key.filter == "none" else key_text(key, suffix)


def record_field(key: MetricKey, single_filter: bool, suffix: str = "") -> str:
    """A metric's field in a samples record: its bare name when the task has one filter, as
    lm-evaluation-harness writes it, else as results.json names it.

    >>> record_field(MetricKey("acc", "none"), True), record_field(MetricKey("exact_match", "strict"), False, "_per_repeat")
    ('acc', 'exact_match,strict_per_repeat')
    """
    return f"{key.metric}{suffix}" if single_filter else f"{key_text(key)}{suffix}"


def record_value(record: dict[str, Any], key: MetricKey) -> Any:
    """A record's value of `key`, under either name `record_field` gives it; None when it has none."""
    return record.get(key_text(key), record.get(key.metric))


def parse_key(text: str) -> Optional[MetricKey]:
    """The metric a key of a results.json entry names; None for its other keys (alias, samples, stderrs).

    >>> parse_key("exact_match,strict-match"), parse_key("acc_stderr,none"), parse_key("alias")
    (MetricKey(metric='exact_match', filter='strict-match'), None, None)
    """
    if "," not in text or "_stderr," in text:
        return None
    metric, filter_name = text.split(",", 1)
    return MetricKey(metric, filter_name)


# --- results.json -------------------------------------------------------------------------------
def finite_or_none(value: Any) -> Any:
    """JSON has no NaN; write null instead."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


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


def build_results(result: EvaluationResult) -> dict[str, Any]:
    """The results document: harness keys first, our additions beside them under their own keys."""
    out: dict[str, Any] = {
        "results": {},
        "groups": {},
        "group_subtasks": {**{t.name: [] for t in result.tasks}, **{g.name: g.subtasks for g in result.groups}},
        "configs": {},
        "versions": {},
        "n-shot": {},
        "higher_is_better": {},
        "n-samples": {},
        "config": result.settings.config,
        "git_hash": _git_hash(),
        "date": time.time(),
        "confidence_intervals": {},
        "world_size": result.settings.world_size,
        "integrity": {},
        "splits": {},
    }
    for task in result.tasks:
        _add_task(out, task)
    for group in result.groups:
        _add_group(out, group)
    return out


def _metric_columns(metrics: dict[MetricKey, Estimate]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Each metric's value and stderr as an entry of "results" lists them, and its interval."""
    values: dict[str, Any] = {}
    intervals: dict[str, list[Any]] = {}
    for key, estimate in metrics.items():
        values[key_text(key)] = finite_or_none(estimate.value)
        values[key_text(key, "_stderr")] = stderr_or_na(estimate.stderr)
        intervals[key_text(key)] = [finite_or_none(estimate.ci_lower), finite_or_none(estimate.ci_upper)]
    return values, intervals


def _add_task(out: dict[str, Any], result: TaskResult) -> None:
    name, spec = result.name, result.task.spec
    values, intervals = _metric_columns(result.metrics)
    out["results"][name] = {"alias": name, "samples": len(result.records), **values}
    out["confidence_intervals"][name] = intervals
    out["configs"][name] = spec.to_dict()
    out["versions"][name] = spec.version
    out["n-shot"][name] = spec.num_fewshot
    out["higher_is_better"][name] = result.higher_is_better
    out["n-samples"][name] = {"original": result.n_original, "effective": len(result.records)}
    out["integrity"][name] = asdict(result.integrity)
    out["splits"][name] = {
        "evaluated": spec.evaluated_split,
        "fewshot": spec.fewshot_source if spec.num_fewshot else None,
    }


def _add_group(out: dict[str, Any], group: GroupResult) -> None:
    values, intervals = _metric_columns(group.metrics)
    entry = {"alias": group.name, "samples": max((e.n for e in group.metrics.values()), default=0), **values}
    out["groups"][group.name] = entry
    out["results"][group.name] = entry
    out["confidence_intervals"][group.name] = intervals
    out["versions"][group.name] = None
    out["n-shot"][group.name] = None
    out["higher_is_better"][group.name] = group.higher_is_better


# --- writing ------------------------------------------------------------------------------------
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


def write_outputs(output_dir: Path, result: EvaluationResult, log_samples: bool) -> dict[str, Any]:
    """One run's outputs as one unit: the earlier run's removed, samples written, results.json last.

    results.json lists the samples files of its run with their sha256 (`samples_files`), so a reader
    can tell that they belong together; a folder without results.json holds no finished run. A write
    that fails (a full disk) removes what this call wrote and is one InputError naming the file.
    Returns the results document as written.
    """
    results_doc = build_results(result)
    written: dict[str, dict[str, Any]] = {}
    path = output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_outputs(output_dir)
        if log_samples:
            for task in result.tasks:
                path = output_dir / f"samples_{task.name}.jsonl"
                data = samples_jsonl(task.records).encode("utf-8")
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


# --- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """A results folder read back: each task's and group's metrics (in results.json's order), which of
    them are groups, and the per-document records of each task that has a samples file."""

    folder: Path
    metrics: dict[str, list[MetricKey]]
    groups: frozenset[str]
    samples: dict[str, list[dict[str, Any]]]


def load_run(folder: Union[str, Path]) -> Run:
    """Read results.json and every samples_<task>.jsonl of a task it lists."""
    folder = Path(folder)
    path = folder / "results.json"
    if not path.is_file():
        where = "does not exist" if not folder.exists() else "has no results.json"
        raise InputError(f"{folder} {where}: give a folder written by `lmm-lightning predict` (--evaluation.output_dir)")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err}); was the run interrupted while writing it?") from None
    if not isinstance(document.get("results"), dict):
        raise InputError(f"{path} has no 'results' mapping: is it an evaluation results file?")
    metrics = {name: [k for k in map(parse_key, entry) if k is not None] for name, entry in document["results"].items()}
    groups = frozenset(name for name, entry in document.get("groups", {}).items() if entry is not None)
    samples = {}
    for task in document["results"]:
        sample_path = folder / f"samples_{task}.jsonl"
        if sample_path.is_file():
            with open(sample_path) as handle:
                samples[task] = [json.loads(line) for line in handle if line.strip()]
    return Run(folder, metrics, groups, samples)
