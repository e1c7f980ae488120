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

from lmm_lightning.data.video import Clip, FrameSampling, VideoError, decode, describe, probe
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
    has_videos: bool = False  # whether `doc_to_visual` names videos (checked, header by header, at set-up)

    def visuals(self, doc_id: int) -> list[Any]:
        """The document's images and decoded videos (`Video`): called in the data loader workers, batch by batch."""
        if not self.task.has_visuals or self.rows is None:
            return []
        items = self.task.doc_to_visual(self.rows[self.positions[doc_id]])
        if not self.has_videos:
            return items
        folder = self.task.spec.video_folder
        sampling = self.task.frame_sampling or FrameSampling()  # the frames the data module chose (Task.frame_sampling)
        return [decode(media_source(item, folder), sampling) if is_video(item, folder) else item for item in items]

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


    def media_keys(self) -> dict[int, str]:
        """Per document, a digest of the image it stores in the `doc_to_visual` column, read undecoded: documents
        holding the same picture (POPE asks 18 questions about each) get the same key, so they share batches and
        the image is decoded and encoded once for them (`Request.shares`). Empty when `doc_to_visual` is not a
        plain image column (a function may crop or draw on each document's image differently)."""
        column = self.task.spec.doc_to_visual
        if self.rows is None or not isinstance(column, str) or is_reference(column) or column not in image_columns(self.rows):
            return {}
        feature = self.rows.features[column]
        undecoded = datasets.Image(decode=False) if isinstance(feature, datasets.Image) else datasets.List(datasets.Image(decode=False))
        raw = self.rows.select_columns([column]).cast_column(column, undecoded)
        by_position = {position: doc_id for doc_id, position in self.positions.items()}
        keys = {}
        for start, batch in enumerate(raw.iter(batch_size=256)):
            for offset, value in enumerate(batch[column]):
                doc_id = by_position.get(start * 256 + offset)
                if doc_id is not None:
                    keys[doc_id] = stored_digest(value)
        return keys


def stored_digest(value: Any) -> str:
    """A digest of an image (or a list of them) as stored: its encoded bytes, else its path.

    >>> stored_digest({"bytes": b"abc", "path": None}) == stored_digest({"bytes": b"abc", "path": "x.png"})
    True
    """
    digest = hashlib.sha256()
    for item in value if isinstance(value, list) else [value]:
        item = item or {}
        digest.update(item["bytes"] if item.get("bytes") else str(item.get("path")).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


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


# `dataset_kwargs` lmms-eval reads itself and removes before `load_dataset` (the video cache folder and how it is filled).
LMMS_EVAL_DATASET_KWARGS = ("video", "cache_dir", "create_link", "From_YouTube", "force_download", "force_unzip", "local_files_only")


def _read_split(spec: TaskSpec, split: str) -> datasets.Dataset:
    if isinstance(spec.dataset_path, FunctionRef):
        return spec.dataset_path.resolve(f"{spec.source}: field 'dataset_path'")(split)
    if is_reference(spec.dataset_path):
        root = spec.source.parent if spec.source else None
        loader = resolve_reference(spec.dataset_path, root, f"{spec.source}: field 'dataset_path'")
        return loader(split)
    kwargs = dict(spec.dataset_kwargs or {})
    kwargs.pop("trust_remote_code", None)  # datasets 4+ runs no loading scripts; lm-eval drops it too
    for key in LMMS_EVAL_DATASET_KWARGS:  # lmms-eval's own settings (where its videos live), not `load_dataset`'s
        kwargs.pop(key, None)
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
    first = rows[0][paths] if paths and rows.num_rows else None
    if is_video(first[0] if isinstance(first, list) and first else first, task.spec.video_folder):
        return rows  # a column of video paths: checked by `check_videos`, decoded by `TaskDocuments.visuals`
    if paths:
        check_image_paths(rows, paths, selected, str(task.spec.source or task.spec.task))
        image = datasets.Image() if isinstance(split.features[paths], datasets.Value) else datasets.List(datasets.Image())
        rows = rows.cast_column(paths, image)
    return rows


# --- videos ---------------------------------------------------------------------------------------
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts")


def video_bytes(data: bytes) -> bool:
    """Whether in-memory bytes are a video container (MP4/MOV `ftyp`, Matroska/WebM EBML, AVI), not an image."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")


def resolve_video(path: Union[str, Path], folder: Path) -> Path:
    """A video path as `doc_to_visual` gives it, relative to the task's video folder; a file missing under its own
    suffix is looked for under the others (Video-MME ships some videos as .MP4 or .mkv where its list says .mp4)."""
    path = Path(os.path.expanduser(str(path)))
    path = path if path.is_absolute() else folder / path
    if path.exists() or not path.suffix:
        return path
    for suffix in VIDEO_SUFFIXES + tuple(s.upper() for s in VIDEO_SUFFIXES):
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    return path


def _stored(item: Any) -> Any:
    """A datasets Video/binary value left undecoded ({"bytes": ..., "path": ...}) as its bytes, else its path."""
    return item.get("bytes") or item.get("path") if isinstance(item, dict) else item


def is_video(item: Any, folder: Path) -> bool:
    """A video (a clip, a path with a video suffix or to a folder of frames, or video bytes) rather than an image."""
    if isinstance(item, Clip):
        return True
    item = _stored(item)
    if isinstance(item, (bytes, bytearray)):
        return video_bytes(bytes(item[:16]))
    if isinstance(item, (str, Path)):
        return Path(str(item)).suffix.lower() in VIDEO_SUFFIXES or resolve_video(item, folder).is_dir()
    return False


def media_source(item: Any, folder: Path) -> Union[Path, bytes, Clip]:
    """What the decoder reads for a video item: its resolved path, its bytes, or the clip with its resolved path."""
    if isinstance(item, Clip):
        return Clip(str(resolve_video(item.path, folder)), item.start, item.end, item.fps)
    item = _stored(item)
    return bytes(item) if isinstance(item, (bytes, bytearray)) else resolve_video(item, folder)


def check_videos(task: Task, docs: dict[int, dict[str, Any]]) -> bool:
    """Whether the task's `doc_to_visual` names videos; if so, each one's header is read now, so a missing or corrupt
    video is one error naming the file and the document before any model loads. Image tasks are left alone: their
    `doc_to_visual` needs image columns the text documents do not hold, or gives no video for the first document."""
    if not task.has_visuals or not docs:
        return False
    where, folder = str(task.spec.source or task.spec.task), task.spec.video_folder
    first = next(iter(docs.values()))
    try:
        if not any(is_video(item, folder) for item in task.doc_to_visual(first)):
            return False
    except Exception:  # noqa: BLE001 - an image task's function reading an image column the text view leaves out
        return False
    checked: dict[str, Optional[str]] = {}
    for doc_id, doc in docs.items():
        try:
            items = task.doc_to_visual(doc)
        except Exception as err:  # noqa: BLE001 - the task's own function
            raise InputError(f"{where}: document {doc_id}: field 'doc_to_visual': {type(err).__name__}: {err}") from None
        for item in items:
            if not is_video(item, folder):
                continue
            source = media_source(item, folder)
            name = describe(source.path if isinstance(source, Clip) else source)
            if name not in checked:
                try:
                    probe(source)
                    checked[name] = None
                except VideoError as err:
                    checked[name] = str(err)
            if checked[name]:
                raise InputError(f"{where}: document {doc_id}: video {checked[name]} (video folder {folder})")
    return True


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
    by_id = dict(zip(selected, docs))
    return TaskDocuments(task, by_id, len(split), rows, positions, has_videos=check_videos(task, by_id))
