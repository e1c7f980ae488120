"""SEED-Bench letter scoring against lmms-eval's `seedbench`, on adversarial model outputs.

The SEED-Bench paper ranks the options by likelihood (AILab-CVC/SEED-Bench EVALUATION.md); for a
generated letter the reference is EvolvingLMMs-Lab/lmms-eval (commit
75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3) lmms_eval/tasks/seedbench/utils.py: the response,
stripped (lmms_eval/api/task.py), cut to its first character, compared to the answer with case
ignored (`seed_process_result`, `seed_aggregation_result`). The `official` column is what that
returns, obtained by running it. Where our score differs the row says why: the shared letter parser
(lmm_lightning/metrics/choice_letter.py) reads "(B)", "**B**" and "The answer is B", and reads no
letter out of a word ("Because" is not B, "DNA" is not D) nor from several letters ("B, C").
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.seedbench.utils import score

READS_MORE = "departure: the shared parser also reads this form"
NO_WORD = "departure: no letter read out of a word or from several letters"

# (response, official, ours, why ours differs); the answer is "B"
CASES = [
    # the first character, either case
    ("B", 1.0, 1.0, ""),
    ("b", 1.0, 1.0, ""),
    ("B.", 1.0, 1.0, ""),
    ("B. red", 1.0, 1.0, ""),
    ("B.red", 1.0, 1.0, ""),
    ("B.  red", 1.0, 1.0, ""),
    ("B)", 1.0, 1.0, ""),
    ("B) red", 1.0, 1.0, ""),
    ("B:", 1.0, 1.0, ""),
    ("B: red", 1.0, 1.0, ""),
    ("B!", 1.0, 1.0, ""),
    ("B\nred", 1.0, 1.0, ""),
    ("B\n\nThe colour is red.", 1.0, 1.0, ""),
    ("B. red\nC. green", 1.0, 1.0, ""),
    # whitespace: stripped
    (" B", 1.0, 1.0, ""),
    ("B\n", 1.0, 1.0, ""),
    ("\tB\t", 1.0, 1.0, ""),
    ("  B  ", 1.0, 1.0, ""),
    ("B.\n", 1.0, 1.0, ""),
    # a first character that is not the letter
    ("(B)", 0.0, 1.0, READS_MORE),
    ("(b)", 0.0, 1.0, READS_MORE),
    ("(B) red", 0.0, 1.0, READS_MORE),
    ("[B]", 0.0, 1.0, READS_MORE),
    ("**B**", 0.0, 1.0, READS_MORE),
    ("**B.** red", 0.0, 1.0, READS_MORE),
    ("'B'", 0.0, 1.0, READS_MORE),
    ('"B"', 0.0, 1.0, READS_MORE),
    ("-B-", 0.0, 1.0, READS_MORE),
    ("The answer is B", 0.0, 1.0, READS_MORE),
    ("The answer is B.", 0.0, 1.0, READS_MORE),
    ("The answer is (B).", 0.0, 1.0, READS_MORE),
    ("the answer is B", 0.0, 1.0, READS_MORE),
    ("Answer: B", 0.0, 1.0, READS_MORE),
    ("Answer: (B)", 0.0, 1.0, READS_MORE),
    ("The answer is:\nB", 0.0, 1.0, READS_MORE),
    ("The correct answer is **B**.", 0.0, 1.0, READS_MORE),
    ("I think the answer is B because it is red.", 0.0, 1.0, READS_MORE),
    ("The answer is B or C", 0.0, 1.0, READS_MORE),
    ("answer: b", 0.0, 0.0, ""),
    ("The answer is C, not B", 0.0, 0.0, ""),
    ("The answer is Bob", 0.0, 0.0, ""),
    ("I'd say (B).", 0.0, 0.0, ""),
    ("Option B", 0.0, 0.0, ""),
    # a first character that is the letter, in a word or among several letters
    ("Blue", 1.0, 0.0, NO_WORD),
    ("Because it is red", 1.0, 0.0, NO_WORD),
    ("B larva", 1.0, 0.0, NO_WORD),
    ("B  red", 1.0, 0.0, NO_WORD),
    ("B - red", 1.0, 0.0, NO_WORD),
    ("B, C", 1.0, 0.0, NO_WORD),
    ("B or C", 1.0, 0.0, NO_WORD),
    ("BC", 1.0, 0.0, NO_WORD),
    ("B C", 1.0, 0.0, NO_WORD),
    # other letters, words, fullwidth, empty, numbers
    ("A", 0.0, 0.0, ""),
    ("C", 0.0, 0.0, ""),
    ("E", 0.0, 0.0, ""),
    ("DNA", 0.0, 0.0, ""),
    ("A cat is on the mat", 0.0, 0.0, ""),
    ("red", 0.0, 0.0, ""),
    ("Ｂ", 0.0, 0.0, ""),
    ("ｂ", 0.0, 0.0, ""),
    ("（B）", 0.0, 0.0, ""),
    ("", 0.0, 0.0, ""),
    ("1,234", 0.0, 0.0, ""),
    ("5kg", 0.0, 0.0, ""),
    ("50%", 0.0, 0.0, ""),
]

# (response, answer, official, ours, why ours differs)
OTHER_ANSWERS = [
    ("DNA", "D", 1.0, 0.0, NO_WORD),
    ("A cat is on the mat", "A", 1.0, 0.0, NO_WORD),
    ("The answer is A", "A", 0.0, 1.0, READS_MORE),
    ("a", "A", 1.0, 1.0, ""),
    ("D", "D", 1.0, 1.0, ""),
]

DOC = {"question": "What color is it?", "choice_a": "blue", "choice_b": "red", "choice_c": "green", "choice_d": "gray",
       "data_type": "image", "question_id": "1"}


@lru_cache(maxsize=1)
def task() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["seedbench"]))


@pytest.mark.parametrize(("response", "official", "ours", "why"), CASES)
def test_score_matches_lmms_eval_or_says_why(response: str, official: float, ours: float, why: str) -> None:
    assert score(response, "B") == ours
    assert task().score({**DOC, "answer": "B"}, [Response(uid=0, text=response)]) == {
        "none": {"seed_image": ours, "seed_all": ours}
    }
    assert (ours != official) == bool(why)


@pytest.mark.parametrize(("response", "answer", "official", "ours", "why"), OTHER_ANSWERS)
def test_other_answers(response: str, answer: str, official: float, ours: float, why: str) -> None:
    assert score(response, answer) == ours
    assert (ours != official) == bool(why)


def test_image_video_and_all_accuracies_of_eight_documents() -> None:
    seedbench = task()
    answers = [  # (data_type, answer, generation, correct)
        ("image", "A", "A", 1),
        ("image", "B", "b", 1),
        ("image", "C", "(C) green", 1),
        ("image", "D", "DNA", 0),
        ("image", "A", "The answer is A.", 1),
        ("video", "B", "B", 1),
        ("video", "C", "Because", 0),
        ("video", "D", "", 0),
    ]
    scores = [
        seedbench.score({**DOC, "data_type": kind, "answer": answer}, [Response(uid=i, text=text)])["none"]
        for i, (kind, answer, text, _) in enumerate(answers)
    ]
    assert [s["seed_all"] for s in scores] == [float(c) for *_, c in answers]

    def value(metric: str) -> float:
        return aggregate(seedbench.aggregation(metric), [s[metric] for s in scores if metric in s], 0, 0).value

    assert value("seed_image") == pytest.approx(4 / 5)
    assert value("seed_video") == pytest.approx(1 / 3)
    assert value("seed_all") == pytest.approx(5 / 8)
