"""TextVQA accuracy against the official evaluator, on adversarial model outputs.

Every expected value in CASES is what the official evaluator returns, obtained by running it:
facebookresearch/mmf mmf/utils/m4c_evaluators.py (commit 2dc099af7ce267561e4c2ae033c27eb36be5b3ea),
`TextVQAAccuracyEvaluator.eval_pred_list` on one prediction, with its `EvalAIAnswerProcessor` (the
EvalAI server's answer processing; lmms-eval's lmms_eval/tasks/textvqa/utils.py, commit
c7eaef373f4b1bd8a6b5f3e85c3391962c30068c, applies the same processor and leave-one-out).

Departure: the official evaluator asserts exactly 10 answers; other counts are averaged the same
way, as lmms-eval's `textvqa_process_results` does (FEWER_ANSWERS, values from running that code).
"""

import pytest

from lmm_lightning.metrics import aggregate, normalize_textvqa_answer, textvqa_accuracy, vqa_accuracy
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

STOP = ["stop"] * 7 + ["stop sign"] * 3


def ten(answer: str) -> list[str]:
    return [answer] * 10


# (prediction, the 10 annotator answers, official score)
CASES = [
    # case, whitespace, trailing punctuation
    ("stop", STOP, 1.0),
    ("Stop", STOP, 1.0),
    ("STOP.", STOP, 1.0),
    ("stop\n", STOP, 1.0),
    (" stop ", STOP, 1.0),
    ("\tstop\n", STOP, 1.0),
    ("stop sign", STOP, 0.9),  # 3 annotators: 3 * 2/3 + 7 * 1, over 10
    ("Stop Sign!", STOP, 0.9),
    ("stop  sign", STOP, 0.9),
    ("hello  world", ten("hello world"), 1.0),
    ("stop", ["Stop"] * 5 + ["STOP!"] * 5, 1.0),
    # the leave-one-out soft score
    ("green", ["green"] * 2 + ["dark green"] * 8, 0.6),
    ("green", ["green"] + ["dark green"] * 9, 0.3),
    ("green", ["green"] * 4 + ["dark green"] * 6, 1.0),
    ("green", ["green"] * 3 + ["dark green"] * 7, 0.9),
    ("green", ten("dark green"), 0.0),
    # rambling answers and answers inside longer ones
    ("sign", STOP, 0.0),
    ("The sign says stop", STOP, 0.0),
    # thousands separators: every comma is dropped first
    ("1,234", ten("1234"), 1.0),
    ("1234", ten("1,234"), 1.0),
    ("1,000-2,000", ten("1000 2000"), 1.0),  # "-" becomes a space (VQA v2's processing deletes it)
    # number words, articles, contractions
    ("Two", ten("2"), 1.0),
    ("2", ten("two"), 1.0),
    ("none", ten("0"), 1.0),
    ("ten", ten("10"), 1.0),
    ("eleven", ten("11"), 0.0),
    ("the coca-cola", ten("coca cola"), 1.0),
    ("coca - cola", ten("coca cola"), 1.0),
    ("t-shirt, blue", ten("t shirt blue"), 1.0),
    ("dont", ten("don't"), 1.0),
    ("what's", ten("whats"), 0.0),  # "'s" is split off first: "what 's" vs "what's"
    ("McDonald's", ten("mcdonalds"), 0.0),
    ("McDonald's", ten("mcdonald's"), 1.0),
    ("it's", ten("its"), 0.0),
    ("yes?", ten("yes"), 1.0),
    ("yes, it is", ten("yes it is"), 1.0),
    # units, percent and currency signs are kept
    ("5kg", ten("5 kg"), 0.0),
    ("5 kg", ten("5kg"), 0.0),
    ("50%", ten("50"), 0.0),
    ("$5", ten("5"), 0.0),
    ("3.5", ten("3.5"), 1.0),
    ("st. louis", ten("st louis"), 1.0),
    # several letters, letters with brackets
    ("c)", ten("c"), 1.0),
    ("(c)", ten("c"), 1.0),
    ("A, B", ten("a b"), 1.0),  # "a" is an article: both read "b"
    ("A B C", ten("abc"), 0.0),
    # fullwidth characters are not folded
    ("１２３", ten("123"), 0.0),
    ("Ａ", ten("a"), 0.0),
    ("Ｂ", ten("b"), 0.0),
    # empty strings: an answer that is only an article normalises to "" too
    ("", ten("the"), 1.0),
    ("", ten("stop"), 0.0),
    ("a", ten("an"), 1.0),
]

# Departure (see the module docstring): not 10 answers; values from lmms-eval's textvqa_process_results.
FEWER_ANSWERS = [
    ("yes", ["Yes", "yes.", "YES"], 0.6666666666666666),
    ("yes", ["yes"], 0.0),
    ("2", ["2", "2", "3", "3"], 0.5),
    ("no", ["yes", "no"], 0.16666666666666666),
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), CASES)
def test_textvqa_accuracy_matches_the_official_evaluator(prediction: str, answers: list[str], expected: float) -> None:
    assert textvqa_accuracy(prediction, answers) == expected


@pytest.mark.parametrize(("prediction", "answers", "expected"), FEWER_ANSWERS)
def test_textvqa_accuracy_with_other_answer_counts(prediction: str, answers: list[str], expected: float) -> None:
    assert textvqa_accuracy(prediction, answers) == expected


def test_textvqa_accuracy_rejects_no_answers() -> None:
    with pytest.raises(ValueError, match="at least one"):
        textvqa_accuracy("stop", [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Coca-Cola's", "coca cola 's"), ("1,234 Dollars?", "1234 dollars"), ("The Two Dogs!", "2 dogs"), ("dont", "don't")],
)
def test_normalize_textvqa_answer(text: str, expected: str) -> None:
    assert normalize_textvqa_answer(text) == expected


def test_textvqa_is_not_scored_with_the_vqa_v2_processing() -> None:
    assert textvqa_accuracy("1,000-2,000", ten("1000 2000")) == 1.0
    assert vqa_accuracy("1,000-2,000", ten("1000 2000")) == 0.0


def test_textvqa_task_aggregates_accuracy() -> None:
    """Six documents through the shipped task, as the pipeline scores them."""
    task = Task(TaskSpec.from_yaml(available_tasks()["textvqa_val"]))
    answers = [  # (answers, generation, official score)
        (STOP, "Stop.", 1.0),
        (STOP, "stop sign", 0.9),
        (["green"] * 2 + ["dark green"] * 8, "green", 0.6),
        (ten("1234"), "1,234", 1.0),
        (ten("mcdonalds"), "McDonald's", 0.0),
        (["green"] + ["dark green"] * 9, "Green", 0.3),
    ]
    scores = [
        task.score({"question": "?", "answers": gold}, [Response(uid=i, text=text)])["none"]["vqa_accuracy"]
        for i, (gold, text, _) in enumerate(answers)
    ]
    assert scores == [expected for *_, expected in answers]
    value = aggregate(task.aggregation("vqa_accuracy"), scores, 0, 0).value
    assert value == pytest.approx((1.0 + 0.9 + 0.6 + 1.0 + 0.0 + 0.3) / 6)
