"""A progress bar per task counting the requests answered by the whole world, not just rank 0.

Rank 0 alone sees 1/N of the work. Every `sync_every` batches (and after the last one) each rank
adds its per-task counts since the last sync into one small all-reduce; between syncs rank 0
extrapolates its own new counts times the world size. Every rank runs the same number of batches
(the sampler pads them), so every rank calls the same all-reduces at the same batches: no rank
ever waits on a collective another rank skips. Ranks other than 0 count and sync but draw nothing.
"""

import sys
from collections import Counter
from typing import Any, Optional

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm

from lmm_lightning.data.datamodule import BenchmarkDataModule, RequestBatch
from lmm_lightning.parallel import data_parallel, is_leader


class WorldProgress:
    """Requests answered per task across all ranks: exact sums at each sync, extrapolated in between."""

    def __init__(self, totals: dict[str, int], world_size: int) -> None:
        self.tasks = list(totals)
        self.totals = np.array([totals[t] for t in self.tasks], dtype=np.int64)
        self.world_size = world_size
        self.synced = np.zeros(len(self.tasks), dtype=np.int64)  # the world's counts at the last sync
        self.pending = np.zeros(len(self.tasks), dtype=np.int64)  # this rank's counts since then
        self._index = {t: i for i, t in enumerate(self.tasks)}

    def add(self, counts: dict[str, int]) -> None:
        """Count one batch's real (not padding) requests of this rank."""
        for task, count in counts.items():
            self.pending[self._index[task]] += count

    def merge(self, world_pending: np.ndarray) -> None:
        """Take the sum over ranks of their pending counts (the all-reduce's result)."""
        self.synced += np.asarray(world_pending, dtype=np.int64)
        self.pending[:] = 0

    def estimate(self) -> dict[str, int]:
        """The world's answered requests per task: synced counts plus this rank's pending ones times the world size."""
        guess = np.minimum(self.synced + self.pending * self.world_size, self.totals)
        return dict(zip(self.tasks, guess.tolist()))


def should_sync(batches_done: int, num_batches: float, every: int) -> bool:
    """True after every `every`-th batch and after the last: the same answer on every rank."""
    return batches_done % every == 0 or batches_done == num_batches


def batch_counts(batch: RequestBatch) -> dict[str, int]:
    return Counter(r.task for r, padding in zip(batch.requests, batch.padding) if not padding)


class EvalProgressBar(TQDMProgressBar):
    """One bar per task: requests answered by all ranks / total, with requests per second and ETA.

    Falls back to Lightning's batch bar when the datamodule is not a `BenchmarkDataModule`.

    Args:
        sync_every: batches between the small all-reduces that count other ranks' requests.
        leave: keep the finished bars on screen.
    """

    def __init__(self, sync_every: int = 8, leave: bool = True, **kwargs: Any) -> None:
        super().__init__(leave=leave, **kwargs)
        if sync_every < 1:
            raise ValueError(f"sync_every must be at least 1, got {sync_every}")
        self.sync_every = sync_every
        self.progress: Optional[WorldProgress] = None
        self.bars: dict[str, tqdm] = {}
        self.batches_done = 0
        self.num_batches: float = float("inf")
        self.counts = True  # this rank's answers count (one rank per tensor-parallel group)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, BenchmarkDataModule):
            self.progress = None
            return super().on_predict_start(trainer, pl_module)
        todo = Counter(r.task for r in datamodule.requests if r.uid not in datamodule.done_uids)
        # Ranks of one tensor-parallel group answer the same batches: one of them counts, per data-parallel replica.
        self.progress = WorldProgress({task: todo[task] for task in datamodule.documents}, data_parallel(trainer)[0])
        self.counts = is_leader(trainer)
        self.batches_done = 0
        self.num_batches = sum(trainer.num_predict_batches)
        self.bars = {}
        if self.is_enabled:
            width = max((len(t) for t in self.progress.tasks), default=0)
            for i, task in enumerate(self.progress.tasks):
                self.bars[task] = tqdm(
                    total=todo[task], desc=task.ljust(width), unit="req", position=2 * self.process_position + i,
                    leave=self._leave, dynamic_ncols=True, file=sys.stdout, smoothing=0,
                )

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.progress is None:
            super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.progress is None:
            return super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self.progress.add(batch_counts(batch) if self.counts else {})
        self.batches_done += 1
        if should_sync(self.batches_done, self.num_batches, self.sync_every):
            self.progress.merge(self._sum_over_ranks(trainer, pl_module))
        self._draw()
        if self.batches_done == self.num_batches:
            self._close()  # before the results table is printed

    def _sum_over_ranks(self, trainer: Trainer, pl_module: LightningModule) -> np.ndarray:
        """Every rank's pending counts summed: one all-reduce of a few integers (none with one process)."""
        if trainer.world_size == 1:
            return self.progress.pending.copy()
        local = torch.tensor(self.progress.pending, dtype=torch.long, device=pl_module.device)
        return trainer.strategy.reduce(local, reduce_op="sum").cpu().numpy()

    def _draw(self) -> None:
        for task, count in self.progress.estimate().items():
            bar = self.bars.get(task)
            if bar is not None and count > bar.n:
                bar.update(count - bar.n)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.progress is None:
            return super().on_predict_end(trainer, pl_module)
        self._close()

    def _close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
