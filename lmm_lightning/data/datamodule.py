"""The benchmark as a LightningDataModule: documents in, typed request batches out."""

import os
from collections.abc import Set as AbstractSet
from dataclasses import replace
from typing import Any, Callable, Optional, Union

import jinja2
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lmm_lightning.data.loading import TaskDocuments, load_documents
from lmm_lightning.data.sampler import BatchIndex, BatchSize, PaddedDistributedSampler, holds_auto
from lmm_lightning.data.video import FrameSampling
from lmm_lightning.errors import InputError
from lmm_lightning.metrics.aggregation import AGGREGATIONS
from lmm_lightning.parallel import data_parallel
from lmm_lightning.requests import Request, RequestType
from lmm_lightning.tasks import GroupSpec, Task, TaskSpec, resolve
from lmm_lightning.tasks.registry import as_folders
from lmm_lightning.tasks.task import FEWSHOT_SELECTIONS, FewshotSelection


class RequestBatch:
    """A batch as the model sees it: requests of one type, which are padding, and their images.

    Images are decoded here, in the data loader workers, not up front on any rank.

    Not a dataclass, on purpose: Lightning's precision plugins ("16-true", "bf16-true", "64-true") pass every
    batch through `apply_to_collection` to cast its floating-point tensors, which deep-copies and rebuilds a
    dataclass field by field and refuses frozen ones (a `Request` is one). A batch holds no tensors (each model
    builds its own), so it passes through as an opaque object, untouched and uncopied.
    """

    __slots__ = ("requests", "padding", "visuals")

    def __init__(self, requests: list[Request], padding: list[bool], visuals: Optional[list[list[Any]]] = None) -> None:
        self.requests = requests
        self.padding = padding
        self.visuals = visuals if visuals is not None else []

    @property
    def request_type(self) -> RequestType:
        return self.requests[0].request_type

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestBatch):
            return NotImplemented
        return (self.requests, self.padding, self.visuals) == (other.requests, other.padding, other.visuals)

    def __repr__(self) -> str:
        return f"RequestBatch(requests={self.requests!r}, padding={self.padding!r}, visuals={self.visuals!r})"


class RequestDataset(Dataset):
    """Indexed by a whole `BatchIndex` (the sampler yields batches)."""

    def __init__(self, requests: list[Request], documents: Optional[dict[str, TaskDocuments]] = None) -> None:
        self.requests = requests
        self.documents = documents or {}

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: BatchIndex) -> RequestBatch:
        """The batch's requests and their images, each distinct image decoded once: the choices of a question share
        its document's, and documents storing the same picture (`Request.shares`) share one decoded copy."""
        requests = [self.requests[uid] for uid in index.uids]
        decoded: dict[tuple, list[Any]] = {}
        visuals = []
        for r in requests:
            key = (r.task, r.shares) if r.shares else (r.task, r.doc_id, bool(r.context))
            if key not in decoded:
                decoded[key] = self._visuals(r)
            visuals.append(decoded[key])
        return RequestBatch(requests, list(index.padding), visuals if any(visuals) else [])

    def _visuals(self, request: Request) -> list[Any]:
        entry = self.documents.get(request.task)
        if entry is None or not request.context:
            return []
        try:
            return entry.visuals(request.doc_id)
        except Exception as err:  # noqa: BLE001 - a missing or corrupt image or video, whatever the decoder raises
            kind = "video" if entry.has_videos else "image"
            raise InputError(f"task '{request.task}', doc_id {request.doc_id}: cannot load its {kind}: {type(err).__name__}: {err}") from None


def all_min(value: int, device: Any) -> int:
    """The minimum of `value` over all ranks (the value itself on one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN)
    return int(tensor.item())


def _keep_batch(batch: RequestBatch) -> RequestBatch:
    return batch


class AgreedInputError(InputError):
    """An input error that every rank raises together (agreed after setup); rank 0 alone prints it."""

    def __init__(self, message: str, rank: int) -> None:
        super().__init__(message)
        self.rank = rank


def agree_on_setup(error: Optional[Exception]) -> None:
    """Every rank learns whether any rank failed to set up its data, so none goes on to wait in a
    collective for a rank that has gone: all of them raise the first failure's message together."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        if error is not None:
            raise error
        return
    mine = None if error is None else (type(error).__name__, str(error), isinstance(error, InputError))
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, mine)
    failed = [(rank, e) for rank, e in enumerate(gathered) if e is not None]
    if not failed:
        return
    first, (name, message, is_input) = failed[0]
    if is_input:
        where = "" if len(failed) == len(gathered) else f"rank {first}: "
        raise AgreedInputError(where + message, torch.distributed.get_rank()) from None
    if error is not None:
        raise error
    raise RuntimeError(f"rank {first} failed while setting up the data: {name}: {message}")


# Generation settings a task (or data.generation_kwargs) may set: what each must be.
GENERATION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "until": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)), "a string or a list of strings"),
    "max_new_tokens": (lambda v: _is_int(v) and v >= 1, "an integer of at least 1"),
    "max_gen_toks": (lambda v: _is_int(v) and v >= 1, "an integer of at least 1"),
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_generation_kwargs(kwargs: dict[str, Any], where: str) -> None:
    """The settings this harness reads must have usable values (others pass through unchecked)."""
    for key, value in kwargs.items():
        valid, expected = GENERATION_CHECKS.get(key, (lambda v: True, ""))
        if not valid(value):
            raise InputError(f"{where} key '{key}': expected {expected}, got {value!r}")


def check_generation_overrides(overrides: Any) -> None:
    """`data.generation_kwargs`: {task name or "*": {setting: value}}, with settings this harness knows."""
    if not isinstance(overrides, dict):
        raise InputError(f"data.generation_kwargs: expected a mapping of task name to settings, got {overrides!r}")
    for task, kwargs in overrides.items():
        where = f"data.generation_kwargs[{task!r}]"
        if not isinstance(kwargs, dict):
            raise InputError(f"{where}: expected a mapping such as {{max_new_tokens: 16}}, got {kwargs!r}")
        unknown = sorted(set(kwargs) - set(GENERATION_CHECKS))
        if unknown:
            raise InputError(f"{where}: unknown key(s) {unknown}; expected some of {list(GENERATION_CHECKS)}")
        check_generation_kwargs(kwargs, where)


def check_batch_size(batch_size: Any) -> None:
    """One size, 'auto', or a size per request type, whose keys must be request types."""
    known = [kind.value for kind in RequestType]
    sizes = batch_size if isinstance(batch_size, dict) else {None: batch_size}
    for kind, size in sizes.items():
        where = "data.batch_size" if kind is None else f"data.batch_size[{kind!r}]"
        if kind is not None and kind not in known:
            raise InputError(f"{where}: unknown request type {kind!r}; expected some of {known}")
        if size != "auto" and not (_is_int(size) and size >= 1):
            raise InputError(f"{where}: expected a positive integer or 'auto', got {size!r}")


def check_at_least(option: str, value: Any, minimum: int) -> None:
    if value is not None and not (_is_int(value) and value >= minimum):
        raise InputError(f"data.{option}: expected an integer of at least {minimum}, got {value!r}")


def frame_sampling_of(video_frames: Any, video_fps: Any, max_video_frames: Any) -> Optional[FrameSampling]:
    """The data module's video options as a `FrameSampling` (None for `video_frames: model`), checked one by one."""
    if video_frames != "model" and not (_is_int(video_frames) and video_frames >= 1):
        raise InputError(f"data.video_frames: expected a positive number of frames per video or 'model', got {video_frames!r}")
    if video_fps is not None and not (_is_number(video_fps) and video_fps > 0):
        raise InputError(f"data.video_fps: expected a positive number of frames per second, got {video_fps!r}")
    check_at_least("max_video_frames", max_video_frames, 1)
    if video_fps is not None:
        return FrameSampling(count=None, fps=float(video_fps), max_frames=max_video_frames)
    if video_frames == "model":
        return None
    return FrameSampling(count=video_frames, max_frames=max_video_frames)


def check_aggregations(task: Task, where: str) -> None:
    for i, metric in enumerate(task.metrics):
        if not isinstance(metric.aggregation, str) or metric.aggregation not in AGGREGATIONS:
            raise InputError(
                f"{where}: field 'metric_list[{i}].aggregation': unknown aggregation {metric.aggregation!r}; "
                f"expected one of {sorted(AGGREGATIONS)}"
            )


MIN_SHARED_PREFIX_CHARS = 32  # a shorter common start (a bare "Question:") is not worth computing apart


def with_shared_prefixes(requests: list[Request]) -> list[Request]:
    """A task's requests, each with the start of the context that all requests of its type share
    (`Request.shared_prefix`: the description and few-shot examples when every question has the same ones).
    Found over the whole task, so a request's prefix never depends on its batch, rank or world size.

    >>> rs = [Request(i, "t", i, RequestType.LOGLIKELIHOOD, "Examples: 1 2 3 4 5 6 7 8 9 10 11 12 13 14. Q" + q) for i, q in enumerate("ab")]
    >>> [r.shared_prefix for r in with_shared_prefixes(rs)]
    ['Examples: 1 2 3 4 5 6 7 8 9 10 11 12 13 14. Q', 'Examples: 1 2 3 4 5 6 7 8 9 10 11 12 13 14. Q']
    """
    by_type: dict[RequestType, list[str]] = {}
    for request in requests:
        if request.context:
            by_type.setdefault(request.request_type, []).append(request.context)
    prefixes = {kind: os.path.commonprefix(contexts) if len(contexts) > 1 else "" for kind, contexts in by_type.items()}
    out = []
    for request in requests:
        prefix = prefixes.get(request.request_type, "") if request.context else ""
        out.append(replace(request, shared_prefix=prefix) if len(prefix) >= MIN_SHARED_PREFIX_CHARS else request)
    return out


class BenchmarkDataModule(LightningDataModule):
    """Loads each task's documents, selects them globally (limit/offset) and builds requests.

    Args:
        tasks: task names, YAML paths or folders of YAMLs.
        limit: documents per task: an int, or a fraction of the split when a float <= 1.
        offset: documents skipped at the start of each task.
        batch_size: one size, or a size per request type (`{"loglikelihood": 32, "generate_until": 8}`).
        num_workers: data loader workers preparing batches while the model runs.
        include_path: folders of task YAMLs (one folder or a list) searched by name after the builtin
            tasks, e.g. lm-evaluation-harness's `lm_eval/tasks`; a name they define wins over a builtin one.
        seed: seeds few-shot sampling per (seed, task, doc_id) (lm-eval's fewshot seed under "lm_eval").
        max_batch_size: the ceiling of `batch_size: auto`.
        generation_kwargs: per-task overrides of the YAML's generation_kwargs, e.g.
            `{"capitals_gen": {"max_new_tokens": 16}}`; the key "*" applies to every task.
        num_fewshot: overrides every task's `num_fewshot` (e.g. 5 for MMLU 5-shot).
        fewshot_selection: "seeded" (each document's examples drawn from (seed, task, doc_id): the same
            on any world size) or "lm_eval" (the examples lm-evaluation-harness 0.4.13 draws in one
            process: its sampler's `random.Random(seed)` advanced document by document, in order).
        fewshot_as_multiturn: give each request its context as chat turns too (description as system, each
            example a user and an assistant turn), which a model with `use_chat_template` sends through its
            chat template instead of one user turn (lm-eval's `--fewshot_as_multiturn`).
        prompt_model: the lmms-eval model name (e.g. `qwen2_vl`) whose entry of a task's
            `lmms_eval_specific_kwargs` its prompts use; tasks without one use the `default` entry.
        video_frames: frames taken from each video, spread uniformly from the first to the last (lmms-eval's
            `max_frames_num`), or "model": the model's own preference (its video processor's `num_frames` or
            `fps`), handed over by the EvaluationCallback once the model is loaded.
        video_fps: one frame every 1/fps seconds instead of a fixed count (capped by max_video_frames).
        max_video_frames: at most this many frames per video, re-spread uniformly when over.
    """

    def __init__(
        self,
        tasks: list[str],
        limit: Union[int, float, None] = None,
        offset: int = 0,
        batch_size: BatchSize = 8,
        num_workers: int = 0,
        include_path: Union[str, list[str], None] = None,
        seed: int = 1234,
        max_batch_size: int = 64,
        generation_kwargs: Optional[dict[str, dict[str, Any]]] = None,
        num_fewshot: Optional[int] = None,
        fewshot_selection: FewshotSelection = "seeded",
        fewshot_as_multiturn: bool = False,
        prompt_model: Optional[str] = None,
        video_frames: Union[int, str] = 8,
        video_fps: Optional[float] = None,
        max_video_frames: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_batch_size(batch_size)
        check_at_least("num_workers", num_workers, 0)
        check_at_least("max_batch_size", max_batch_size, 1)
        check_at_least("num_fewshot", num_fewshot, 0)
        check_generation_overrides(generation_kwargs or {})
        for folder in as_folders(include_path):
            if not folder.is_dir():
                raise InputError(f"data.include_path: {str(folder)!r} is not a folder; expected a folder of task YAMLs (or a list of them)")
        if fewshot_selection not in FEWSHOT_SELECTIONS:
            raise InputError(f"data.fewshot_selection: expected one of {list(FEWSHOT_SELECTIONS)}, got {fewshot_selection!r}")
        self.task_names = list(tasks)
        self.limit = limit
        self.offset = offset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.include_path = include_path
        self.seed = seed
        self.max_batch_size = max_batch_size
        self.generation_kwargs = generation_kwargs or {}
        self.num_fewshot = num_fewshot
        self.fewshot_selection = fewshot_selection
        self.fewshot_as_multiturn = bool(fewshot_as_multiturn)
        self.prompt_model = prompt_model
        self.video_frames, self.video_fps, self.max_video_frames = video_frames, video_fps, max_video_frames
        self._frame_sampling = frame_sampling_of(video_frames, video_fps, max_video_frames)  # None: the model's, later
        self.documents: dict[str, TaskDocuments] = {}
        self.groups: list[GroupSpec] = []
        self.group_subtasks: dict[str, list[str]] = {}
        self.requests: list[Request] = []
        self._done_uids: frozenset[int] = frozenset()
        self._connected_batch_size: Optional[BatchSize] = None

    def setup(self, stage: Optional[str] = None) -> None:
        """Load and check everything on every rank; ranks then agree, so a bad input on one rank ends all."""
        if self.requests:
            return
        error = None
        try:
            self._setup_tasks()
        except Exception as err:  # noqa: BLE001 - shared with the other ranks, then raised on each
            error = err
        agree_on_setup(error)

    def _setup_tasks(self) -> None:
        if not self.task_names:
            raise InputError("data.tasks is empty: give at least one task name, YAML path or folder")
        resolved = resolve(self.task_names, self.include_path)
        self.groups, self.group_subtasks = resolved.groups, resolved.subtasks
        names = [spec.task for spec in resolved.tasks]
        unknown = sorted(set(self.generation_kwargs) - {"*", *names})
        if unknown:
            raise InputError(f"data.generation_kwargs: unknown task(s) {unknown}; expected '*' or some of the tasks run: {names}")
        for spec in resolved.tasks:
            overrides = {**self.generation_kwargs.get("*", {}), **self.generation_kwargs.get(spec.task, {})}
            if overrides:
                spec = replace(spec, generation_kwargs={**spec.generation_kwargs, **overrides})
            if self.num_fewshot is not None:
                spec = replace(spec, num_fewshot=self.num_fewshot)
            self._setup_task(spec)

    def _setup_task(self, spec: TaskSpec) -> None:
        where = spec.source or spec.task
        check_generation_kwargs(spec.generation_kwargs, f"{where}: field 'generation_kwargs'")
        task = Task(spec, seed=self.seed, fewshot_selection=self.fewshot_selection, fewshot_as_multiturn=self.fewshot_as_multiturn,
                    prompt_model=self.prompt_model)
        check_aggregations(task, str(where))
        documents = load_documents(task, self.limit, self.offset)
        self.documents[task.name] = documents
        if documents.has_videos:
            task.frame_sampling = self._frame_sampling or FrameSampling()  # part of its answers: other frames, other answers
        shares = documents.media_keys()  # the same picture, the same key: its questions batched together
        first = len(self.requests)
        for doc_id, doc in documents.docs.items():
            try:
                built = task.build_requests(doc_id, doc, first_uid=len(self.requests))
                if doc_id in shares:
                    built = [replace(request, shares=shares[doc_id]) for request in built]
                self.requests.extend(built)
                empty = task.kind.empty_answer(doc)
                if empty:
                    raise InputError(f"{where}: document {doc_id}: {empty}")
            except InputError:
                raise
            except (KeyError, ValueError, TypeError, IndexError, jinja2.TemplateError) as err:
                raise InputError(
                    f"{where}: document {doc_id}: {type(err).__name__}: {err}; the document has columns {sorted(doc)}"
                ) from None
        self.requests[first:] = with_shared_prefixes(self.requests[first:])

    @property
    def tasks(self) -> dict[str, Task]:
        return {name: entry.task for name, entry in self.documents.items()}

    @property
    def done_uids(self) -> frozenset[int]:
        """The requests an earlier run answered, left out of the batches; set through `connect`."""
        return self._done_uids

    @property
    def wants_model_frames(self) -> bool:
        """Whether the frames taken from each video are the model's choice (`video_frames: model`)."""
        return self._frame_sampling is None

    def connect(
        self,
        done_uids: Optional[AbstractSet[int]] = None,
        batch_size: Optional[BatchSize] = None,
        frame_sampling: Optional[FrameSampling] = None,
    ) -> None:
        """The one door for settings known only once the run has started, before any dataloader exists.

        Args:
            done_uids: the requests an earlier run answered (resume): no batch holds them.
            batch_size: the sizes to plan with in place of `batch_size: auto`, from `resolve_batch_size`.
            frame_sampling: the model's frames per video, for `video_frames: model`.

        A setting left out keeps the value it has.
        """
        if done_uids is not None:
            self._done_uids = frozenset(done_uids)
        if batch_size is not None:
            if holds_auto(batch_size):
                raise ValueError(f"connect: batch_size {batch_size!r} still holds 'auto'; resolve it with resolve_batch_size")
            check_batch_size(batch_size)
            self._connected_batch_size = batch_size
        if frame_sampling is not None:
            self._frame_sampling = frame_sampling
            for documents in self.documents.values():
                if documents.has_videos:
                    documents.task.frame_sampling = frame_sampling

    def resolved_batch_size(self) -> BatchSize:
        """The batch size the sampler plans with: the one `connect` handed over, else `batch_size` as given.

        `auto` is resolved by whoever loads the model (the EvaluationCallback probes it once the model is
        loaded and connects the result); the data module never reaches into the model itself."""
        if self._connected_batch_size is not None:
            return self._connected_batch_size
        if holds_auto(self.batch_size):
            raise InputError(
                "data.batch_size: 'auto' is probed on the loaded model by the EvaluationCallback; without it, "
                "resolve it with lmm_lightning.data.resolve_batch_size and hand it over with connect(batch_size=...)"
            )
        return self.batch_size

    def predict_dataloader(self) -> DataLoader:
        replicas, rank = data_parallel(self.trainer)  # tensor-parallel ranks of one group share their batches
        dataset = RequestDataset(self.requests, self.documents)
        sampler = PaddedDistributedSampler(dataset, self.requests, self.resolved_batch_size(), replicas, rank, self.done_uids)
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            collate_fn=_keep_batch,
            num_workers=self.num_workers,
            persistent_workers=False,
        )
