"""DocVQA ANLS against the official evaluation script, on adversarial model outputs.

Every expected value below is what the official per-question ANLS returns, obtained by running it:
the Robust Reading Competition's DocVQA / InfographicVQA evaluation script (rrc.cvc.uab.es/?ch=17),
as published in QwenLM/Qwen-VL eval_mm/infographicsvqa_eval.py (commit
e6bbb9dd9e9fc44a4498d372e83b3b172dc1d808), `evaluate_method`'s loop for one question:
distance between `" ".join(s.strip().lower().split())` of both strings, divided by the longer
`len(s.upper())` of the raw strings, 1 - the smallest ratio, 0 below the 0.5 threshold.
lmms-eval's `anls` (lmms_eval/api/metrics.py, commit 9e6983466fbabe14e51010121b2f832acc89a850)
is the same computation. No departures.
"""

import pytest

from lmm_lightning.metrics import aggregate, anls
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

COMPANY = ["ACME corp.", "Acme Corporation"]

# (prediction, answers, official score)
CASES = [
    ("Acme corp", COMPANY, 0.9),  # 1 edit in 10 characters
    ("acme corporation", COMPANY, 1.0),  # best over the answers
    ("Acme Corp", ["xyz", "Acme corp"], 1.0),
    ("Beta inc", COMPANY, 0.0),
    # case and whitespace: gone before the distance...
    ("acme corp.", ["ACME corp."], 1.0),
    ("ACME CORP.", ["acme corp."], 1.0),
    ("Acme corp.\n", ["ACME corp."], 1.0),
    ("  Acme corp.", ["ACME corp."], 1.0),
    ("Acme\tcorp.", ["ACME corp."], 1.0),
    ("Acme  corp.", ["ACME corp."], 1.0),
    # ... but the raw strings' lengths divide it, doubled spaces included
    ("Acme  crp.", ["ACME corp."], 0.9),
    ("helo   world", ["hello world"], 0.9166666666666666),  # 1 / 12, not 1 / 11
    ("a c", ["a  b"], 0.75),  # 1 / 4: the answer's raw length
    ("a b", ["a  b"], 1.0),
    # the threshold: exactly 0.5 is kept, below it is 0
    ("abcd", ["abxy"], 0.5),
    ("ab", ["ac"], 0.5),
    ("abcdef", ["abcxyz"], 0.5),
    ("abcdefg", ["abcdxyz"], 0.5714285714285714),
    ("abc", ["axy"], 0.0),
    # empty strings and whitespace-only ones
    ("", [""], 1.0),
    ("", ["abc"], 0.0),
    ("abc", [""], 0.0),
    ("   ", [""], 1.0),
    ("  ", ["a"], 0.5),  # 1 edit over a raw length of 2
    (" ", ["a"], 0.0),
    ("", ["", "x"], 1.0),
    # characters whose case changes their length: the uppercase length counts
    ("ß", ["s"], 0.5),  # "ß".upper() == "SS"
    ("ß", ["ss"], 0.0),
    ("strasse", ["straße"], 0.7142857142857143),
    ("STRASSE", ["straße"], 0.7142857142857143),
    ("İstanbul", ["istanbul"], 0.875),  # "İ".lower() is two characters, "İ".upper() one
    ("istanbul", ["İstanbul"], 0.875),
    # numbers, separators, units, percent signs
    ("1,234", ["1234"], 0.8),
    ("$1,234.00", ["1234"], 0.0),
    ("5kg", ["5 kg"], 0.75),
    ("5 kg", ["5kg"], 0.75),
    ("12%", ["12"], 0.6666666666666667),
    ("12 %", ["12%"], 0.75),
    ("1/2/1990", ["1/2/1990"], 1.0),
    ("01/02/1990", ["1/2/1990"], 0.8),
    # fullwidth characters are other characters
    ("１２３", ["123"], 0.0),
    ("Ａcme", ["acme"], 0.75),
    # rambling answers, several letters, answers inside words
    ("The answer is Acme Corp.", ["Acme Corp"], 0.0),
    ("c)", ["c"], 0.5),
    ("A B C", ["ABC"], 0.6),
    ("Acmeco", ["Acme"], 0.6666666666666667),
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), CASES)
def test_anls_matches_the_official_script(prediction: str, answers: list[str], expected: float) -> None:
    assert anls(prediction, answers) == expected


def test_anls_threshold_is_a_parameter() -> None:
    assert anls("abc", ["axy"], threshold=0.3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one"):
        anls("a", [])


def test_docvqa_task_aggregates_anls() -> None:
    """Six documents through the shipped task, as the pipeline scores them."""
    task = Task(TaskSpec.from_yaml(available_tasks()["docvqa_val"]))
    answers = [  # (answers, generation, official per-question ANLS)
        (COMPANY, "Acme corp", 0.9),
        (COMPANY, "Acme Corporation", 1.0),
        (["1/2/1990"], "01/02/1990", 0.8),
        (["1234"], "1,234", 0.8),
        (["abxy"], "abcd", 0.5),
        (["Acme Corp"], "The answer is Acme Corp.", 0.0),
    ]
    scores = [
        task.score({"question": "?", "answers": gold}, [Response(uid=i, text=text)])["none"]["anls"]
        for i, (gold, text, _) in enumerate(answers)
    ]
    assert scores == [expected for *_, expected in answers]
    value = aggregate(task.aggregation("anls"), scores, 0, 0).value
    assert value == pytest.approx((0.9 + 1.0 + 0.8 + 0.8 + 0.5 + 0.0) / 6)
