"""POPE against its official evaluation, on adversarial model outputs.

The `official_read` and `official` columns are what POPE's official script returns, obtained by
running it on each response: RUCAIBox/POPE evaluate.py at commit
3df3ba1b110ecce25696989577fad583b67d4239 (unchanged since f3ec604, "Initial commit"): first sentence (`split('.')[0]`), commas removed, `split(' ')`, "no" if a word is
exactly "No", "no" or "not", else "yes"; a label is positive unless it is "no". No departures in
the reading. The `lmms_eval` column is lmms-eval's `pope` per-sample score
(EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/pope/utils.py at 2c03baf04b363c0509e8a3561390b788f06916e9:
`results[0].lower().strip() == answer`), not followed, shown where it would differ.
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate, yes_no
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

# (response, gold, official_read, official, lmms_eval)
CASES = [
    ("Yes", "yes", "yes", 1.0, 1.0),
    ("No", "no", "no", 1.0, 1.0),
    ("yes", "yes", "yes", 1.0, 1.0),
    ("no", "no", "no", 1.0, 1.0),
    ("YES", "yes", "yes", 1.0, 1.0),
    ("NO", "no", "yes", 0.0, 1.0),  # only "No", "no", "not" read as no
    ("nO", "yes", "yes", 1.0, 0.0),
    # punctuation: the first sentence, commas removed, nothing else
    ("Yes.", "yes", "yes", 1.0, 0.0),
    ("No.", "no", "no", 1.0, 0.0),
    ("Yes,", "yes", "yes", 1.0, 0.0),
    ("No,", "no", "no", 1.0, 0.0),
    ("No!", "yes", "yes", 1.0, 0.0),
    ("No;", "no", "yes", 0.0, 0.0),
    ("(No)", "yes", "yes", 1.0, 0.0),
    ("No:", "no", "yes", 0.0, 0.0),
    ("no,there is", "no", "yes", 0.0, 0.0),  # the comma goes, leaving one word "nothere"
    ("yes,no", "yes", "yes", 1.0, 0.0),
    ("n.o", "yes", "yes", 1.0, 0.0),
    ("y.e.s", "no", "yes", 0.0, 0.0),
    ("ye.s", "yes", "yes", 1.0, 0.0),
    # sentences: only the first counts
    ("yes, there is a car.", "yes", "yes", 1.0, 0.0),
    ("No, there is not.", "no", "no", 1.0, 0.0),
    ("No. Yes.", "yes", "no", 0.0, 0.0),
    ("Yes. No.", "no", "yes", 0.0, 0.0),
    ("Yes. There is no dog.", "yes", "yes", 1.0, 0.0),
    ("No! There isn't.", "no", "yes", 0.0, 0.0),
    ("There is no dog.", "yes", "no", 0.0, 0.0),
    ("There is not a dog.", "no", "no", 1.0, 0.0),
    ("There isn't a dog.", "no", "yes", 0.0, 0.0),
    ("I think not.", "yes", "no", 0.0, 0.0),
    ("Not at all.", "no", "yes", 0.0, 0.0),  # capital "Not" is not a negation word
    ("not", "yes", "no", 0.0, 0.0),
    ("The answer is no", "no", "no", 1.0, 0.0),
    ("The answer is no.", "yes", "no", 0.0, 0.0),
    ("Is there a dog? No", "no", "no", 1.0, 0.0),
    ("Answer: no", "yes", "no", 0.0, 0.0),
    ("answer: yes", "no", "yes", 0.0, 0.0),
    ("Cannot tell, not sure.", "yes", "no", 0.0, 0.0),
    ("I do not know", "yes", "no", 0.0, 0.0),
    ("Yes and no", "no", "no", 1.0, 0.0),
    ("No and yes", "yes", "no", 0.0, 0.0),
    ("a no", "yes", "no", 0.0, 0.0),
    # words that merely contain "no", and answers with no negation at all, read as yes
    ("Nope", "no", "yes", 0.0, 0.0),
    ("nope", "yes", "yes", 1.0, 0.0),
    ("Nah", "no", "yes", 0.0, 0.0),
    ("Non", "no", "yes", 0.0, 0.0),
    ("None", "yes", "yes", 1.0, 0.0),
    ("Noo", "no", "yes", 0.0, 0.0),
    ("nooo", "yes", "yes", 1.0, 0.0),
    ("Know", "yes", "yes", 1.0, 0.0),
    ("snow", "no", "yes", 0.0, 0.0),
    ("ano", "no", "yes", 0.0, 0.0),
    ("Unknown", "no", "yes", 0.0, 0.0),
    ("noyes", "yes", "yes", 1.0, 0.0),
    ("yesno", "no", "yes", 0.0, 0.0),
    ("yessir", "no", "yes", 0.0, 0.0),
    ("Maybe", "yes", "yes", 1.0, 0.0),
    ("I cannot say.", "no", "yes", 0.0, 0.0),
    ("1,234", "yes", "yes", 1.0, 0.0),
    ("5kg", "no", "yes", 0.0, 0.0),
    ("50%", "yes", "yes", 1.0, 0.0),
    # single letters
    ("n", "yes", "yes", 1.0, 0.0),
    ("y", "no", "yes", 0.0, 0.0),
    ("N", "yes", "yes", 1.0, 0.0),
    ("Y", "no", "yes", 0.0, 0.0),
    # fullwidth characters are not "No"
    ("Ｎｏ", "no", "yes", 0.0, 0.0),
    ("ｎｏ", "yes", "yes", 1.0, 0.0),
    ("ＹＥＳ", "no", "yes", 0.0, 0.0),
    # whitespace: only single spaces separate words ("No\n" is one word, not "No")
    ("", "yes", "yes", 1.0, 0.0),
    (" ", "no", "yes", 0.0, 0.0),
    ("  yes", "yes", "yes", 1.0, 1.0),
    (" yes", "no", "yes", 0.0, 0.0),
    (" no", "yes", "no", 0.0, 0.0),
    ("\nNo", "no", "yes", 0.0, 1.0),
    ("No\n", "yes", "yes", 1.0, 0.0),
    ("Yes\n", "no", "yes", 0.0, 0.0),
    ("No.\n", "no", "no", 1.0, 0.0),
    ("yes\nno", "yes", "yes", 1.0, 0.0),
    ("No\nThere is", "no", "yes", 0.0, 0.0),
    ("no\tthere", "yes", "yes", 1.0, 0.0),
    ("\tNo", "no", "yes", 0.0, 1.0),
    ("Yes  there is", "yes", "yes", 1.0, 0.0),
    ("No  there is", "no", "no", 1.0, 0.0),
    ("no  there", "yes", "no", 0.0, 0.0),
]


@lru_cache(maxsize=None)
def pope_task() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["pope"]))


def score(response: str, gold: str, question_id: str = "0") -> dict:
    return pope_task().score_value({"question_id": question_id, "answer": gold}, response)


@pytest.mark.parametrize(("response", "gold", "official_read", "official", "lmms_eval"), CASES)
def test_pope_reads_and_scores_as_official(response: str, gold: str, official_read: str, official: float, lmms_eval: float) -> None:
    assert yes_no(response) == official_read
    scores = score(response, gold)
    assert scores["pope_accuracy"] == official
    assert scores["pope_f1_score"] == (int(official_read == "yes"), int(gold == "yes"))


def test_pope_corpus_scores_as_official() -> None:
    # Official evaluate.py on these 10 answers: TP 3, FP 4, TN 1, FN 2 -> accuracy 0.4, precision 3/7,
    # recall 3/5, F1 0.5 and yes ratio 7/10 (the share of PREDICTED yes).
    answers = ["Yes, there is a car.", "No.", "There is no dog.", "Nope", "NO", "I think not.", "yes", "Not at all.", "",
               "Yes. There is no cat."]  # fmt: skip
    golds = ["yes", "yes", "no", "no", "no", "yes", "yes", "no", "no", "yes"]
    task = pope_task()
    scores = [score(a, g, str(i)) for i, (a, g) in enumerate(zip(answers, golds))]
    value = lambda metric: aggregate(task.aggregation(metric), [s[metric] for s in scores], 0, 0).value
    assert value("pope_accuracy") == pytest.approx(0.4)
    assert value("pope_precision") == pytest.approx(3 / 7)
    assert value("pope_recall") == pytest.approx(3 / 5)
    assert value("pope_f1_score") == pytest.approx(0.5)
    assert value("pope_yes_ratio") == pytest.approx(0.7)  # lmms-eval would report 5/10, the share of gold yes


def test_pope_never_yes_scores_zero() -> None:
    # Deliberate departure: the official script divides by TP + FP = 0 and crashes; we report 0.
    task = pope_task()
    scores = [score("No.", g, str(i)) for i, g in enumerate(["yes", "no"])]
    for metric in ("pope_precision", "pope_recall", "pope_f1_score"):
        assert aggregate(task.aggregation(metric), [s[metric] for s in scores], 0, 0).value == 0.0


def test_pope_rejects_a_gold_that_is_not_yes_or_no() -> None:
    with pytest.raises(ValueError, match="yes or no"):
        score("yes", "maybe")
