"""The per-task progress bar counts the whole world's requests, and every rank calls the same collectives.

Ranks are simulated with threads whose all-reduce is a barrier: a rank calling one more (or one
fewer) all-reduce than the others would leave the barrier waiting and fail the test.
"""

import threading
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.datamodule import RequestDataset
from lmm_lightning.data.sampler import PaddedDistributedSampler
from lmm_lightning.evaluation.progress import EvalProgressBar, WorldProgress, batch_counts, should_sync


def test_world_progress_sums_at_syncs_and_extrapolates_between():
    progress = WorldProgress({"a": 100, "b": 10}, world_size=4)
    progress.add({"a": 3})
    assert progress.estimate() == {"a": 12, "b": 0}  # rank 0's 3 requests, times 4 ranks
    progress.merge(np.array([11, 0]))  # the all-reduce: the four ranks did 11 between them
    assert progress.estimate() == {"a": 11, "b": 0}
    progress.add({"a": 2, "b": 3})
    assert progress.estimate() == {"a": 19, "b": 10}  # never above the total
    progress.merge(np.array([89, 10]))
    assert progress.estimate() == {"a": 100, "b": 10}


def test_sync_schedule_is_every_k_batches_and_the_last():
    assert [n for n in range(1, 21) if should_sync(n, 20, 8)] == [8, 16, 20]
    assert [n for n in range(1, 9) if should_sync(n, 8, 8)] == [8]
    assert [n for n in range(1, 4) if should_sync(n, float("inf"), 1)] == [1, 2, 3]


class FakeWorld:
    """An all-reduce for ranks running as threads: everyone contributes, then everyone reads the sum."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=10)
        self.slots: list = [None] * size
        self.calls = Counter()

    def reduce(self, rank: int, tensor: torch.Tensor) -> torch.Tensor:
        self.slots[rank] = tensor.clone()
        self.barrier.wait()
        total = torch.stack(self.slots).sum(0)
        self.barrier.wait()
        self.calls[rank] += 1
        return total


@pytest.fixture(scope="module")
def datamodule(tiny_tasks) -> BenchmarkDataModule:
    data = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], batch_size=2)
    data.setup()
    return data


def run_ranks(datamodule: BenchmarkDataModule, world_size: int, sync_every: int) -> tuple:
    """Drive one EvalProgressBar per simulated rank through predict start, batches and end.

    Returns rank 0's bar, its estimates after each batch, the fake world and every rank's batches."""
    world = FakeWorld(world_size)
    dataset = RequestDataset(datamodule.requests, datamodule.documents)
    plans = [list(PaddedDistributedSampler(dataset, datamodule.requests, 2, world_size, r)) for r in range(world_size)]
    assert len({len(p) for p in plans}) == 1  # the sampler's promise that makes the syncs safe
    bars = [EvalProgressBar(sync_every=sync_every) for _ in range(world_size)]
    seen: list[dict[str, int]] = []
    errors = []

    def rank(r: int) -> None:
        try:
            strategy = SimpleNamespace(reduce=lambda t, reduce_op="sum": world.reduce(r, t))
            trainer = SimpleNamespace(
                datamodule=datamodule, world_size=world_size, global_rank=r, strategy=strategy,
                num_predict_batches=[len(plans[r])],
            )
            module = SimpleNamespace(device=torch.device("cpu"))
            bar = bars[r]
            if r:
                bar.disable()  # Lightning disables the bar on every rank but 0
            bar.on_predict_start(trainer, module)
            for i, index in enumerate(plans[r]):
                batch = dataset[index]
                bar.on_predict_batch_start(trainer, module, batch, i)
                bar.on_predict_batch_end(trainer, module, [], batch, i)
                if r == 0:
                    seen.append(bar.progress.estimate())
            bar.on_predict_end(trainer, module)
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
            world.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return bars[0], seen, world, plans


@pytest.mark.parametrize("world_size,sync_every", [(1, 4), (2, 3), (3, 1), (4, 5)])
def test_rank_zero_counts_every_rank_and_collectives_match(datamodule, world_size, sync_every, capsys):
    totals = Counter(r.task for r in datamodule.requests)
    bar, seen, world, plans = run_ranks(datamodule, world_size, sync_every)
    n = len(plans[0])
    syncs = sum(should_sync(i, n, sync_every) for i in range(1, n + 1)) if world_size > 1 else 0
    assert all(world.calls[r] == syncs for r in range(world_size))
    # right after each sync rank 0 knows the world's exact count; in between it never overshoots
    dataset = RequestDataset(datamodule.requests, datamodule.documents)
    for i, estimate in enumerate(seen, start=1):
        assert all(estimate[t] <= totals[t] for t in totals)
        if should_sync(i, n, sync_every):
            exact = Counter()
            for plan in plans:
                for index in plan[:i]:
                    exact.update(batch_counts(dataset[index]))
            assert estimate == {t: exact[t] for t in totals}
    assert seen[-1] == dict(totals)
    out = capsys.readouterr().out
    assert "tiny_mc : 100%" in out and "39/39" in out and "13/13" in out and "req/s" in out


def test_resumed_requests_are_not_counted(datamodule):
    done = {r.uid for r in datamodule.requests if r.task == "tiny_mc"}
    datamodule.connect(done_uids=done)
    try:
        bar = EvalProgressBar()
        trainer = SimpleNamespace(datamodule=datamodule, world_size=1, num_predict_batches=[1])
        bar.on_predict_start(trainer, SimpleNamespace(device=torch.device("cpu")))
        assert bar.progress.estimate() == {"tiny_mc": 0, "tiny_gen": 0}
        assert bar.bars["tiny_mc"].total == 0 and bar.bars["tiny_gen"].total == 13
        bar.on_predict_end(trainer, None)
    finally:
        datamodule.connect(done_uids=set())


class ScriptedClock:
    """Time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_task_is_timed_from_its_own_start_and_the_run_from_its_first_answer():
    from lmm_lightning.evaluation.progress import TaskClock

    clock = ScriptedClock()
    timing = TaskClock({"a": 40, "b": 20}, clock)
    for seconds, counts in ((10, {"a": 20, "b": 0}), (10, {"a": 40, "b": 0}), (10, {"a": 40, "b": 5}), (10, {"a": 40, "b": 10})):
        clock.now += seconds
        timing.update(counts)
    # a: 40 in its 20 s; b started at t=120 (the update before its first answers): 10 in 20 s, not 10 in 40 s
    assert timing.rate("a") == 2.0 and timing.eta("a") == 0.0
    assert timing.rate("b") == 0.5 and timing.eta("b") == 20.0
    assert timing.rate() == 50 / 40 and timing.eta() == 10 / (50 / 40)  # the run: 50 answered since t=100
    assert timing.describe("b") == "0.5 req/s, ETA 00:20" and timing.describe("a") == "2.0 req/s, ETA 00:00"
    assert TaskClock({"c": 3}, clock).describe("c") == "waiting"


def test_the_bars_show_the_scripted_rates_and_an_overall_bar_of_what_is_left(datamodule):
    done = [r.uid for r in datamodule.requests if r.task == "tiny_mc"][:9]
    datamodule.connect(done_uids=set(done))
    clock = ScriptedClock()
    try:
        bar = EvalProgressBar(clock=clock)
        trainer = SimpleNamespace(datamodule=datamodule, world_size=1, num_predict_batches=[100])
        module = SimpleNamespace(device=torch.device("cpu"))
        bar.on_predict_start(trainer, module)
        assert {name: b.total for name, b in bar.bars.items()} == {"tiny_mc": 30, "tiny_gen": 13, "all": 43}
        for seconds, counts in ((6, {"tiny_mc": 30}), (4, {"tiny_gen": 4}), (4, {"tiny_gen": 4})):
            clock.now += seconds
            bar.progress.add(counts)
            bar._draw()
        postfix = {name: b.postfix for name, b in bar.bars.items()}
        assert postfix["tiny_mc"] == "5.0 req/s, ETA 00:00"  # 30 in its 6 s
        assert postfix["tiny_gen"] == "1.0 req/s, ETA 00:05"  # 8 in the 8 s since its start, 5 left
        assert postfix["all"] == f"{38 / 14:.1f} req/s, ETA 00:01"  # 38 in 14 s, 5 left
        bar.on_predict_end(trainer, module)
    finally:
        datamodule.connect(done_uids=set())
