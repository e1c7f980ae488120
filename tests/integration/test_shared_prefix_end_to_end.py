"""Few-shot tasks whose questions share their examples, end to end: the examples computed once (and kept for the
next batches) give the samples of computing every request alone within 1e-4, and 1 and 2 DDP processes give
identical samples (a request's prefix is fixed by its task, not by its batch or by what its rank ran before).

Subprocesses with a timeout, so a hang fails instead of blocking CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures import COUNTRIES

TIMEOUT_S = 300
ROOT = Path(__file__).resolve().parents[2]
TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {folder}/examples.jsonl
    test: {folder}/questions.jsonl
test_split: test
fewshot_split: train
num_fewshot: 3
fewshot_config:
  sampler: first_n
doc_to_text: "Question: What is the capital of {{{{country}}}}? Answer:"
"""


def write_tasks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    capitals = [c for _, c in COUNTRIES]
    rows = [{"country": k, "capital": c, "choices": [c, capitals[(i + 1) % len(capitals)], capitals[(i + 5) % len(capitals)]]}
            for i, (k, c) in enumerate(COUNTRIES)]
    (folder / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (folder / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    (folder / "fewshot_mc.yaml").write_text(
        TASK.format(name="fewshot_mc", folder=folder) + "output_type: multiple_choice\ndoc_to_choice: choices\ndoc_to_target: 0\n"
    )
    (folder / "fewshot_gen.yaml").write_text(
        TASK.format(name="fewshot_gen", folder=folder)
        + "output_type: generate_until\ndoc_to_target: capital\ngeneration_kwargs:\n  until: ['\\n']\n  max_gen_toks: 6\n"
    )
    return folder


def run(config: Path, out: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(config), "--evaluation.output_dir", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(out.glob("samples_*.jsonl"))}


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_model) -> Path:
    folder = tmp_path_factory.mktemp("fewshot")
    tasks = write_tasks(folder / "tasks")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(tiny_model)}},
        "data": {"class_path": "lmm_lightning.data.BenchmarkDataModule",
                 "init_args": {"tasks": ["fewshot_mc", "fewshot_gen"], "include_path": str(tasks), "batch_size": 3}},
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 100},
    }))
    return path


@pytest.fixture(scope="module")
def single(config) -> dict:
    return run(config, config.parent / "single")


def test_shared_examples_give_the_samples_of_unshared_requests(config, single):
    alone = run(config, config.parent / "alone", "--model.init_args.share_prefix", "false", "--model.init_args.reuse_context", "false")
    mc, mc_alone = single["samples_fewshot_mc.jsonl"], alone["samples_fewshot_mc.jsonl"]
    assert len(mc) == len(COUNTRIES) - 3
    for ours, theirs in zip(mc, mc_alone):
        for a, b in zip(ours["resps"], theirs["resps"]):
            assert abs(float(a[0][0]) - float(b[0][0])) < 1e-4 and a[0][1] == b[0][1]
    assert [s["resps"] for s in single["samples_fewshot_gen.jsonl"]] == [s["resps"] for s in alone["samples_fewshot_gen.jsonl"]]


def test_two_processes_give_identical_samples(config, single):
    two = run(config, config.parent / "two", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert two == single


def test_the_data_module_finds_the_examples_every_question_shares(config):
    from lmm_lightning.data import BenchmarkDataModule

    data = BenchmarkDataModule(tasks=["fewshot_mc", "fewshot_gen"], include_path=str(config.parent / "tasks"))
    data.setup("predict")
    examples = "".join(f"Question: What is the capital of {k}? Answer: {c}\n\n" for k, c in COUNTRIES[:3])
    assert data.requests and all(r.shared_prefix.startswith(examples) for r in data.requests)
    assert all(r.context.startswith(r.shared_prefix) for r in data.requests)
