"""GQA accuracy against the official GQA evaluation, on adversarial model outputs.

The `official` column is what the official GQA eval.py returns
(https://cs.stanford.edu/people/dorarad/gqa/evaluate.html, as shipped in LLaVA's playground, e.g. SHI-Labs/VCoder playground/data/eval/gqa/data/eval/eval.py
at commit 2f95684dddff603383b18d59dd7153481a98863e: `correct = (predicted == gold)`) on the
prediction converted as haotian-liu/LLaVA publishes it (commit c121f0432da27facab705978f83c4ada465e46fd:
llava/eval/model_vqa_loader.py `.strip()`, then scripts/convert_gqa_for_eval.py
`.rstrip('.').lower()`), obtained by running that chain. No departures. lmms-eval's `gqa`
(exact_match with ignore_case and ignore_punctuation) is not followed; the `lmms_eval` column
shows where it would differ.
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.gqa.utils import score

# (prediction, answer, official, lmms_eval)
CASES = [
    ("yes", "yes", 1.0, 1.0),
    ("Yes", "yes", 1.0, 1.0),
    ("YES", "yes", 1.0, 1.0),
    ("no", "no", 1.0, 1.0),
    ("No", "yes", 0.0, 0.0),
    # trailing periods go, every one of them; other punctuation stays
    ("yes.", "yes", 1.0, 1.0),
    ("Yes.", "yes", 1.0, 1.0),
    ("Yes...", "yes", 1.0, 1.0),
    ("Left.", "left", 1.0, 1.0),
    ("yes .", "yes", 0.0, 0.0),
    ("yes!", "yes", 0.0, 1.0),
    ("yes,", "yes", 0.0, 1.0),
    ("'yes'", "yes", 0.0, 1.0),
    ('"yes"', "yes", 0.0, 1.0),
    ("...yes", "yes", 0.0, 1.0),
    (".yes", "yes", 0.0, 1.0),
    (".", "yes", 0.0, 0.0),
    ("...", "yes", 0.0, 0.0),
    ("t-shirt", "t-shirt", 1.0, 1.0),
    ("T-shirt.", "t-shirt", 1.0, 1.0),
    ("tshirt", "t-shirt", 0.0, 1.0),
    ("t shirt", "t-shirt", 0.0, 0.0),
    ("man's", "man's", 1.0, 1.0),
    ("mans", "man's", 0.0, 1.0),
    # whitespace: stripped around, kept inside
    (" yes ", "yes", 1.0, 1.0),
    ("yes\n", "yes", 1.0, 1.0),
    ("\tyes\t", "yes", 1.0, 1.0),
    ("yes.\n", "yes", 1.0, 1.0),
    ("yes\n.", "yes", 0.0, 0.0),
    ("blue ", "blue", 1.0, 1.0),
    ("Light blue", "light blue", 1.0, 1.0),
    ("light  blue", "light blue", 0.0, 0.0),
    ("light-blue", "light blue", 0.0, 0.0),
    # sentences, rambling, empty
    ("Yes, it is.", "yes", 0.0, 0.0),
    ("On the left", "left", 0.0, 0.0),
    ("the left", "left", 0.0, 0.0),
    ("White and blue", "white", 0.0, 0.0),
    ("It is white.", "white", 0.0, 0.0),
    ("white\n\nThe shirt is white.", "white", 0.0, 0.0),
    ("", "yes", 0.0, 0.0),
    # fullwidth, numbers, units, percent, non-ASCII case
    ("ｙｅｓ", "yes", 0.0, 0.0),
    ("Ｙｅｓ", "yes", 0.0, 0.0),
    ("2", "2", 1.0, 1.0),
    ("two", "2", 0.0, 0.0),
    ("1,234", "1,234", 1.0, 1.0),
    ("1234", "1,234", 0.0, 1.0),
    ("5kg", "5 kg", 0.0, 0.0),
    ("50%", "50%", 1.0, 1.0),
    ("50", "50%", 0.0, 1.0),
    ("Straße", "straße", 1.0, 1.0),
]


@lru_cache(maxsize=1)
def task() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["gqa"]))


@pytest.mark.parametrize(("prediction", "answer", "official", "lmms_eval"), CASES)
def test_score_matches_the_official_gqa_eval(prediction: str, answer: str, official: float, lmms_eval: float) -> None:
    assert score(prediction, answer) == official
    assert task().score({"answer": answer}, [Response(uid=0, text=prediction)]) == {"none": {"exact_match": official}}


def test_accuracy_of_eight_documents() -> None:
    gqa = task()
    answers = [  # (answer, generation, correct)
        ("yes", "Yes", 1),
        ("no", "No.", 1),
        ("left", "left\n", 1),
        ("t-shirt", "tshirt", 0),
        ("white", "It is white.", 0),
        ("blue", "blue!", 0),
        ("light blue", "Light blue", 1),
        ("2", "two", 0),
    ]
    scores = [
        gqa.score({"answer": a}, [Response(uid=i, text=t)])["none"]["exact_match"] for i, (a, t, _) in enumerate(answers)
    ]
    assert scores == [float(c) for *_, c in answers]
    assert aggregate(gqa.aggregation("exact_match"), scores, 0, 0).value == pytest.approx(4 / 8)
