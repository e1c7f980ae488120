"""ScienceQA-IMG letter scoring against LLaVA's official evaluation, on adversarial model outputs.

The `official` column is what haotian-liu/LLaVA llava/eval/eval_science_qa.py (commit
c121f0432da27facab705978f83c4ada465e46fd; the script behind LLaVA's published ScienceQA-IMG
numbers) returns, obtained by running it on each response after the `.strip()` of
llava/eval/model_vqa_science.py, with LLaVA's options A-E cut to the question's choices. Where our
score differs the row says why: the shared letter parser (lmm_lightning/metrics/choice_letter.py)
also reads the forms models ordinarily write, and never reads a letter out of a word.
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.scienceqa.utils import doc_to_target, score

READS_MORE = "departure: the shared parser also reads this form"
NO_WORD = "departure: no letter read out of a word"

# (response, number of options, target, official, ours, why ours differs)
CASES = [
    # LLaVA's three forms: the lone letter, "<letter>. ", "The answer is <letter>"
    ("B", 3, "B", 1.0, 1.0, ""),
    ("B. red", 3, "B", 1.0, 1.0, ""),
    ("B.  red", 3, "B", 1.0, 1.0, ""),
    ("The answer is B", 3, "B", 1.0, 1.0, ""),
    ("The answer is B.", 3, "B", 1.0, 1.0, ""),
    ("The answer is B or C", 3, "B", 1.0, 1.0, ""),  # the first "The answer is"
    ("The answer is C, not B", 3, "B", 0.0, 0.0, ""),
    ("B. red\nC. green", 3, "B", 1.0, 1.0, ""),  # the leading letter
    # whitespace: stripped by LLaVA, newlines made ". "
    (" B", 3, "B", 1.0, 1.0, ""),
    ("B\n", 3, "B", 1.0, 1.0, ""),
    ("\tB\t", 3, "B", 1.0, 1.0, ""),
    ("  B  ", 3, "B", 1.0, 1.0, ""),
    ("B\nred", 3, "B", 1.0, 1.0, ""),
    ("B\n\nThe colour is red.", 3, "B", 1.0, 1.0, ""),
    ("B  red", 3, "B", 0.0, 0.0, ""),
    # forms LLaVA does not read
    ("b", 3, "B", 0.0, 1.0, READS_MORE),
    ("B.", 3, "B", 0.0, 1.0, READS_MORE),
    ("B.\n", 3, "B", 0.0, 1.0, READS_MORE),
    ("B.red", 3, "B", 0.0, 1.0, READS_MORE),
    ("B)", 3, "B", 0.0, 1.0, READS_MORE),
    ("B) red", 3, "B", 0.0, 1.0, READS_MORE),
    ("B:", 3, "B", 0.0, 1.0, READS_MORE),
    ("B: red", 3, "B", 0.0, 1.0, READS_MORE),
    ("(B)", 3, "B", 0.0, 1.0, READS_MORE),
    ("(b)", 3, "B", 0.0, 1.0, READS_MORE),
    ("(B) red", 3, "B", 0.0, 1.0, READS_MORE),
    ("[B]", 3, "B", 0.0, 1.0, READS_MORE),
    ("**B**", 3, "B", 0.0, 1.0, READS_MORE),
    ("**B.** red", 3, "B", 0.0, 1.0, READS_MORE),
    ("'B'", 3, "B", 0.0, 1.0, READS_MORE),
    ('"B"', 3, "B", 0.0, 1.0, READS_MORE),
    ("B!", 3, "B", 0.0, 1.0, READS_MORE),
    ("-B-", 3, "B", 0.0, 1.0, READS_MORE),
    ("The answer is (B).", 3, "B", 0.0, 1.0, READS_MORE),
    ("the answer is B", 3, "B", 0.0, 1.0, READS_MORE),
    ("Answer: B", 3, "B", 0.0, 1.0, READS_MORE),
    ("Answer: (B)", 3, "B", 0.0, 1.0, READS_MORE),
    ("The answer is:\nB", 3, "B", 0.0, 1.0, READS_MORE),
    ("The correct answer is **B**.", 3, "B", 0.0, 1.0, READS_MORE),
    ("I think the answer is B because it is red.", 3, "B", 0.0, 1.0, READS_MORE),
    ("answer: b", 3, "B", 0.0, 0.0, ""),  # after "answer", only a capital is a letter
    # letters out of words
    ("The answer is Bob", 3, "B", 1.0, 0.0, NO_WORD),
    ("The answer is DNA", 4, "D", 1.0, 0.0, NO_WORD),
    ("The answer is A cat", 3, "A", 1.0, 1.0, ""),  # a lone capital after "answer is" is read
    ("DNA", 4, "D", 0.0, 0.0, ""),
    ("A cat is on the mat", 3, "A", 0.0, 0.0, ""),  # the article is no answer
    ("Blue", 3, "B", 0.0, 0.0, ""),
    ("Because it is red", 3, "B", 0.0, 0.0, ""),
    ("B larva", 3, "B", 0.0, 0.0, ""),
    ("B - red", 3, "B", 0.0, 0.0, ""),
    ("Option B", 3, "B", 0.0, 0.0, ""),
    ("I'd say (B).", 3, "B", 0.0, 0.0, ""),
    # several letters, other letters, letters outside the options
    ("B, C", 3, "B", 0.0, 0.0, ""),
    ("B or C", 3, "B", 0.0, 0.0, ""),
    ("BC", 3, "B", 0.0, 0.0, ""),
    ("B C", 3, "B", 0.0, 0.0, ""),
    ("A", 3, "B", 0.0, 0.0, ""),
    ("C", 3, "B", 0.0, 0.0, ""),
    ("E", 3, "B", 0.0, 0.0, ""),
    ("E", 5, "E", 1.0, 1.0, ""),
    ("E", 4, "D", 0.0, 0.0, ""),
    ("D", 4, "D", 1.0, 1.0, ""),
    ("D. gray", 3, "B", 0.0, 0.0, ""),
    ("A", 2, "A", 1.0, 1.0, ""),
    ("C", 2, "B", 0.0, 0.0, ""),
    ("The answer is E.", 5, "E", 1.0, 1.0, ""),
    ("The answer is D.", 3, "B", 0.0, 0.0, ""),
    # fullwidth, empty, not a letter at all
    ("Ｂ", 3, "B", 0.0, 0.0, ""),
    ("ｂ", 3, "B", 0.0, 0.0, ""),
    ("（B）", 3, "B", 0.0, 0.0, ""),
    ("", 3, "B", 0.0, 0.0, ""),
    ("red", 3, "B", 0.0, 0.0, ""),
    ("1,234", 3, "B", 0.0, 0.0, ""),
    ("5kg", 3, "B", 0.0, 0.0, ""),
    ("50%", 3, "B", 0.0, 0.0, ""),
]

CHOICES = ["blue", "red", "green", "gray", "white"]


def doc(options: int, target: str) -> dict:
    return {"question": "Which color?", "choices": CHOICES[:options], "answer": "ABCDE".index(target), "hint": ""}


@lru_cache(maxsize=1)
def task() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["scienceqa_img"]))


@pytest.mark.parametrize(("response", "options", "target", "official", "ours", "why"), CASES)
def test_score_matches_llava_or_says_why(
    response: str, options: int, target: str, official: float, ours: float, why: str
) -> None:
    assert score(response, options, target) == ours
    assert (ours != official) == bool(why)


def test_the_shipped_task_scores_each_case_through_the_pipeline() -> None:
    scienceqa = task()
    for i, (response, options, target, _, ours, _) in enumerate(CASES):
        scores = scienceqa.score(doc(options, target), [Response(uid=i, text=response)])
        assert scores == {"none": {"exact_match": ours}}, response


def test_target_is_the_answer_index_as_a_letter() -> None:
    assert [doc_to_target(doc(5, t)) for t in "ABCDE"] == list("ABCDE")


def test_accuracy_of_eight_documents() -> None:
    scienceqa = task()
    answers = [  # (options, target, generation, correct)
        (2, "A", "A", 1),
        (2, "B", "b", 1),
        (3, "C", "C. green", 1),
        (3, "B", "The answer is B.", 1),
        (4, "D", "DNA", 0),
        (5, "E", "(E)", 1),
        (3, "A", "A cat", 0),
        (3, "B", "", 0),
    ]
    scores = [
        scienceqa.score(doc(options, target), [Response(uid=i, text=text)])["none"]["exact_match"]
        for i, (options, target, text, _) in enumerate(answers)
    ]
    assert scores == [float(c) for *_, c in answers]
    assert aggregate(scienceqa.aggregation("exact_match"), scores, 0, 0).value == pytest.approx(5 / 8)
