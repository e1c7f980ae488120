"""End to end through the CLI: 1 process and 2 processes (DDP, torchrun, accelerate) give identical outputs.

Multi-process runs are subprocesses with a timeout, so a hang fails the test instead of blocking CI.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.fixtures.ports import free_port

TIMEOUT_S = 300
BIN = Path(sys.executable).parent


def write_config(folder: Path, tiny_model: Path, tiny_tasks: Path, **data_args) -> Path:
    config = {
        "model": {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(tiny_model)}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": [str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], "batch_size": 4, **data_args},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 1000},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def cli(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(config), "--evaluation.output_dir", str(out), *extra]


def outputs(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    samples = {p.name: p.read_text() for p in sorted(out.glob("samples_*.jsonl"))}
    return {"results": results["results"], "intervals": results["confidence_intervals"], "samples": samples, "doc": results}


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model, tiny_tasks):
    folder = tmp_path_factory.mktemp("single")
    config = write_config(folder, tiny_model, tiny_tasks)
    result = run(cli(config, folder / "out"), folder)
    return config, outputs(folder / "out"), result.stdout


def test_single_process_writes_the_output_contract(single):
    _, out, stdout = single
    doc = out["doc"]
    for key in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config", "git_hash", "date"):
        assert key in doc
    mc = doc["results"]["tiny_mc"]
    assert {"acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none", "alias", "samples"} <= set(mc)
    assert doc["n-samples"]["tiny_mc"] == {"original": 13, "effective": 13}
    assert doc["integrity"]["tiny_mc"]["requests_expected"] == 39 == doc["integrity"]["tiny_mc"]["requests_answered"]
    lines = [json.loads(line) for line in out["samples"]["samples_tiny_mc.jsonl"].splitlines()]
    assert [line["doc_id"] for line in lines] == list(range(13))
    for line in lines:
        assert {"doc_id", "target", "arguments", "resps", "filtered_resps", "acc", "acc_norm"} <= set(line)
        assert len(line["arguments"]) == 3 == len(line["filtered_resps"])
    # the table is printed with the confidence interval
    assert "tiny_mc" in stdout and "acc_norm" in stdout and "95% CI" in stdout


def test_two_processes_ddp_match_one(tmp_path, single):
    config, expected, _ = single
    run(cli(config, tmp_path / "out", "--trainer.devices", "2", "--trainer.strategy", "ddp"), tmp_path)
    got = outputs(tmp_path / "out")
    assert got["samples"] == expected["samples"]
    assert got["results"] == expected["results"] and got["intervals"] == expected["intervals"]
    assert got["doc"]["world_size"] == 2


def test_torchrun_matches_one(tmp_path, single):
    config, expected, _ = single
    run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), *cli(config, tmp_path / "out")[1:]], tmp_path)
    got = outputs(tmp_path / "out")
    assert got["samples"] == expected["samples"] and got["results"] == expected["results"]
    assert got["doc"]["world_size"] == 2


def test_accelerate_launch_matches_one(tmp_path, single):
    config, expected, _ = single
    launch = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port())]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    run([*launch, *cli(config, tmp_path / "out")[1:]], tmp_path)
    got = outputs(tmp_path / "out")
    assert got["samples"] == expected["samples"] and got["results"] == expected["results"]
    assert got["doc"]["world_size"] == 2


def test_more_ranks_than_documents(tmp_path, tiny_model, tiny_tasks):
    config = write_config(tmp_path, tiny_model, tiny_tasks, limit=1, offset=2)
    run(cli(config, tmp_path / "one"), tmp_path)
    run(cli(config, tmp_path / "three", "--trainer.devices", "3", "--trainer.strategy", "ddp"), tmp_path)
    one, three = outputs(tmp_path / "one"), outputs(tmp_path / "three")
    assert one["samples"] == three["samples"] and one["results"] == three["results"]
    assert [json.loads(l)["doc_id"] for l in one["samples"]["samples_tiny_gen.jsonl"].splitlines()] == [2]
    assert three["doc"]["integrity"]["tiny_gen"]["padded"] == 2  # ranks 1 and 2 ran a padding batch
    assert three["doc"]["integrity"]["tiny_mc"]["padded"] == 2
    assert three["doc"]["integrity"]["tiny_mc"]["dropped"] == 2 and one["doc"]["integrity"]["tiny_mc"]["dropped"] == 0
