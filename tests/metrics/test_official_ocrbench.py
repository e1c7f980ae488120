"""OCRBench scoring against the official OCRBench evaluation, on adversarial model outputs.

The `official` column is what Yuliang-Liu/MultimodalOCR OCRBench/example.py (commit
f5cbec66817b643f732f11cdc7b3a550963b70dc; its scripts/*.py score the same way) returns, obtained by
running its scoring loop: an answer contained in the prediction, both lowercased, stripped and with
"\\n" made " "; for HME100k case kept and " " removed after "\\n" is made " ". No departures.
lmms-eval's `ocrbench` also folds fullwidth ASCII and is not followed ("ＳＴＯＰ" is wrong here).
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.ocrbench.utils import contains_answer

# (prediction, answers, dataset, official)
CASES = [
    # case ignored, containment
    ("STOP", ["STOP"], "IIIT5K", 1.0),
    ("stop", ["STOP"], "IIIT5K", 1.0),
    ("The word is stop.", ["STOP"], "IIIT5K", 1.0),
    ("stops", ["STOP"], "IIIT5K", 1.0),
    ("STOP", ["stop"], "HME100k", 0.0),  # HME100k keeps case
    ("hme100k lower", ["LOWER"], "hme100k", 1.0),  # the dataset name is matched exactly
    # whitespace: stripped, newlines made spaces, other spaces kept
    ("\nstop\n", ["STOP"], "IIIT5K", 1.0),
    ("S T O P", ["STOP"], "IIIT5K", 0.0),
    ("STO P", ["STOP"], "IIIT5K", 0.0),
    ("st\nop", ["STOP"], "IIIT5K", 0.0),
    ("new york", ["New\nYork"], "IIIT5K", 1.0),
    ("new\nyork", ["New York"], "IIIT5K", 1.0),
    ("new  york", ["New York"], "IIIT5K", 0.0),
    ("new\tyork", ["New York"], "IIIT5K", 0.0),
    ("New York", ["new york "], "IIIT5K", 1.0),
    # empty answers are contained in everything; an empty prediction contains only them
    ("", ["STOP"], "IIIT5K", 0.0),
    ("stop", [""], "IIIT5K", 1.0),
    ("", [""], "IIIT5K", 1.0),
    ("anything", ["  "], "IIIT5K", 1.0),
    ("", ["x"], "HME100k", 0.0),
    ("x", [""], "HME100k", 1.0),
    # several answers: any one
    ("$12.50", ["12.50", "$12.50"], "docVQA", 1.0),
    ("The total is 12.50 dollars", ["$12.50", "12.50"], "docVQA", 1.0),
    ("y = x ^ 2", ["x ^ 2", "x^{2}"], "HME100k", 1.0),
    # numbers, thousands separators, units, percent: plain substrings
    ("1,234", ["1234"], "docVQA", 0.0),
    ("1234", ["1,234"], "docVQA", 0.0),
    ("12.5", ["12.50"], "docVQA", 0.0),
    ("5 kg", ["5kg"], "docVQA", 0.0),
    ("5kg", ["5 kg"], "docVQA", 0.0),
    ("50 %", ["50%"], "ChartQA", 0.0),
    ("50%", ["50"], "ChartQA", 1.0),
    # short answers inside words count
    ("Answer: A", ["a"], "STVQA", 1.0),
    ("DNA", ["a"], "STVQA", 1.0),
    # fullwidth and non-ASCII case: Python's lower(), nothing folded
    ("ＳＴＯＰ", ["STOP"], "IIIT5K", 0.0),
    ("Straße", ["STRASSE"], "IIIT5K", 0.0),
    ("İstanbul", ["istanbul"], "IIIT5K", 0.0),
    ("北京", ["北京"], "ReCTS", 1.0),
    ("北 京", ["北京"], "ReCTS", 0.0),
    # HME100k: spaces and newlines removed on both sides, tabs kept
    ("x ^ { 2 }", ["x ^ { 2 }"], "HME100k", 1.0),
    ("$x^{2}$", ["x ^ { 2 }"], "HME100k", 1.0),
    ("X^{2}", ["x ^ { 2 }"], "HME100k", 0.0),
    ("x^{2}\n", ["x ^ { 2 }"], "HME100k", 1.0),
    ("x\n^\n{2}", ["x ^ { 2 }"], "HME100k", 1.0),
    ("x\t^{2}", ["x ^ { 2 }"], "HME100k", 0.0),
    ("x ^ { 2 }", ["x\t^{2}"], "HME100k", 0.0),
    ("\\frac { a } { b }", ["\\frac{a}{b}"], "HME100k", 1.0),
    ("ｘ^{2}", ["x^{2}"], "HME100k", 0.0),
]


@lru_cache(maxsize=1)
def task() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["ocrbench"]))


@pytest.mark.parametrize(("prediction", "answers", "dataset", "official"), CASES)
def test_contains_answer_matches_the_official_script(
    prediction: str, answers: list[str], dataset: str, official: float
) -> None:
    assert contains_answer(prediction, answers, dataset) == official


def test_a_single_string_answer_scores_as_a_list_of_one() -> None:
    doc = {"dataset": "IIIT5K", "question_type": "Regular Text Recognition", "answer": "STOP"}
    assert task().score(doc, [Response(uid=0, text="stop")])["none"]["ocrbench_accuracy"] == 1.0


def test_total_and_categories_of_eight_documents() -> None:
    ocrbench = task()
    answers = [  # (dataset, question_type, answers, generation, correct)
        ("IIIT5K", "Regular Text Recognition", ["STOP"], "stop", 1),
        ("svt", "Irregular Text Recognition", ["HOTEL"], "H O T E L", 0),
        ("textVQA", "Scene Text-centric VQA", ["coca cola"], "It says Coca\nCola.", 1),
        ("docVQA", "Doc-oriented VQA", ["1,234"], "1234", 0),
        ("docVQA", "Doc-oriented VQA", ["$12.50", "12.50"], "The total is 12.50", 1),
        ("SROIE", "Key Information Extraction", ["ACME"], "Ａｃｍｅ", 0),
        ("HME100k", "Handwritten Mathematical Expression Recognition", ["x ^ { 2 }"], "$x^{2}$", 1),
        ("HME100k", "Handwritten Mathematical Expression Recognition", ["x ^ { 2 }"], "X^{2}", 0),
    ]
    scores = [
        ocrbench.score({"dataset": d, "question_type": q, "answer": a}, [Response(uid=i, text=t)])["none"]
        for i, (d, q, a, t, _) in enumerate(answers)
    ]
    assert [s["ocrbench_accuracy"] for s in scores] == [float(c) for *_, c in answers]

    def value(metric: str) -> float:
        return aggregate(ocrbench.aggregation(metric), [s[metric] for s in scores if metric in s], 0, 0).value

    assert 1000 * value("ocrbench_accuracy") == pytest.approx(500)  # the official score, out of 1000
    assert value("ocrbench_text_recognition") == pytest.approx(1 / 2)
    assert value("ocrbench_scene_text_vqa") == pytest.approx(1.0)
    assert value("ocrbench_doc_vqa") == pytest.approx(1 / 2)
    assert value("ocrbench_key_information_extraction") == pytest.approx(0.0)
    assert value("ocrbench_handwritten_math") == pytest.approx(1 / 2)
