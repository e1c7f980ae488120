from lmm_lightning.data.datamodule import BenchmarkDataModule, RequestBatch, RequestDataset
from lmm_lightning.data.loading import TaskDocuments
from lmm_lightning.data.sampler import BatchIndex, PaddedDistributedSampler, global_batches, plan_rank, resolve_batch_size

__all__ = [
    "BatchIndex",
    "BenchmarkDataModule",
    "PaddedDistributedSampler",
    "RequestBatch",
    "RequestDataset",
    "TaskDocuments",
    "global_batches",
    "plan_rank",
    "resolve_batch_size",
]
