"""Results through the trainer's loggers: TensorBoard event files read back, CSV and W&B (offline) files.

Runs are in-process `Trainer.predict` calls on the tiny random model (a second or two each).
"""

import csv
import json
from pathlib import Path

import pytest
import yaml
from tests.evaluation.builder import QUESTIONS, make_benchmark, make_group, make_settings, make_task, respond
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lmm_lightning.cli import EvalCLI, TRAINER_DEFAULTS
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.evaluation.progress import EvalProgressBar
from lmm_lightning.evaluation.loggers import metric_scalars, run_hparams
from lmm_lightning.evaluation.scoring import evaluate as score
from lmm_lightning.models import EvalModule, HFCausalLM, HFVisionLM


def evaluate(model, tasks: list[str], out: Path, loggers: list, limit=None, **callback_args) -> EvaluationCallback:
    evaluation = EvaluationCallback(output_dir=str(out), bootstrap_iters=200, print_table=False, resume=False, **callback_args)
    trainer = Trainer(accelerator="cpu", devices=1, logger=loggers, callbacks=[evaluation], enable_progress_bar=False)
    trainer.predict(model, BenchmarkDataModule(tasks, batch_size=4, limit=limit), return_predictions=False)
    return evaluation


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def text(accumulator: EventAccumulator, tag: str) -> str:
    return accumulator.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_model, tiny_tasks):
    folder = tmp_path_factory.mktemp("loggers")
    tb = TensorBoardLogger(str(folder / "tb"), name="eval")
    csv_logger = CSVLogger(str(folder / "csv"), name="eval")
    tasks = [str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")]
    evaluation = evaluate(HFCausalLM(str(tiny_model)), tasks, folder / "out", [tb, csv_logger], log_samples_to_logger=3)
    return evaluation, Path(tb.log_dir), Path(csv_logger.log_dir)


def test_scalars_are_every_metric_with_stderr_and_interval(logged):
    evaluation, tb_dir, _ = logged
    results = evaluation.results
    acc = events(tb_dir)
    expected = {
        "tiny_mc/acc": results["results"]["tiny_mc"]["acc,none"],
        "tiny_mc/acc_stderr": results["results"]["tiny_mc"]["acc_stderr,none"],
        "tiny_mc/acc_ci_lower": results["confidence_intervals"]["tiny_mc"]["acc,none"][0],
        "tiny_mc/acc_ci_upper": results["confidence_intervals"]["tiny_mc"]["acc,none"][1],
        "tiny_mc/acc_norm": results["results"]["tiny_mc"]["acc_norm,none"],
        "tiny_gen/exact_match": results["results"]["tiny_gen"]["exact_match,none"],
        "tiny_gen/exact_match_ci_upper": results["confidence_intervals"]["tiny_gen"]["exact_match,none"][1],
    }
    assert set(acc.Tags()["scalars"]) == set(metric_scalars(evaluation.evaluation_result)) >= set(expected)
    for tag, value in expected.items():
        assert acc.Scalars(tag)[0].value == pytest.approx(value, abs=1e-6)
    assert "hp_metric" not in acc.Tags()["scalars"]  # Lightning's placeholder is replaced by the real metrics


def test_scalar_names_keep_a_filter_other_than_none_and_leave_out_undefined_numbers():
    filters = [
        {"name": "strict", "filter": [{"function": "take_first"}]},
        {"name": "loose", "filter": [{"function": "lowercase"}]},
    ]
    tasks = [
        (make_task("one", metric_list=[{"metric": "acc"}]), QUESTIONS[:1]),
        (make_task("gen", "generate_until", filter_list=filters), QUESTIONS),
    ]
    benchmark = make_benchmark(tasks, [make_group("all", ["one"], weight_by_size=False)])
    result = score(benchmark, respond(benchmark, text=lambda r: "4"), make_settings())
    assert sorted(metric_scalars(result)) == [
        "all/acc",  # one document: no stderr, no interval
        "gen/exact_match,loose", "gen/exact_match,strict",
        "gen/exact_match_ci_lower,loose", "gen/exact_match_ci_lower,strict",
        "gen/exact_match_ci_upper,loose", "gen/exact_match_ci_upper,strict",
        "gen/exact_match_stderr,loose", "gen/exact_match_stderr,strict",
        "one/acc",
    ]
    assert run_hparams(result) == {**result.settings.config, "tasks": "one,gen", "groups": "all", "world_size": 1}


def test_hparams_hold_the_run_configuration_and_metrics(logged, tiny_model):
    _, tb_dir, _ = logged
    content = events(tb_dir).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model"].string_value == "HFCausalLM"
    assert start.hparams["model_args/pretrained"].string_value == str(tiny_model)
    assert start.hparams["tasks"].string_value == "tiny_mc,tiny_gen"
    assert start.hparams["bootstrap_iters"].number_value == 200
    assert start.hparams["world_size"].number_value == 1
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "tiny_mc/acc" in {m.name.tag for m in experiment.metric_infos}


def test_sample_tables_are_text(logged):
    _, tb_dir, _ = logged
    acc = events(tb_dir)
    mc = text(acc, "samples/tiny_mc").splitlines()
    assert mc[0] == "| doc_id | prompt | response | target | acc | acc_norm |"
    assert len(mc) == 2 + 3  # header, rule, the first three documents
    assert mc[2].startswith("| 0 | Question: What is the capital of France? Answer: | ") and "| Paris |" in mc[2]
    gen = text(acc, "samples/tiny_gen").splitlines()
    assert gen[0] == "| doc_id | prompt | response | target | exact_match |" and "| Berlin |" in gen[3]


def test_csv_logger_gets_the_metrics_and_hparams(logged):
    evaluation, _, csv_dir = logged
    results = evaluation.results
    (row,) = list(csv.DictReader(open(csv_dir / "metrics.csv")))
    assert float(row["tiny_mc/acc"]) == pytest.approx(results["results"]["tiny_mc"]["acc,none"])
    assert float(row["tiny_mc/acc_norm_stderr"]) == pytest.approx(results["results"]["tiny_mc"]["acc_norm_stderr,none"])
    low, high = results["confidence_intervals"]["tiny_gen"]["exact_match,none"]
    assert (float(row["tiny_gen/exact_match_ci_lower"]), float(row["tiny_gen/exact_match_ci_upper"])) == (low, high)
    hparams = yaml.safe_load(open(csv_dir / "hparams.yaml"))
    assert hparams["model"] == "HFCausalLM" and hparams["tasks"] == "tiny_mc,tiny_gen"


def test_vision_samples_are_logged_as_captioned_images(tmp_path):
    from tests.fixtures.vision import build_tiny_llava

    model = HFVisionLM(str(build_tiny_llava(tmp_path / "llava")), use_chat_template=False)
    tb = TensorBoardLogger(str(tmp_path / "tb"), name="vlm")
    evaluate(model, ["easy_vqa_gen"], tmp_path / "out", [tb], limit=3, log_images_to_logger=2)
    acc = events(Path(tb.log_dir))
    assert acc.Tags()["images"] == ["images/easy_vqa_gen/doc_0", "images/easy_vqa_gen/doc_1"]
    image = acc.Images("images/easy_vqa_gen/doc_0")[0]
    assert image.width == 256 and image.height > 256  # the 64x64 picture scaled up, with its caption below
    caption = text(acc, "images/easy_vqa_gen/doc_0")
    record = json.loads((tmp_path / "out" / "samples_easy_vqa_gen.jsonl").read_text().splitlines()[0])
    assert caption.startswith(f"Q: {record['doc']['question']}") and f"target: {record['target']}" in caption


def test_wandb_offline_gets_metrics_config_and_tables(tmp_path, tiny_model, tiny_tasks, monkeypatch):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(mode="offline", save_dir=str(tmp_path), project="lmm-lightning-test")
    try:
        evaluation = evaluate(HFCausalLM(str(tiny_model)), [str(tiny_tasks / "tiny_mc.yaml")], tmp_path / "out", [logger])
        summary, config = dict(logger.experiment.summary), dict(logger.experiment.config)
        run_dir = Path(logger.experiment.dir)
    finally:
        wandb.finish()
    assert summary["tiny_mc/acc"] == pytest.approx(evaluation.results["results"]["tiny_mc"]["acc,none"])
    assert "tiny_mc/acc_ci_upper" in summary and config["model"] == "HFCausalLM"
    (table,) = (run_dir / "media" / "table" / "samples").glob("tiny_mc_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"][:4] == ["doc_id", "prompt", "response", "target"] and len(content["data"]) == 8


def test_cli_flags_build_the_logger_callback_and_progress_bar(tmp_path, tiny_model, tiny_tasks):
    args = [
        "--model", "lmm_lightning.models.HFCausalLM", "--model.pretrained", str(tiny_model),
        "--data", "lmm_lightning.data.BenchmarkDataModule", "--data.tasks", f"[{tiny_tasks / 'tiny_mc.yaml'}]",
        "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.save_dir", str(tmp_path / "tb"),
        "--evaluation.log_samples_to_logger", "5", "--evaluation.log_images_to_logger", "0",
    ]
    cli = EvalCLI(EvalModule, BenchmarkDataModule, subclass_mode_model=True, subclass_mode_data=True,
                  save_config_callback=None, trainer_defaults=TRAINER_DEFAULTS, args=args, run=False)
    assert isinstance(cli.trainer.logger, TensorBoardLogger)
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, EvaluationCallback)]
    assert (evaluation.log_samples_to_logger, evaluation.log_images_to_logger) == (5, 0)
    assert isinstance(cli.trainer.progress_bar_callback, EvalProgressBar)
    quiet = EvalCLI(EvalModule, BenchmarkDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    save_config_callback=None, trainer_defaults=TRAINER_DEFAULTS, run=False,
                    args=args[:8] + ["--trainer.enable_progress_bar", "false"])
    assert quiet.trainer.progress_bar_callback is None
