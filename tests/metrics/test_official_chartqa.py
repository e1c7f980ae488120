"""ChartQA relaxed accuracy against the official definition, on adversarial model outputs.

Every expected value below is what the official function returns, obtained by running it:
`relaxed_correctness` of google-research/pix2struct, pix2struct/metrics.py (commit
bd70460499dc7bf4279158264c4bcd69a0250ae9), called as `relaxed_correctness(target, prediction)` and
taking the max over several targets as its `aggregate_metrics` (lmms-eval's
lmms_eval/tasks/chartqa/utils.py, commit 2bb5e9852537729b4fb25fcaa2dce11eb1b2971d, copies it with the
prediction first). No departures.
"""

import pytest

from lmm_lightning.metrics import aggregate, relaxed_accuracy
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

# (prediction, target, official score)
CASES = [
    # the 5 % rule: |pred - target| / |target| <= 0.05, boundary included
    ("10.4", "10", 1.0),
    ("10.6", "10", 0.0),
    ("10.5", "10", 1.0),
    ("9.5", "10", 1.0),
    ("105", "100", 1.0),
    ("0.105", "0.1", 1.0),
    ("-10.4", "-10", 1.0),
    ("-12", "12", 0.0),
    ("+12", "12", 1.0),
    ("12.0", "12", 1.0),
    # thousands separators: not a Python float, so compared as strings
    ("1,234", "1234", 0.0),
    ("1,234", "1,234", 1.0),
    ("1234", "1,234", 0.0),
    ("1,240", "1,234", 0.0),
    # whitespace: float() ignores it around a number; strings are never stripped
    (" 12 ", "12", 1.0),
    ("12\n", "12", 1.0),
    ("\t12", "12", 1.0),
    ("12", " 12", 1.0),
    ("Yes ", "yes", 0.0),
    ("yes\n", "yes", 0.0),
    ("South  Korea", "South Korea", 0.0),
    # what else Python's float reads
    ("1e3", "1000", 1.0),
    ("1E3", "1000", 1.0),
    ("1_000", "1000", 1.0),
    ("1e-3", "0.001", 1.0),
    ("0x10", "16", 0.0),
    ("nan", "nan", 0.0),  # nan <= 0.05 is false
    ("NaN", "5", 0.0),
    ("inf", "inf", 0.0),  # inf - inf is nan
    ("inf", "1e308", 0.0),
    ("Infinity", "Infinity", 0.0),
    # percent: a trailing "%" (all of them) means / 100, on either side
    ("12%", "0.12", 1.0),
    ("12%", "12", 0.0),
    ("0.12", "12%", 1.0),
    ("12", "12%", 0.0),
    ("12 %", "0.12", 1.0),
    ("12%%", "0.12", 1.0),
    ("%", "%", 1.0),
    ("12%", "12%", 1.0),
    # a zero target is falsy: the strings are compared instead
    ("0", "0", 1.0),
    ("0.0", "0", 0.0),
    ("0", "0.0", 0.0),
    ("-0", "0", 0.0),
    ("0.01", "0", 0.0),
    ("5", "0", 0.0),
    ("0%", "0", 0.0),
    # units and currency are strings
    ("5kg", "5", 0.0),
    ("5 kg", "5", 0.0),
    ("5kg", "5kg", 1.0),
    ("5 kg", "5kg", 0.0),
    ("$12", "12", 0.0),
    ("12", "$12", 0.0),
    # fullwidth and other Unicode digits are numbers to float(); a fullwidth letter is its own letter
    ("１２３", "123", 1.0),
    ("１２３", "１２３", 1.0),
    ("٣", "3", 1.0),
    ("Ａ", "a", 0.0),
    ("Ａ", "ａ", 1.0),
    # empty strings
    ("", "", 1.0),
    ("", "0", 0.0),
    ("", "abc", 0.0),
    ("abc", "", 0.0),
    # case-insensitive exact match, nothing else
    ("Yes", "yes", 1.0),
    ("YES", "yes", 1.0),
    ("yes.", "yes", 0.0),
    ("Spain", "spain", 1.0),
    ("STRASSE", "straße", 0.0),
    ("ten", "10", 0.0),
    # several letters, rambling answers, an answer inside a longer one
    ("A, B", "A", 0.0),
    ("c)", "c", 0.0),
    ("The answer is 12", "12", 0.0),
    ("12 dollars", "12", 0.0),
    ("1212", "12", 0.0),
]

# (prediction, several targets, official score): the best target counts
MULTI_TARGET_CASES = [
    ("12.3", ["10", "12"], 1.0),
    ("11", ["10", "12"], 0.0),
    ("Spain", ["France", "spain"], 1.0),
    ("0", ["0.0", "0"], 1.0),
]


@pytest.mark.parametrize(("prediction", "target", "expected"), CASES)
def test_relaxed_accuracy_matches_pix2struct(prediction: str, target: str, expected: float) -> None:
    assert relaxed_accuracy(prediction, target) == expected


@pytest.mark.parametrize(("prediction", "targets", "expected"), MULTI_TARGET_CASES)
def test_relaxed_accuracy_takes_the_best_target(prediction: str, targets: list[str], expected: float) -> None:
    assert relaxed_accuracy(prediction, targets) == expected


def test_relaxed_accuracy_rejects_no_target() -> None:
    with pytest.raises(ValueError, match="at least one"):
        relaxed_accuracy("1", [])


def test_chartqa_task_aggregates_overall_and_per_split() -> None:
    """Eight documents through the shipped task, as the pipeline scores them."""
    task = Task(TaskSpec.from_yaml(available_tasks()["chartqa"]))
    answers = [  # (split, gold, generation, correct)
        ("human_test", "42", "43", 1),  # 2.4 % off
        ("human_test", "42", "45", 0),  # 7.1 % off
        ("human_test", "Spain", "spain", 1),
        ("human_test", "1,234", "1234", 0),  # the gold is a string, not a number
        ("augmented_test", "0.45", "45%", 1),
        ("augmented_test", "0", "0.0", 0),  # zero target: string comparison
        ("augmented_test", "12", "The answer is 12", 0),
        ("augmented_test", "1000", "1e3", 1),
    ]
    scores = [
        task.score({"type": split, "question": "?", "answer": gold}, [Response(uid=i, text=text)])["none"]
        for i, (split, gold, text, _) in enumerate(answers)
    ]
    assert [s["relaxed_overall"] for s in scores] == [float(c) for *_, c in answers]

    def value(metric: str) -> float:
        return aggregate(task.aggregation(metric), [s[metric] for s in scores if metric in s], 0, 0).value

    assert value("relaxed_overall") == pytest.approx(4 / 8)
    assert value("relaxed_human_split") == pytest.approx(2 / 4)
    assert value("relaxed_augmented_split") == pytest.approx(2 / 4)
