from lmm_lightning.data.datamodule import BenchmarkDataModule, RequestBatch, RequestDataset
from lmm_lightning.data.sampler import BatchIndex, PaddedDistributedSampler, global_batches, plan_rank

__all__ = [
    "BatchIndex",
    "BenchmarkDataModule",
    "PaddedDistributedSampler",
    "RequestBatch",
    "RequestDataset",
    "global_batches",
    "plan_rank",
]
