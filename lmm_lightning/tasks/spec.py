"""The task specification: one YAML file per benchmark, validated into a dataclass.

The YAMLs of lm-evaluation-harness 0.4.x and lmms-eval 0.7.x load unchanged: `!function module.attr`
(resolved beside the YAML that wrote it, only when the task is built), `include:` chains, their fields
with their meaning, and their group YAMLs.
"""

import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union, get_args

import yaml

from lmm_lightning.errors import InputError
from lmm_lightning.metrics.registry import default_higher_is_better

log = logging.getLogger(__name__)

# What a task asks the model for: a log-probability per choice, a generation, one continuation's
# log-probability, or a whole text's (perplexity). Each has one class in `output_types.py` (`rolling.py`).
OutputType = Literal["multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling"]
OUTPUT_TYPES: tuple[OutputType, ...] = get_args(OutputType)
# Reasoning blocks removed from generations before scoring (the raw text stays in the samples file).
DEFAULT_REASONING_TAGS = (("<think>", "</think>"),)
# lm-evaluation-harness's few-shot samplers; "random" is this harness's older name for "default".
FEWSHOT_SAMPLERS = ("default", "random", "first_n")
FEWSHOT_CONFIG_KEYS = (
    "sampler", "split", "process_docs", "fewshot_indices", "samples",
    "doc_to_text", "doc_to_choice", "doc_to_target", "fewshot_delimiter", "target_delimiter",
)
# Read from the YAML and kept in `configs`, but not used to build requests (a note is logged once).
NOTED_FIELDS = ("should_decontaminate", "doc_to_decontamination_query", "multiple_target")
# Fields of lmms-eval 0.7.x kept as written: prompts for other models, or inputs our models read otherwise.
LMMS_EXTRA_FIELDS = (
    "doc_to_messages", "model_specific_generation_kwargs", "model_specific_prompt_kwargs", "model_specific_target_kwargs",
)
class TaskSpecError(InputError):
    """A task YAML is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class FunctionRef:
    """A `!function module.attr` tag: the function named, looked up beside the YAML that wrote it.

    Nothing is imported when the YAML is read (its module's dependencies are needed only to build the
    task); `resolve` imports it, as lm-evaluation-harness does: `<folder>/module.py` first, else an
    importable module.
    """

    qualname: str
    folder: Path

    def __str__(self) -> str:
        return f"!function {self.qualname}"

    def resolve(self, where: str) -> Callable:
        from lmm_lightning.tasks.templates import import_function

        return import_function(self.qualname, self.folder, where)


def _function_tag(loader: Any, node: yaml.Node) -> FunctionRef:
    return FunctionRef(str(loader.construct_scalar(node)), loader.folder)


_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TaskLoader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """Safe YAML plus lm-evaluation-harness's one tag, `!function`; any other `!tag` is an error, as there."""

    folder = Path(".")


_TaskLoader.add_constructor("!function", _function_tag)


def parse_yaml(text: str, folder: Path) -> Any:
    """YAML text whose `!function` tags resolve against `folder`."""
    loader = _TaskLoader(text)
    loader.folder = folder
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping with its `include:` files (one or a list, each relative to the including file)
    merged underneath it in order, its own keys winning; an included file's `task_list` is dropped."""
    try:
        raw = parse_yaml(path.read_text(), path.parent.resolve())
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
    includes = include if isinstance(include, list) else [include]
    merged: dict[str, Any] = {}
    for item in includes:
        if not isinstance(item, str):
            raise _error(path, "include", "a YAML path (or a list of them) relative to this file", include)
        base_path = (path.parent / item).resolve()
        if base_path in seen or base_path == path.resolve():
            raise TaskSpecError(f"{path}: field 'include': {item} includes itself")
        base = _anchored(read_yaml(base_path, seen + (path.resolve(),)), base_path.parent)
        base.pop("task_list", None)
        merged.update(base)
    return {**merged, **raw}


# Our own `module:function` strings, pinned to the folder of the YAML that wrote them when included.
REFERENCE_FIELDS = ("doc_to_text", "doc_to_target", "doc_to_choice", "doc_to_visual", "process_results", "dataset_path", "process_docs")


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


@dataclass
class MetricSpec:
    """One `metric_list` entry: the metric's name, its aggregation, its direction and its options.

    `aggregation` and `higher_is_better` may also be `!function` tags (lm-evaluation-harness); the
    options keep lm-eval's names (`regexes_to_ignore`, `ignore_case`, ...), checked when the task is built.
    """

    metric: Union[str, FunctionRef]
    aggregation: Union[str, FunctionRef] = "mean"
    higher_is_better: Union[bool, FunctionRef] = True
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> "MetricSpec":
        """An entry as the YAML writes it; `higher_is_better` defaults to the metric table's (perplexities:
        False), other keys are the metric's options (e.g. `ignore_case` of `exact_match`)."""
        options = {k: v for k, v in item.items() if k not in ("metric", "aggregation", "higher_is_better", "hf_evaluate")}
        metric = item["metric"]
        default_hib = default_higher_is_better(metric) if isinstance(metric, str) else True
        hib = item.get("higher_is_better", default_hib)
        return cls(
            metric=metric,
            aggregation=item.get("aggregation", "mean"),
            higher_is_better=hib if isinstance(hib, FunctionRef) else bool(hib),
            options=options,
        )


@dataclass
class FewshotConfig:
    """lm-evaluation-harness's `fewshot_config`: where the examples come from and how they read.

    A field left None takes the task's own (`doc_to_text`, `target_delimiter`, ...), as in lm-eval.
    """

    sampler: str = "default"
    split: Optional[str] = None
    process_docs: Any = None
    fewshot_indices: Optional[list[int]] = None
    samples: Any = None  # a list of documents, or a `!function` returning one
    doc_to_text: Any = None
    doc_to_choice: Any = None
    doc_to_target: Any = None
    fewshot_delimiter: Optional[str] = None
    target_delimiter: Optional[str] = None


JUDGE_KEYS = ("prompt", "parser", "quick", "max_new_tokens", "until", "system_prompt")


@dataclass(frozen=True)
class JudgeSpec:
    """How a task is judged (MM-Vet, MathVista's answer extraction): what the judge model is asked about each
    document and the model's answer, and how its answer becomes the value that is scored.

    `prompt`: a Jinja2 template over the document's fields, `response` (the model's answer after the task's
    filters) and `target`, or a `!function (doc, response) -> str`. `parser`: a `!function (judge_answer) -> value`
    returning None where the answer cannot be read (such a document is counted as unparsed, never scored), or
    "number" (the first number in the answer) or "text" (the answer stripped). `quick`: an optional
    `!function (doc, response) -> value or None` that answers by rule, without calling the judge.
    """

    prompt: Union[str, FunctionRef]
    parser: Union[str, FunctionRef] = "text"
    quick: Optional[FunctionRef] = None
    max_new_tokens: int = 128
    until: list[str] = field(default_factory=list)
    system_prompt: Optional[str] = None


JUDGE_PARSERS = ("number", "text")


@dataclass
class TaskSpec:
    """What a benchmark is: where its documents live and how to turn them into requests.

    Text fields (`doc_to_text`, `doc_to_target`, `doc_to_choice`) are a column name, a Jinja2
    template, a literal (an index, a list of choices), or a function (`!function utils.fn` or our
    `utils:fn`), read as lm-evaluation-harness reads them.
    """

    task: str
    output_type: OutputType = "generate_until"  # lm-evaluation-harness's default
    doc_to_text: Any = None
    doc_to_target: Any = None
    dataset_path: Any = "json"
    dataset_name: Optional[str] = None
    dataset_kwargs: Optional[dict[str, Any]] = None
    data_files: Union[str, list[str], dict[str, Any], None] = None
    test_split: Optional[str] = None
    validation_split: Optional[str] = None
    training_split: Optional[str] = None
    process_docs: Any = None
    doc_to_choice: Any = None
    doc_to_visual: Any = None
    target_delimiter: str = " "
    description: str = ""
    num_fewshot: int = 0
    fewshot_split: Optional[str] = None
    fewshot_delimiter: str = "\n\n"
    fewshot_sampler: str = "random"
    fewshot_config: Optional[FewshotConfig] = None
    strip_generation: bool = True
    reasoning_tags: list[list[str]] = field(default_factory=lambda: [list(t) for t in DEFAULT_REASONING_TAGS])
    repeats: int = 1
    # The document field naming the unit documents share (an image, a passage, a video): standard errors and
    # intervals then resample these clusters, not documents (two questions about one image are not independent).
    cluster_key: Optional[str] = None
    # Where the videos `doc_to_visual` names by relative path live: a folder (relative to this YAML, `~` and
    # $VARS expanded); unset, `$HF_HOME/<dataset_kwargs.cache_dir>` where lmms-eval keeps them, else this YAML's folder.
    video_dir: Optional[str] = None
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    filter_list: list[dict[str, Any]] = field(default_factory=list)
    process_results: Any = None
    metric_list: list[MetricSpec] = field(default_factory=list)
    version: float = 1.0
    task_alias: Optional[str] = None
    tag: list[str] = field(default_factory=list)
    group: Any = None  # lm-eval's legacy `group:` on a task YAML: an old-style tag
    unsafe_code: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    lmms_eval_specific_kwargs: Optional[dict[str, Any]] = None
    should_decontaminate: bool = False
    doc_to_decontamination_query: Any = None
    multiple_target: Any = None
    doc_to_messages: Any = None
    model_specific_generation_kwargs: Optional[dict[str, Any]] = None
    model_specific_prompt_kwargs: Optional[dict[str, Any]] = None
    model_specific_target_kwargs: Any = None
    judge: Optional[JudgeSpec] = None  # scored by a judge model after inference (see JudgeSpec)
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
    def explicit_fewshot_split(self) -> Optional[str]:
        """`fewshot_config.split`, else `fewshot_split` (lm-evaluation-harness's `fewshot_cfg.split`)."""
        config_split = self.fewshot_config.split if self.fewshot_config else None
        return config_split or self.fewshot_split

    @property
    def fewshot_source(self) -> str:
        """The split few-shot examples come from, as lm-evaluation-harness chooses it: `fewshot_split`,
        else `training_split`, else `validation_split`, else the evaluated split itself (then the
        document being asked is never its own example)."""
        return self.explicit_fewshot_split or self.training_split or self.validation_split or self.evaluated_split

    @property
    def video_folder(self) -> Path:
        """The folder relative video paths are read from: `video_dir` (relative to the YAML), else lmms-eval's
        `$HF_HOME/<dataset_kwargs.cache_dir>` (HF_HOME defaulting to ~/.cache/huggingface), else the YAML's folder."""
        root = self.source.parent if self.source else Path.cwd()
        if self.video_dir is not None:
            folder = Path(os.path.expandvars(os.path.expanduser(self.video_dir)))
            return folder if folder.is_absolute() else root / folder
        cache_dir = (self.dataset_kwargs or {}).get("cache_dir")
        if isinstance(cache_dir, str):
            return Path(os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface"))) / cache_dir
        return root

    @property
    def sampler(self) -> str:
        """"first_n" (the first k examples in order) or "default" (drawn at random)."""
        if self.fewshot_config is not None and self.fewshot_config.sampler != "default":
            return self.fewshot_config.sampler
        return "first_n" if self.fewshot_sampler == "first_n" else "default"

    @property
    def tags(self) -> list[str]:
        """The names that select this task with others: `tag`, and a legacy `group:` string or list."""
        legacy = [self.group] if isinstance(self.group, str) else list(self.group or [])
        return list(self.tag) + [g for g in legacy if isinstance(g, str)]

    def to_dict(self) -> dict[str, Any]:
        """The spec as written into results.json `configs` (functions as `!function module.attr`)."""
        out = _plain(asdict(self))
        for key in ("judge", "cluster_key", "video_dir"):
            if out[key] is None:
                del out[key]  # written only for a judged, clustered or video task
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
        for i, item in enumerate(raw.get("metric_list") or []):
            if not isinstance(item, dict) or "metric" not in item:
                raise _error(path, f"metric_list[{i}]", "a mapping with a 'metric' key", item)
            metrics.append(MetricSpec.from_dict(item))
        values = {k: v for k, v in raw.items() if k in known and k not in ("metric_list", "fewshot_config", "tag", "metadata", "judge")}
        values = {k: v for k, v in values.items() if v is not None}  # null: the field's default, as in lm-eval
        metadata = read_metadata(raw.get("metadata"))
        if metadata.get("version") is not None:
            values.setdefault("version", metadata["version"])
        tag = raw.get("tag")
        spec = cls(
            **values,
            metric_list=metrics,
            fewshot_config=_fewshot_config(raw.get("fewshot_config"), path),
            judge=_judge(raw.get("judge"), path),
            tag=[tag] if isinstance(tag, str) else list(tag or []),
            metadata=dict(metadata),
            source=path,
        )
        spec.evaluated_split  # noqa: B018 - raises now, before any model loads, when no split can be chosen
        noted = [k for k in NOTED_FIELDS if raw.get(k)]
        if noted:
            log.info("%s: field(s) %s read and not used by this harness", path, noted)
        return spec


def read_metadata(value: Any) -> dict[str, Any]:
    """`metadata` as a mapping: lmms-eval also writes a list of mappings (`- version: 0.0`)."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return {k: v for item in value if isinstance(item, dict) for k, v in item.items()}
    return {}


def _plain(value: Any) -> Any:
    """A value as JSON writes it: paths and function tags as text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (Path, FunctionRef)):
        return str(value)
    return value


def _fewshot_config(raw: Any, path: Path) -> Optional[FewshotConfig]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _error(path, "fewshot_config", f"a mapping with some of {list(FEWSHOT_CONFIG_KEYS)}", raw)
    unknown = sorted(set(raw) - set(FEWSHOT_CONFIG_KEYS))
    if unknown:
        raise TaskSpecError(f"{path}: field 'fewshot_config': unknown key(s) {unknown}; supported keys are {list(FEWSHOT_CONFIG_KEYS)}")
    if raw.get("sampler", "default") not in ("default", "first_n"):
        raise _error(path, "fewshot_config.sampler", "'default' or 'first_n'", raw["sampler"])
    samples = raw.get("samples")
    if samples is not None and not isinstance(samples, (list, FunctionRef)):
        raise _error(path, "fewshot_config.samples", "a list of documents or a !function returning one", samples)
    indices = raw.get("fewshot_indices")
    if indices is not None and not (isinstance(indices, list) and all(isinstance(i, int) for i in indices)):
        raise _error(path, "fewshot_config.fewshot_indices", "a list of integers", indices)
    return FewshotConfig(**{k: v for k, v in raw.items() if v is not None})


def _judge(raw: Any, path: Path) -> Optional[JudgeSpec]:
    """The `judge:` mapping, checked key by key."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "prompt" not in raw:
        raise _error(path, "judge", "a mapping with at least a 'prompt' (template or !function)", raw)
    unknown = sorted(set(raw) - set(JUDGE_KEYS))
    if unknown:
        raise TaskSpecError(f"{path}: field 'judge': unknown key(s) {unknown}; supported keys are {list(JUDGE_KEYS)}")
    raw = {k: v for k, v in raw.items() if v is not None}
    _check_type(path, raw, "prompt", TEMPLATE, "a Jinja2 template or !function")
    parser = raw.get("parser", "text")
    if not isinstance(parser, FunctionRef) and parser not in JUDGE_PARSERS:
        raise _error(path, "judge.parser", f"a !function or one of {list(JUDGE_PARSERS)}", parser)
    if "quick" in raw and not isinstance(raw["quick"], FunctionRef):
        raise _error(path, "judge.quick", "a !function (doc, response) -> value or None", raw["quick"])
    budget = raw.get("max_new_tokens", 1)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise _error(path, "judge.max_new_tokens", "a positive integer", budget)
    until = raw.get("until", [])
    if not isinstance(until, list) or not all(isinstance(u, str) and u for u in until):
        raise _error(path, "judge.until", "a list of non-empty stop strings", until)
    _check_type(path, raw, "system_prompt", (str,), "a string")
    return JudgeSpec(**raw)


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
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TaskSpecError(f"{path}: unknown field(s) {unknown}; supported fields are {sorted(known)}")
    if "task" not in raw:
        raise TaskSpecError(f"{path}: missing required field 'task'")
    _check_type(path, raw, "task", (str,), "a task name (string)")
    check_name(path, "task", raw["task"])
    output_type = raw.get("output_type") or "generate_until"
    if output_type not in OUTPUT_TYPES:
        raise _error(path, "output_type", f"one of {list(OUTPUT_TYPES)}", raw["output_type"])
    if output_type == "multiple_choice" and raw.get("doc_to_choice") is None:
        raise TaskSpecError(f"{path}: field 'doc_to_choice' is required when output_type is multiple_choice")
    return known


TEMPLATE = (str, FunctionRef)


def _check_field_types(raw: dict[str, Any], path: Path) -> None:
    """Raise on the first optional field whose value has the wrong type or range (null means unset)."""
    raw = {k: v for k, v in raw.items() if v is not None}
    _check_type(path, raw, "doc_to_text", TEMPLATE + (int,), "a column name, Jinja2 template, index or !function")
    _check_type(path, raw, "doc_to_target", TEMPLATE + (int, list), "a column name, Jinja2 template, integer, list or !function")
    _check_type(path, raw, "doc_to_choice", TEMPLATE + (list, dict), "a column name, Jinja2 template, list of strings or !function")
    _check_type(path, raw, "dataset_path", TEMPLATE, "a hub dataset name or a builder such as json/csv/parquet")
    _check_type(path, raw, "dataset_name", (str,), "a dataset configuration name (string)")
    _check_type(path, raw, "dataset_kwargs", (dict,), "a mapping of datasets.load_dataset arguments")
    _check_type(path, raw, "data_files", (str, list, dict), "a file path, a list of paths or a split-to-path mapping")
    for key in ("test_split", "validation_split", "training_split", "fewshot_split"):
        _check_type(path, raw, key, (str,), "a split name (string)")
    _check_type(path, raw, "strip_generation", (bool,), "true or false")
    tags = raw.get("reasoning_tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) and x for x in t) for t in tags
    ):
        raise _error(path, "reasoning_tags", "a list of [opening, closing] tag pairs such as [['<think>', '</think>']]", tags)
    for key in ("target_delimiter", "fewshot_delimiter", "description", "task_alias"):
        _check_type(path, raw, key, (str,), "a string")
    _check_type(path, raw, "generation_kwargs", (dict,), "a mapping such as {until: ['\\n'], max_gen_toks: 32}")
    _check_type(path, raw, "metric_list", (list,), "a list of {metric: name, ...} mappings")
    _check_type(path, raw, "version", (int, float), "a number")
    _check_type(path, raw, "doc_to_visual", TEMPLATE + (list,), "a column name, module:function reference or !function")
    _check_type(path, raw, "process_results", TEMPLATE, "a module:function reference or !function")
    _check_type(path, raw, "process_docs", TEMPLATE, "a module:function reference or !function")
    _check_type(path, raw, "tag", (str, list), "a tag name or a list of them")
    _check_type(path, raw, "metadata", (dict, list), "a mapping such as {version: 1.0} (or lmms-eval's list of them)")
    _check_type(path, raw, "lmms_eval_specific_kwargs", (dict,), "a mapping of model name (or 'default') to prompt settings")
    for key in ("unsafe_code", "should_decontaminate"):
        _check_type(path, raw, key, (bool,), "true or false")
    if raw.get("fewshot_sampler", "random") not in ("random", "first_n"):
        raise _error(path, "fewshot_sampler", "'random' or 'first_n'", raw["fewshot_sampler"])
    _check_type(path, raw, "filter_list", (list,), "a list of {name: ..., filter: [...]} mappings")
    _check_type(path, raw, "video_dir", (str,), "a folder holding the task's videos (relative to the YAML)")
    _check_type(path, raw, "cluster_key", (str,), "the name of a document field (e.g. image_id), or of an image column")
    for key in ("num_fewshot", "repeats"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < (1 if key == "repeats" else 0)):
            raise _error(path, key, "a non-negative integer" if key == "num_fewshot" else "a positive integer", raw[key])


# A group YAML's own fields; any other field is a task setting handed to every member (lm-evaluation-harness).
GROUP_FIELDS = ("group", "group_alias", "task", "aggregate_metric_list", "metadata", "tag", "lmms_eval_specific_kwargs")


@dataclass
class GroupSpec:
    """A group YAML: members (task, group or tag names, YAML paths, or inline task/group mappings), how
    their scores combine, and task settings applied to every member (`overrides`)."""

    group: str
    task: list[Union[str, dict[str, Any]]]
    aggregate_metric_list: list[dict[str, Any]] = field(default_factory=list)
    group_alias: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    source: Optional[Path] = None

    def weight_by_size(self, metric: str) -> bool:
        """Whether the group's `metric` is the mean over all documents (True, the default) or the plain
        mean of its subtasks' scores (an `aggregate_metric_list` entry with `weight_by_size: false`)."""
        for item in self.aggregate_metric_list:
            if item.get("metric") == metric:
                return bool(item.get("weight_by_size", True))
        return True

    def clusters_subtasks(self, metric: str) -> bool:
        """Whether the group's `metric` treats each subtask as a cluster of documents (`cluster_key: subtask` in its
        `aggregate_metric_list` entry): its stderr is then the cluster-robust one over the subtasks."""
        return any(item.get("metric") == metric and item.get("cluster_key") == "subtask" for item in self.aggregate_metric_list)

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
        check_name(path, "group", raw.get("group"))
        tasks = raw.get("task")
        if tasks is None:
            tasks = []
        if not isinstance(tasks, list) or not all(isinstance(t, (str, dict)) for t in tasks):
            raise _error(path, "task", "a list of member names, YAML paths or inline task mappings for a group", tasks)
        for i, item in enumerate(tasks):
            if isinstance(item, dict) and "task" not in item and "group" not in item:
                raise _error(path, f"task[{i}]", "a mapping with a 'task' or 'group' key", item)
        metrics = raw.get("aggregate_metric_list") or []
        if isinstance(metrics, dict):
            metrics = [metrics]
        if not isinstance(metrics, list) or not all(isinstance(m, dict) and "metric" in m for m in metrics):
            raise _error(path, "aggregate_metric_list", "a list of {metric: name, weight_by_size: bool}", metrics)
        for i, item in enumerate(metrics):
            if item.get("cluster_key", "subtask") != "subtask":
                raise _error(path, f"aggregate_metric_list[{i}].cluster_key", "'subtask' (a group's clusters are its subtasks)", item["cluster_key"])
        overrides = {k: v for k, v in raw.items() if k not in GROUP_FIELDS}
        supported = {f.name for f in fields(TaskSpec)} - {"source", "task"}
        unknown = sorted(set(overrides) - supported)
        if unknown:
            raise TaskSpecError(
                f"{path}: unknown group field(s) {unknown}; a group has {list(GROUP_FIELDS)} "
                f"and task settings for its members ({sorted(supported)})"
            )
        if raw.get("lmms_eval_specific_kwargs") is not None:
            overrides["lmms_eval_specific_kwargs"] = raw["lmms_eval_specific_kwargs"]
        metadata = read_metadata(raw.get("metadata"))
        return cls(raw["group"], tasks, metrics, raw.get("group_alias"), dict(metadata), overrides, path)


def is_group(raw: dict[str, Any]) -> bool:
    """A group YAML names a `group` and lists no single `task` name (a `group:` beside `task: name` is
    lm-evaluation-harness's legacy tag)."""
    return "group" in raw and not isinstance(raw.get("task"), str)


def spec_from_dict(raw: dict[str, Any], path: Path) -> Union[TaskSpec, GroupSpec]:
    """A task or a group from a parsed YAML mapping."""
    if isinstance(raw.get("class"), (str, FunctionRef)):
        raise TaskSpecError(f"{path}: field 'class': a task written as a Python class is not supported; only YAML task fields are")
    return GroupSpec.from_dict(raw, path) if is_group(raw) else TaskSpec.from_dict(raw, path)


def load_spec(path: Union[str, Path]) -> Union[TaskSpec, GroupSpec]:
    """A task or a group YAML (a group has a `group:` name and a list of members under `task:`)."""
    path = Path(path)
    return spec_from_dict(read_yaml(path), path)


# The name callers outside `tasks/` (tests/integration/test_builtin_benchmarks.py) still use for `TaskSpec.from_yaml`.
load_task_spec = TaskSpec.from_yaml
