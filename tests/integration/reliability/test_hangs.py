"""A rank that hangs ends every rank after the stall timeout, with a message naming it, its task and doc ids,
and how long it has been stuck; a slow model load or slow batches never trip it (the limit grows with them).

Each scenario is a real 2-process run (CPU DDP, gloo) in its own session, so a hang fails the test
instead of blocking it, and whatever is left (a stopped rank) is killed afterwards. Also here: the
launch helpers the other reliability tests use, and the watcher's rules on made-up peers (fast).
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from lmm_lightning.evaluation import failfast
from lmm_lightning.evaluation.failfast import DONE, GATHERING, LOADED, LOADING, PREDICTING, FailFast, Peer

REPO = Path(__file__).resolve().parents[3]  # on PYTHONPATH: the tests package and its fixtures
HANG_S = 600  # a hang lasts this long; a run that ends well before it was stopped by the watcher
STALL_S = 3


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def messages(self) -> list[str]:
        """The `lmm-lightning:` lines (what the user reads)."""
        return [line for line in self.stderr.splitlines() if line.startswith("lmm-lightning:")]


def write_config(
    folder: Path, tiny_model: Path, tiny_tasks: Path, tasks: tuple = ("tiny_mc.yaml", "tiny_gen.yaml"),
    model: str = "tests.fixtures.faulty.FaultyLM", batch_size: int = 4, **model_args: Any,
) -> Path:
    doc = {
        "model": {"class_path": model, "init_args": {"pretrained": str(tiny_model), **model_args}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": [str(t if Path(t).is_absolute() else tiny_tasks / t) for t in tasks], "batch_size": batch_size},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 100},
    }
    path = folder / f"config-{len(list(folder.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_eval(
    cfg: Path, out: Path, devices: int = 2, extra: tuple = (), timeout: float = 240, env: Optional[dict] = None,
    launcher: Optional[list[str]] = None,
) -> Run:
    """`python -m lmm_lightning predict` (or under `launcher`, e.g. torchrun) in a session of its own; every
    process left in that session afterwards (a stopped or orphaned rank) is killed."""
    command = [*(launcher or [sys.executable]), "-m", "lmm_lightning", "predict"]
    command += ["--config", str(cfg), "--evaluation.output_dir", str(out), *extra]
    if devices > 1 and launcher is None:
        command += ["--trainer.devices", str(devices), "--trainer.strategy", "ddp"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
    start = time.monotonic()
    proc = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=out.parent,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return Run(proc.returncode, stdout, stderr, time.monotonic() - start)


def hang(tmp_path: Path, tiny_model: Path, tiny_tasks: Path, mode: str, **model_args: Any) -> Run:
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=1, fail_at_batch=2, mode=mode, hang_s=HANG_S, **model_args)
    return run_eval(cfg, tmp_path / "out", extra=("--evaluation.stall_timeout", str(STALL_S)))


def assert_stopped_naming(run: Run, out: Path, *words: str) -> None:
    detail = run.stderr[-4000:]
    assert run.returncode != 0, detail
    assert run.elapsed < HANG_S / 4, detail  # the watcher ended it, not the hang's end
    assert any(all(w in line for w in words) for line in run.messages), detail
    assert not (out / "results.json").exists()


def test_a_forward_that_never_returns_ends_every_rank(tmp_path, tiny_model, tiny_tasks):
    """A busy loop holding the GIL between switches (a sleep is the easy case of it): the watcher still runs."""
    run = hang(tmp_path, tiny_model, tiny_tasks, "loop")
    assert_stopped_naming(run, tmp_path / "out", "rank 1 is stuck", "no progress for", "in batch 3 (task tiny_mc, doc_id")


def test_a_stopped_rank_ends_every_rank(tmp_path, tiny_model, tiny_tasks):
    """SIGSTOP: the rank's watcher is frozen too; the others judge it (stuck, or silent)."""
    run = hang(tmp_path, tiny_model, tiny_tasks, "stop")
    assert_stopped_naming(run, tmp_path / "out", "rank 1 is", "in batch 3 (task tiny_mc, doc_id")


def test_a_rank_stuck_before_the_final_gather_ends_every_rank(tmp_path, tiny_model, tiny_tasks):
    run = hang(tmp_path, tiny_model, tiny_tasks, "stall_gather")
    assert_stopped_naming(run, tmp_path / "out", "rank 1 is stuck", "after batch 7 (task tiny_gen, doc_id")


def test_a_rank_stuck_loading_the_model_ends_every_rank(tmp_path, tiny_model, tiny_tasks):
    run = hang(tmp_path, tiny_model, tiny_tasks, "stall_load")
    assert_stopped_naming(run, tmp_path / "out", "rank 1 is stuck", "while loading the model")


def test_slow_model_loads_and_slow_batches_do_not_trip_it(tmp_path, tiny_model, tiny_tasks):
    """Rank 1 loads twice as long as rank 0 and takes 1.5 s a batch (rank 0: a few ms), both beyond a 1 s
    stall timeout: the limit scales with the slowest step seen, so the run completes."""
    cfg = write_config(
        tmp_path, tiny_model, tiny_tasks, tasks=("tiny_mc.yaml",), batch_size=8,
        fail_rank=1, mode="stall_load", hang_s=1.5, load_s=1.5, slow_rank_s=1.5,
    )
    run = run_eval(cfg, tmp_path / "out", extra=("--evaluation.stall_timeout", "1"))
    assert run.returncode == 0, run.stderr[-4000:]
    assert not run.messages
    assert (tmp_path / "out" / "results.json").exists()


# --- the watcher's rules, on made-up peers ---------------------------------------------------------------
def peer(rank: int, phase: int = PREDICTING, batches: int = 3, age: float = 0.0, slowest: float = 0.5, **kw: Any) -> Peer:
    values = dict(tick=1, work="task t, doc_id 7", in_batch=True, pid=1, namespace=None, seen=time.monotonic())
    values.update(kw)
    return Peer(rank=rank, phase=phase, batches=batches, age=age, slowest=slowest, **values)


def watcher(stall_timeout: float = 10.0, **progress: Any) -> FailFast:
    watch = FailFast(0, stall_timeout=stall_timeout)
    watch.progress = failfast.Progress(**{"phase": PREDICTING, "batches": 9, **progress})
    return watch


def test_a_frozen_rank_is_stuck_by_the_time_the_others_see_pass():
    """A stopped process publishes nothing: its stall is its last count plus the time since it went silent."""
    watch = watcher()
    watch.peers = {1: peer(1, age=1.0, seen=time.monotonic() - 10.0)}
    assert watch._judge().startswith("rank 1 is stuck: no progress for 11 s in batch 4")


def test_a_rank_behind_the_others_past_the_limit_is_stuck():
    watch = watcher()
    watch.peers = {1: peer(1, batches=3, age=11.0)}
    assert watch._judge() == (
        "rank 1 is stuck: no progress for 11 s in batch 4 (task t, doc_id 7) while the other ranks went on "
        "(stall timeout 10 s, slowest step 0.5 s); stopping every rank"
    )


def test_the_limit_grows_with_the_slowest_step_any_rank_took():
    watch = watcher()
    watch.peers = {1: peer(1, age=30.0, slowest=7.0)}  # 5 x 7 s = 35 s
    assert watch._judge() is None
    watch.peers = {1: peer(1, age=36.0, slowest=7.0)}
    assert "rank 1 is stuck: no progress for 36 s" in watch._judge()


def test_ranks_at_the_same_point_are_not_stuck_however_long_it_takes():
    """A long generation on every rank, or a load as long on all: nobody is behind anybody."""
    watch = watcher(batches=3)
    watch.peers = {1: peer(1, batches=3, age=500.0), 2: peer(2, batches=3, age=500.0)}
    assert watch._judge() is None
    loading = watcher(phase=LOADING, batches=0)
    loading.peers = {1: peer(1, phase=LOADING, batches=0, age=500.0)}
    assert loading._judge() is None


def test_a_rank_still_loading_while_the_others_wait_is_stuck_past_the_limit():
    watch = watcher(phase=LOADED, batches=0)
    watch.peers = {1: peer(1, phase=LOADING, batches=0, age=12.0)}
    assert "rank 1 is stuck: no progress for 12 s while loading the model" in watch._judge()


def test_a_silent_rank_is_not_responding_and_a_finished_one_is_left_alone():
    """Silent at the same point as the others (all waiting in one collective): its heartbeat tells."""
    watch = watcher()
    watch.peers = {1: peer(1, batches=9, seen=time.monotonic() - 61)}
    assert watch._judge() == (
        "rank 1 is not responding: no heartbeat for 61 s (stopped, killed, or its machine is unreachable); "
        "last seen in batch 10 (task t, doc_id 7); stopping every rank"
    )
    watch.peers = {1: peer(1, phase=DONE, seen=time.monotonic() - 600, age=600)}
    assert watch._judge() is None


def test_a_rank_whose_process_is_gone_is_named(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    watch = watcher()
    namespace = failfast.process_namespace()
    if namespace is None:
        pytest.skip("no /proc here")
    watch.peers = {1: peer(1, phase=GATHERING, pid=gone.pid, namespace=namespace)}
    assert watch._judge() == f"rank 1 is gone (pid {gone.pid} exited or was killed) while gathering the responses; stopping every rank"
