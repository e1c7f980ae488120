"""MME against its official evaluation, on adversarial model outputs.

The `official` column is what MME's official calculation.py reads each response as, obtained by
running it: BradyFU/Awesome-Multimodal-Large-Language-Models, branch Evaluation,
tools/eval_tool.zip -> eval_tool/calculation.py (commit 1c1d69e138b57cf8b0400427927bfb8ed4285458),
`parse_pred_ans` on the response as its results file holds it (one line, newlines deleted as the
tool's readme asks, read back with readlines(), split on tabs, lowercased). Scores: per category
100 * accuracy + 100 * acc_plus (images with both questions right), summed over the 10 perception
and the 4 cognition categories. Deliberate departure: a response with a tab cannot be written
into the official file (its split on tabs fails), so those rows show our reading, the tab being an
ordinary character. The `lmms_eval` column is lmms-eval's `parse_pred_ans`
(EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/mme/utils.py at 306a8b487ad79bcd7084dc020e0ca4710b21bb86:
strip, periods removed, lone "y"/"n"), not followed, shown where it would differ.
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.mme.utils import parse_pred_ans

# (response, official, lmms_eval)
CASES = [
    ("Yes", "yes", "yes"),
    ("No", "no", "no"),
    ("yes", "yes", "yes"),
    ("no", "no", "no"),
    ("YES", "yes", "yes"),
    ("NO", "no", "no"),
    ("nO", "no", "no"),
    # punctuation is kept, but "yes"/"no" need only be among the first four characters
    ("Yes.", "yes", "yes"),
    ("No.", "no", "no"),
    ("YES.", "yes", "yes"),
    ("Yes,", "yes", "yes"),
    ("No,", "no", "no"),
    ("No!", "no", "no"),
    ("Yes!!!", "yes", "yes"),
    ("No;", "no", "no"),
    ("(No)", "no", "no"),
    ("No:", "no", "no"),
    (".yes", "yes", "yes"),
    ("..no", "no", "no"),
    ("...no", "other", "no"),  # lmms-eval removes periods first
    ("n.o", "other", "no"),
    ("y.e.s", "other", "yes"),
    ("ye.s", "other", "yes"),
    ("no,there is", "no", "no"),
    ("yes,no", "yes", "yes"),
    # sentences: only the first four characters count
    ("yes, there is a car.", "yes", "yes"),
    ("No, there is not.", "no", "no"),
    ("No. Yes.", "no", "no"),
    ("Yes. No.", "yes", "yes"),
    ("Yes. There is no dog.", "yes", "yes"),
    ("No! There isn't.", "no", "no"),
    ("Yes and no", "yes", "yes"),
    ("No and yes", "no", "no"),
    ("There is no dog.", "other", "other"),
    ("There is not a dog.", "other", "other"),
    ("There isn't a dog.", "other", "other"),
    ("I think not.", "other", "other"),
    ("The answer is no", "other", "other"),
    ("Is there a dog? No", "other", "other"),
    ("Answer: no", "other", "other"),
    ("It is yes", "other", "other"),
    ("Sure, yes", "other", "other"),
    ("Cannot tell, not sure.", "other", "other"),
    ("I do not know", "other", "other"),
    ("a no", "no", "no"),
    # words that begin with (or contain early) "no"/"yes"
    ("Not at all.", "no", "no"),
    ("not", "no", "no"),
    ("Nope", "no", "no"),
    ("Non", "no", "no"),
    ("None", "no", "no"),
    ("Know", "no", "no"),
    ("snow", "no", "no"),
    ("ano", "no", "no"),
    ("noyes", "no", "no"),
    ("yesno", "yes", "yes"),
    ("yessir", "yes", "yes"),
    ("Nah", "other", "other"),
    ("Unknown", "other", "other"),
    ("Maybe", "other", "other"),
    ("1,234", "other", "other"),
    ("5kg", "other", "other"),
    ("50%", "other", "other"),
    # single letters are "other" (lmms-eval reads y/n)
    ("y", "other", "yes"),
    ("n", "other", "no"),
    ("Y", "other", "yes"),
    ("N", "other", "no"),
    # fullwidth characters lowercase to fullwidth, never "yes"/"no"
    ("Ｎｏ", "other", "other"),
    ("ｎｏ", "other", "other"),
    ("ＹＥＳ", "other", "other"),
    # whitespace is not stripped; newlines are deleted (the file holds one line per answer)
    ("", "other", "other"),
    (" ", "other", "other"),
    (" yes", "yes", "yes"),
    (" no", "no", "no"),
    ("  yes", "other", "yes"),
    ("Yes  there is", "yes", "yes"),
    ("No\n", "no", "no"),
    ("Yes\n", "yes", "yes"),
    ("\nNo", "no", "no"),
    ("No.\n", "no", "no"),
    ("yes\nno", "yes", "yes"),
    ("n\no", "no", "other"),
    ("ye\ns", "yes", "other"),
    ("\n\n\n\nyes", "yes", "yes"),
    # departure: the official tool cannot read a tab inside a response; we keep it as a character
    ("no\tthere", "no", "no"),
    ("\tNo", "no", "no"),
]


@lru_cache(maxsize=None)
def mme_task() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["mme"]))


def score(response: str, gold: str, category: str = "existence", image: str = "existence/0001.jpg") -> dict:
    doc = {"question_id": image, "category": category, "answer": gold, "question": "Is it? Please answer yes or no."}
    return mme_task().score_value(doc, response)


@pytest.mark.parametrize(("response", "official", "lmms_eval"), CASES)
def test_mme_reads_and_scores_as_official(response: str, official: str, lmms_eval: str) -> None:
    assert parse_pred_ans(response) == official
    for gold in ("Yes", "No"):
        scores = score(response, gold)
        assert scores["acc"] == float(official == gold.lower())  # "other" is always wrong
        assert scores["mme_perception_score"] == ("existence", "existence/0001.jpg", scores["acc"])


# (category, image, gold, response) for 7 image pairs; official calculation.py scores, by hand:
#   existence: e1 both right, e2 one right ("Yes" to a No)       -> acc 3/4, acc+ 1/2 -> 125
#   count: "y" and "n" are "other"                               -> 0
#   OCR: "Yes." and "Nope, it is not." both right                 -> 200
#   code_reasoning: "There is yes" is "other"; "NO"/"YES" right  -> acc 3/4, acc+ 1/2 -> 125
#   text_translation: "  yes" is "other" ("  ye")                -> acc 1/2, acc+ 0   -> 50
# perception 125 + 0 + 200 = 325, cognition 125 + 50 = 175; plain accuracy 9/14.
PAIRS = [
    ("existence", "e1", "Yes", "Yes"), ("existence", "e1", "No", "no"),
    ("existence", "e2", "Yes", "yes, it is."), ("existence", "e2", "No", "Yes"),
    ("count", "c1", "Yes", "y"), ("count", "c1", "No", "n"),
    ("OCR", "o1", "Yes", "Yes."), ("OCR", "o1", "No", "Nope, it is not."),
    ("code_reasoning", "r1", "Yes", "There is yes"), ("code_reasoning", "r1", "No", "no"),
    ("code_reasoning", "r2", "No", "NO"), ("code_reasoning", "r2", "Yes", "YES"),
    ("text_translation", "t1", "Yes", "  yes"), ("text_translation", "t1", "No", "No"),
]  # fmt: skip


def test_mme_sums_as_official() -> None:
    task = mme_task()
    scores = [score(response, gold, category, image) for category, image, gold, response in PAIRS]
    value = lambda metric: aggregate(task.aggregation(metric), [s[metric] for s in scores], 0, 0).value
    assert value("mme_perception_score") == pytest.approx(325.0)
    assert value("mme_cognition_score") == pytest.approx(175.0)
    assert value("acc") == pytest.approx(9 / 14)


def test_mme_rejects_bad_gold_and_category() -> None:
    with pytest.raises(ValueError, match="yes or no"):
        score("yes", "Maybe")
    with pytest.raises(ValueError, match="unknown MME category"):
        score("yes", "Yes", category="counting")
