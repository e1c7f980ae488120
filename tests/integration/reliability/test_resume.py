"""Resume: nothing lost, nothing double-counted, nothing stale.

A rerun on the same output folder reuses every stored answer whose request kept its identity,
exactly once, whatever changed in limit, offset, batch size or world size; a torn or damaged store
is skipped line by line; new weights under the same path are never served old answers; two runs
never share a folder. Most cases run in-process with a scripted model whose answers depend on the
request alone, not on its batch, so a resumed run must equal a fresh run exactly; a few run as real
processes (2 ranks, one killed).
"""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import yaml
from lightning.pytorch import Trainer

from tests.fixtures import COUNTRIES, build_tiny_model
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.sampler import BatchIndex, plan_rank
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.evaluation.store import ResponseStore, StoreWarning, config_digest, request_keys
from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.base import EvalModule
from lmm_lightning.requests import Request, RequestType, Response
from tests.integration.test_end_to_end import outputs

REPO = Path(__file__).resolve().parents[3]  # on PYTHONPATH: the tests package and its fixtures
CAPITALS = [capital for _, capital in COUNTRIES]
TOTAL = 13 * 3 + 13  # tiny_mc: 13 documents of 3 choices; tiny_gen: 13 documents


def _hash(*texts: str) -> int:
    return int(hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12], 16)


class ScriptedLM(EvalModule):
    """Answers from the request alone (a hash of its text), never from its batch or rank.

    On rank `fail_rank` it raises, or SIGKILLs itself, at its batch `fail_at_batch`; with `wait_for`
    its first batch waits until that file exists. Its identity leaves these settings out, so a rerun
    without them resumes from its store.
    """

    def __init__(
        self, fail_rank: int = -1, fail_at_batch: int = -1, mode: str = "raise", delay_s: float = 0.0, wait_for: str = ""
    ) -> None:
        super().__init__()
        self.fail_rank, self.fail_at_batch, self.mode, self.delay_s = fail_rank, fail_at_batch, mode, delay_s
        self.wait_for = wait_for
        self.batches = 0
        self.computed: list[tuple] = []  # (task, doc_id, choice_index) of every request answered

    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        scores = [_hash(r.context, r.continuation) for r in requests]
        return [Response(uid=r.uid, logprob=-(s % 10_000) / 1000, is_greedy=s % 3 == 0) for r, s in zip(requests, scores)]

    def generate_until(self, requests: list[Request]) -> list[Response]:
        return [Response(uid=r.uid, text=" " + CAPITALS[_hash(r.context) % len(CAPITALS)]) for r in requests]

    def predict_step(self, batch, batch_idx: int = 0) -> list[Response]:
        time.sleep(self.delay_s)
        deadline = time.monotonic() + 300
        while self.wait_for and not os.path.exists(self.wait_for) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.global_rank == self.fail_rank and self.batches == self.fail_at_batch:
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected crash")
        self.batches += 1
        responses = super().predict_step(batch, batch_idx)
        self.computed += [name(r) for r, padding in zip(batch.requests, batch.padding) if not padding]
        return responses


def name(request: Request) -> tuple:
    return (request.task, request.doc_id, request.choice_index)


@dataclass(frozen=True)
class Config:
    limit: Optional[int] = None
    offset: int = 0
    batch_size: int = 4
    world_size: int = 1
    tasks: tuple[str, ...] = ("tiny_mc", "tiny_gen")

    def data(self) -> dict:
        return {"limit": self.limit, "offset": self.offset, "batch_size": self.batch_size}


def make_datamodule(tiny_tasks: Path, config: Config) -> BenchmarkDataModule:
    return BenchmarkDataModule(tasks=[str(tiny_tasks / f"{t}.yaml") for t in config.tasks], **config.data())


def evaluate(
    out: Path, tiny_tasks: Path, config: Config = Config(), model: Optional[EvalModule] = None, log_samples: bool = True
) -> EvaluationCallback:
    """One in-process run on one device, as `lmm-lightning predict` runs it."""
    callback = EvaluationCallback(output_dir=str(out), bootstrap_iters=50, print_table=False, log_samples=log_samples)
    trainer = Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, callbacks=[callback],
    )
    trainer.predict(model or ScriptedLM(), datamodule=make_datamodule(tiny_tasks, config), return_predictions=False)
    return callback


def resumed(out: Path) -> int:
    return sum(task["resumed"] for task in json.loads((out / "results.json").read_text())["integrity"].values())


def stored_lines(out: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in (out / "store").glob("responses-rank*.jsonl"))


def assert_same_outputs(got: Path, expected: Path) -> None:
    a, b = outputs(got), outputs(expected)
    assert a["samples"] == b["samples"]
    assert a["results"] == b["results"] and a["intervals"] == b["intervals"]
    assert a["doc"]["n-samples"] == b["doc"]["n-samples"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, tiny_tasks):
    """A fresh run's output folder per (limit, offset); the scripted model's batch size changes nothing."""
    runs: dict[tuple, Path] = {}

    def get(config: Config) -> Path:
        key = (config.limit, config.offset)
        if key not in runs:
            runs[key] = tmp_path_factory.mktemp("fresh") / "out"
            evaluate(runs[key], tiny_tasks, Config(config.limit, config.offset))
        return runs[key]

    return get


# --- a changed limit, offset or batch size reuses what is stored and computes the rest --------------------
CHANGES = {
    "limit grows": (Config(limit=6), Config(limit=10)),
    "offset moves back": (Config(offset=5), Config(offset=2)),
    "batch size changes": (Config(limit=7, batch_size=4), Config(limit=9, batch_size=3)),
    "all three": (Config(limit=5, offset=3, batch_size=2), Config(limit=9, offset=1, batch_size=5)),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_rerun_with_another_limit_offset_or_batch_size_reuses_the_store(change, tmp_path, tiny_tasks, fresh):
    before, after = CHANGES[change]
    out = tmp_path / "out"
    evaluate(out, tiny_tasks, before)
    model = ScriptedLM()
    evaluate(out, tiny_tasks, after, model)  # today: IntegrityError, answered more than once
    assert_same_outputs(out, fresh(after))
    old = {name(r) for r in built(tiny_tasks, before).requests}
    new = {name(r) for r in built(tiny_tasks, after).requests}
    assert sorted(model.computed) == sorted(new - old)  # each stored answer reused, the rest computed once
    assert resumed(out) == len(new & old)


def built(tiny_tasks: Path, config: Config) -> BenchmarkDataModule:
    datamodule = make_datamodule(tiny_tasks, config)
    datamodule.setup()
    return datamodule


# --- the property: any (limit, offset, batch size, world size) before and after a crash at any batch ------
def random_config(rng: random.Random) -> Config:
    return Config(rng.choice([None, 3, 6, 9, 13]), rng.randint(0, 4), rng.randint(1, 6), rng.randint(1, 3))


def answers_for(model: ScriptedLM, datamodule: BenchmarkDataModule, index: BatchIndex, keys: list[str]) -> list:
    requests = [datamodule.requests[uid] for uid, padding in zip(index.uids, index.padding) if not padding]
    if not requests:
        return []
    kind = requests[0].request_type
    responses = model.loglikelihood(requests) if kind is RequestType.LOGLIKELIHOOD else model.generate_until(requests)
    return [(keys[r.uid], response) for r, response in zip(requests, responses)]


def crash(out: Path, datamodule: BenchmarkDataModule, config: Config, identity: str, rng: random.Random) -> int:
    """What a run of `config` leaves when it dies: each rank finished a random prefix of its batches, and
    one may have died while writing its next batch (cut at a random byte). Returns the lines left torn."""
    keys = request_keys(datamodule.requests, datamodule.tasks, identity)
    model, torn = ScriptedLM(), 0
    tearing = rng.randrange(config.world_size) if rng.random() < 0.6 else -1
    for rank in range(config.world_size):
        plan = plan_rank(datamodule.requests, config.batch_size, config.world_size, rank)
        finished = rng.randint(0, len(plan))
        store = ResponseStore(out, rank, identity)
        for index in plan[:finished]:
            store.append(answers_for(model, datamodule, index, keys))
        store.close()
        next_batch = answers_for(model, datamodule, plan[finished], keys) if finished < len(plan) else []
        if rank == tearing and next_batch:
            size = store.path.stat().st_size if store.path.exists() else 0
            store.append(next_batch)
            store.close()
            data = store.path.read_bytes()
            cut = rng.randint(size + 1, len(data) - 2)  # a record missing only its newline is whole
            store.path.write_bytes(data[:cut])
            torn = data[size:cut].count(b"\n") + (not data[:cut].endswith(b"\n"))
    return torn


def check_plans(requests: list[Request], batch_size: int, done: set[int]) -> None:
    """For world sizes 1..3: every request not done is computed exactly once, none done is, and the
    batches are the same whatever the world size."""
    dealt = []
    for world_size in (1, 2, 3):
        plans = [plan_rank(requests, batch_size, world_size, rank, done) for rank in range(world_size)]
        real = [b for plan in plans for b in plan if not any(b.padding)]
        computed = Counter(uid for b in real for uid in b.uids)
        assert set(computed) == set(range(len(requests))) - done and set(computed.values()) <= {1}
        kinds = lambda plan: Counter((requests[b.uids[0]].request_type, requests[b.uids[0]].generation) for b in plan)
        assert all(kinds(plan) == kinds(plans[0]) for plan in plans)  # equal collectives on every rank
        dealt.append({b.uids for b in real})
    assert dealt[0] == dealt[1] == dealt[2]


@pytest.mark.parametrize("seed", range(24))
def test_resume_after_a_crash_equals_a_fresh_run(seed, tmp_path, tiny_tasks, fresh):
    rng = random.Random(seed)
    before, after = random_config(rng), random_config(rng)
    out = tmp_path / "out"
    identity = config_digest(ScriptedLM().identity())
    torn = crash(out, built(tiny_tasks, before), before, identity, rng)

    datamodule = built(tiny_tasks, after)
    keys = request_keys(datamodule.requests, datamodule.tasks, identity)
    done = set(ResponseStore(out, 0, identity).load().reusable(datamodule.requests, keys))
    check_plans(datamodule.requests, after.batch_size, done)

    model = ScriptedLM()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        evaluate(out, tiny_tasks, after, model)
    messages = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    assert len(messages) == (1 if torn else 0)  # one warning, naming how many lines were skipped
    assert not torn or messages[0].startswith(f"skipped {torn} line(s)")
    assert_same_outputs(out, fresh(after))
    expected = sorted(name(r) for r in datamodule.requests if r.uid not in done)
    assert sorted(model.computed) == expected and resumed(out) == len(done)


# --- a torn or damaged store: skipped with one warning, recomputed, never a duplicate ----------------------
def store_file(out: Path) -> Path:
    return out / "store" / "responses-rank0.jsonl"


def rerun(out: Path, tiny_tasks: Path, config: Config = Config()) -> tuple[ScriptedLM, list[str]]:
    """Run again on `out`; the model (what it computed) and the store warnings given."""
    model = ScriptedLM()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        evaluate(out, tiny_tasks, config, model)
    return model, [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


@pytest.mark.parametrize("cut", ["at a line boundary", "inside a line"])
def test_a_batch_torn_by_a_crash_is_recomputed_whole(cut, tmp_path, tiny_tasks, fresh):
    out = tmp_path / "out"
    evaluate(out, tiny_tasks)  # batches of 4: lines 21-24 are the sixth batch
    lines = store_file(out).read_bytes().splitlines(keepends=True)
    kept = b"".join(lines[:22]) if cut == "at a line boundary" else b"".join(lines[:21]) + lines[21][:40]
    store_file(out).write_bytes(kept)

    model, messages = rerun(out, tiny_tasks)  # today: IntegrityError, answered more than once
    assert len(messages) == 1 and messages[0].startswith("skipped 2 line(s)")
    assert len(model.computed) == TOTAL - 20  # the torn batch whole, and what never ran
    assert_same_outputs(out, fresh(Config()))

    model, messages = rerun(out, tiny_tasks)  # what the rerun appended after the cut line is intact
    assert model.computed == [] and resumed(out) == TOTAL
    assert_same_outputs(out, fresh(Config()))


GARBAGE = [
    b"\xff\xfe\xfa not UTF-8 \xc3\x28",
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"null",
    b"",
    b"{}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"model": "m", "batch": "b", "size": 1, "uid": 0, "logprob": -1.0, "is_greedy": true, "text": null}',  # no key
    b'{"key": "k", "model": "m", "batch": "b", "size": 1, "uid": 0, "logprob": -1.0, "is_greedy": true, "text": null, "extra": 1}',
    b'{"key": "k", "model": "m", "batch": "b", "size": 1, "uid": 0, "logprob": "-1.0", "is_greedy": true, "text": null}',
    b'{"key": "k", "uid": 0, "logprob": -1.0, "is_greedy": true, "text": null}',  # another store format
]


def test_garbage_and_foreign_lines_are_skipped_with_one_warning(tmp_path, tiny_tasks, fresh):
    out = tmp_path / "out"
    evaluate(out, tiny_tasks)
    lines = store_file(out).read_bytes().splitlines(keepends=True)
    mixed = lines[:8] + [g + b"\n" for g in GARBAGE[:6]] + lines[8:10] + [g + b"\n" for g in GARBAGE[6:]] + lines[10:]
    store_file(out).write_bytes(b"".join(mixed))
    (out / "store" / "responses-rank7.jsonl").write_bytes(b'{"key": 1}\n\x00\x01\x02')

    model, messages = rerun(out, tiny_tasks)  # today: AttributeError / UnicodeDecodeError
    assert len(messages) == 1 and messages[0].startswith(f"skipped {len(GARBAGE) + 2} line(s)")
    assert model.computed == [] and resumed(out) == TOTAL  # every real answer still reused
    assert_same_outputs(out, fresh(Config()))


def test_a_stored_answer_of_the_wrong_kind_is_recomputed(tmp_path, tiny_tasks, fresh):
    out = tmp_path / "out"
    evaluate(out, tiny_tasks)
    lines = store_file(out).read_text().splitlines(keepends=True)
    record = json.loads(lines[5])
    assert record["logprob"] is not None  # a multiple-choice answer ...
    lines[5] = json.dumps({**record, "logprob": None, "is_greedy": None, "text": "Paris"}) + "\n"  # ... turned into text
    store_file(out).write_text("".join(lines))

    model, messages = rerun(out, tiny_tasks)
    assert len(messages) == 1 and messages[0].startswith("skipped 1 line(s)")
    assert len(model.computed) == 1 and resumed(out) == TOTAL - 1
    assert_same_outputs(out, fresh(Config()))


# --- other weights under the same path: another identity, nothing reused, and the run says so ---------------
@pytest.mark.parametrize("mtime", ["new", "kept"])
def test_new_weights_in_the_same_folder_are_not_served_old_answers(mtime, tmp_path, tiny_model, tiny_tasks):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    other = build_tiny_model(tmp_path / "other", seed=1)
    weights = folder / "model.safetensors"
    config = Config(limit=4)
    run = lambda out: evaluate(out, tiny_tasks, config, HFCausalLM(pretrained=str(folder)))
    out = tmp_path / "out"
    run(out)

    before = weights.stat()
    shutil.copyfile(other / "model.safetensors", weights)  # same architecture, same size, other values
    assert weights.stat().st_size == before.st_size
    if mtime == "kept":  # restored too: only the content tells
        os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        run(out)  # today: the old answers, as if nothing changed
    messages = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    assert len(messages) == 1 and messages[0].startswith("did not reuse 16 stored response(s)")
    assert "another model identity" in messages[0] and resumed(out) == 0
    run(tmp_path / "fresh")
    assert_same_outputs(out, tmp_path / "fresh")

    run(out)  # unchanged weights: everything reused
    assert resumed(out) == 16


# --- two runs on one folder: the second is refused; a dead run's lock goes with it -------------------------
def write_config(folder: Path, tiny_tasks: Path, config: Config, **model_args) -> Path:
    doc = {
        "model": {"class_path": "tests.integration.reliability.test_resume.ScriptedLM", "init_args": model_args},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": [str(tiny_tasks / f"{t}.yaml") for t in config.tasks], **config.data()},
        },
        "trainer": {"accelerator": "cpu", "devices": config.world_size, "enable_progress_bar": False},
        "evaluation": {"bootstrap_iters": 50, "print_table": False},
    }
    if config.world_size > 1:
        doc["trainer"]["strategy"] = "ddp"
    path = folder / f"config-{len(list(folder.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def command(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(cfg), "--evaluation.output_dir", str(out)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def launch(cfg: Path, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command(cfg, out), env=ENV, capture_output=True, text=True, timeout=timeout, cwd=out.parent)


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, tiny_tasks, fresh):
    out = tmp_path / "out"
    go = tmp_path / "go"
    slow = write_config(tmp_path, tiny_tasks, Config(), wait_for=str(go))  # holds its lock until `go` exists
    first = subprocess.Popen(command(slow, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lock = out / "store" / "responses-rank0.lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and f"pid {first.pid}" in lock.read_text()) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.2)
        second = launch(write_config(tmp_path, tiny_tasks, Config()), out)
        assert first.poll() is None  # the refusal came while the first run was still writing
        errors = [line for line in second.stderr.splitlines() if line.startswith("lmm-lightning: error:")]
        assert second.returncode == 2 and len(errors) == 1, second.stderr[-3000:]
        assert f"{out} is in use by another run (held by" in errors[0] and f"pid {first.pid}" in errors[0]
        assert "Traceback" not in second.stderr
        go.touch()
        stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    keys = [json.loads(line)["key"] for line in store_file(out).read_text().splitlines()]
    assert len(keys) == len(set(keys)) == TOTAL and stored_lines(out) == TOTAL  # one run's store, nothing interleaved
    assert_same_outputs(out, fresh(Config()))


HOLD = "import sys, time; from lmm_lightning.evaluation.store import ResponseStore; " \
       "print(ResponseStore(sys.argv[1], 0).lock(), flush=True); time.sleep(600)"


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "None"  # it holds the lock
        store = ResponseStore(tmp_path, 0)
        assert f"pid {holder.pid}" in store.lock()
        assert ResponseStore(tmp_path, 1).lock() is None  # another rank's lock is another lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert store.lock() is None  # the OS released it with the process
    store.close()


def test_a_rerun_in_the_same_process_after_a_failure_is_not_locked_out(tmp_path, tiny_tasks, fresh):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="injected crash"):
        evaluate(out, tiny_tasks, model=ScriptedLM(fail_rank=0, fail_at_batch=3))
    model, _ = rerun(out, tiny_tasks)  # a notebook rerun: the failed run's lock is this process's own
    assert resumed(out) == 12 and len(model.computed) == TOTAL - 12
    assert_same_outputs(out, fresh(Config()))


# --- real processes: 2 ranks, one killed, resumed with another config and world size -----------------------
KILLS = {
    "rank 1 killed; resumed on 2 ranks with other limit, offset and batch size": (
        Config(limit=10, offset=1, batch_size=3, world_size=2), 1, Config(batch_size=4, world_size=2)
    ),
    "rank 0 killed; resumed on 1 rank with another offset and batch size": (
        Config(limit=8, batch_size=2, world_size=2), 0, Config(offset=2, batch_size=5, world_size=1)
    ),
}


@pytest.mark.parametrize("case", list(KILLS))
def test_two_processes_killed_then_resumed_with_another_config(case, tmp_path, tiny_tasks, fresh):
    before, rank, after = KILLS[case]
    out = tmp_path / "out"
    faulty = write_config(tmp_path, tiny_tasks, before, fail_rank=rank, fail_at_batch=3, mode="kill", delay_s=0.2)
    crashed = launch(faulty, out)
    assert crashed.returncode != 0 and not (out / "results.json").exists()
    lines_before = stored_lines(out)
    assert lines_before > 0

    again = launch(write_config(tmp_path, tiny_tasks, after), out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_outputs(out, fresh(after))
    expected = len(built(tiny_tasks, after).requests)
    assert resumed(out) > 0 and resumed(out) + stored_lines(out) - lines_before == expected  # none computed twice
