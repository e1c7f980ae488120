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
import re
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

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
        "model_source": result.settings.model_source,  # the files evaluated, resolved (commit, weights digest)
        "git_hash": _git_hash(),
        "date": time.time(),
        "confidence_intervals": {},
        "standard_errors": {},
        # per metric: the smallest true difference from another run of the same spread that a comparison detects
        # with 80 % power at alpha 0.05 (two-sided), from its stderr (`lmm-lightning power` for more)
        "minimum_detectable_difference": {},
        "world_size": result.settings.world_size,
        "integrity": {},
        "splits": {},
    }
    for task in result.tasks:
        _add_task(out, task)
    for group in result.groups:
        _add_group(out, group)
    usage = {t.name: asdict(t.usage) for t in result.tasks if t.usage is not None}
    if usage:  # a served model: tokens, requests, retries and latency per task
        out["usage"] = usage
    judging = {t.name: asdict(t.judging) for t in result.tasks if t.judging is not None}
    if judging:  # judged tasks: the judge, how many it read, and the answers it could not parse
        out["judge"] = judging
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


def detectable_differences(metrics: dict[MetricKey, Estimate]) -> dict[str, float]:
    """Each metric's minimum detectable difference at 80 % power (`power.mde_from_stderr`), where it has a stderr."""
    from lmm_lightning.power import mde_from_stderr

    return {key_text(key): mde_from_stderr(e.stderr) for key, e in metrics.items() if math.isfinite(e.stderr) and e.stderr > 0}


def standard_errors(metrics: dict[MetricKey, Estimate]) -> dict[str, dict[str, Any]]:
    """What each metric's stderr and interval are (results.json `standard_errors`): the method, the resampling
    units, and for clustered tasks the cluster key and count with the naive and bootstrap errors beside."""
    out = {}
    for key, estimate in metrics.items():
        if estimate.method is not None:
            method = {k: finite_or_none(v) for k, v in asdict(estimate.method).items() if v is not None}
            out[key_text(key)] = {**method, "units": estimate.n}
    return out


def _add_task(out: dict[str, Any], result: TaskResult) -> None:
    name, spec = result.name, result.task.spec
    values, intervals = _metric_columns(result.metrics)
    out["results"][name] = {"alias": name, "samples": len(result.records), **values}
    out["confidence_intervals"][name] = intervals
    out["standard_errors"][name] = standard_errors(result.metrics)
    out["minimum_detectable_difference"][name] = detectable_differences(result.metrics)
    # the metrics scored, the output type's defaults included (lm-eval's readers, zeno_visualize, go by them)
    out["configs"][name] = {**spec.to_dict(), "metric_list": [_metric_entry(m) for m in result.task.metrics]}
    if getattr(result.task, "frame_sampling", None) is not None:
        out["configs"][name]["frame_sampling"] = asdict(result.task.frame_sampling)  # the frames each video gave
    out["versions"][name] = spec.version
    out["n-shot"][name] = spec.num_fewshot
    out["higher_is_better"][name] = result.higher_is_better
    out["n-samples"][name] = {"original": result.n_original, "effective": len(result.records)}
    out["integrity"][name] = asdict(result.integrity)
    out["splits"][name] = {
        "evaluated": spec.evaluated_split,
        "fewshot": spec.fewshot_source if spec.num_fewshot else None,
    }


def _metric_entry(metric: Any) -> dict[str, Any]:
    entry = asdict(metric)
    for key in ("aggregation", "higher_is_better"):  # a `!function` as its reference, not the function
        if not isinstance(entry[key], (str, bool)):
            entry[key] = str(getattr(metric, key))
    return entry


def _add_group(out: dict[str, Any], group: GroupResult) -> None:
    values, intervals = _metric_columns(group.metrics)
    entry = {"alias": group.name, "samples": max((e.n for e in group.metrics.values()), default=0), **values}
    out["groups"][group.name] = entry
    out["results"][group.name] = entry
    out["confidence_intervals"][group.name] = intervals
    errors = standard_errors(group.metrics)
    if errors:  # a group whose subtasks are its clusters (MMLU's subjects)
        out["standard_errors"][group.name] = errors
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


PLOT_FILES = ("results.png", "results.html")  # drawn from results.json (`plots.write_results_plots`)


def remove_outputs(output_dir: Path) -> None:
    """Remove an earlier run's outputs, results.json first: without it, leftover samples are an unfinished
    run, never part of a finished one. Temporary files left by a crashed write go too."""
    (output_dir / "results.json").unlink(missing_ok=True)
    _fsync_folder(output_dir)
    for pattern in ("samples_*.jsonl", ".results.json.*.tmp", ".samples_*.jsonl.*.tmp", *PLOT_FILES, *(f".{p}.*.tmp" for p in PLOT_FILES)):
        for path in output_dir.glob(pattern):
            path.unlink(missing_ok=True)


def write_outputs(output_dir: Path, result: EvaluationResult, log_samples: bool) -> dict[str, Any]:
    """One run's outputs as one unit: the earlier run's removed, samples written, results.json last.

    results.json lists the samples files of its run with their sha256 (`samples_files`), so a reader
    can tell that they belong together; a folder without results.json holds no finished run. A write
    that fails (a full disk) removes what this call wrote and is one InputError naming the file.
    Returns the results document as written.
    """
    samples = ((f"samples_{t.name}.jsonl", samples_jsonl(t.records)) for t in result.tasks) if log_samples else ()
    return write_unit(output_dir, samples, "results.json", build_results(result), clear=True)


def write_unit(
    folder: Path,
    samples: Iterable[tuple[str, str]],
    results_name: str,
    document: dict[str, Any],
    clear: bool = False,
    **dump_options: Any,
) -> dict[str, Any]:
    """The samples files (name, text; each made only when its turn comes), then the results file naming them
    with their sha256 and size, written last. `clear`: the earlier run's outputs go first. A write that fails
    (a full disk) removes what this call wrote and is one InputError naming the file."""
    written: dict[str, dict[str, Any]] = {}
    path = folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if clear:
            remove_outputs(folder)
        for name, text in samples:
            path = folder / name
            data = text.encode("utf-8")
            write_atomic(path, data)
            written[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        document = {**document, "samples_files": written}
        path = folder / results_name
        write_atomic(path, dumps(document, indent=2, **dump_options))
    except OSError as err:
        for name in written:
            (folder / name).unlink(missing_ok=True)
        raise InputError(
            f"evaluation.output_dir: cannot write {path}: {err.strerror or err}; no {results_name} was written "
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
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # each task's config (its cluster_key, ...)


def load_run(folder: Union[str, Path]) -> Run:
    """Read a results folder: results.json and its samples_<task>.jsonl, or, in lm-eval's layout (an
    `--output_path` or its model subfolder), the latest results_<time>.json and its samples_<task>_<time>.jsonl."""
    folder = Path(folder)
    path = folder / "results.json"
    lm_eval = not path.is_file() and folder.is_dir() and latest_results_file(folder)
    path = lm_eval or path
    if not path.is_file():
        where = "does not exist" if not folder.exists() else "has no results.json or results_<time>.json"
        raise InputError(f"{folder} {where}: give a folder written by `lmm-lightning predict` or `eval`")
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
        name = f"samples_{task}_{file_time(path.name)}.jsonl" if lm_eval else f"samples_{task}.jsonl"
        sample_path = path.parent / name
        if sample_path.is_file():
            with open(sample_path) as handle:
                lines = [json.loads(line) for line in handle if line.strip()]
            samples[task] = merged_samples(lines) if lm_eval else lines
    return Run(path.parent, metrics, groups, samples, dict(document.get("configs") or {}))


# --- lm-evaluation-harness's layout: <output_path>/<model>/results_<time>.json, samples_<task>_<time>.jsonl ---
LAYOUTS = ("flat", "lm_eval")
# Where the model name is found in its init arguments, in lm-eval's order (an adapter names the run).
MODEL_NAME_KEYS = ("peft", "delta", "pretrained", "model", "path", "engine")


def sanitize_model_name(name: str) -> str:
    """A model name as a folder name, as lm-eval makes it (`lm_eval.utils.sanitize_model_name`).

    >>> sanitize_model_name("HuggingFaceTB/SmolLM2-135M"), sanitize_model_name("/models/x")
    ('HuggingFaceTB__SmolLM2-135M', '__models__x')
    """
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def model_name(model_args: dict[str, Any], fallback: str) -> str:
    """The run's model name: its adapter or weights as given (lm-eval's `GeneralConfigTracker._get_model_name`)."""
    return next((str(model_args[k]) for k in MODEL_NAME_KEYS if model_args.get(k)), fallback)


def timestamp() -> str:
    """lm-eval's file time stamp: ISO 8601 with ':' replaced by '-' (sorts as text, allowed in any file name)."""
    return datetime.now().isoformat().replace(":", "-")


def file_time(name: str) -> str:
    """The time stamp of a results_ or samples_ file name (`lm_eval.utils.get_file_datetime`)."""
    return name[name.rfind("_") + 1 :].replace(".jsonl", "").replace(".json", "")


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunInfo:
    """What lm-eval's results file says about the run besides the scores (its `GeneralConfigTracker`)."""

    model_source: str
    model_name: str
    system_instruction: Optional[str] = None
    chat_template: Optional[str] = None
    fewshot_as_multiturn: bool = False
    start_time: float = 0.0
    end_time: float = 0.0
    predict_only: bool = False

    def fields(self) -> dict[str, Any]:
        return {
            "model_source": self.model_source,
            "model_name": self.model_name,
            "model_name_sanitized": sanitize_model_name(self.model_name),
            "system_instruction": self.system_instruction,
            "system_instruction_sha": hash_text(self.system_instruction) if self.system_instruction else None,
            "fewshot_as_multiturn": self.fewshot_as_multiturn,
            "chat_template": self.chat_template,
            "chat_template_sha": hash_text(self.chat_template) if self.chat_template else None,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "total_evaluation_time_seconds": str(self.end_time - self.start_time),
        }


def _lm_eval_arguments(arguments: list[list[Any]]) -> dict[str, dict[str, Any]]:
    """Each request's arguments as lm-eval writes them on disk: {"gen_args_0": {"arg_0": ..., "arg_1": ...}}."""
    return {f"gen_args_{i}": {f"arg_{j}": value for j, value in enumerate(arg)} for i, arg in enumerate(arguments)}


RECORD_FIELDS = ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "stability")


def record_metrics(record: dict[str, Any], filter_name: str, single_filter: bool) -> dict[str, Any]:
    """One filter's per-document metric values of a record, by bare metric name (see `record_field`)."""
    out = {}
    for name, value in record.items():
        if name in RECORD_FIELDS or name.endswith("_per_repeat"):
            continue
        metric, _, filtered_by = name.partition(",")
        if (single_filter and not filtered_by) or (not single_filter and filtered_by == filter_name):
            out[metric] = value
    return out


def lm_eval_records(
    task: TaskResult, prompt: Callable[[str], str] = lambda context: context, predict_only: bool = False
) -> list[dict[str, Any]]:
    """A task's records in lm-eval's on-disk sample format: one line per (document, filter) with that filter's
    metrics under their bare names and the hashes lm-eval writes, plus `prompt`: the first request's context as
    the model received it (after the chat template). `predict_only`: the responses without metrics."""
    filters = [name for name, _ in task.task.filters]
    single = len(filters) == 1
    out = []
    for record in task.records:
        arguments = record["arguments"]
        context = str(arguments[0][0]) if arguments else ""
        target = str(record["target"])
        for filter_name in filters:
            metrics = {} if predict_only else record_metrics(record, filter_name, single)
            line = {
                "doc_id": record["doc_id"],
                "doc": record["doc"],
                "target": target,
                "arguments": _lm_eval_arguments(arguments),
                "resps": record["resps"],
                "filtered_resps": record["filtered_resps"] if single else record["filtered_resps"][filter_name],
                "filter": filter_name,
                "metrics": list(metrics),
                "doc_hash": hash_text(dumps(record["doc"], indent=2, ensure_ascii=False)),
                "prompt_hash": hash_text(context),
                "target_hash": hash_text(target),
                **metrics,
                "prompt": prompt(context),
            }
            if "stability" in record and not predict_only:
                line["stability"] = record["stability"]
            out.append(line)
    return out


def lm_eval_results(result: EvaluationResult, info: RunInfo, samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """lm-eval's results document: its top-level keys (the per-task "samples" count only under "n-samples", so
    `make_table` shows no extra row), the run info and task hashes, then our additions under their own keys."""
    document = build_results(result)
    for name, entry in document["results"].items():
        document["results"][name] = {k: v for k, v in entry.items() if k != "samples"}
        if info.predict_only:
            document["results"][name] = {"alias": entry["alias"]}
    for name, entry in document["groups"].items():
        document["groups"][name] = document["results"][name]
    if info.predict_only:
        document["confidence_intervals"] = {}
    task_hashes = {
        name: hash_text("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in lines))
        for name, lines in samples.items()
    }
    return {**document, "task_hashes": task_hashes, **info.fields(), **versions()}


def versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("lmm_lightning", "transformers", "torch", "lightning"):
        try:
            out[f"{package}_version"] = version(package)
        except PackageNotFoundError:
            out[f"{package}_version"] = None
    return out


def write_lm_eval_outputs(
    run_dir: Path,
    result: EvaluationResult,
    info: RunInfo,
    log_samples: bool,
    prompt: Callable[[str], str] = lambda context: context,
) -> dict[str, Any]:
    """One run in lm-eval's layout under `run_dir` (`<output_path>/<model_name_sanitized>`): the samples files,
    then `results_<time>.json` naming them. Earlier runs' files stay, as lm-eval leaves them; readers take the
    latest (`get_latest_filename`). Returns the results document as written."""
    stamp = timestamp()
    samples = {t.name: lm_eval_records(t, prompt, info.predict_only) for t in result.tasks}
    files = ((f"samples_{name}_{stamp}.jsonl", samples_jsonl(lines)) for name, lines in samples.items()) if log_samples else ()
    results_name = f"results_{stamp}.json"
    document = lm_eval_results(result, info, samples if log_samples else {})
    return {**write_unit(run_dir, files, results_name, document, ensure_ascii=False), "results_file": results_name}


def dataset_card(document: dict[str, Any], table: str) -> str:
    """A Hub dataset card (README.md) for one run, as lm-eval's hub logger writes one: a `configs` header that
    lets `datasets` load each task's samples, the results table, and the latest results as JSON."""
    model = document.get("model_name") or document.get("config", {}).get("model", "model")
    stem = sanitize_model_name(model)
    configs = [
        {"config_name": f"{stem}__{name[len('samples_'):name.rfind('_')]}", "data_files": [{"split": "latest", "path": [name]}]}
        for name in document.get("samples_files", {})
    ]
    header = yaml_text({"pretty_name": f"Evaluation run of {model}", "configs": configs}) if configs else yaml_text({"pretty_name": f"Evaluation run of {model}"})
    latest = {k: document[k] for k in ("results", "groups") if document.get(k)}
    return "\n".join([
        "---", header.rstrip(), "---", "",
        f"# Evaluation run of {model}", "",
        f"Written by lmm-lightning on {datetime.fromtimestamp(document.get('date') or 0).isoformat()}; "
        "the files follow lm-evaluation-harness's layout (results_<time>.json, samples_<task>_<time>.jsonl).", "",
        "## Results", "", table, "",
        "## Latest results", "", "```json", json.dumps(latest, indent=2, ensure_ascii=False), "```", "",
    ])


def yaml_text(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def latest_results_file(folder: Path) -> Optional[Path]:
    """The newest results_<time>.json in `folder`, or in its one model subfolder (an `--output_path`)."""
    found = sorted(folder.glob("results_*.json"), key=lambda p: file_time(p.name))
    if not found:
        subfolders = sorted({p.parent for p in folder.glob("*/results_*.json")})
        if len(subfolders) > 1:
            names = ", ".join(p.name for p in subfolders)
            raise InputError(f"{folder} holds the runs of several models ({names}); give one of its subfolders")
        found = sorted(folder.glob("*/results_*.json"), key=lambda p: file_time(p.name))
    return found[-1] if found else None


def merged_samples(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval sample lines (one per document and filter) as one record per document, each metric under the
    "<metric>,<filter>" name that `record_value` reads."""
    by_doc: dict[Any, dict[str, Any]] = {}
    for line in lines:
        record = by_doc.setdefault(line["doc_id"], {k: v for k, v in line.items() if k not in line.get("metrics", [])})
        for metric in line.get("metrics", []):
            record[key_text(MetricKey(metric, line.get("filter", "none")))] = line.get(metric)
    return list(by_doc.values())
