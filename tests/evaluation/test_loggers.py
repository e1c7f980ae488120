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


def test_sample_tables_are_text_with_the_wrong_answers_first(logged):
    evaluation, tb_dir, _ = logged
    acc = events(tb_dir)
    mc = text(acc, "samples/tiny_mc").splitlines()
    assert mc[0] == "| doc_id | result | prompt | response | target | acc | acc_norm |"
    assert len(mc) == 2 + 3  # header, rule, three documents
    records = evaluation.evaluation_result.tasks[0].records
    wrong = sorted(r["doc_id"] for r in records if not r["acc"])
    right = sorted(r["doc_id"] for r in records if r["acc"])
    expected = ([(d, "wrong") for d in wrong] + [(d, "right") for d in right])[:3]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in mc[2:]]
    assert [(int(c[0]), c[1]) for c in cells] == expected and wrong  # the tiny model gets some wrong
    assert all(c[1] == ("right" if float(c[5]) == 1 else "wrong") for c in cells)
    by_id = {r["doc_id"]: r for r in records}
    assert all(c[2] == by_id[int(c[0])]["arguments"][0][0].replace("\n", "<br>") for c in cells)  # the prompt it saw
    gen = text(acc, "samples/tiny_gen").splitlines()
    assert gen[0] == "| doc_id | result | prompt | response | target | exact_match |"


def test_tensorboard_gets_one_figure_of_all_scores_and_a_custom_scalars_layout(logged):
    from tensorboard.plugins.custom_scalar import layout_pb2

    evaluation, tb_dir, _ = logged
    acc = events(tb_dir)
    (figure,) = acc.Images("scores/all")
    assert figure.width > 600 and figure.height > 150
    (config,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(config.tensor_proto.string_val[0])
    charts = {c.title: c for category in layout.category for c in category.chart}
    margin = charts["tiny_mc/acc"].margin.series[0]
    assert (margin.value, margin.lower, margin.upper) == ("tiny_mc/acc", "tiny_mc/acc_ci_lower", "tiny_mc/acc_ci_upper")
    assert {"tiny_mc/acc", "tiny_mc/acc_norm", "tiny_gen/exact_match"} <= set(charts)
    assert all(tag in acc.Tags()["scalars"] for c in charts.values() for s in c.margin.series for tag in (s.value, s.lower, s.upper))


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
    evaluate(model, ["easy_vqa_gen"], tmp_path / "out", [tb], limit=15, log_images_to_logger=2)
    acc = events(Path(tb.log_dir))
    tags = [t for t in acc.Tags()["images"] if t.startswith("images/")]
    assert len(tags) == 2
    records = {r["doc_id"]: r for r in map(json.loads, (tmp_path / "out" / "samples_easy_vqa_gen.jsonl").read_text().splitlines())}
    for tag in tags:
        image = acc.Images(tag)[0]
        assert image.width == 256 and image.height > 256  # the 64x64 picture scaled up, with its caption below
        record = records[int(tag.rsplit("doc_", 1)[1])]
        mark = "RIGHT" if record["exact_match"] else "WRONG"
        caption = text(acc, tag)
        assert caption.startswith(f"{mark} - Q: ") and record["doc"]["question"] in caption
        assert f"target: {record['target']}" in caption
    shown = [records[int(tag.rsplit("doc_", 1)[1])]["doc"]["image_id"] for tag in tags]
    assert len(set(shown)) == 2  # documents 0-10 ask about one picture: it is shown once, not twice


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
    assert content["columns"][:5] == ["doc_id", "result", "prompt", "response", "target"] and len(content["data"]) == 8


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


class SharedPictures:
    """Documents 0-2 ask about one picture, 3 about another, 4 about a third (as POPE and MME share images)."""

    def __init__(self) -> None:
        from PIL import Image

        self.pictures = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue", "green")]

    def visuals(self, doc_id: int) -> list:
        return [self.pictures[0 if doc_id < 3 else doc_id - 2]]


def test_the_image_panel_shows_distinct_pictures_marked_right_or_wrong():
    from types import SimpleNamespace

    from lmm_lightning.evaluation.loggers import MARK_COLOURS, sample_images

    rows = [{"doc_id": i, "result": r, "prompt": f"question {i}", "response": "yes", "target": "no"}
            for i, r in enumerate(["wrong", "wrong", "right", "right", "wrong"])]
    entries = sample_images(SimpleNamespace(name="pope"), SharedPictures(), rows, 8)
    assert [tag for tag, _, _ in entries] == ["pope/doc_0", "pope/doc_3", "pope/doc_4"]  # one per distinct picture
    assert [caption.split(" - ")[0] for _, _, caption in entries] == ["WRONG", "RIGHT", "WRONG"]
    assert tuple(entries[0][1][1, 1]) == MARK_COLOURS[False] and tuple(entries[1][1][1, 1]) == MARK_COLOURS[True]
    assert len(sample_images(SimpleNamespace(name="pope"), SharedPictures(), rows, 2)) == 2


def test_captions_wrap_at_words():
    from lmm_lightning.evaluation.loggers import caption_lines

    text = "Q: Is there a refrigerator in the image? Please answer yes or no."
    lines = caption_lines([text, "model: yes"], 20)
    assert " ".join(lines[:-1]) == text and lines[-1] == "model: yes"
    assert all(len(line) <= 20 for line in lines)
    assert set(text.split()) == {word for line in lines[:-1] for word in line.split()}  # no word cut in two
    assert caption_lines(["x " * 100], 10, most=3)[-1] == "…"


def test_the_readme_screenshot_script_reads_the_scores_figure_back(logged, tmp_path):
    import importlib.util

    evaluation, tb_dir, _ = logged
    spec = importlib.util.spec_from_file_location("screenshots", Path(__file__).parents[2] / "docs" / "screenshots.py")
    screenshots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshots)
    png = screenshots.tensorboard_image(tb_dir)
    assert png.startswith(b"\x89PNG") and png == events(tb_dir).Images("scores/all")[0].encoded_image_string
