"""Nothing lost on a crash, fail fast across ranks, and resume with another world size."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.test_end_to_end import outputs

REPO = Path(__file__).resolve().parents[2]  # on PYTHONPATH: the tests package and its fixtures


def config(folder: Path, tiny_model: Path, tiny_tasks: Path, model: str = "lmm_lightning.models.HFCausalLM", **model_args) -> Path:
    doc = {
        "model": {"class_path": model, "init_args": {"pretrained": str(tiny_model), **model_args}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": [str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], "batch_size": 2},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 200},
    }
    path = folder / f"config-{len(list(folder.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def launch(cfg: Path, out: Path, devices: int, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(cfg), "--evaluation.output_dir", str(out)]
    if devices > 1:
        command += ["--trainer.devices", str(devices), "--trainer.strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=out.parent)


def stored_lines(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (out / "store").glob("responses-rank*.jsonl"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model, tiny_tasks):
    folder = tmp_path_factory.mktemp("reference")
    result = launch(config(folder, tiny_model, tiny_tasks), folder / "out", devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return outputs(folder / "out")


TOTAL_REQUESTS = 13 * 3 + 13


@pytest.mark.parametrize("resume_devices", [2, 1])
def test_sigkill_one_rank_then_resume(tmp_path, tiny_model, tiny_tasks, reference, resume_devices):
    faulty = config(tmp_path, tiny_model, tiny_tasks, model="tests.fixtures.faulty.FaultyLM", fail_rank=1, fail_at_batch=4, mode="kill", delay_s=0.2)
    out = tmp_path / "out"
    start = time.monotonic()
    crashed = launch(faulty, out, devices=2)
    elapsed = time.monotonic() - start
    assert crashed.returncode != 0 and elapsed < 90
    assert not (out / "results.json").exists()
    before = stored_lines(out)
    assert 0 < before < TOTAL_REQUESTS  # rank 1's first 4 batches (at least) are on disk

    resumed = launch(config(tmp_path, tiny_model, tiny_tasks), out, devices=resume_devices)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = outputs(out)
    assert got["samples"] == reference["samples"] and got["results"] == reference["results"]
    integrity = got["doc"]["integrity"]
    resumed_count = sum(t["resumed"] for t in integrity.values())
    computed = stored_lines(out) - before
    assert resumed_count + computed == TOTAL_REQUESTS  # nothing stored was computed again
    assert resumed_count >= before - 2  # (a batch cut mid-write is recomputed, never half-used)


def test_exception_on_rank_one_ends_both_ranks_fast(tmp_path, tiny_model, tiny_tasks):
    faulty = config(tmp_path, tiny_model, tiny_tasks, model="tests.fixtures.faulty.FaultyLM", fail_rank=1, fail_at_batch=2, delay_s=0.3)
    start = time.monotonic()
    result = launch(faulty, tmp_path / "out", devices=2, timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 60  # the process-group timeout is 60000 s: nobody waited for it
    assert "rank 1 failed on task tiny_mc, doc_id" in result.stderr and "RuntimeError: injected failure" in result.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_store_survives_a_rerun_without_recomputing(tmp_path, tiny_model, tiny_tasks, reference):
    cfg = config(tmp_path, tiny_model, tiny_tasks)
    out = tmp_path / "out"
    assert launch(cfg, out, devices=1).returncode == 0
    assert stored_lines(out) == TOTAL_REQUESTS
    again = launch(cfg, out, devices=1)
    assert again.returncode == 0 and stored_lines(out) == TOTAL_REQUESTS
    got = outputs(out)
    assert got["samples"] == reference["samples"]
    assert sum(t["resumed"] for t in got["doc"]["integrity"].values()) == TOTAL_REQUESTS
