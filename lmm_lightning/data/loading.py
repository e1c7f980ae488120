"""Loading one task's documents: its split, its few-shot pool, the documents selected (limit/offset), and
its images left to decode lazily. Every way this fails becomes one `InputError` naming the task file."""

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import datasets
import PIL.Image

from lmm_lightning.errors import InputError
from lmm_lightning.tasks import Task, TaskSpec
from lmm_lightning.tasks.spec import FunctionRef
from lmm_lightning.tasks.templates import is_reference, resolve_reference


@dataclass
class TaskDocuments:
    """The documents of one task selected for evaluation, keyed by their index in the split.

    `docs` hold the text columns only; `rows` is the selected split itself, indexed lazily for images.
    """

    task: Task
    docs: dict[int, dict[str, Any]]
    n_original: int
    rows: Optional[datasets.Dataset] = None
    positions: dict[int, int] = field(default_factory=dict)
    _raw: dict[str, datasets.Dataset] = field(default_factory=dict, repr=False)  # columns read undecoded

    def visuals(self, doc_id: int) -> list[Any]:
        if not self.task.has_visuals or self.rows is None:
            return []
        return self.task.doc_to_visual(self.rows[self.positions[doc_id]])

    def raw_value(self, doc_id: int, key: str) -> Any:
        """A column the text documents leave out (an image), as stored: an image's encoded bytes, not decoded;
        None when the split has no such column."""
        if self.rows is None or key not in self.rows.column_names:
            return None
        if key not in self._raw:
            column = self.rows.select_columns([key])
            if isinstance(column.features[key], datasets.Image):
                column = column.cast_column(key, datasets.Image(decode=False))
            self._raw[key] = column
        return self._raw[key][self.positions[doc_id]][key]


def image_digest(image: PIL.Image.Image) -> str:
    """The same picture (mode, size and pixels) has the same digest, however and wherever it is stored."""
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def select_range(n_docs: int, limit: Union[int, float, None], offset: int) -> range:
    """The documents to evaluate: `offset` first, then at most `limit`.

    `limit` is a count (an int, or a float with no fraction such as 100.0), a fraction of the split
    (a float in (0, 1]: 0.1 is 10 %, 1.0 all), or None / -1 for all documents. lm-evaluation-harness
    reads a float below 1.0 the same way but 1.0 as one document; -1 means all in both.

    >>> select_range(10, 0.25, 0), select_range(10, 3, 8), select_range(10, -1, 2)
    (range(0, 3), range(8, 10), range(2, 10))
    """
    if offset < 0 or (n_docs and offset >= n_docs):
        raise ValueError(f"offset {offset} is out of range for {n_docs} documents")
    available = n_docs - offset
    if isinstance(limit, bool):
        raise ValueError(f"limit {limit!r} must be a number of documents, a fraction in (0, 1], or -1 for all")
    if limit is None or limit == -1:
        count = available
    elif isinstance(limit, float) and 0 < limit <= 1.0:
        count = int(math.ceil(n_docs * limit))
    elif isinstance(limit, float) and limit > 1.0 and not limit.is_integer():
        raise ValueError(f"limit {limit} is neither a whole number of documents nor a fraction in (0, 1]")
    elif limit <= 0:
        raise ValueError(f"limit {limit} must be positive (a count or a fraction in (0, 1]), or -1 for all documents")
    else:
        count = int(limit)
    return range(offset, offset + min(count, available))


# --- one split -----------------------------------------------------------------------------------
def _resolve_files(data_files: Union[str, list, dict], root: Path) -> Union[str, list, dict]:
    """Make relative data file paths relative to the task YAML's folder."""
    if isinstance(data_files, dict):
        return {split: _resolve_files(files, root) for split, files in data_files.items()}
    if isinstance(data_files, list):
        return [_resolve_files(f, root) for f in data_files]
    path = Path(data_files)
    return str(path if path.is_absolute() else root / path)


def _read_split(spec: TaskSpec, split: str) -> datasets.Dataset:
    if isinstance(spec.dataset_path, FunctionRef):
        return spec.dataset_path.resolve(f"{spec.source}: field 'dataset_path'")(split)
    if is_reference(spec.dataset_path):
        root = spec.source.parent if spec.source else None
        loader = resolve_reference(spec.dataset_path, root, f"{spec.source}: field 'dataset_path'")
        return loader(split)
    kwargs = dict(spec.dataset_kwargs or {})
    kwargs.pop("trust_remote_code", None)  # datasets 4+ runs no loading scripts; lm-eval drops it too
    data_files = kwargs.pop("data_files", spec.data_files)
    if data_files is not None and spec.source is not None:
        data_files = _resolve_files(data_files, spec.source.parent)
    return datasets.load_dataset(spec.dataset_path, spec.dataset_name, data_files=data_files, split=split, **kwargs)


def processed(split: datasets.Dataset, process_docs: Any, spec: TaskSpec) -> datasets.Dataset:
    """A split through the task's `process_docs` (lm-evaluation-harness applies it to every split it reads)."""
    if process_docs is None:
        return split
    try:
        out = process_docs(split)
    except Exception as err:  # noqa: BLE001 - the task's own code
        raise InputError(f"{spec.source or spec.task}: field 'process_docs': {type(err).__name__}: {err}") from None
    return out if isinstance(out, datasets.Dataset) else datasets.Dataset.from_list(list(out))


def load_split(spec: TaskSpec, split: Optional[str] = None) -> datasets.Dataset:
    """One split (the evaluated one by default): a hub dataset, local files relative to the YAML, or a
    `module:function(split)` loader; the many ways `datasets` fails become one message naming the task file."""
    split = split or spec.evaluated_split
    try:
        return _read_split(spec, split)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for missing files or hubs
        raise InputError(
            f"{spec.source or spec.task}: cannot load split '{split}' (dataset_path={spec.dataset_path!r}, "
            f"dataset_name={spec.dataset_name!r}, data_files={spec.data_files!r}): {type(err).__name__}: {err}"
        ) from None


def text_rows(dataset: datasets.Dataset, spec: TaskSpec) -> list[dict[str, Any]]:
    """The documents as dicts; text that is not UTF-8 only shows here, when Arrow decodes it."""
    try:
        return dataset.to_list()
    except UnicodeDecodeError as err:
        raise InputError(
            f"{spec.source or spec.task}: the documents (data_files={spec.data_files!r}) are not valid UTF-8 text "
            f"({err.reason}); expected UTF-8 files"
        ) from None


# --- images ----------------------------------------------------------------------------------------
def image_columns(split: datasets.Dataset) -> list[str]:
    """Columns holding images (decoded lazily), left out of the text view of the documents."""
    is_image = lambda f: isinstance(f, datasets.Image) or (isinstance(f, (list, datasets.Sequence, datasets.List)) and _inner_is_image(f))
    return [name for name, feature in split.features.items() if is_image(feature)]


def _inner_is_image(feature: Any) -> bool:
    inner = feature[0] if isinstance(feature, list) else getattr(feature, "feature", None)
    return isinstance(inner, datasets.Image)


def _without_images(split: datasets.Dataset) -> datasets.Dataset:
    images = image_columns(split)
    return split.remove_columns(images) if images else split


def image_problem(path: str) -> Optional[str]:
    """Why a path in an image column is not an image (None if it is, or is a URL left to the loader)."""
    if "://" in path:
        return None
    if not os.path.isfile(path):
        return "no such file"
    try:
        with PIL.Image.open(path):  # reads the header only
            return None
    except (PIL.UnidentifiedImageError, OSError) as err:
        return f"not an image ({type(err).__name__})"


def path_image_column(task: Task, split: datasets.Dataset) -> Optional[str]:
    """The `doc_to_visual` column when it holds file paths (strings) rather than images."""
    column = task.spec.doc_to_visual
    if not isinstance(column, str) or is_reference(column) or column not in split.column_names:
        return None
    feature = split.features[column]
    inner = getattr(feature, "feature", feature[0] if isinstance(feature, list) else feature)
    return column if isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string") else None


def check_image_paths(rows: datasets.Dataset, column: str, selected: range, where: str) -> None:
    for doc_id, value in zip(selected, rows[column]):
        for path in value if isinstance(value, list) else [value]:
            problem = image_problem(str(path))
            if problem:
                raise InputError(f"{where}: document {doc_id}: column '{column}' holds {path!r}: {problem}; expected an image file")


def image_rows(task: Task, split: datasets.Dataset, selected: range) -> datasets.Dataset:
    """The selected rows, images included; a column of image paths is checked now, before any model
    loads, and then decoded lazily like an image column."""
    rows = split.select(selected)
    paths = path_image_column(task, split)
    if paths:
        check_image_paths(rows, paths, selected, str(task.spec.source or task.spec.task))
        image = datasets.Image() if isinstance(split.features[paths], datasets.Value) else datasets.List(datasets.Image())
        rows = rows.cast_column(paths, image)
    return rows


# --- one task's documents --------------------------------------------------------------------------
def fewshot_documents(task: Task, text_split: datasets.Dataset) -> list[dict[str, Any]]:
    """The few-shot pool, as lm-evaluation-harness finds it: `fewshot_config.split` (or `fewshot_split`)
    through its `process_docs`, else `fewshot_config.samples`, else training, validation or the evaluated
    split; `fewshot_config.fewshot_indices` then picks from it."""
    spec, config = task.spec, task.fewshot_config
    samples = config.samples
    if spec.explicit_fewshot_split is None and samples is not None:
        if isinstance(samples, FunctionRef):
            samples = samples.resolve(f"{spec.source}: field 'fewshot_config.samples'")()
        docs = [dict(d) for d in samples]
    elif task.fewshot_same_split:
        docs = text_rows(text_split, spec)
    else:
        process = task.fewshot_process_docs if spec.explicit_fewshot_split else task.process_docs
        pool = processed(load_split(spec, spec.fewshot_source), process or task.process_docs, spec)
        docs = text_rows(_without_images(pool), spec)
    if config.fewshot_indices:
        docs = [docs[i] for i in config.fewshot_indices]
    return docs


def load_documents(task: Task, limit: Union[int, float, None], offset: int) -> TaskDocuments:
    """The task's selected documents; also fills `task.fewshot_pool` when the task is few-shot (and
    `task.fewshot_plan` for lm-eval's selection, computed over all documents in order)."""
    spec = task.spec
    split = processed(load_split(spec), task.process_docs, spec)
    if len(split) == 0:
        raise InputError(f"{spec.source or spec.task}: split '{spec.evaluated_split}' of task '{task.name}' has no documents")
    text_split = _without_images(split)
    if spec.num_fewshot:
        task.fewshot_pool = list(enumerate(fewshot_documents(task, text_split)))
        if task.fewshot_selection == "lm_eval":
            task.plan_fewshot(text_rows(text_split, spec))
    try:
        selected = select_range(len(split), limit, offset)
    except ValueError as err:
        raise InputError(f"task '{task.name}' ({len(split)} documents): data.limit/data.offset: {err}") from None
    docs = text_rows(text_split.select(selected), spec)
    rows = image_rows(task, split, selected) if task.has_visuals else None
    positions = {doc_id: i for i, doc_id in enumerate(selected)}
    return TaskDocuments(task, dict(zip(selected, docs)), len(split), rows, positions)
