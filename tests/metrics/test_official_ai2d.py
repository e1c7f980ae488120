"""AI2D letter scoring against lmms-eval's `ai2d`, on adversarial model outputs.

The AI2D paper (Kembhavi et al., 2016) has no evaluation of generated answers; the reference is
EvolvingLMMs-Lab/lmms-eval (commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3):
lmms_eval/tasks/ai2d/ai2d.yaml with its `utils.MultiChoiceRegexFilter` (a leading "B." is read as
"B", anything else is kept), the `.strip()` of lmms_eval/api/task.py `process_results`, then
`exact_match_hf_evaluate` of lmms_eval/api/metrics.py with ignore_case and ignore_punctuation. The
`official` column is what that chain returns, obtained by running it. Where our score differs the
row says why: the shared letter parser (lmm_lightning/metrics/choice_letter.py) also reads "B) text",
"(B) text", "B\\ntext" and "The answer is B".
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate, parse_choice_letter
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

READS_MORE = "departure: the shared parser also reads this form"

# (response, official, ours, why ours differs); the target is "B"
CASES = [
    # a lone letter, case and ASCII punctuation ignored
    ("B", 1.0, 1.0, ""),
    ("b", 1.0, 1.0, ""),
    ("B.", 1.0, 1.0, ""),
    ("B)", 1.0, 1.0, ""),
    ("B:", 1.0, 1.0, ""),
    ("(B)", 1.0, 1.0, ""),
    ("(b)", 1.0, 1.0, ""),
    ("[B]", 1.0, 1.0, ""),
    ("**B**", 1.0, 1.0, ""),
    ("'B'", 1.0, 1.0, ""),
    ('"B"', 1.0, 1.0, ""),
    ("B!", 1.0, 1.0, ""),
    ("-B-", 1.0, 1.0, ""),
    # whitespace: stripped after the filter
    (" B", 1.0, 1.0, ""),
    ("B\n", 1.0, 1.0, ""),
    ("\tB\t", 1.0, 1.0, ""),
    ("  B  ", 1.0, 1.0, ""),
    ("B.\n", 1.0, 1.0, ""),
    # a leading "B." and the option's text
    ("B. red", 1.0, 1.0, ""),
    ("B.red", 1.0, 1.0, ""),
    ("B.  red", 1.0, 1.0, ""),
    ("B. red\nC. green", 1.0, 1.0, ""),
    # forms lmms-eval does not read
    ("B) red", 0.0, 1.0, READS_MORE),
    ("B: red", 0.0, 1.0, READS_MORE),
    ("(B) red", 0.0, 1.0, READS_MORE),
    ("**B.** red", 0.0, 1.0, READS_MORE),
    ("B\nred", 0.0, 1.0, READS_MORE),
    ("B\n\nThe colour is red.", 0.0, 1.0, READS_MORE),
    ("The answer is B", 0.0, 1.0, READS_MORE),
    ("The answer is B.", 0.0, 1.0, READS_MORE),
    ("The answer is (B).", 0.0, 1.0, READS_MORE),
    ("the answer is B", 0.0, 1.0, READS_MORE),
    ("Answer: B", 0.0, 1.0, READS_MORE),
    ("Answer: (B)", 0.0, 1.0, READS_MORE),
    ("The answer is:\nB", 0.0, 1.0, READS_MORE),
    ("The correct answer is **B**.", 0.0, 1.0, READS_MORE),
    ("I think the answer is B because it is red.", 0.0, 1.0, READS_MORE),
    ("The answer is B or C", 0.0, 1.0, READS_MORE),  # the first "answer is"
    # read by neither
    ("answer: b", 0.0, 0.0, ""),
    ("The answer is C, not B", 0.0, 0.0, ""),
    ("The answer is Bob", 0.0, 0.0, ""),
    ("I'd say (B).", 0.0, 0.0, ""),
    ("Option B", 0.0, 0.0, ""),
    ("B larva", 0.0, 0.0, ""),
    ("B  red", 0.0, 0.0, ""),
    ("B - red", 0.0, 0.0, ""),
    ("Blue", 0.0, 0.0, ""),
    ("Because it is red", 0.0, 0.0, ""),
    ("DNA", 0.0, 0.0, ""),
    ("A cat is on the mat", 0.0, 0.0, ""),
    ("red", 0.0, 0.0, ""),
    # several letters, other letters
    ("B, C", 0.0, 0.0, ""),
    ("B or C", 0.0, 0.0, ""),
    ("BC", 0.0, 0.0, ""),
    ("B C", 0.0, 0.0, ""),
    ("A", 0.0, 0.0, ""),
    ("C", 0.0, 0.0, ""),
    ("E", 0.0, 0.0, ""),
    # fullwidth, empty, numbers
    ("Ｂ", 0.0, 0.0, ""),
    ("ｂ", 0.0, 0.0, ""),
    ("（B）", 0.0, 0.0, ""),
    ("", 0.0, 0.0, ""),
    ("1,234", 0.0, 0.0, ""),
    ("5kg", 0.0, 0.0, ""),
    ("50%", 0.0, 0.0, ""),
]

# (response, target, official, ours, why ours differs): the article and words, for other targets
OTHER_TARGETS = [
    ("A cat is on the mat", "A", 0.0, 0.0, ""),
    ("DNA", "D", 0.0, 0.0, ""),
    ("a", "A", 1.0, 1.0, ""),
    ("a. egg", "A", 0.0, 0.0, ""),
    ("A. egg", "A", 1.0, 1.0, ""),
]

DOC = {"question": "Which stage comes first?", "options": ["egg", "larva", "pupa", "adult"]}


@lru_cache(maxsize=1)
def task() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["ai2d"]))


def pipeline_score(ai2d: Task, response: str, target: str) -> float:
    doc = {**DOC, "answer": str("ABCD".index(target))}
    return ai2d.score(doc, [Response(uid=0, text=response)])["flexible-extract"]["exact_match"]


@pytest.mark.parametrize(("response", "official", "ours", "why"), CASES)
def test_the_shipped_task_matches_lmms_eval_or_says_why(response: str, official: float, ours: float, why: str) -> None:
    assert pipeline_score(task(), response, "B") == ours
    assert float(parse_choice_letter(response, "ABCD") == "B") == ours
    assert (ours != official) == bool(why)


@pytest.mark.parametrize(("response", "target", "official", "ours", "why"), OTHER_TARGETS)
def test_other_targets(response: str, target: str, official: float, ours: float, why: str) -> None:
    assert pipeline_score(task(), response, target) == ours
    assert (ours != official) == bool(why)


def test_accuracy_of_eight_documents() -> None:
    ai2d = task()
    answers = [  # (target, generation, correct)
        ("A", "A", 1),
        ("B", "b", 1),
        ("C", "C. pupa", 1),
        ("D", "The answer is (D).", 1),
        ("A", "A cat", 0),
        ("B", "B or C", 0),
        ("C", "Ｃ", 0),
        ("D", "", 0),
    ]
    scores = [pipeline_score(ai2d, text, target) for target, text, _ in answers]
    assert scores == [float(c) for *_, c in answers]
    assert aggregate(ai2d.aggregation("exact_match"), scores, 0, 0).value == pytest.approx(4 / 8)
