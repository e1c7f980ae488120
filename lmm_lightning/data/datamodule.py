"""The benchmark as a LightningDataModule: documents in, typed request batches out."""

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

import datasets
import jinja2
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lmm_lightning.data.sampler import BatchIndex, BatchSize, PaddedDistributedSampler
from lmm_lightning.requests import Request, RequestType
from lmm_lightning.errors import InputError
from lmm_lightning.tasks import GroupSpec, Task, TaskSpec, resolve
from lmm_lightning.tasks.task import select_range


@dataclass(frozen=True)
class RequestBatch:
    """A batch as the model sees it: requests of one type, which are padding, and their images.

    Images are decoded here, in the data loader workers, not up front on any rank.
    """

    requests: list[Request]
    padding: list[bool]
    visuals: list[list[Any]] = field(default_factory=list)

    @property
    def request_type(self) -> RequestType:
        return self.requests[0].request_type


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

    def visuals(self, doc_id: int) -> list[Any]:
        if not self.task.has_visuals or self.rows is None:
            return []
        return self.task.doc_to_visual(self.rows[self.positions[doc_id]])


def image_columns(split: datasets.Dataset) -> list[str]:
    """Columns holding images (decoded lazily), left out of the text view of the documents."""
    is_image = lambda f: isinstance(f, datasets.Image) or (isinstance(f, (list, datasets.Sequence, datasets.List)) and _inner_is_image(f))
    return [name for name, feature in split.features.items() if is_image(feature)]


def _inner_is_image(feature: Any) -> bool:
    inner = feature[0] if isinstance(feature, list) else getattr(feature, "feature", None)
    return isinstance(inner, datasets.Image)


class RequestDataset(Dataset):
    """Indexed by a whole `BatchIndex` (the sampler yields batches)."""

    def __init__(self, requests: list[Request], documents: Optional[dict[str, TaskDocuments]] = None) -> None:
        self.requests = requests
        self.documents = documents or {}

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: BatchIndex) -> RequestBatch:
        requests = [self.requests[uid] for uid in index.uids]
        visuals = [self._visuals(r) for r in requests]
        return RequestBatch(requests, list(index.padding), visuals if any(visuals) else [])

    def _visuals(self, request: Request) -> list[Any]:
        entry = self.documents.get(request.task)
        if entry is None or not request.context:
            return []
        try:
            return entry.visuals(request.doc_id)
        except Exception as err:  # noqa: BLE001 - a missing or corrupt image, whatever the decoder raises
            raise InputError(f"task '{request.task}', doc_id {request.doc_id}: cannot load its image: {type(err).__name__}: {err}") from None


def _load(task: Task, split: Optional[str], where: Any) -> datasets.Dataset:
    """Load a split, turning the many ways this fails into one message naming the task file."""
    try:
        return task.load_split(split)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for missing files or hubs
        spec = task.spec
        raise InputError(
            f"{where}: cannot load split '{split or spec.evaluated_split}' (dataset_path={spec.dataset_path!r}, "
            f"dataset_name={spec.dataset_name!r}, data_files={spec.data_files!r}): {type(err).__name__}: {err}"
        ) from None


def _all_min(value: int, device: Any) -> int:
    """The minimum of `value` over all ranks (the value itself on one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN)
    return int(tensor.item())


def _keep_batch(batch: RequestBatch) -> RequestBatch:
    return batch


class BenchmarkDataModule(LightningDataModule):
    """Loads each task's documents, selects them globally (limit/offset) and builds requests.

    Args:
        tasks: task names, YAML paths or folders of YAMLs.
        limit: documents per task: an int, or a fraction of the split when a float <= 1.
        offset: documents skipped at the start of each task.
        batch_size: one size, or a size per request type (`{"loglikelihood": 32, "generate_until": 8}`).
        num_workers: data loader workers preparing batches while the model runs.
        include_path: an extra folder of task YAMLs to search by name.
        seed: seeds few-shot sampling per (seed, task, doc_id).
        max_batch_size: the ceiling of `batch_size: auto`.
        generation_kwargs: per-task overrides of the YAML's generation_kwargs, e.g.
            `{"capitals_gen": {"max_new_tokens": 16}}`; the key "*" applies to every task.
        num_fewshot: overrides every task's `num_fewshot` (e.g. 5 for MMLU 5-shot).
    """

    def __init__(
        self,
        tasks: list[str],
        limit: Union[int, float, None] = None,
        offset: int = 0,
        batch_size: BatchSize = 8,
        num_workers: int = 0,
        include_path: Optional[str] = None,
        seed: int = 1234,
        max_batch_size: int = 64,
        generation_kwargs: Optional[dict[str, dict[str, Any]]] = None,
        num_fewshot: Optional[int] = None,
    ) -> None:
        super().__init__()
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
        self.documents: dict[str, TaskDocuments] = {}
        self.groups: list[GroupSpec] = []
        self.group_subtasks: dict[str, list[str]] = {}
        self.requests: list[Request] = []
        self.done_uids: set[int] = set()  # answered by an earlier run (set by the evaluation callback)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.requests:
            return
        if not self.task_names:
            raise InputError("data.tasks is empty: give at least one task name, YAML path or folder")
        resolved = resolve(self.task_names, self.include_path)
        self.groups, self.group_subtasks = resolved.groups, resolved.subtasks
        for spec in resolved.tasks:
            overrides = {**self.generation_kwargs.get("*", {}), **self.generation_kwargs.get(spec.task, {})}
            if overrides:
                spec = replace(spec, generation_kwargs={**spec.generation_kwargs, **overrides})
            if self.num_fewshot is not None:
                if self.num_fewshot < 0:
                    raise InputError(f"data.num_fewshot: expected a non-negative integer, got {self.num_fewshot}")
                spec = replace(spec, num_fewshot=self.num_fewshot)
            self._setup_task(spec)

    def _setup_task(self, spec: TaskSpec) -> None:
        where = spec.source or spec.task
        task = Task(spec, seed=self.seed)
        split = _load(task, None, where)
        if len(split) == 0:
            raise InputError(f"{where}: split '{spec.evaluated_split}' of task '{task.name}' has no documents")
        images = image_columns(split)
        text_split = split.remove_columns(images) if images else split
        if spec.num_fewshot:
            pool = text_split if task.fewshot_same_split else _load(task, spec.fewshot_source, where)
            pool = pool.remove_columns(image_columns(pool)) if image_columns(pool) else pool
            task.fewshot_pool = list(enumerate(pool.to_list()))
        try:
            selected = select_range(len(split), self.limit, self.offset)
        except ValueError as err:
            raise InputError(f"task '{task.name}' ({len(split)} documents): data.limit/data.offset: {err}") from None
        docs = text_split.select(selected).to_list()
        rows = split.select(selected) if task.has_visuals else None
        positions = {doc_id: i for i, doc_id in enumerate(selected)}
        self.documents[task.name] = TaskDocuments(task, dict(zip(selected, docs)), len(split), rows, positions)
        for doc_id, doc in zip(selected, docs):
            try:
                self.requests.extend(task.build_requests(doc_id, doc, first_uid=len(self.requests)))
            except InputError:
                raise
            except (KeyError, ValueError, TypeError, IndexError, jinja2.TemplateError) as err:
                raise InputError(
                    f"{where}: document {doc_id}: {type(err).__name__}: {err}; the document has columns {sorted(doc)}"
                ) from None

    @property
    def tasks(self) -> dict[str, Task]:
        return {name: entry.task for name, entry in self.documents.items()}

    def resolved_batch_size(self) -> BatchSize:
        """Numbers as given; `auto` probed on the model with the longest request of each type, and
        the smallest answer over all ranks kept, so every rank plans the same batches."""
        sizes = self.batch_size if isinstance(self.batch_size, dict) else {t.value: self.batch_size for t in RequestType}
        if not any(v == "auto" for v in sizes.values()):
            return self.batch_size
        model = self.trainer.lightning_module
        resolved = {}
        for kind in RequestType:
            size = sizes.get(kind.value, 1)
            requests = [r for r in self.requests if r.request_type is kind]
            if size != "auto" or not requests:
                resolved[kind.value] = 1 if size == "auto" else size
                continue
            longest = max(requests, key=lambda r: (r.length, -r.uid))
            resolved[kind.value] = _all_min(model.find_max_batch_size(longest, self.max_batch_size), model.device)
        return resolved

    def predict_dataloader(self) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        dataset = RequestDataset(self.requests, self.documents)
        sampler = PaddedDistributedSampler(dataset, self.requests, self.resolved_batch_size(), world_size, rank, self.done_uids)
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            collate_fn=_keep_batch,
            num_workers=self.num_workers,
            persistent_workers=False,
        )
