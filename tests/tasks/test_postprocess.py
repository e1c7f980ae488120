"""Generations are stripped and lose their reasoning blocks before filters and metrics; the raw text
stays in the samples file. Checked on the pure function and through a whole run with a scripted model."""

import json
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.models import EvalModule
from lmm_lightning.requests import Response
from lmm_lightning.tasks import TaskSpec
from lmm_lightning.tasks.postprocess import postprocess_generation, remove_reasoning
from lmm_lightning.tasks.spec import TaskSpecError

THINK = [("<think>", "</think>")]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Paris", "Paris"),
        ("Paris\n", "Paris"),
        (" Paris", "Paris"),
        ("\tParis \n\n", "Paris"),
        ("Paris  Texas", "Paris  Texas"),  # inner whitespace is the metric's business
        ("<think>hmm</think>Paris", "Paris"),
        ("<think>\nIt is Paris.\n</think>\n\nParis\n", "Paris"),
        ("<think>a</think>Pa<think>b</think>ris", "Paris"),
        ("reasoning that the template opened</think> Paris", "Paris"),
        ("Paris <think>unfinished", "Paris"),
        ("<think>never closed", ""),
        ("", ""),
        ("\n", ""),
        ("</think>", ""),
        ("no tags at all, but think about it", "no tags at all, but think about it"),
    ],
)
def test_postprocess_generation(raw, expected):
    assert postprocess_generation(raw, True, THINK) == expected


def test_postprocess_options():
    assert postprocess_generation(" Paris\n", False, THINK) == " Paris\n"
    assert postprocess_generation("<think>x</think> Paris", True, []) == "<think>x</think> Paris"
    tags = [("<think>", "</think>"), ("<reasoning>", "</reasoning>")]
    assert remove_reasoning("<reasoning>r</reasoning><think>t</think>B", tags) == "B"


class Scripted(EvalModule):
    """Answers every generation with the text listed for its document."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers = answers

    def generate_until(self, requests: list) -> list[Response]:
        return [Response(uid=r.uid, text=self.answers[r.doc_id]) for r in requests]


ANSWERS = [
    "Paris\n",  # a trailing newline
    " Berlin",  # a leading space
    "\tRome\t",
    "<think>\nThe capital of Spain... Madrid.\n</think>\n\nMadrid\n",
    "I reason here</think>Lisbon",  # the template opened the block in the prompt
    "Vienna <think>and then it ran out of tokens",
]
CAPITALS = ["Paris", "Berlin", "Rome", "Madrid", "Lisbon", "Vienna"]


def write_task(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w") as handle:
        for capital in CAPITALS:
            handle.write(json.dumps({"capital": capital}) + "\n")
    path = folder / "capital_gen.yaml"
    path.write_text(
        "task: capital_gen\ndataset_path: json\ndata_files: docs.jsonl\noutput_type: generate_until\n"
        "doc_to_text: 'Capital?'\ndoc_to_target: capital\ngeneration_kwargs: {until: ['.'], max_new_tokens: 4}\n"
        "metric_list: [{metric: exact_match}]\n" + extra
    )
    return path


def run(task: Path, output_dir: Path) -> dict:
    callback = EvaluationCallback(output_dir=str(output_dir), bootstrap_iters=100, print_table=False, log_samples=True)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[callback])
    trainer.predict(Scripted(ANSWERS), BenchmarkDataModule([str(task)], batch_size=4), return_predictions=False)
    samples = [json.loads(line) for line in (output_dir / "samples_capital_gen.jsonl").read_text().splitlines()]
    return {"results": callback.results["results"]["capital_gen"], "samples": sorted(samples, key=lambda s: s["doc_id"])}


def test_a_whole_run_scores_stripped_answers_and_keeps_the_raw_text(tmp_path):
    got = run(write_task(tmp_path / "task"), tmp_path / "out")
    assert got["results"]["exact_match,none"] == 1.0
    assert [s["resps"][0][0] for s in got["samples"]] == ANSWERS  # raw, as generated
    assert [s["filtered_resps"][0] for s in got["samples"]] == CAPITALS
    assert [s["exact_match"] for s in got["samples"]] == [1.0] * 6


def test_a_task_can_keep_whitespace_and_reasoning(tmp_path):
    task = write_task(tmp_path / "task", "strip_generation: false\nreasoning_tags: []\n")
    got = run(task, tmp_path / "out")
    assert [s["exact_match"] for s in got["samples"]] == [0.0] * 6  # every answer kept its noise


@pytest.mark.parametrize("value", ["true", "[['<think>']]", "[['', '</think>']]", "'<think>'"])
def test_malformed_postprocess_fields_name_the_field(tmp_path, value):
    field = "strip_generation" if value == "true" else "reasoning_tags"
    task = write_task(tmp_path, f"{field}: {value if field == 'reasoning_tags' else '3'}\n")
    with pytest.raises(TaskSpecError, match=rf"capital_gen.yaml: field '{field}'"):
        TaskSpec.from_yaml(task)
