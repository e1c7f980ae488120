"""A progress bar per task counting the requests answered by the whole world, not just rank 0.

Each task's rate and ETA are measured from when that task's requests start being answered (tqdm's own are
measured from when its bar was made: a task whose requests come last would look slow), and an overall bar
gives the ETA of the whole run. The bars count only the requests left to answer; how many were resumed from
the store is said once before them (`EvaluationCallback`: "resumed: reused 150 of 200 requests (...)").

Rank 0 alone sees 1/N of the work. Every `sync_every` batches (and after the last one) each rank
adds its per-task counts since the last sync into one small all-reduce; between syncs rank 0
extrapolates its own new counts times the world size. Every rank runs the same number of batches
(the sampler pads them), so every rank calls the same all-reduces at the same batches: no rank
ever waits on a collective another rank skips. Ranks other than 0 count and sync but draw nothing.
"""

import sys
import time
from collections import Counter
from typing import Any, Callable, Optional

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


class TaskClock:
    """Rates and ETAs from answered counts, each task timed from its own start, the run from its first answer.

    A task starts at the previous update before the one that first counts its requests: the batch that
    answered them began then. `clock` is injectable so the numbers can be tested against a scripted clock.

    >>> times = iter([0.0, 10.0, 20.0])
    >>> clock = TaskClock({"a": 10, "b": 10}, clock=lambda: next(times))  # made at t=0
    >>> clock.update({"a": 5, "b": 0})  # t=10
    >>> clock.rate("a"), clock.eta("a"), clock.eta("b")
    (0.5, 10.0, None)
    """

    def __init__(self, totals: dict[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        self.totals = dict(totals)
        self.clock = clock
        self.counts = {task: 0 for task in totals}
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}  # when a task's last request was answered: its rate stops there
        self.last = self.now = clock()

    def update(self, counts: dict[str, int]) -> None:
        """Take the world's answered counts per task now."""
        self.last, self.now = self.now, self.clock()
        for task, count in counts.items():
            if count > 0 and task not in self.starts:
                self.starts[task] = self.last
            if count >= self.totals[task] and task not in self.ends:
                self.ends[task] = self.now
            self.counts[task] = count

    def rate(self, task: Optional[str] = None) -> Optional[float]:
        """Requests per second of `task` since its start, or of all tasks since the first answer; None before."""
        if task is None:
            start, done = min(self.starts.values(), default=None), sum(self.counts.values())
            end = max(self.ends.values()) if len(self.ends) == len(self.totals) else self.now
        else:
            start, done, end = self.starts.get(task), self.counts[task], self.ends.get(task, self.now)
        if start is None or end <= start:
            return None
        return done / (end - start)

    def eta(self, task: Optional[str] = None) -> Optional[float]:
        """Seconds left for `task` (or the whole run) at its rate; None before it has one."""
        total = sum(self.totals.values()) if task is None else self.totals[task]
        done = sum(self.counts.values()) if task is None else self.counts[task]
        if done >= total:
            return 0.0
        rate = self.rate(task)
        return (total - done) / rate if rate else None

    def describe(self, task: Optional[str] = None) -> str:
        """ "12.3 req/s, ETA 00:42", or "waiting" before the task's first answer."""
        rate, eta = self.rate(task), self.eta(task)
        if rate is None:
            return "done" if eta == 0.0 else "waiting"
        return f"{rate:.1f} req/s, ETA {tqdm.format_interval(eta)}" if eta is not None else f"{rate:.1f} req/s"


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"  # tqdm puts ", " before the postfix
OVERALL = "all"


def should_sync(batches_done: int, num_batches: float, every: int) -> bool:
    """True after every `every`-th batch and after the last: the same answer on every rank."""
    return batches_done % every == 0 or batches_done == num_batches


def batch_counts(batch: RequestBatch) -> dict[str, int]:
    return Counter(r.task for r, padding in zip(batch.requests, batch.padding) if not padding)


class EvalProgressBar(TQDMProgressBar):
    """One bar per task and one for the whole run: requests answered by all ranks / total, with requests per
    second and ETA measured from when each task's answers start (`TaskClock`); `clock` is for tests.

    Falls back to Lightning's batch bar when the datamodule is not a `BenchmarkDataModule`.

    Args:
        sync_every: batches between the small all-reduces that count other ranks' requests.
        leave: keep the finished bars on screen.
    """

    def __init__(self, sync_every: int = 8, leave: bool = True, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(leave=leave, **kwargs)
        self.clock = clock
        self.timing: Optional[TaskClock] = None
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
        self.timing = TaskClock({task: todo[task] for task in self.progress.tasks}, self.clock)
        if self.is_enabled:
            names = [*self.progress.tasks, OVERALL]
            width = max(len(t) for t in names)
            totals = {**{t: todo[t] for t in self.progress.tasks}, OVERALL: sum(todo[t] for t in self.progress.tasks)}
            for i, name in enumerate(names):
                self.bars[name] = tqdm(
                    total=totals[name], desc=name.ljust(width), unit="req", position=2 * self.process_position + i,
                    leave=self._leave, dynamic_ncols=True, file=sys.stdout, bar_format=BAR_FORMAT, postfix="waiting",
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
        estimate = self.progress.estimate()
        self.timing.update(estimate)
        counts = {**estimate, OVERALL: sum(estimate.values())}
        for name, bar in self.bars.items():
            if counts[name] > bar.n:
                bar.update(counts[name] - bar.n)
            bar.set_postfix_str(self.timing.describe(None if name == OVERALL else name), refresh=True)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.progress is None:
            return super().on_predict_end(trainer, pl_module)
        self._close()

    def _close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
