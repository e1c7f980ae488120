"""The shipped hub benchmarks (MME, POPE, MMMU, ..., MMLU, ARC, HellaSwag).

Each runs end to end in-process on a few local rows with the real columns (tests/fixtures/benchmarks.py),
vision tasks with a tiny random LLaVA and text tasks with the tiny text model, through child YAMLs that
include the shipped ones; the per-document scoring is checked on crafted answers against hand-computed values.
"""

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Trainer

import lmm_lightning.tasks.builtin.chartqa.utils as chartqa
import lmm_lightning.tasks.builtin.gqa.utils as gqa
import lmm_lightning.tasks.builtin.mme.utils as mme
import lmm_lightning.tasks.builtin.mmmu.utils as mmmu
import lmm_lightning.tasks.builtin.ocrbench.utils as ocrbench
import lmm_lightning.tasks.builtin.pope.utils as pope
import lmm_lightning.tasks.builtin.scienceqa.utils as scienceqa
import lmm_lightning.tasks.builtin.seedbench.utils as seedbench
from tests.fixtures.benchmarks import (
    GQA_IMAGES, HELLASWAG_DOCS, MMLU_DOCS, gqa_rows, mmmu_rows, write_parquet, write_text_benchmarks, write_vision_benchmarks,
)
from tests.fixtures.vision import build_tiny_llava
from lmm_lightning.cli import list_tasks
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.metrics import aggregate
from lmm_lightning.models import EvalModule, HFCausalLM, HFVisionLM
from lmm_lightning.requests import Response
from lmm_lightning.tasks import GroupSpec, Task, available_tasks, load_spec, load_task_spec, resolve

# The metrics (name, filter) each benchmark reports on its fixture.
VISION_METRICS = {
    "mme": ["mme_perception_score", "mme_cognition_score", "acc"],
    "pope": ["pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio"],
    "mmmu_val": ["mmmu_acc", "mmmu_unparsed"],
    "scienceqa_img": ["exact_match"],
    "textvqa_val": ["vqa_accuracy"],
    "chartqa": ["relaxed_overall", "relaxed_human_split", "relaxed_augmented_split"],
    "docvqa_val": ["anls"],
    "ai2d": [("exact_match", "flexible-extract")],
    "gqa": ["exact_match"],
    "ocrbench": ["ocrbench_accuracy", "ocrbench_text_recognition", "ocrbench_doc_vqa", "ocrbench_handwritten_math"],
    "seedbench": ["seed_image", "seed_video", "seed_all"],
}
TEXT_METRICS = {
    "mmlu_anatomy": ["acc"],
    "mmlu_astronomy": ["acc"],
    "mmlu_fixture": ["acc"],
    "arc_easy": ["acc", "acc_norm"],
    "arc_challenge": ["acc", "acc_norm"],
    "hellaswag": ["acc", "acc_norm"],
}
SHIPPED = ["mme", "pope", "mmmu_val", "scienceqa_img", "textvqa_val", "chartqa", "docvqa_val", "ai2d", "gqa", "ocrbench",
           "seedbench", "mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other", "mmlu_anatomy",
           "arc_easy", "arc_challenge", "hellaswag"]


@lru_cache(maxsize=None)
def builtin(name: str) -> Task:
    """A shipped task, as the registry finds it by name."""
    return Task(load_task_spec(available_tasks()[name]))


def evaluate(model: Any, tasks: list[Path], output_dir: Path) -> dict[str, Any]:
    """One in-process `Trainer.predict` over all the given task YAMLs; the results document."""
    callback = EvaluationCallback(output_dir=str(output_dir), bootstrap_iters=100, print_table=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[callback]
    )
    trainer.predict(model, BenchmarkDataModule([str(t) for t in tasks], batch_size=4), return_predictions=False)
    return callback.results


def check_metrics(results: dict[str, Any], name: str, metrics: list) -> None:
    entry = results["results"][name]
    for metric in metrics:
        metric, filter_name = metric if isinstance(metric, tuple) else (metric, "none")
        key = f"{metric},{filter_name}"
        assert key in entry, f"{name}: {key} missing from {sorted(entry)}"
        assert math.isfinite(entry[key]), f"{name}: {key} = {entry[key]}"
        assert f"{metric}_stderr,{filter_name}" in entry  # null where a subset has a single document


@pytest.fixture(scope="module")
def vision_tasks(tmp_path_factory) -> dict[str, Path]:
    """Child YAMLs by task name; GQA reads its image table from the fixture for the whole module."""
    tasks, gqa_images = write_vision_benchmarks(tmp_path_factory.mktemp("vision_benchmarks"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(gqa.IMAGES_ENV, str(gqa_images))
        yield tasks


@pytest.fixture(scope="module")
def vision_results(tmp_path_factory, vision_tasks) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("vision_run")
    model = HFVisionLM(str(build_tiny_llava(folder / "llava")))
    return evaluate(model, list(vision_tasks.values()), folder / "out")


@pytest.fixture(scope="module")
def text_results(tmp_path_factory, tiny_model) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("text_benchmarks")
    tasks = write_text_benchmarks(folder / "data")
    names = ["mmlu_fixture", "arc_easy", "arc_challenge", "hellaswag"]
    return evaluate(HFCausalLM(str(tiny_model)), [tasks[n] for n in names], folder / "out")


# --- registry -----------------------------------------------------------------------------------


def test_shipped_benchmarks_are_listed_and_load(capsys):
    found = available_tasks()
    assert set(SHIPPED) <= set(found)
    for name, path in found.items():
        spec = load_spec(path)
        if not isinstance(spec, GroupSpec):
            Task(spec)  # every function reference resolves
    list_tasks([])
    listing = capsys.readouterr().out
    assert "invalid" not in listing and all(name in listing for name in SHIPPED)


def test_mmlu_group_covers_57_subjects_in_4_categories():
    resolved = resolve(["mmlu"])
    assert len(resolved.tasks) == 57 and len(resolved.subtasks["mmlu"]) == 57
    assert [len(resolved.subtasks[f"mmlu_{c}"]) for c in ("stem", "other", "social_sciences", "humanities")] == [19, 13, 12, 13]
    assert {t.dataset_path for t in resolved.tasks} == {"cais/mmlu"} and {t.fewshot_split for t in resolved.tasks} == {"dev"}


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VISION_METRICS))
def test_vision_benchmark_runs_end_to_end(vision_results, name):
    check_metrics(vision_results, name, VISION_METRICS[name])
    assert vision_results["integrity"][name]["requests_expected"] == vision_results["integrity"][name]["requests_answered"]
    errors = vision_results["standard_errors"][name]
    clustered = {"pope": "image_source", "mme": "question_id"}
    for key, method in errors.items():  # every number says which standard error it is
        assert method["stderr"] in ("analytic", "bootstrap", "cluster-robust", "cluster-bootstrap"), (key, method)
        if name in clustered and method["stderr"].startswith("cluster"):
            assert method["cluster_key"] == clustered[name] and method["units"] == method["clusters"]
    if name == "pope":  # its 4 fixture questions are about 4 images: 4 clusters
        assert errors["pope_accuracy,none"]["stderr"] == "cluster-robust" and errors["pope_accuracy,none"]["clusters"] == 4
        assert errors["pope_f1_score,none"]["stderr"] == "cluster-bootstrap"  # no closed form: clusters resampled


class Scripted(EvalModule):
    """Answers each generation with a fixed text per (task, doc_id), so corpus scores are known exactly."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        super().__init__()
        self.answers = answers

    def generate_until(self, requests: list) -> list[Response]:
        return [Response(uid=r.uid, text=self.answers[r.task][r.doc_id]) for r in requests]


# Scripted answers to the fixture documents and the corpus scores they must get.
SCRIPTED = {
    # existence image: both right (200); code_reasoning image: one right (acc 50 + acc+ 0)
    "mme": (["Yes", "No", "Yes", "Yes"], {"mme_perception_score": 200.0, "mme_cognition_score": 50.0, "acc": 0.75}),
    # gold yes no no yes; read as yes no yes no: TP 1, TN 1, FP 1, FN 1
    "pope": (["Yes.", "No, there is not.", "Yes", "I think not."],
             {"pope_accuracy": 0.5, "pope_precision": 0.5, "pope_recall": 0.5, "pope_f1_score": 0.5, "pope_yes_ratio": 0.5}),
    "mmmu_val": (["(A)", "B", "4"], {"mmmu_acc": 1.0, "mmmu_unparsed": 0.0}),
    "scienceqa_img": (["B", "B. blue"], {"exact_match": 0.5}),
    "textvqa_val": (["stop", "green"], {"vqa_accuracy": (1.0 + 0.6) / 2}),
    "chartqa": (["45", "Spain", "45%"], {"relaxed_overall": 2 / 3, "relaxed_human_split": 0.0, "relaxed_augmented_split": 1.0}),
    "docvqa_val": (["Acme corp", "1/2/1990"], {"anls": (0.9 + 1.0) / 2}),
    "ai2d": (["A", "The answer is (C)"], {("exact_match", "flexible-extract"): 0.5}),
    "gqa": (["Yes", "Blue.", "white"], {"exact_match": 2 / 3}),
    "ocrbench": (["stop", "X^{2}", "The total is 12.50 dollars"],
                 {"ocrbench_accuracy": 2 / 3, "ocrbench_handwritten_math": 0.0, "ocrbench_doc_vqa": 1.0}),
    "seedbench": (["A", "C", "C"], {"seed_image": 0.5, "seed_video": 1.0, "seed_all": 2 / 3}),
}


def test_scripted_answers_get_the_hand_computed_scores(tmp_path, vision_tasks):
    model = Scripted({name: answers for name, (answers, _) in SCRIPTED.items()})
    results = evaluate(model, list(vision_tasks.values()), tmp_path)["results"]
    for name, (_, expected) in SCRIPTED.items():
        for metric, value in expected.items():
            metric, filter_name = metric if isinstance(metric, tuple) else (metric, "none")
            assert results[name][f"{metric},{filter_name}"] == pytest.approx(value), (name, metric)


def test_each_document_brings_its_images(vision_tasks):
    data = BenchmarkDataModule([str(vision_tasks[n]) for n in ("mmmu_val", "seedbench", "gqa", "mme")])
    data.setup()
    count = lambda name: [len(data.documents[name].visuals(i)) for i in sorted(data.documents[name].docs)]
    assert count("mmmu_val") == [1, 3, 1]  # the images the text mentions, each once
    assert count("seedbench") == [1, 1, 2]  # a video question brings its frames
    assert count("gqa") == [1, 1, 1] and count("mme") == [1, 1, 1, 1]
    request = next(r for r in data.requests if r.task == "mmmu_val" and r.doc_id == 1)
    assert request.context.startswith("Compare <image 2> and <image 1>.")


@pytest.mark.parametrize("name", list(TEXT_METRICS))
def test_text_benchmark_runs_end_to_end(text_results, name):
    check_metrics(text_results, name, TEXT_METRICS[name])


def test_mmlu_group_weights_subjects_by_size(text_results):
    results = text_results["results"]
    sizes = {s: len(d) for s, d in MMLU_DOCS.items()}
    expected = sum(results[f"mmlu_{s}"]["acc,none"] * n for s, n in sizes.items()) / sum(sizes.values())
    assert results["mmlu_fixture"]["acc,none"] == pytest.approx(expected)
    assert text_results["group_subtasks"]["mmlu_fixture"] == ["mmlu_anatomy", "mmlu_astronomy"]


# --- per-document scoring, on crafted answers -----------------------------------------------------


def test_mme_reads_yes_no_and_sums_categories():
    # MME's official calculation.py: a lone "y"/"n" is "other" (lmms-eval's extra rule reads them as yes/no)
    assert [mme.parse_pred_ans(r) for r in ("Yes", "No.", "y", "Yes, it is.", "There is no dog", "nope", "N")] == [
        "yes", "no", "other", "yes", "other", "no", "other"
    ]
    assert mme.doc_to_text({"question": "Is it red? Please answer yes or no."}) == (
        "Is it red?\nAnswer the question using a single word or phrase."
    )
    task = builtin("mme")
    answers = [  # (category, image, gold, response)
        ("existence", "e1", "Yes", "Yes"), ("existence", "e1", "No", "no"),  # both right
        ("existence", "e2", "Yes", "yes"), ("existence", "e2", "No", "Yes"),  # one right
        ("count", "c1", "Yes", "No"), ("count", "c1", "No", "It is not"),  # none right ("other")
        ("code_reasoning", "r1", "Yes", "Yes"), ("code_reasoning", "r1", "No", "Yes"),
    ]
    scores = [
        task.score_value({"question_id": image, "category": category, "answer": gold, "question": "?"}, response)
        for category, image, gold, response in answers
    ]
    value = lambda metric: aggregate(task.aggregation(metric), [s[metric] for s in scores], 0, 0).value
    # existence: acc 3/4, acc+ 1/2 -> 125; count: 0 -> perception 125. code_reasoning: acc 1/2, acc+ 0 -> 50.
    assert value("mme_perception_score") == pytest.approx(125.0)
    assert value("mme_cognition_score") == pytest.approx(50.0)
    assert value("acc") == pytest.approx(4 / 8)


def test_pope_precision_recall_f1_yes_ratio():
    task = builtin("pope")
    golds = ["yes", "yes", "no", "no", "yes", "no"]
    responses = ["Yes, there is a car.", "No.", "no", "Yes", "yes", "There is not a dog."]  # yes no no yes yes no
    scores = [task.score_value({"answer": g, "question_id": str(i)}, r) for i, (g, r) in enumerate(zip(golds, responses))]
    value = lambda metric: aggregate(task.aggregation(metric), [s[metric] for s in scores], 0, 0).value
    # TP 2, FN 1, FP 1, TN 2
    assert value("pope_accuracy") == pytest.approx(4 / 6)
    assert value("pope_precision") == pytest.approx(2 / 3)
    assert value("pope_recall") == pytest.approx(2 / 3)
    assert value("pope_f1_score") == pytest.approx(2 / 3)
    assert value("pope_yes_ratio") == pytest.approx(3 / 6)
    assert pope.process_results({"answer": "No", "question_id": "1"}, ["Nope"])["pope_accuracy"] == 0.0  # official rule


def test_mmmu_prompt_images_and_parsing():
    first, second, open_question = mmmu_rows()
    assert mmmu.doc_to_text(second) == (
        "Compare <image 2> and <image 1>. Which is darker?\nA. <image 3>\nB. the left\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert mmmu.doc_to_text(open_question).endswith("<image 1> have?\n\nAnswer the question using a single word or phrase.")
    assert mmmu.doc_to_visual({**second, "image_1": "one", "image_2": "two", "image_3": "three"}) == ["one", "two", "three"]
    assert mmmu.doc_to_visual({**first, "image_1": "one"}) == ["one"]
    score = lambda doc, response: builtin("mmmu_val").score_value(doc, response)["mmmu_acc"]
    assert score(second, "(B)") == 1.0 and score(second, "B") == 1.0 and score(second, "The answer is A.") == 0.0
    assert score(second, "I think it is the left one, clearly") == 1.0  # the option's text, in a long answer
    assert score(first, "I do not know") == 0.0  # nothing parseable: wrong, never a random option
    assert score(open_question, "The answer is 4.") == 1.0
    assert score(open_question, "3.999") == 1.0  # numbers compare rounded to 2 decimals, as MMMU
    assert score(open_question, "five") == 0.0
    listed = {**open_question, "answer": "['24/7', '3.429']"}
    assert score(listed, "So the ratio is 3.43") == 1.0
    assert score({**open_question, "answer": "pupa"}, "It is a pupa stage") == 1.0


def test_scienceqa_llava_rule():
    doc = {"question": "Which color?", "choices": ["blue", "red"], "answer": 1, "hint": "Look closely."}
    assert scienceqa.doc_to_text(doc) == (
        "Context: Look closely.\nWhich color?\nA. blue\nB. red\nAnswer with the option's letter from the given choices directly."
    )
    assert scienceqa.doc_to_text({**doc, "hint": ""}).startswith("Which color?\nA. blue")
    scores = [scienceqa.process_results(doc, [r])["exact_match"] for r in ("B", "B. red", "The answer is B", "A.")]
    assert scores == [1.0, 1.0, 1.0, 0.0]  # LLaVA's eval_science_qa.py reads "The answer is B"


def test_textvqa_vqa_accuracy():
    task = builtin("textvqa_val")
    assert task.doc_to_text({"question": "what does the sign say?"}) == (
        "What does the sign say?\nAnswer the question using a single word or phrase."
    )
    doc = {"answers": ["stop"] * 7 + ["stop sign"] * 3}
    assert task.score_value(doc, "Stop")["vqa_accuracy"] == pytest.approx(1.0)
    assert task.score_value(doc, "stop sign")["vqa_accuracy"] == pytest.approx((3 * 2 / 3 + 7) / 10)
    assert task.score_value({"answers": ["green"] * 2 + ["dark green"] * 8}, "green")["vqa_accuracy"] == pytest.approx(0.6)


def test_chartqa_relaxed_accuracy_and_splits():
    assert chartqa.process_results({"type": "human_test", "answer": "42"}, ["43"]) == {"relaxed_overall": 1.0, "relaxed_human_split": 1.0}
    assert chartqa.process_results({"type": "human_test", "answer": "42"}, ["45"])["relaxed_overall"] == 0.0  # 7% off
    assert chartqa.process_results({"type": "augmented_test", "answer": "0.45"}, ["45%"]) == {
        "relaxed_overall": 1.0, "relaxed_augmented_split": 1.0
    }
    assert chartqa.process_results({"type": "augmented_test", "answer": "Spain"}, ["spain"])["relaxed_overall"] == 1.0


def test_docvqa_anls():
    task = builtin("docvqa_val")
    doc = {"answers": ["ACME corp.", "Acme Corporation"]}
    assert task.score_value(doc, "Acme corp")["anls"] == pytest.approx(0.9)  # 1 edit in 10 characters
    assert task.score_value(doc, "Beta inc")["anls"] == 0.0  # below the 0.5 threshold


def test_ai2d_letter_from_the_response():
    task = builtin("ai2d")
    doc = {"question": "Which stage comes first?", "options": ["egg", "larva"], "answer": "1"}
    assert task.doc_to_text(doc) == (
        "Which stage comes first?\nA. egg\nB. larva\nAnswer with the option's letter from the given choices directly."
    )
    assert task.doc_to_target(doc) == "B"
    scores = [task.score(doc, [Response(uid=0, text=r)])["flexible-extract"]["exact_match"] for r in ("The answer is (B)", "B.", "A")]
    assert scores == [1.0, 1.0, 0.0]


def test_gqa_joins_images_on_image_id(tmp_path, monkeypatch):
    questions, images = gqa_rows()
    monkeypatch.setenv(gqa.IMAGES_ENV, str(write_parquet(tmp_path / "images.parquet", images, GQA_IMAGES)))
    colors = [gqa.doc_to_visual(q)[0].convert("RGB").getpixel((0, 0)) for q in questions]
    assert colors == [(220, 30, 30), (30, 30, 220), (220, 30, 30)]  # red, blue, red
    with pytest.raises(KeyError, match="n000"):
        gqa.doc_to_visual({"imageId": "n000", "id": "q"})
    assert builtin("gqa").score_value({"answer": "yes"}, "Yes.")["exact_match"] == 1.0


def test_ocrbench_contains_match():
    doc = {"dataset": "IIIT5K", "question_type": "Regular Text Recognition", "answer": ["STOP"]}
    assert ocrbench.process_results(doc, ["The word is stop."]) == {"ocrbench_accuracy": 1.0, "ocrbench_text_recognition": 1.0}
    assert ocrbench.process_results(doc, ["STO P"])["ocrbench_accuracy"] == 0.0
    math_doc = {"dataset": "HME100k", "question_type": "Handwritten Mathematical Expression Recognition", "answer": ["x ^ { 2 }"]}
    assert ocrbench.process_results(math_doc, ["$x^{2}$"])["ocrbench_handwritten_math"] == 1.0  # spaces ignored
    assert ocrbench.process_results(math_doc, ["X^{2}"])["ocrbench_accuracy"] == 0.0  # case kept for HME100k


def test_seedbench_letter():
    doc = {"question": "Q?", "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d", "answer": "B", "data_type": "image"}
    assert seedbench.doc_to_text(doc) == "Q?\nA. a\nB. b\nC. c\nD. d\nAnswer with the option's letter from the given choices directly."
    assert seedbench.process_results(doc, [" B) b"]) == {"seed_image": 1.0, "seed_all": 1.0}
    assert seedbench.process_results(doc, ["Because"]) == {"seed_image": 0.0, "seed_all": 0.0}  # not a first character
    assert seedbench.process_results({**doc, "data_type": "video"}, ["A"]) == {"seed_video": 0.0, "seed_all": 0.0}


def test_mmlu_prompt_matches_lm_eval():
    task = builtin("mmlu_anatomy")
    doc = {"question": " Which organ pumps blood? ", "choices": ["lung", "heart", "liver", "skin"], "answer": 1}
    assert task.context(0, doc) == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. skin\nAnswer:"
    )
    assert task.doc_to_choice(doc) == ["A", "B", "C", "D"] and task.doc_to_target(doc) == 1


def test_arc_target_from_answer_key():
    task = builtin("arc_challenge")
    assert task.spec.dataset_name == "ARC-Challenge" and task.spec.dataset_path == "allenai/ai2_arc"
    doc = {"question": "What do plants need?", "choices": {"text": ["salt", "sand", "light"], "label": ["1", "2", "3"]}, "answerKey": "3"}
    assert task.doc_to_text(doc) == "Question: What do plants need?\nAnswer:"
    assert task.doc_to_choice(doc) == ["salt", "sand", "light"] and task.doc_to_target(doc) == 2


def test_hellaswag_preprocessing_matches_lm_eval():
    task = builtin("hellaswag")
    activity, wikihow = HELLASWAG_DOCS
    assert task.doc_to_text(activity) == "Roof shingle removal: A man is sitting on a roof. He"
    assert task.doc_to_text(wikihow) == "Home and Garden: How to clean a pan. Fill the pan."
    assert task.doc_to_choice(wikihow)[0] == " Add soap and water."
    assert task.doc_to_target(activity) == 3


def test_ai2d_and_scienceqa_resample_pictures_told_apart_by_their_content(tmp_path):
    """Neither dataset has an image id: two questions about one diagram (the same picture, stored twice) are one
    cluster, and the stderr is the cluster-robust one over the pictures."""
    from tests.fixtures.benchmarks import AI2D, SCIENCEQA, ai2d_rows, picture, scienceqa_rows, write_tables
    from lmm_lightning.metrics.bootstrap import cluster_mean_stderr

    def shared_diagram(rows):
        first, second = rows()
        return [first, {**first, "question": "Which stage is last?"}, second, {**second, "image": picture("red", size=32)}]

    tasks = write_tables(tmp_path / "data", {
        "ai2d": ("ai2d/ai2d.yaml", lambda: shared_diagram(ai2d_rows), AI2D),
        "scienceqa_img": ("scienceqa/scienceqa_img.yaml", lambda: shared_diagram(scienceqa_rows), SCIENCEQA),
    })
    answers = {"ai2d": ["A", "B", "B", "C"], "scienceqa_img": ["B", "A", "A", "B"]}  # right, wrong, right, wrong
    results = evaluate(Scripted(answers), list(tasks.values()), tmp_path / "out")
    for name, key in (("ai2d", "exact_match,flexible-extract"), ("scienceqa_img", "exact_match,none")):
        method = results["standard_errors"][name][key]
        assert (method["stderr"], method["cluster_key"], method["clusters"]) == ("cluster-robust", "image", 3), name
        assert results["results"][name][key] == 0.5
        assert results["results"][name][key.replace("exact_match", "exact_match_stderr")] == pytest.approx(
            cluster_mean_stderr([1, 0, 1, 0], [0, 0, 1, 2]))  # not the 0.2887 of four independent questions
