"""SIGTERM to any rank (a scheduler preempting the job) ends every rank with a non-zero exit and the finished
batches kept; a rank that is killed or exits makes the survivors print one line naming it, not a gloo traceback.

Real processes (CPU DDP, gloo; one torchrun case), each in its own session that is killed afterwards.
"""

import json
import signal
import sys
from pathlib import Path

from tests.integration.reliability.test_hangs import HANG_S, Run, run_eval, write_config
from tests.fixtures.ports import free_port

BIN = Path(sys.executable).parent
SIGTERM_EXIT = 128 + signal.SIGTERM


def stored_lines(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (out / "store").glob("responses-rank*.jsonl"))


def assert_one_line_naming(run: Run, *words: str) -> None:
    detail = run.stderr[-4000:]
    assert run.returncode != 0, detail
    assert any(all(w in line for w in words) for line in run.messages), detail
    assert "Traceback" not in run.stderr, detail


def test_sigterm_to_rank_1_ends_every_rank_keeps_finished_batches_and_resumes(tmp_path, tiny_model, tiny_tasks):
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=1, fail_at_batch=3, mode="sigterm")
    out = tmp_path / "out"
    run = run_eval(cfg, out)
    # Rank 0 ends with 143 itself, unless Lightning's child-process observer (it polls every 5 s and SIGKILLs
    # the launching process once a child exits non-zero) gets there first on a loaded machine.
    assert run.returncode in (SIGTERM_EXIT, -signal.SIGKILL), run.stderr[-4000:]
    assert_one_line_naming(run, "rank 1 received SIGTERM in batch 4 (task tiny_mc, doc_id", "rerun the same command")
    assert not (out / "results.json").exists()
    kept = stored_lines(out)
    assert kept >= 3 * 4  # rank 1's three batches (of 4 requests) at least, and whatever rank 0 finished

    plain = write_config(tmp_path, tiny_model, tiny_tasks, model="lmm_lightning.models.HFCausalLM")
    resumed = run_eval(plain, out, devices=1)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    integrity = json.loads((out / "results.json").read_text())["integrity"]
    assert sum(t["resumed"] for t in integrity.values()) >= kept - 4  # (a batch cut mid-write is recomputed)


def test_sigterm_to_rank_0_blocked_in_a_collective_ends_every_rank_at_once(tmp_path, tiny_model, tiny_tasks):
    """Rank 0 waits inside a gloo collective for rank 1, which sends it SIGTERM and then hangs: a Python
    signal handler alone would run only when the collective returns (never, here)."""
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=1, fail_at_batch=2, mode="sigterm_parent", hang_s=HANG_S)
    out = tmp_path / "out"
    run = run_eval(cfg, out)
    assert run.returncode == SIGTERM_EXIT, run.stderr[-4000:]
    assert run.elapsed < HANG_S / 4
    assert_one_line_naming(run, "rank 0 received SIGTERM", "stopping every rank")
    assert not (out / "results.json").exists() and stored_lines(out) > 0


def test_sigterm_to_a_single_process_ends_it_non_zero(tmp_path, tiny_model, tiny_tasks):
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=0, fail_at_batch=3, mode="sigterm")
    out = tmp_path / "out"
    run = run_eval(cfg, out, devices=1)
    assert run.returncode == SIGTERM_EXIT, run.stderr[-4000:]
    assert_one_line_naming(run, "rank 0 received SIGTERM in batch 4 (task tiny_mc, doc_id")
    assert not (out / "results.json").exists() and stored_lines(out) == 3 * 4


def test_a_rank_killed_before_the_final_gather_is_named(tmp_path, tiny_model, tiny_tasks):
    """Rank 0 is inside the gather when rank 1 dies: gloo raises there; the watcher names rank 1 instead."""
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=1, mode="kill_gather")
    run = run_eval(cfg, tmp_path / "out")
    # Two watchers may see it first: the launcher's (its exit code) or the process check (the pid is gone); both
    # name rank 1 and where it was.
    exited = "rank 1 exited with code -9 (killed by SIGKILL) after batch 7 (task tiny_gen, doc_id"
    gone = "rank 1 is gone (pid"
    assert any(exited in line or (gone in line and "after batch 7 (task tiny_gen, doc_id" in line) for line in run.messages), run.stderr[-4000:]
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-4000:]


def test_a_rank_that_exits_quietly_is_named(tmp_path, tiny_model, tiny_tasks):
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=1, fail_at_batch=2, mode="exit")
    run = run_eval(cfg, tmp_path / "out")
    assert_one_line_naming(run, "rank 1 exited with code 0 in batch 3 (task tiny_mc, doc_id")


def test_rank_0_killed_is_named_by_the_survivor_with_where_it_was(tmp_path, tiny_model, tiny_tasks):
    """Rank 0 holds the store: the survivor loses it, and says what rank 0 was last doing."""
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=0, fail_at_batch=2, mode="kill", delay_s=0.2)
    run = run_eval(cfg, tmp_path / "out")
    assert_one_line_naming(run, "rank 1 lost contact with rank 0", "it was", "(task tiny_mc, doc_id")
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_rank_killed_under_torchrun_is_named(tmp_path, tiny_model, tiny_tasks):
    """torchrun stops the survivors with SIGTERM when a worker dies: they name the dead rank, not the signal."""
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=1, fail_at_batch=2, mode="kill", delay_s=0.2)
    run = run_eval(cfg, tmp_path / "out", launcher=[str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())])
    assert run.returncode != 0
    assert any("rank 1" in line and ("gone" in line or "exited" in line) for line in run.messages), run.stderr[-4000:]
