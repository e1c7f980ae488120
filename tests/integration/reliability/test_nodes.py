"""Across nodes: resume with node-local output folders, and a rank killed on another node stops every rank.

Two "nodes" on one machine: two torchrun invocations (`--nnodes 2 --node-rank 0/1`, a rendezvous on
127.0.0.1), each with its own output folder, so each rank sees only its node's store files. Where user
namespaces are available each node also runs in a pid namespace of its own, so a rank cannot see the
processes of the other node, as on two machines (then only the network tells one node that a rank of the
other died). Every node runs in a session of its own that is killed afterwards, so a hang fails the test.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from tests.integration.reliability.test_hangs import write_config
from tests.integration.test_end_to_end import outputs
from tests.fixtures.ports import free_port

REPO = Path(__file__).resolve().parents[3]  # on PYTHONPATH: the tests package and its fixtures
BIN = Path(sys.executable).parent
TOTAL = 13 * 3 + 13  # tiny_mc: 13 documents of 3 choices; tiny_gen: 13 documents
STOP_S = 15.0  # every process of both nodes ends this soon after a rank is killed
UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]


def own_pid_namespaces() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


SEPARATE = own_pid_namespaces()


@dataclass
class Node:
    returncode: int
    stdout: str
    stderr: str
    ended: float  # time.monotonic() when it ended

    @property
    def messages(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("lmm-lightning:")]




def start_nodes(cfg: Path, outs: list[Path], nproc: int, marker: str = "") -> list[subprocess.Popen]:
    """One torchrun per node, each writing to its own output folder."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "NODES_TEST": marker}
    procs = []
    for node, out in enumerate(outs):
        command = [
            str(BIN / "torchrun"), "--nnodes", str(len(outs)), "--nproc-per-node", str(nproc), "--node-rank", str(node),
            "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "lmm_lightning", "predict", "--config", str(cfg), "--evaluation.output_dir", str(out),
        ]
        procs.append(subprocess.Popen(
            [*(UNSHARE if SEPARATE else []), *command], env=env, cwd=out.parent, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        ))
    return procs


def wait_nodes(procs: list[subprocess.Popen], timeout: float = 240) -> list[Node]:
    """Wait for every node (reading each one's output as it comes), then kill whatever is left of them."""
    deadline = time.monotonic() + timeout
    nodes: list[Optional[Node]] = [None] * len(procs)
    readers = [_Reader(p) for p in procs]
    try:
        while any(n is None for n in nodes) and time.monotonic() < deadline:
            for i, proc in enumerate(procs):
                if nodes[i] is None and proc.poll() is not None:
                    nodes[i] = Node(proc.returncode, *readers[i].finish(), time.monotonic())
            time.sleep(0.05)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    for i, proc in enumerate(procs):
        if nodes[i] is None:
            stdout, stderr = readers[i].finish()
            nodes[i] = Node(proc.returncode if proc.returncode is not None else -9, stdout, stderr + "\n(timed out)", time.monotonic())
    return nodes


class _Reader:
    """Drains a process's pipes in threads, so a chatty node never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.parts: dict[str, list[str]] = {"out": [], "err": []}
        self.threads = [
            threading.Thread(target=lambda s=stream, k=key: self.parts[k].append(s.read()), daemon=True)
            for key, stream in (("out", proc.stdout), ("err", proc.stderr))
        ]
        for thread in self.threads:
            thread.start()

    def finish(self) -> tuple[str, str]:
        for thread in self.threads:
            thread.join(timeout=30)
        return "".join(self.parts["out"]), "".join(self.parts["err"])


def run_nodes(cfg: Path, outs: list[Path], nproc: int) -> list[Node]:
    return wait_nodes(start_nodes(cfg, outs, nproc))


def store_keys(out: Path) -> list[str]:
    return [json.loads(line)["key"] for p in sorted((out / "store").glob("responses-rank*.jsonl")) for line in p.read_text().splitlines()]


def resumed(out: Path) -> int:
    return sum(task["resumed"] for task in json.loads((out / "results.json").read_text())["integrity"].values())


def plain(tmp_path: Path, tiny_model: Path, tiny_tasks: Path) -> Path:
    return write_config(tmp_path, tiny_model, tiny_tasks, model="lmm_lightning.models.HFCausalLM")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model, tiny_tasks):
    """One uninterrupted process."""
    folder = tmp_path_factory.mktemp("reference")
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(plain(folder, tiny_model, tiny_tasks))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*command, "--evaluation.output_dir", str(folder / "out")], env=env, capture_output=True, text=True, timeout=240,
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return outputs(folder / "out")


def assert_same_as_reference(out: Path, reference: dict) -> None:
    got = outputs(out)
    assert got["samples"] == reference["samples"]
    assert got["results"] == reference["results"] and got["intervals"] == reference["intervals"]


def crash_on_two_nodes(tmp_path: Path, tiny_model: Path, tiny_tasks: Path) -> tuple[list[Path], dict[Path, list[str]]]:
    """2 nodes x 1 process, each node its own folder; rank 1 (node 1) is SIGKILLed at its fourth batch."""
    outs = [tmp_path / "node0" / "out", tmp_path / "node1" / "out"]
    for out in outs:
        out.parent.mkdir()
    faulty = write_config(tmp_path, tiny_model, tiny_tasks, fail_rank=1, fail_at_batch=3, mode="kill", delay_s=0.2)
    crashed = run_nodes(faulty, outs, nproc=1)
    assert all(n.returncode != 0 for n in crashed), crashed[0].stderr[-3000:]
    assert not any((out / "results.json").exists() for out in outs)
    stored = {out: store_keys(out) for out in outs}
    assert [p.name for p in (outs[1] / "store").glob("*.jsonl")] == ["responses-rank1.jsonl"]  # node-local: own files only
    assert len(stored[outs[1]]) == 3 * 4 and 0 < len(stored[outs[0]]) < TOTAL  # rank 1's three batches of 4
    return outs, stored


def test_node_local_folders_resume_on_the_same_layout(tmp_path, tiny_model, tiny_tasks, reference):
    """Each node's answers are resumed once (rank 1 hands in its own at the gather), nothing stored on any
    node is computed again, and the rerun appends to the node's own files; a third run reuses everything."""
    outs, before = crash_on_two_nodes(tmp_path, tiny_model, tiny_tasks)
    n_before = sum(len(keys) for keys in before.values())
    nodes = run_nodes(plain(tmp_path, tiny_model, tiny_tasks), outs, nproc=1)
    assert all(n.returncode == 0 for n in nodes), nodes[0].stderr[-3000:] + nodes[1].stderr[-3000:]
    assert_same_as_reference(outs[0], reference)
    assert resumed(outs[0]) == n_before
    after = {out: store_keys(out) for out in outs}
    keys = [k for out in outs for k in after[out]]
    assert len(keys) == len(set(keys)) == TOTAL  # nothing computed twice, on any node
    assert all(after[out][: len(before[out])] == before[out] for out in outs)  # appended to each node's own files
    assert f"resumed: reused {n_before} of {TOTAL} requests" in nodes[0].stdout
    assert f"{len(before[outs[1]])} of them held by rank 1" in nodes[0].stdout

    again = run_nodes(plain(tmp_path, tiny_model, tiny_tasks), outs, nproc=1)
    assert all(n.returncode == 0 for n in again), again[0].stderr[-3000:]
    assert resumed(outs[0]) == TOTAL and {out: store_keys(out) for out in outs} == after  # nothing computed
    assert_same_as_reference(outs[0], reference)


def test_node_local_folders_resume_with_another_world_size(tmp_path, tiny_model, tiny_tasks, reference):
    """Crashed on 2 nodes x 1 process, resumed on 2 nodes x 2 (ranks 2 and 3 now read node 1's rank-1 file)."""
    outs, before = crash_on_two_nodes(tmp_path, tiny_model, tiny_tasks)
    n_before = sum(len(keys) for keys in before.values())
    nodes = run_nodes(plain(tmp_path, tiny_model, tiny_tasks), outs, nproc=2)
    assert all(n.returncode == 0 for n in nodes), nodes[0].stderr[-3000:] + nodes[1].stderr[-3000:]
    assert_same_as_reference(outs[0], reference)
    assert json.loads((outs[0] / "results.json").read_text())["world_size"] == 4
    assert resumed(outs[0]) == n_before
    keys = [k for out in outs for k in store_keys(out)]
    assert len(keys) == len(set(keys)) == TOTAL
    assert f"{len(before[outs[1]])} of them held by rank 2" in nodes[0].stdout  # node 1's lowest rank now


# --- a rank killed on the other node ------------------------------------------------------------------------
def worker_pid(marker: str, rank: int, timeout: float = 120) -> int:
    """The pid (as this test sees it) of the torchrun worker of global rank `rank` of this test's run."""
    want = [f"NODES_TEST={marker}".encode(), f"RANK={rank}".encode()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if all(w in env for w in want) and any(e.startswith(b"LOCAL_RANK=") for e in env):
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no worker of rank {rank} found")


def kill_mid_predict(
    tmp_path: Path, tiny_model: Path, tiny_tasks: Path, nproc: int, rank: int, delay_s: float
) -> tuple[list[Node], float, list[Path]]:
    """2 nodes x `nproc`, batches of `delay_s` at least; SIGKILL global rank `rank` (on node 1) once its
    second batch is on disk."""
    outs = [tmp_path / "node0" / "out", tmp_path / "node1" / "out"]
    for out in outs:
        out.parent.mkdir()
    marker = uuid.uuid4().hex
    slow = write_config(tmp_path, tiny_model, tiny_tasks, delay_s=delay_s)
    procs = start_nodes(slow, outs, nproc, marker)
    try:
        pid = worker_pid(marker, rank)
        store = outs[1] / "store" / f"responses-rank{rank}.jsonl"
        deadline = time.monotonic() + 120
        while not (store.exists() and len(store.read_bytes().splitlines()) >= 2 * 4) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), "a node ended before the kill"
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
    except BaseException:
        wait_nodes(procs, timeout=0)
        raise
    return wait_nodes(procs, timeout=120), killed, outs


def assert_stopped_naming(nodes: list[Node], killed: float, rank: int, survivors_on_node_0: int) -> None:
    detail = "\n---\n".join(n.stderr[-3000:] for n in nodes)
    assert all(n.returncode != 0 for n in nodes), detail
    assert all(n.ended - killed < STOP_S for n in nodes), ([round(n.ended - killed, 1) for n in nodes], detail)
    named = [line for line in nodes[0].messages if f"because rank {rank} " in line and "is gone" in line]
    assert sorted(line.split()[3] for line in named) == [str(r) for r in range(survivors_on_node_0)], detail
    assert any(f"rank {rank} " in line and "is gone" in line for line in nodes[1].messages), detail
    assert "Connection closed by peer" not in detail and "[rank0]: Traceback" not in nodes[0].stderr, detail


@pytest.mark.skipif(not SEPARATE, reason="needs unprivileged user and pid namespaces (unshare) to keep the nodes apart")
def test_a_rank_killed_on_the_other_node_stops_both_nodes_naming_its_global_rank(tmp_path, tiny_model, tiny_tasks):
    """2 nodes x 2: global rank 3 (node 1's local rank 1) is killed mid-predict."""
    nodes, killed, outs = kill_mid_predict(tmp_path, tiny_model, tiny_tasks, nproc=2, rank=3, delay_s=1.0)
    assert_stopped_naming(nodes, killed, rank=3, survivors_on_node_0=2)
    assert not (outs[0] / "results.json").exists()


@pytest.mark.skipif(not SEPARATE, reason="needs unprivileged user and pid namespaces (unshare) to keep the nodes apart")
def test_a_rank_alone_on_its_node_killed_stops_the_other_node_before_it_runs_its_share(tmp_path, tiny_model, tiny_tasks):
    """2 nodes x 1: nobody on node 1 survives to tell; rank 0 learns it from its connection to rank 1, within
    seconds, instead of running its whole share and failing in the final gather with a gloo error."""
    nodes, killed, outs = kill_mid_predict(tmp_path, tiny_model, tiny_tasks, nproc=1, rank=1, delay_s=0.5)
    detail = "\n---\n".join(n.stderr[-3000:] for n in nodes)
    assert all(n.returncode != 0 for n in nodes) and nodes[0].ended - killed < STOP_S, detail
    assert any(line.startswith("lmm-lightning: rank 1 on ") and "is gone" in line for line in nodes[0].messages), detail
    assert "Connection closed by peer" not in nodes[0].stderr, detail
    assert len(store_keys(outs[0])) < TOTAL // 2  # rank 0 stopped long before the end of its share
