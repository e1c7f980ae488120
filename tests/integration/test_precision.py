"""`lmm-lightning predict` under each trainer precision on the tiny model: it runs, the model computes in that
dtype (its log-probs move by the dtype's rounding, no more), results.json says so, and a rerun in another
precision recomputes its answers while the same precision reuses them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Trainer

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.evaluation.callback import EvaluationCallback
from lmm_lightning.models import HFCausalLM

TIMEOUT_S = 300
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 5
# Largest |log-prob| change from float32, per precision, on the tiny model's requests (measured on its 39
# multiple-choice requests: bf16-true 3e-3, 16-true 4e-4, bf16-mixed 2e-3).
FROM_FLOAT32 = {"bf16-true": 1e-2, "16-true": 2e-3}


def write_config(folder: Path, tiny_model: Path, tiny_tasks: Path) -> Path:
    config = {
        "model": {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(tiny_model)}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": [str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], "batch_size": 4, "limit": LIMIT},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 10, "print_table": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def logprobs(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "samples_tiny_mc.jsonl").read_text().splitlines()]
    return [resp[0][0] for line in lines for resp in line["resps"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, tiny_tasks) -> dict[str, Path]:
    """One CLI run per precision, side by side (each is mostly start-up time)."""
    folder = tmp_path_factory.mktemp("precision")
    config = write_config(folder, tiny_model, tiny_tasks)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}  # this checkout's code
    outs, processes = {}, {}
    for precision in ("32-true", "bf16-true", "16-true"):
        outs[precision] = folder / precision
        command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(config), "--trainer.precision", precision]
        command += ["--evaluation.output_dir", str(outs[precision])]
        processes[precision] = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for precision, process in processes.items():
        output, _ = process.communicate(timeout=TIMEOUT_S)
        assert process.returncode == 0, f"{precision}:\n{output[-4000:]}"
    return outs


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_predict_runs_in_a_true_half_precision(runs, precision):
    results = json.loads((runs[precision] / "results.json").read_text())
    assert results["integrity"]["tiny_mc"]["requests_answered"] == 3 * LIMIT
    assert results["integrity"]["tiny_gen"]["requests_answered"] == LIMIT
    reference, got = logprobs(runs["32-true"]), logprobs(runs[precision])
    largest = max(abs(a - b) for a, b in zip(reference, got))
    assert 0 < largest < FROM_FLOAT32[precision]  # computed in 16 bits (not float32), and no worse than its rounding


@pytest.mark.parametrize("precision, dtype", [("32-true", "float32"), ("bf16-true", "bfloat16"), ("16-true", "float16")])
def test_results_json_says_the_precision_and_compute_dtype(runs, precision, dtype):
    source = json.loads((runs[precision] / "results.json").read_text())["model_source"]
    assert (source["precision"], source["compute_dtype"], source["logprob_dtype"]) == (precision, dtype, "float32")


def evaluate(out: Path, tiny_model: Path, tiny_tasks: Path, precision: str) -> dict:
    """One in-process run, as `lmm-lightning predict` runs it; returns results.json."""
    callback = EvaluationCallback(output_dir=str(out), bootstrap_iters=10, print_table=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, callbacks=[callback],
    )
    datamodule = BenchmarkDataModule(tasks=[str(tiny_tasks / "tiny_mc.yaml")], batch_size=4, limit=LIMIT)
    trainer.predict(HFCausalLM(pretrained=str(tiny_model)), datamodule=datamodule, return_predictions=False)
    return json.loads((out / "results.json").read_text())


def test_another_precision_recomputes_and_the_same_precision_reuses(tmp_path, tiny_model, tiny_tasks):
    out = tmp_path / "out"
    float32 = evaluate(out, tiny_model, tiny_tasks, "32-true")
    mixed = evaluate(out, tiny_model, tiny_tasks, "bf16-mixed")
    assert mixed["integrity"]["tiny_mc"]["resumed"] == 0  # float32 answers are not served to a bf16-mixed run
    assert logprobs(out) != [] and mixed["results"] is not None
    first = logprobs(out)
    again = evaluate(out, tiny_model, tiny_tasks, "bf16-mixed")
    assert again["integrity"]["tiny_mc"]["resumed"] == 3 * LIMIT and logprobs(out) == first
    back = evaluate(out, tiny_model, tiny_tasks, "32-true")
    assert back["integrity"]["tiny_mc"]["resumed"] == 3 * LIMIT and back["results"] == float32["results"]
