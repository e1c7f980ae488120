"""`BenchmarkEvaluation`: benchmarks scored inside `Trainer.fit`, on 1 and 2 processes (CPU DDP and FSDP, subprocesses
with a timeout), with the training untouched, the loggers fed, written points never recomputed, and a fault ending every rank."""

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

from lmm_lightning.errors import InputError
from lmm_lightning.evaluation.training import BenchmarkEvaluation, TrainingState, answerer
from lmm_lightning.evaluation.trajectory import point_folder, trajectory, write_trajectory, written_points

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def dropout_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama with attention dropout: its training draws from the global RNG at every step."""
    folder = tmp_path_factory.mktemp("dropout_model")
    shutil.copytree(tiny_model, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.1}))
    return folder


def train(model: Path, tasks: Path, out: Path, *options: str, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tests.fixtures.train_eval", "--model", str(model), "--tasks", str(tasks), "--out", str(out), *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=Path(__file__).resolve().parents[2])


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(dropout_model, tiny_tasks, tmp_path_factory) -> dict[str, Path]:
    """12 steps, a point every 4 (and at the start): with the callback on 1 and 2 processes, and without it."""
    root = tmp_path_factory.mktemp("runs")
    out = {"one": root / "one", "two": root / "two", "fsdp": root / "fsdp", "without": root / "without"}
    options = {"one": [], "two": ["--devices", "2"], "without": ["--no-callback"],
               "fsdp": ["--devices", "2", "--strategy", "fsdp", "--no-checkpoints"]}
    for name, folder in out.items():
        done = train(dropout_model, tiny_tasks, folder, *options[name])
        assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_scores_are_identical_on_1_and_2_processes_and_training_is_untouched(runs):
    one, two, fsdp, without = (summary(runs[name]) for name in ("one", "two", "fsdp", "without"))
    assert two["world_size"] == fsdp["world_size"] == 2 and one["world_size"] == 1
    assert sorted(map(int, one["points"])) == one["computed"] == [0, 4, 8, 12]
    assert two["points"] == one["points"] == fsdp["points"]  # every metric, stderr, bound and paired change, bit for bit
    assert one["losses"] == without["losses"] == two["losses"] == fsdp["losses"]  # the points took no draw, mode or gradient
    assert len(set(one["losses"].values())) == 12  # training happened (dropout draws differ at every step)
    assert "tiny_mc/acc_delta" in one["points"]["4"] and "tiny_mc/acc_delta" not in one["points"]["0"]
    # the points' folders: results and samples as a standalone evaluation writes them, one per step
    points = written_points(runs["one"] / "benchmarks")
    assert list(points) == [0, 4, 8, 12]
    for step, folder in points.items():
        results = json.loads((folder / "results.json").read_text())
        assert results["results"]["tiny_mc"]["acc,none"] == one["points"][str(step)]["tiny_mc/acc"]
        assert (folder / "samples_tiny_gen.jsonl").is_file()


def test_the_loggers_hold_every_point_at_its_step(runs):
    one = summary(runs["one"])
    with open(runs["one"] / "csv" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = {int(r["step"]): float(r["benchmark/tiny_mc/acc"]) for r in rows if r.get("benchmark/tiny_mc/acc")}
    assert logged == {int(step): scalars["tiny_mc/acc"] for step, scalars in one["points"].items()}
    assert any(r.get("benchmark/tiny_mc/acc_ci_upper") for r in rows) and any(r.get("benchmark/tiny_mc/acc_delta_ci_lower") for r in rows)
    assert any(r.get("train_loss") for r in rows)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["one"] / "tb" / "version_0"))
    events.Reload()
    scalars = events.Scalars("benchmark/tiny_gen/exact_match")
    assert [e.step for e in scalars] == [0, 4, 8, 12]
    assert [e.value for e in scalars] == pytest.approx([one["points"][str(s)]["tiny_gen/exact_match"] for s in (0, 4, 8, 12)])


def test_the_table_and_plot_hold_each_metric_against_the_step(runs):
    folder = runs["one"] / "benchmarks"
    with open(folder / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    acc = [r for r in rows if r["task"] == "tiny_mc" and r["metric"] == "acc,none"]
    assert [int(r["step"]) for r in acc] == [0, 4, 8, 12]
    assert all(float(r["ci_lower"]) <= float(r["value"]) <= float(r["ci_upper"]) for r in acc)
    assert acc[0]["delta"] == "" and float(acc[1]["delta"]) == pytest.approx(float(acc[1]["value"]) - float(acc[0]["value"]))
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fit_resumed_from_a_checkpoint_does_not_recompute_written_points(runs, dropout_model, tiny_tasks, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(runs["one"], out)
    before = {step: (folder / "results.json").stat().st_mtime_ns for step, folder in written_points(out / "benchmarks").items()}
    (checkpoint,) = (out / "checkpoints").glob("*step=8.ckpt")
    done = train(dropout_model, tiny_tasks, out, "--steps", "16", "--resume", str(checkpoint))
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary(out)["computed"] == [16]  # 8 (its at_start point) and 12 were written by the first run
    after = written_points(out / "benchmarks")
    assert list(after) == [0, 4, 8, 12, 16]
    assert {step: (after[step] / "results.json").stat().st_mtime_ns for step in before} == before
    assert json.loads((after[16] / "change.json").read_text())["previous"] == 12


def test_a_fault_during_a_point_ends_every_rank_with_one_message(dropout_model, tiny_tasks, tmp_path):
    done = train(dropout_model, tiny_tasks, tmp_path / "out", "--devices", "2", "--fail-rank", "1", "--fail-step", "4", timeout=120)
    assert done.returncode != 0
    assert "because rank 1 failed during the benchmark evaluation at step 4 on task tiny_mc" in done.stderr
    assert "the model broke in the middle of the evaluation" in done.stderr
    assert list(written_points(tmp_path / "out" / "benchmarks")) == [0]


# --- in process: a user's own module, the state kept, the options checked ------------------------------------------
class OwnModule(LightningModule):
    """A user's module holding a Hugging Face model and tokenizer, with no evaluation interface."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch, labels=batch).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # the weights stay: its points equal a standalone run


def test_a_users_own_module_with_a_hf_model_is_scored_as_the_shipped_model_scores_it(tiny_model, tiny_tasks, tmp_path):
    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation import EvaluationCallback
    from lmm_lightning.models import HFCausalLM

    tasks = [str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")]
    evaluation = BenchmarkEvaluation(tasks, every_n_train_steps=2, at_start=True, output_dir=str(tmp_path / "points"),
                                     batch_size=4, bootstrap_iters=100, comparison_iters=100)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[evaluation])
    trainer.fit(OwnModule(tiny_model), torch.utils.data.DataLoader(torch.randint(0, 100, (4, 8)), batch_size=2))

    standalone = EvaluationCallback(output_dir=str(tmp_path / "standalone"), bootstrap_iters=100, print_table=False)
    Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[standalone]).predict(
        HFCausalLM(str(tiny_model)), BenchmarkDataModule(tasks, batch_size=4), return_predictions=False)
    for step in (0, 2):
        point = json.loads((point_folder(tmp_path / "points", step) / "results.json").read_text())["results"]
        assert {t: point[t] for t in ("tiny_mc", "tiny_gen")} == {t: standalone.results["results"][t] for t in ("tiny_mc", "tiny_gen")}
    samples = (point_folder(tmp_path / "points", 2) / "samples_tiny_gen.jsonl").read_text()
    assert samples == (tmp_path / "standalone" / "samples_tiny_gen.jsonl").read_text()


def test_points_come_once_per_optimizer_step_and_at_epoch_ends(tiny_model, tiny_tasks, tmp_path):
    evaluation = BenchmarkEvaluation([str(tiny_tasks / "tiny_mc.yaml")], every_n_train_steps=3, every_n_epochs=1, limit=4,
                                     output_dir=str(tmp_path / "points"), bootstrap_iters=0, comparison_iters=0)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=3, accumulate_grad_batches=2, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[evaluation])
    trainer.fit(OwnModule(tiny_model), torch.utils.data.DataLoader(torch.randint(0, 100, (8, 8)), batch_size=2))
    # 4 batches an epoch, 2 per optimizer step: steps 2, 4, 6 end the epochs; step 3 and 6 are every 3rd step
    assert sorted(evaluation.seconds) == [2, 3, 4, 6] and list(written_points(tmp_path / "points")) == [2, 3, 4, 6]


def draws() -> tuple:
    return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()


def seed_all(seed: int) -> None:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)


def test_the_training_state_is_put_back_as_it_was(tiny_model):
    seed_all(3)
    expected = draws()
    module = OwnModule(tiny_model)
    module.train()
    module.model.model.layers[0].eval()  # a frozen block stays in eval mode
    module.tokenizer.padding_side = "right"
    assert module.tokenizer.pad_token is None
    seed_all(3)
    state = TrainingState.of(module)
    module.eval()
    module.tokenizer.padding_side = "left"
    module.tokenizer.pad_token = module.tokenizer.eos_token  # as HFCausalLM.around fills it
    draws(), draws()  # what an evaluation point might take
    state.restore(module)
    assert module.training and module.model.training and not module.model.model.layers[0].training
    assert module.model.model.layers[1].training
    assert module.tokenizer.padding_side == "right" and module.tokenizer.pad_token is None
    assert draws() == expected


def test_a_module_that_cannot_answer_and_bad_options_are_errors_before_training(tmp_path):
    with pytest.raises(InputError, match="cannot answer benchmark requests; make it an lmm_lightning EvalModule"):
        answerer(torch.nn.Linear(2, 2), Trainer(accelerator="cpu", devices=1, logger=False))
    with pytest.raises(InputError, match="every_n_train_steps: expected a positive integer"):
        BenchmarkEvaluation(["capitals_mc"], every_n_train_steps=0)
    with pytest.raises(InputError, match="never evaluates"):
        BenchmarkEvaluation(["capitals_mc"])
    with pytest.raises(InputError, match="batch_size: give a number"):
        BenchmarkEvaluation(["capitals_mc"], every_n_epochs=1, batch_size="auto")
    with pytest.raises(InputError, match="comparison reads the samples"):
        BenchmarkEvaluation(["capitals_mc"], every_n_epochs=1, log_samples=False)


def test_the_trajectory_reads_finished_points_only(tmp_path):
    for step, acc in ((0, 0.25), (10, 0.5)):
        folder = point_folder(tmp_path, step)
        folder.mkdir(parents=True)
        results = {"results": {"t": {"alias": "t", "acc,none": acc, "acc_stderr,none": 0.1}}, "confidence_intervals": {"t": {"acc,none": [acc / 2, acc * 2]}}}
        (folder / "results.json").write_text(json.dumps(results))
    point_folder(tmp_path, 20).mkdir()  # a point that crashed before its results.json: not a point
    (point_folder(tmp_path, 10) / "change.json").write_text(json.dumps({"previous": 0, "changes": {"t/acc_delta": 0.25}}))
    rows = trajectory(tmp_path)
    assert [(r.step, r.value, r.ci_lower, r.delta) for r in rows] == [(0, 0.25, 0.125, None), (10, 0.5, 0.25, 0.25)]
    table, plot = write_trajectory(tmp_path)
    assert table.read_text().splitlines()[0].startswith("step,task,metric,value,stderr,ci_lower,ci_upper,delta")
    assert plot is not None and plot.stat().st_size > 1000


# --- lmm-lightning eval-checkpoints ------------------------------------------------------------------------------
def sweep(folder: Path, out: Path, tasks: Path, capsys) -> tuple[int, str]:
    from lmm_lightning.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval-checkpoints", str(folder), "--tasks", f"{tasks / 'tiny_mc.yaml'},{tasks / 'tiny_gen.yaml'}",
              "--model", "tests.fixtures.train_eval.RandomDrawingLM", "--output_path", str(out), "--batch_size", "4",
              "--bootstrap_iters", "200", "--comparison_iters", "200", "--accelerator", "cpu"])
    return exit_info.value.code, capsys.readouterr().out


def test_eval_checkpoints_scores_each_checkpoint_as_the_fit_scored_it_and_resumes(runs, dropout_model, tiny_tasks, tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    shutil.copytree(runs["one"] / "checkpoints", folder)
    shutil.copytree(dropout_model, folder / "checkpoint-0")  # a Hugging Face folder: the weights before training
    code, printed = sweep(folder, tmp_path / "sweep", tiny_tasks, capsys)
    assert code == 0, printed
    swept, fitted = written_points(tmp_path / "sweep"), written_points(runs["one"] / "benchmarks")
    assert list(swept) == [0, 4, 8, 12]
    for step in swept:  # the checkpoint saved at a step holds the weights the fit's point at that step scored
        ours = json.loads((swept[step] / "results.json").read_text())
        theirs = json.loads((fitted[step] / "results.json").read_text())
        assert ours["results"] == theirs["results"] and ours["confidence_intervals"] == theirs["confidence_intervals"]
    assert "| 12 | tiny_mc | acc |" in printed and "scores.png" in printed
    assert json.loads((swept[8] / "checkpoint.json").read_text())["kind"] == "lightning"

    # resumed: nothing evaluated again; new weights under one checkpoint's name: that step alone
    code, printed = sweep(folder, tmp_path / "sweep", tiny_tasks, capsys)
    assert code == 0 and printed.count("done already") == 4 and "evaluating" not in printed
    (checkpoint,) = folder.glob("*step=8.ckpt")
    shutil.copy(next(folder.glob("*step=12.ckpt")), checkpoint)
    code, printed = sweep(folder, tmp_path / "sweep", tiny_tasks, capsys)
    assert code == 0 and printed.count("done already") == 3 and f"step 8: evaluating {checkpoint}" in printed
    eight = json.loads((swept[8] / "results.json").read_text())["results"]
    assert eight == json.loads((swept[12] / "results.json").read_text())["results"]
    assert json.loads((swept[12] / "change.json").read_text())["changes"]["tiny_mc/acc_delta"] == 0.0  # 12 vs the new 8


def test_eval_checkpoints_without_checkpoints_or_class_is_one_line(tmp_path, capsys):
    from lmm_lightning.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["eval-checkpoints", str(tmp_path / "empty"), "--tasks", "capitals_mc"])
    assert exit_info.value.code == 2 and "no checkpoint in" in capsys.readouterr().err
