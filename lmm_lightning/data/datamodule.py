"""The benchmark as a LightningDataModule: documents in, typed request batches out."""

from dataclasses import dataclass
from typing import Any, Optional, Union

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lmm_lightning.data.sampler import BatchIndex, BatchSize, PaddedDistributedSampler
from lmm_lightning.requests import Request, RequestType
from lmm_lightning.tasks import Task, resolve_tasks
from lmm_lightning.tasks.task import select_range


@dataclass(frozen=True)
class RequestBatch:
    """A batch as the model sees it: requests of one type, and which are padding."""

    requests: list[Request]
    padding: list[bool]

    @property
    def request_type(self) -> RequestType:
        return self.requests[0].request_type


@dataclass
class TaskDocuments:
    """The documents of one task selected for evaluation, keyed by their index in the split."""

    task: Task
    docs: dict[int, dict[str, Any]]
    n_original: int


class RequestDataset(Dataset):
    """Indexed by a whole `BatchIndex` (the sampler yields batches)."""

    def __init__(self, requests: list[Request]) -> None:
        self.requests = requests

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: BatchIndex) -> RequestBatch:
        return RequestBatch([self.requests[uid] for uid in index.uids], list(index.padding))


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
    """

    def __init__(
        self,
        tasks: list[str],
        limit: Union[int, float, None] = None,
        offset: int = 0,
        batch_size: BatchSize = 8,
        num_workers: int = 0,
        include_path: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("data.tasks is empty: give at least one task name, YAML path or folder")
        self.task_names = list(tasks)
        self.limit = limit
        self.offset = offset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.include_path = include_path
        self.documents: dict[str, TaskDocuments] = {}
        self.requests: list[Request] = []

    def setup(self, stage: Optional[str] = None) -> None:
        if self.requests:
            return
        for spec in resolve_tasks(self.task_names, self.include_path):
            task = Task(spec)
            split = task.load_split()
            if len(split) == 0:
                raise ValueError(f"{spec.source}: split '{spec.test_split}' of task '{task.name}' has no documents")
            selected = select_range(len(split), self.limit, self.offset)
            docs = split.select(selected).to_list()
            self.documents[task.name] = TaskDocuments(task, dict(zip(selected, docs)), len(split))
            for doc_id, doc in zip(selected, docs):
                self.requests.extend(task.build_requests(doc_id, doc, first_uid=len(self.requests)))

    @property
    def tasks(self) -> dict[str, Task]:
        return {name: entry.task for name, entry in self.documents.items()}

    def predict_dataloader(self) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        dataset = RequestDataset(self.requests)
        sampler = PaddedDistributedSampler(dataset, self.requests, self.batch_size, world_size, rank)
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            collate_fn=_keep_batch,
            num_workers=self.num_workers,
            persistent_workers=False,
        )
