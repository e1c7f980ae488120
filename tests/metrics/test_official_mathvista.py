"""MathVista's answer extraction, normalisation and accuracy against the official evaluation code.

Expected values come from running lupantech/MathVista evaluation/ (commit
53d525874bdde205128e6b160b7357a88277d479) in a scratch folder outside the repository, on the official rows of
the fixture problems (data/testmini.json and data/query.json, pids 5, 2, 104, 506, 540): extract_answer.py's
`extract_answer` with a stand-in model that records the prompt it would send to GPT (None below: it asks the
judge), with and without --quick_extract; calculate_score.py's `normalize_extracted_answer` and `safe_equal`
(python-Levenshtein 0.27.5 for the edit distance); its fine-grained accuracies (`get_acc_with_contion`
over the merged metadata); and models/gpt.py's `GPT_Model.get_response` with a stand-in client, for how the
judge's answer becomes the extraction.
Deliberate departures: a judge answer that is empty after stripping is counted as unparsed and not scored
(the official GPT_Model asks again for an empty answer, and scores "" for one of only whitespace).
"""

import hashlib
from pathlib import Path
from typing import Any, Optional

import pytest

from lmm_lightning.data.loading import TaskDocuments, load_documents
from lmm_lightning.evaluation.judge import JudgeRules
from lmm_lightning.metrics import aggregate
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.mathvista import utils
from tests.fixtures.benchmarks import mathvista_rows, write_judged_benchmarks

PROBLEMS = {row["pid"]: row for row in mathvista_rows()}

# (pid, response, official extraction without --quick_extract, with it); None: the judge is asked
QUICK = [
    ("5", "", "", ""),
    ("5", "97", "97", "97"),
    ("5", " 97", None, None),
    ("5", "A", None, None),
    ("5", "(A) 97", None, None),
    ("5", "97.", None, None),
    ("5", "m∠H = 97", None, None),
    ("540", "3/11", "3/11", "3/11"),
    ("540", "3/11 ", None, None),
    ("540", "B", None, None),
    ("2", "1000", "1000", "1000"),
    ("2", " 1000 ", "1000", "1000"),
    ("2", "1,000", None, None),
    ("2", "1_000", "1000", "1000"),
    ("2", "1000.0", None, None),
    ("2", "+1000", "1000", "1000"),
    ("2", "-0", "0", "0"),
    ("2", "1000 g", None, None),
    ("2", "١٠٠٠", "1000", "1000"),
    ("2", "1e3", None, None),
    ("2", "The answer is 1000.", None, None),
    ("104", "0.8", "0.8", "0.8"),
    ("104", "0.80", "0.8", "0.8"),
    ("104", ".8", "0.8", "0.8"),
    ("104", "8e-1", "0.8", "0.8"),
    ("104", "nan", "nan", "nan"),
    ("104", "inf", "inf", "inf"),
    ("104", "1e400", "inf", "inf"),
    ("104", "0,8", None, None),
    ("104", "0.8 ", "0.8", "0.8"),
    ("104", "4/5", None, None),
    ("104", "1", "1.0", "1.0"),
    ("506", "[2014, 2016]", None, None),
    ("506", 'The answer is "[2014, 2016]".', None, "[2014, 2016]"),
    ("5", 'The answer is "B".', None, "B"),
    ("2", 'The answer is "3". Or "4".', None, '3". Or "4'),
    ("2", 'The answer is "3"', None, None),
    ("2", 'the answer is "3".', None, None),
    ("506", 'The answer is "".', None, ""),
]

# (pid, extraction, official normalised prediction, official safe_equal with the gold answer)
NORMALIZED = [
    ("5", "A", "97", True),
    ("5", "a", "97", True),  # no letter rule for a bare lowercase letter: nearest choice
    ("5", "B", "102", False),
    ("5", "(B)", "102", False),
    ("5", "(b) 107", "102", False),
    ("5", "B.", "97", True),
    ("5", " C ", "107", False),
    ("5", "E", "97", True),
    ("5", "(E)", "97", True),
    ("5", "", "97", True),  # the shortest choice is nearest to ""
    ("5", "102", "102", False),
    ("5", "107 degrees", "107", False),
    ("5", "(A) or (B)", "97", True),
    ("5", "122°", "122", False),
    ("5", "m∠H = 97", "97", True),
    ("5", "The answer is D", "97", True),
    ("540", "3/5", "3/5", False),
    ("540", "B", "8/11", False),
    ("540", "3/11", "3/11", True),
    ("540", "(D)", "3/5", False),
    ("540", "3 / 11", "3/11", True),
    ("540", "8/11", "8/11", False),
    ("540", "\n(a)\n", "3/11", True),
    ("2", "1000", "1000", True),
    ("2", "1000.0", "1000", True),
    ("2", "1000.9", "1000", True),  # int() truncates
    ("2", "999.9999", "999", False),
    ("2", "1,000", None, False),
    ("2", "1e3", "1000", True),
    ("2", " 1000\n", "1000", True),
    ("2", "1000 g", None, False),
    ("2", "", None, False),
    ("2", "nan", None, False),
    ("2", "inf", None, False),
    ("2", "-1000", "-1000", False),
    ("2", "1_000", "1000", True),
    ("2", "0x3E8", None, False),
    ("2", "1000.", "1000", True),
    ("104", "0.8", "0.8", True),
    ("104", "0.80", "0.8", True),
    ("104", ".8", "0.8", True),
    ("104", "0.75", "0.8", True),
    ("104", "0.85", "0.8", True),  # 0.85 is 0.8499... as a float
    ("104", "0.849", "0.8", True),
    ("104", "0.86", "0.9", False),
    ("104", "8/10", None, False),
    ("104", "80%", None, False),
    ("104", "nan", "nan", False),
    ("104", "0.8.", None, False),
    ("104", "1", "1.0", False),
    ("104", "", None, False),
    ("104", "  0.8  ", "0.8", True),
    ("506", "[2014, 2016]", "[2014, 2016]", True),
    ("506", "[2014,2016]", "[2014,2016]", False),
    ("506", "2014, 2016", "2014, 2016", False),
    ("506", "[2014, 2016] ", "[2014, 2016] ", False),
    ("506", "(2014, 2016)", "(2014, 2016)", False),
    ("506", "", "", False),
]

# The official extraction prompt for RESPONSE on each fixture problem: (sha256, its last 80 characters).
RESPONSE = "The answer is (A).\n So 97."
PROMPTS = {
    "5": ("eef74550376f63e5add25a65e8798b3a229bc5fc7b4e9ac942e685cf74d61dab", ":\n(A) 97\n(B) 102\n(C) 107\n(D) 122\n\nThe answer is (A).\n So 97.\n\nExtracted answer: "),
    "2": ("12bce03179c18204319e54f8ed13a35b37da57e6132f7cec85ca33842ed7f1a3", " of the measuring cup? (Unit: g)\n\nThe answer is (A).\n So 97.\n\nExtracted answer: "),
    "104": ("c73ee807a65778e92acb73f4ec2a523fee1b512766add6ff4c2ac5ca7901f0fa", "on of females facing the camera?\n\nThe answer is (A).\n So 97.\n\nExtracted answer: "),
    "506": ("f690cd473d2c547ac832b66543d86f01b29b9cc1edfd7fe089dc7309b9043178", "ine  graph saw its maximum peak?\n\nThe answer is (A).\n So 97.\n\nExtracted answer: "),
    "540": ("124c8d9c065afab67ebcbb705951515aed49f27a33dbc2e350bd6b133a266f19", ") 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5\n\nThe answer is (A).\n So 97.\n\nExtracted answer: "),
}

# One extraction per fixture problem and the official accuracies over the five (calculate_score.main).
EXTRACTIONS = {"5": "A", "2": "1000.0", "104": "0.75", "506": "[2014,2016]", "540": "(B)"}
OFFICIAL_SCORES = {
    "mathvista_accuracy": 0.6,
    "mathvista_free_form": 2 / 3, "mathvista_multi_choice": 0.5,
    "mathvista_fqa": 0.0, "mathvista_gps": 1.0, "mathvista_mwp": 0.0, "mathvista_vqa": 1.0,
    "mathvista_alg": 1.0, "mathvista_ari": 2 / 3, "mathvista_geo": 0.5, "mathvista_num": 1.0, "mathvista_sta": 0.0,
}

# (judge answer, the extraction the official takes from GPT's answer, ours; None: not scored)
JUDGE_ANSWERS = [
    ("B", "B", "B"),
    ("  (B) 8/11 \n", "(B) 8/11", "(B) 8/11"),
    ("[2014, 2016]\n", "[2014, 2016]", "[2014, 2016]"),
    ("1,000", "1,000", "1,000"),
    ("   ", "", None),  # departure: the official scores "" (the nearest choice to "" for multiple choice)
    ("", "asks again", None),
]


@pytest.fixture(scope="module")
def mathvista(tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, TaskDocuments]:
    """The shipped YAML over the fixture rows (a local parquet file in the hub's columns)."""
    task = Task(TaskSpec.from_yaml(write_judged_benchmarks(tmp_path_factory.mktemp("judged"))["mathvista_testmini"]))
    return task, load_documents(task, None, 0)


def by_pid(documents: TaskDocuments) -> dict[str, dict[str, Any]]:
    return {doc["pid"]: doc for doc in documents.docs.values()}


@pytest.mark.parametrize(("pid", "response", "official", "official_quick_extract"), QUICK)
def test_rule_extraction_matches_extract_answer(pid: str, response: str, official: Optional[str], official_quick_extract: Optional[str]) -> None:
    assert utils.quick_answer(PROBLEMS[pid], response) == official
    assert utils.quick_extract(PROBLEMS[pid], response) == official_quick_extract


@pytest.mark.parametrize(("pid", "extraction", "official", "correct"), NORMALIZED)
def test_normalisation_and_equality_match_calculate_score(pid: str, extraction: str, official: Optional[str], correct: bool) -> None:
    doc = PROBLEMS[pid]
    assert utils.normalize_extracted_answer(extraction, doc["choices"], doc["question_type"], doc["answer_type"], doc["precision"]) == official
    assert utils.process_results(doc, [extraction])["mathvista_accuracy"] == float(correct)


def test_the_shipped_yaml_judges_with_the_official_settings(mathvista: tuple[Task, TaskDocuments]) -> None:
    task, documents = mathvista
    judge = task.spec.judge
    assert (judge.max_new_tokens, judge.until, judge.system_prompt) == (1024, [], None)
    rules = JudgeRules.of(task)
    assert [rules.parser(answer) for answer, _, _ in JUDGE_ANSWERS] == [ours for _, _, ours in JUDGE_ANSWERS]
    docs = by_pid(documents)
    assert [rules.quick(docs["2"], r) for r in ("1000", "1000.0", "")] == ["1000", None, ""]


def test_extraction_prompt_is_the_official_text(mathvista: tuple[Task, TaskDocuments]) -> None:
    task, documents = mathvista
    rules = JudgeRules.of(task)
    for pid, doc in by_pid(documents).items():
        prompt = rules.prompt(doc, RESPONSE, task.doc_to_target(doc))
        digest, tail = PROMPTS[pid]
        assert prompt.endswith(tail)
        assert hashlib.sha256(prompt.encode()).hexdigest() == digest, pid
    assert len(documents.docs) == len(PROMPTS)


def test_the_model_is_asked_the_query_column(mathvista: tuple[Task, TaskDocuments]) -> None:
    task, documents = mathvista
    for doc_id, doc in documents.docs.items():
        (request,) = task.build_requests(doc_id, doc, 0)
        assert request.context == PROBLEMS[doc["pid"]]["query"]
        assert len(documents.visuals(doc_id)) == 1
    docs = by_pid(documents)  # the hub's nulls and nested metadata survive the parquet round trip
    assert docs["2"]["choices"] is None and docs["2"]["precision"] is None and docs["104"]["precision"] == 1.0
    assert docs["506"]["metadata"]["skills"] == ["statistical reasoning"]


def test_accuracy_and_breakdowns_match_calculate_score(mathvista: tuple[Task, TaskDocuments]) -> None:
    task, documents = mathvista
    scores = [task.score_judged(doc, EXTRACTIONS[pid]) for pid, doc in by_pid(documents).items()]
    for metric, official in OFFICIAL_SCORES.items():
        values = [s[metric] for s in scores if metric in s]
        assert aggregate(task.aggregation(metric), values, 0, 0).value == pytest.approx(official), metric
    reported = {m.metric for m in task.metrics}
    assert set(OFFICIAL_SCORES) <= reported and {k for s in scores for k in s} <= reported


def test_unknown_categories_and_answer_types_are_named() -> None:
    doc = {**PROBLEMS["2"], "metadata": {**PROBLEMS["2"]["metadata"], "task": "puzzle solving"}}
    with pytest.raises(ValueError, match="problem '2'.*puzzle solving"):
        utils.process_results(doc, ["1000"])
    with pytest.raises(ValueError, match="answer_type must be integer, float or list"):
        utils.normalize_extracted_answer("x", None, "free_form", "text", None)


def test_the_builtin_is_registered() -> None:
    assert available_tasks()["mathvista_testmini"] == Path(utils.__file__).parent / "mathvista_testmini.yaml"
