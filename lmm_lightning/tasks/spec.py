"""The task specification: one YAML file per benchmark, validated into a dataclass."""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args

import yaml

from lmm_lightning.errors import InputError
from lmm_lightning.metrics.registry import default_higher_is_better

# What a task asks the model for: a log-probability per choice, a generation, one continuation's
# log-probability, or a whole text's (perplexity). Each has one class in `output_types.py` (`rolling.py`).
OutputType = Literal["multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling"]
OUTPUT_TYPES: tuple[OutputType, ...] = get_args(OutputType)
# Reasoning blocks removed from generations before scoring (the raw text stays in the samples file).
DEFAULT_REASONING_TAGS = (("<think>", "</think>"),)


class TaskSpecError(InputError):
    """A task YAML is malformed; the message names the file and the field."""


@dataclass
class MetricSpec:
    """One `metric_list` entry: the metric's name, its aggregation, its direction and its options."""

    metric: str
    aggregation: str = "mean"
    higher_is_better: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> "MetricSpec":
        """An entry as the YAML writes it; `higher_is_better` defaults to the metric table's (perplexities:
        False), other keys are the metric's options (e.g. `ignore_case` of `exact_match`)."""
        options = {k: v for k, v in item.items() if k not in ("metric", "aggregation", "higher_is_better")}
        return cls(
            metric=item["metric"],
            aggregation=item.get("aggregation", "mean"),
            higher_is_better=bool(item.get("higher_is_better", default_higher_is_better(item["metric"]))),
            options=options,
        )


@dataclass
class TaskSpec:
    """What a benchmark is: where its documents live and how to turn them into requests.

    Text fields (`doc_to_text`, `doc_to_target`, `doc_to_choice`) are a column name, a Jinja2
    template, or (for choices) a literal list.
    """

    task: str
    output_type: OutputType
    doc_to_text: str
    doc_to_target: Union[str, int]
    dataset_path: str = "json"
    dataset_name: Optional[str] = None
    data_files: Union[str, list[str], dict[str, Any], None] = None
    test_split: Optional[str] = None
    validation_split: Optional[str] = None
    training_split: Optional[str] = None
    doc_to_choice: Union[str, list[str], None] = None
    doc_to_visual: Optional[str] = None
    target_delimiter: str = " "
    description: str = ""
    num_fewshot: int = 0
    fewshot_split: Optional[str] = None
    fewshot_delimiter: str = "\n\n"
    fewshot_sampler: str = "random"
    strip_generation: bool = True
    reasoning_tags: list[list[str]] = field(default_factory=lambda: [list(t) for t in DEFAULT_REASONING_TAGS])
    repeats: int = 1
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    filter_list: list[dict[str, Any]] = field(default_factory=list)
    process_results: Optional[str] = None
    metric_list: list[MetricSpec] = field(default_factory=list)
    version: float = 1.0
    source: Optional[Path] = None

    @property
    def evaluated_split(self) -> str:
        """The split scored, chosen as lm-evaluation-harness does: `test_split`, else `validation_split`.

        Local files given as one path or a list form a single split, which `datasets` names "train":
        with neither field set, that one split is evaluated; a dataset with several splits needs one.
        """
        split = self.test_split or self.validation_split
        if split is not None:
            return split
        if self.data_files is not None and not isinstance(self.data_files, dict):
            return "train"
        raise TaskSpecError(
            f"{self.source or self.task}: field 'test_split': no test_split or validation_split is set; "
            "name the split to evaluate (lm-evaluation-harness evaluates test_split, else validation_split)"
        )

    @property
    def fewshot_source(self) -> str:
        """The split few-shot examples come from, as lm-evaluation-harness chooses it: `fewshot_split`,
        else `training_split`, else `validation_split`, else the evaluated split itself (then the
        document being asked is never its own example)."""
        return self.fewshot_split or self.training_split or self.validation_split or self.evaluated_split

    def to_dict(self) -> dict[str, Any]:
        """The spec as written into results.json `configs`."""
        out = asdict(self)
        out["source"] = str(self.source) if self.source else None
        return out

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "TaskSpec":
        """A task YAML (with its `include:` files); a group YAML is an error."""
        spec = load_spec(path)
        if isinstance(spec, GroupSpec):
            raise TaskSpecError(f"{path}: is a group YAML, expected a single task")
        return spec

    @classmethod
    def from_dict(cls, raw: Any, path: Path) -> "TaskSpec":
        """Validate a parsed YAML mapping (read from `path`), with one clear error per problem."""
        known = _check_required_fields(raw, path)
        _check_field_types(raw, path)
        metrics = []
        for i, item in enumerate(raw.get("metric_list", [])):
            if not isinstance(item, dict) or "metric" not in item:
                raise _error(path, f"metric_list[{i}]", "a mapping with a 'metric' key", item)
            metrics.append(MetricSpec.from_dict(item))
        values = {k: v for k, v in raw.items() if k in known and k != "metric_list"}
        version = raw.get("metadata", {}).get("version") if isinstance(raw.get("metadata"), dict) else None
        if version is not None:
            values.setdefault("version", version)
        spec = cls(**values, metric_list=metrics, source=path)
        spec.evaluated_split  # noqa: B018 - raises now, before any model loads, when no split can be chosen
        return spec


def _error(path: Path, key: str, expected: str, got: Any) -> TaskSpecError:
    return TaskSpecError(f"{path}: field '{key}': expected {expected}, got {got!r}")


def _check_type(path: Path, raw: dict, key: str, types: tuple, expected: str) -> None:
    if key in raw and not isinstance(raw[key], types):
        raise _error(path, key, expected, raw[key])


def check_name(path: Path, key: str, name: Any) -> None:
    """Task and group names become file names (samples_<task>.jsonl): never empty, never a path."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\0") or ".." in name:
        raise _error(path, key, "a non-empty name without '/', '\\' or '..'", name)


def _check_required_fields(raw: Any, path: Path) -> set[str]:
    """Raise on a missing or unknown field, or a bad name or output type; returns the known field names."""
    if not isinstance(raw, dict):
        raise TaskSpecError(f"{path}: expected a mapping of task fields at the top level, got {type(raw).__name__}")
    known = {f.name for f in fields(TaskSpec)} - {"source"}
    unknown = sorted(set(raw) - known - {"metadata"})
    if unknown:
        raise TaskSpecError(f"{path}: unknown field(s) {unknown}; known fields are {sorted(known)}")
    for key in ("task", "output_type", "doc_to_text", "doc_to_target"):
        if key not in raw:
            raise TaskSpecError(f"{path}: missing required field '{key}'")
    _check_type(path, raw, "task", (str,), "a task name (string)")
    check_name(path, "task", raw["task"])
    if raw["output_type"] not in OUTPUT_TYPES:
        raise _error(path, "output_type", f"one of {list(OUTPUT_TYPES)}", raw["output_type"])
    if raw["output_type"] == "multiple_choice" and raw.get("doc_to_choice") is None:
        raise TaskSpecError(f"{path}: field 'doc_to_choice' is required when output_type is multiple_choice")
    return known


def _check_field_types(raw: dict[str, Any], path: Path) -> None:
    """Raise on the first optional field whose value has the wrong type or range."""
    _check_type(path, raw, "doc_to_text", (str,), "a column name or Jinja2 template (string)")
    _check_type(path, raw, "doc_to_target", (str, int), "a column name, Jinja2 template or integer")
    _check_type(path, raw, "doc_to_choice", (str, list), "a column name, Jinja2 template or list of strings")
    _check_type(path, raw, "dataset_path", (str,), "a hub dataset name or a builder such as json/csv/parquet")
    _check_type(path, raw, "data_files", (str, list, dict), "a file path, a list of paths or a split-to-path mapping")
    for key in ("test_split", "validation_split", "training_split"):
        _check_type(path, raw, key, (str,), "a split name (string)")
    _check_type(path, raw, "strip_generation", (bool,), "true or false")
    tags = raw.get("reasoning_tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) and x for x in t) for t in tags
    ):
        raise _error(path, "reasoning_tags", "a list of [opening, closing] tag pairs such as [['<think>', '</think>']]", tags)
    _check_type(path, raw, "target_delimiter", (str,), "a string")
    _check_type(path, raw, "generation_kwargs", (dict,), "a mapping such as {until: ['\\n'], max_new_tokens: 32}")
    _check_type(path, raw, "metric_list", (list,), "a list of {metric: name, ...} mappings")
    _check_type(path, raw, "version", (int, float), "a number")
    _check_type(path, raw, "doc_to_visual", (str,), "a column name or module:function reference")
    _check_type(path, raw, "description", (str,), "a string")
    _check_type(path, raw, "process_results", (str,), "a module:function reference")
    _check_type(path, raw, "fewshot_split", (str,), "a split name (string)")
    _check_type(path, raw, "fewshot_delimiter", (str,), "a string")
    if raw.get("fewshot_sampler", "random") not in ("random", "first_n"):
        raise _error(path, "fewshot_sampler", "'random' or 'first_n'", raw["fewshot_sampler"])
    _check_type(path, raw, "filter_list", (list,), "a list of {name: ..., filter: [...]} mappings")
    for key in ("num_fewshot", "repeats"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < (1 if key == "repeats" else 0)):
            raise _error(path, key, "a non-negative integer" if key == "num_fewshot" else "a positive integer", raw[key])


@dataclass
class GroupSpec:
    """A group YAML: subtasks (names or YAML paths) and how their scores combine."""

    group: str
    task: list[str]
    aggregate_metric_list: list[dict[str, Any]] = field(default_factory=list)
    source: Optional[Path] = None

    def weight_by_size(self, metric: str) -> bool:
        """Whether the group's `metric` is the mean over all documents (True, the default) or the plain
        mean of its subtasks' scores (an `aggregate_metric_list` entry with `weight_by_size: false`)."""
        for item in self.aggregate_metric_list:
            if item.get("metric") == metric:
                return bool(item.get("weight_by_size", True))
        return True

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "GroupSpec":
        """A group YAML; a task YAML is an error."""
        spec = load_spec(path)
        if isinstance(spec, TaskSpec):
            raise TaskSpecError(f"{path}: is a task YAML, expected a group (a `group:` name and a list under `task:`)")
        return spec

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> "GroupSpec":
        """Validate a parsed group YAML mapping (read from `path`)."""
        tasks = raw.get("task")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
            raise _error(path, "task", "a non-empty list of subtask names or YAML paths for a group", tasks)
        unknown = sorted(set(raw) - {"group", "task", "aggregate_metric_list", "metadata", "group_alias"})
        if unknown:
            raise TaskSpecError(f"{path}: unknown group field(s) {unknown}; known: group, task, aggregate_metric_list, metadata")
        metrics = raw.get("aggregate_metric_list", [])
        if not isinstance(metrics, list) or not all(isinstance(m, dict) and "metric" in m for m in metrics):
            raise _error(path, "aggregate_metric_list", "a list of {metric: name, weight_by_size: bool}", metrics)
        check_name(path, "group", raw["group"])
        return cls(group=raw["group"], task=tasks, aggregate_metric_list=metrics, source=path)


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, merging `include:` files (relative to it) underneath its own keys."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        where = f" (included from {seen[-1]})" if seen else ""
        raise TaskSpecError(f"{path}: task file not found{where}") from None
    except yaml.YAMLError as err:
        raise TaskSpecError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise TaskSpecError(f"{path}: expected a mapping of task fields at the top level, got {type(raw).__name__}")
    include = raw.pop("include", None)
    if include is None:
        return raw
    if not isinstance(include, str):
        raise _error(path, "include", "a YAML path relative to this file", include)
    base_path = (path.parent / include).resolve()
    if base_path in seen:
        raise TaskSpecError(f"{path}: field 'include': {include} includes itself")
    base = _anchored(read_yaml(base_path, seen + (path.resolve(),)), base_path.parent)
    return {**base, **raw}


REFERENCE_FIELDS = ("doc_to_text", "doc_to_target", "doc_to_choice", "doc_to_visual", "process_results", "dataset_path")


def _anchored(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """An included file's relative paths and references, made relative to its own folder."""
    from lmm_lightning.tasks.templates import anchor

    out = {**raw}
    for key in REFERENCE_FIELDS:
        if key in out:
            out[key] = anchor(out[key], folder)
    if "data_files" in out:
        out["data_files"] = _absolute_files(out["data_files"], folder)
    return out


def _absolute_files(files: Any, folder: Path) -> Any:
    if isinstance(files, dict):
        return {k: _absolute_files(v, folder) for k, v in files.items()}
    if isinstance(files, list):
        return [_absolute_files(f, folder) for f in files]
    if isinstance(files, str) and not Path(files).is_absolute() and "://" not in files:
        return str((folder / files).resolve())
    return files


def load_spec(path: Union[str, Path]) -> Union[TaskSpec, GroupSpec]:
    """A task or a group YAML (a group has a `group:` key and a list of subtasks under `task:`)."""
    path = Path(path)
    raw = read_yaml(path)
    if "group" in raw and isinstance(raw.get("task"), list):
        return GroupSpec.from_dict(raw, path)
    return TaskSpec.from_dict(raw, path)


# The name callers outside `tasks/` (tests/integration/test_builtin_benchmarks.py) still use for `TaskSpec.from_yaml`.
load_task_spec = TaskSpec.from_yaml
