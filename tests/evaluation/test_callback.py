"""Gathering, results writing, the printed table and CLI strategy settings (exactly-once: evaluation/test_scoring.py)."""

import json
from datetime import timedelta

from tests.evaluation.builder import QUESTIONS, gold, make_benchmark, make_group, make_settings, make_task, respond

from lmm_lightning.cli import strategy_with_timeout
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.evaluation.results import write_atomic
from lmm_lightning.evaluation.scoring import evaluate
from lmm_lightning.evaluation.table import format_table
from lmm_lightning.requests import Response


def test_collector_round_trips_responses_with_unicode_text():
    collector = ResponseCollector()
    collector.update([Response(0, logprob=-1.5, is_greedy=True), Response(1, logprob=-0.25, is_greedy=False)], [False, False])
    collector.update([Response(2, text="Zürich ✓"), Response(3, text=""), Response(2, text="Zürich ✓")], [False, False, True])
    got = collector.compute().pairs
    assert [(r.uid, p) for r, p in got] == [(0, False), (1, False), (2, False), (3, False), (2, True)]
    assert got[0][0] == Response(0, logprob=-1.5, is_greedy=True, text=None)
    assert got[2][0].text == "Zürich ✓" and got[3][0].text == "" and got[2][0].logprob is None


def test_collector_compute_does_not_copy_every_response(monkeypatch):
    """torchmetrics runs compute()'s result through apply_to_collection; a list of dataclasses would be
    deep-copied record by record (seconds for 100,000 records)."""

    def refuse(self, memo):
        raise AssertionError("a Response was deep-copied")

    monkeypatch.setattr(Response, "__deepcopy__", refuse, raising=False)
    collector = ResponseCollector()
    collector.update([Response(0, text="a"), Response(1, logprob=-1.0, is_greedy=False)], [False, False])
    assert [r.uid for r, _ in collector.compute().pairs] == [0, 1]


def test_named_strategies_get_the_long_process_group_timeout():
    assert strategy_with_timeout("ddp", 60000)._timeout == timedelta(seconds=60000)
    assert strategy_with_timeout("auto", 60000) == "auto"


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    write_atomic(tmp_path / "results.json", json.dumps({"a": 1}))
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_table_shows_value_stderr_and_interval_per_task_then_group():
    benchmark = make_benchmark([(make_task("t"), QUESTIONS), (make_task("u"), QUESTIONS[:2])], [make_group("g", ["t", "u"])])
    answer = gold(benchmark)
    result = evaluate(benchmark, respond(benchmark, choice=lambda r: answer(r) if r.doc_id < 2 else 0), make_settings())
    lines = format_table(result).splitlines()
    assert lines[0] == "| Tasks | Version | Filter | n-shot | Metric |   | Value |   | Stderr | 95% CI |"
    assert lines[2] == "| t | 1.0 | none | 0 | acc | ↑ | 0.5000 | ± | 0.2887 | [-0.0658, 1.0658] |"
    assert lines[3].startswith("|  |  | none |  | acc_norm | ↑ |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| t", "| ", "| u", "| ", "| g", "| "]
    assert lines[-2].startswith("| g |  | none |  | acc | ↑ | 0.6667 | ± |")  # no version or n-shot for a group


def test_auto_batch_size_is_probed_after_the_model_loads_and_connected(tmp_path, tiny_model, tiny_tasks):
    """The callback probes `batch_size: auto` on the model it just loaded and hands the sizes over through
    `connect`; the data module never reaches into the model."""
    from lightning.pytorch import Trainer

    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation import EvaluationCallback
    from lmm_lightning.models import HFCausalLM

    callback = EvaluationCallback(output_dir=str(tmp_path), bootstrap_iters=10, print_table=False)
    data = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml")], batch_size="auto", max_batch_size=4)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[callback])
    trainer.predict(HFCausalLM(str(tiny_model)), data, return_predictions=False)
    assert data.resolved_batch_size() == {"loglikelihood": 4}
    assert callback.results["results"]["tiny_mc"]["samples"] == 13


def test_the_samples_prompt_is_what_each_model_received(tmp_path, tiny_model, tiny_tasks):
    """lm-eval layout's `prompt`: the text model's chat template over the context; the vision model's with one
    image placeholder per image of the document (MME: one), rendered from the data module's documents."""
    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation.callback import prompt_function
    from lmm_lightning.models import HFCausalLM, HFVisionLM
    from tests.fixtures.benchmarks import write_vision_benchmarks
    from tests.fixtures.vision import build_tiny_llava

    tasks, _ = write_vision_benchmarks(tmp_path / "vision")
    data = BenchmarkDataModule(tasks=[str(tasks["mme"])], limit=2)
    data.setup()
    vision = HFVisionLM(str(build_tiny_llava(tmp_path / "llava")))
    vision.configure_model()  # the callback renders prompts while the model is loaded
    request = data.requests[0]
    rendered = prompt_function(vision, data.requests, data.documents)(request.context)
    assert rendered == vision.prompt(request.context, 1) and rendered != request.context and "<image>" in rendered
    text = HFCausalLM(str(tiny_model))
    text_data = BenchmarkDataModule(tasks=[str(tiny_tasks / "tiny_mc.yaml")], limit=1)
    text_data.setup()
    context = text_data.requests[0].context
    assert prompt_function(text, text_data.requests, text_data.documents)(context) == text.prompt(context) == context
