"""MM-Vet's judge prompt, grade parsing and scores against the official evaluator.

Expected values come from running yuweihao/MM-Vet mm-vet_evaluator.py (commit
acde843e02dae30047bb456ee4a8ab28dee7e0ae) in a scratch folder outside the repository: its `runs` loop with a
stand-in OpenAI client that records the messages and answers with the judge answer given (the grade is the
one it took from that first answer; None where it asked again, which it does up to 5 times and then grades
0.0), and its `load_metadata` + `export_result` for the capability table (num_run 1, one decimal).
Deliberate departures: an unreadable grade is not asked again but counted as unparsed and not scored (the
lead's judging code); "nan", which the official accepts as a grade, is unreadable here.
"""

import hashlib
import math
import statistics
from typing import Optional

import pytest

from lmm_lightning.data.loading import TaskDocuments, load_documents
from lmm_lightning.evaluation.judge import JudgeRules
from lmm_lightning.metrics import aggregate
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.mmvet.utils import capabilities, judge_prompt, parse_judgement
from tests.fixtures.benchmarks import write_judged_benchmarks

# (judge answer, the grade the official takes from it; None: it asks again)
JUDGE_ANSWERS = [
    ("0.5", 0.5),
    (" 0.5\n", None),  # the text before the first space is empty
    ("0.5\n", 0.5),
    ("1.0 (the prediction is right)", 1.0),
    ("1.0\n(the prediction", None),
    ("1.1", None),
    ("-0.1", None),
    ("", None),
    (" ", None),
    ("N/A", None),
    ("0.5.", None),
    ("0.5,", None),
    ("0.0", 0.0),
    ("1", 1.0),
    ("0", 0.0),
    ("1.", 1.0),
    (".5", 0.5),
    ("+0.5", 0.5),
    ("1e-1", 0.1),
    ("0.3 0.4", 0.3),
    ("0.5\t", 0.5),
    ("0.5\tright", None),
    ("Correctness: 0.5", None),
    ("nan", math.nan),  # departure: unreadable here
    ("inf", None),
    ("-0.0", -0.0),
    ("0_5", None),  # Python reads 5.0: out of range
    ("0.1_0", 0.1),
    ("0.50000000001", 0.50000000001),
    ("1.0000000000000001", 1.0),
    ("١", 1.0),  # Arabic-Indic digit one
    ("½", None),
    ("0,5", None),
    ("0.5 | ", 0.5),
]

# The official grading prompt for RESPONSE on each fixture question: (sha256, its last line).
RESPONSE = "x = -1 <AND> x=5 | or <OR>6"
PROMPTS = {
    "v1_0": ("66bec723e77d2278d30d197db6cfa4c8450861d4ba67b657db5c27980a7c530d", "What is x in the equation? | -1 <AND> -5 | x = -1 <AND> x=5 | or <OR>6 | "),
    "v1_1": ("dd0e7a1d3cccbb1b7056a5ccde42226b626b9b11ae17486331d1e1c932c3b211", "How many tomatoes are there? | 5 | x = -1 <AND> x=5 | or <OR>6 | "),
    "v1_2": ("47ef8e02387ea3881b01544807021b6aeb6f328315b1ff07322c079a7fc64767", "What is located to the right of the shampoo? | conditioner | x = -1 <AND> x=5 | or <OR>6 | "),
    "v1_3": ("fbac632838174658f22cca149db926dfb01b1d78b15e0f2dabfbf688dd481d8a", "Which room is bigger, the double garage or the living room? | double garage | x = -1 <AND> x=5 | or <OR>6 | "),
    "v1_4": ("d81b9d04a62b23bb72bdf0985c851669a12ffa12e5c700dd36490f48d4785cc8", "What color is the car? | red <OR> dark red | x = -1 <AND> x=5 | or <OR>6 | "),
}

# Grades of the five fixture questions and the official capability table for them (x 100, one decimal).
GRADES = [0.5, 1.0, 0.0, 0.7, 0.3]
OFFICIAL_SCORES = {"ocr": 40.0, "math": 60.0, "rec": 65.0, "spat": 35.0, "total": 50.0}


@pytest.fixture(scope="module")
def mmvet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, TaskDocuments]:
    """The shipped YAML over the fixture rows (a local parquet file in the hub's columns)."""
    task = Task(TaskSpec.from_yaml(write_judged_benchmarks(tmp_path_factory.mktemp("judged"))["mmvet"]))
    return task, load_documents(task, None, 0)


def ours(official: Optional[float]) -> Optional[float]:
    """The official grade, NaN being unreadable here."""
    return None if official is not None and math.isnan(official) else official


@pytest.mark.parametrize(("answer", "official"), JUDGE_ANSWERS)
def test_grade_is_read_as_the_official_reads_it(answer: str, official: Optional[float]) -> None:
    expected = ours(official)
    assert parse_judgement(answer) == expected
    if expected is not None:
        assert math.copysign(1, parse_judgement(answer)) == math.copysign(1, expected)


def test_the_shipped_yaml_judges_with_the_official_settings(mmvet: tuple[Task, TaskDocuments]) -> None:
    task, _ = mmvet
    judge = task.spec.judge
    assert (judge.max_new_tokens, judge.until, judge.system_prompt, judge.quick) == (3, [], None, None)
    rules = JudgeRules.of(task)
    assert [rules.parser(answer) for answer, _ in JUDGE_ANSWERS] == [ours(official) for _, official in JUDGE_ANSWERS]


def test_judge_prompt_is_the_official_text(mmvet: tuple[Task, TaskDocuments]) -> None:
    task, documents = mmvet
    rules = JudgeRules.of(task)
    for doc in documents.docs.values():
        prompt = rules.prompt(doc, RESPONSE, task.doc_to_target(doc))
        assert prompt == judge_prompt(doc, RESPONSE)
        digest, last_line = PROMPTS[doc["question_id"]]
        assert prompt.splitlines()[-1] == last_line
        assert hashlib.sha256(prompt.encode()).hexdigest() == digest, doc["question_id"]
    assert len(documents.docs) == len(PROMPTS)


def test_the_model_is_asked_the_question_alone(mmvet: tuple[Task, TaskDocuments]) -> None:
    task, documents = mmvet
    for doc_id, doc in documents.docs.items():
        (request,) = task.build_requests(doc_id, doc, 0)
        assert request.context == doc["question"]
        assert len(documents.visuals(doc_id)) == 1
        assert task.doc_to_target(doc) == doc["answer"]


def test_capability_scores_match_the_official_table(mmvet: tuple[Task, TaskDocuments]) -> None:
    task, documents = mmvet
    scores = [task.score_judged(doc, grade) for doc, grade in zip(documents.docs.values(), GRADES)]
    assert scores[0] == {"mmvet_score": 0.5, "mmvet_ocr": 0.5, "mmvet_math": 0.5}

    def score(metric: str):
        return aggregate(task.aggregation(metric), [s[metric] for s in scores if metric in s], 0, 0)

    for name, official in OFFICIAL_SCORES.items():
        assert round(100 * score("mmvet_score" if name == "total" else f"mmvet_{name}").value, 1) == official, name
    assert not any("mmvet_know" in s or "mmvet_gen" in s for s in scores)  # no fixture question needs them
    total = score("mmvet_score")
    assert total.stderr == pytest.approx(statistics.stdev(GRADES) / math.sqrt(len(GRADES)))  # lm-eval's mean stderr
    assert total.ci_lower < total.value < total.ci_upper


def test_capabilities_are_read_from_either_layout() -> None:
    assert capabilities({"capability": "rec,ocr,know"}) == ["rec", "ocr", "know"]
    assert capabilities({"capability": "ocr, math"}) == ["ocr", "math"]
    assert capabilities({"capability": ["spat", "gen", "spat"]}) == ["spat", "gen"]
    for bad in ("ocr,reading", "", ["ocr", "mat"]):
        with pytest.raises(ValueError, match="must name some of"):
            capabilities({"question_id": "v1_9", "capability": bad})


def test_the_builtin_is_registered() -> None:
    assert available_tasks()["mmvet"].name == "mmvet.yaml"
