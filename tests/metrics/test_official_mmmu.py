"""MMMU scores each answer exactly as the official MMMU evaluation code does.

Expected values come from the official functions, retyped into a scratch file outside the repository
and run on these inputs: MMMU-Benchmark/MMMU, mmmu/utils/eval_utils.py (parse_multi_choice_response,
parse_open_response, eval_multi_choice, eval_open) at commit bb0b95a945998d91dfef37e969e07d49d1139438,
with golds as mmmu/answer_dict_val.json holds them (a list for the three list-valued open answers).

Deliberate departure: where the official parser finds no option it returns `random.choice` of the
letters; here that answer scores 0.0 and mmmu_unparsed is 1.0 (the rows marked "official: random").
Rows marked "lmms-eval: X" are where lmms-eval's copy (EvolvingLMMs-Lab/lmms-eval,
lmms_eval/tasks/_task_utils/mmmu_mcq_utils.py at 75571cfe) parses differently, because of its extra
"A " (no leading space) and "A." rules; ours follows the official parser there.
"""

import doctest
import random
from typing import Any

import pytest

import lmm_lightning.metrics.sample as sample
import lmm_lightning.tasks.builtin.mmmu.utils as mmmu
from lmm_lightning.metrics import aggregate
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

OPTIONS = ["DNA", "RNA", "protein", "lipid", "starch"]


def choice_doc(answer: str = "B", doc_id: str = "validation_Biology_1") -> dict[str, Any]:
    return {"id": doc_id, "question": "<image 1> Which molecule?", "options": str(OPTIONS), "answer": answer,
            "question_type": "multiple-choice"}


def open_doc(answer: str, doc_id: str = "validation_Math_1") -> dict[str, Any]:
    return {"id": doc_id, "question": "How much?", "options": "[]", "answer": answer, "question_type": "open"}


# Gold "B" ("RNA") among A-E = DNA, RNA, protein, lipid, starch: (response, mmmu_acc, mmmu_unparsed).
MULTIPLE_CHOICE = [
    ("B", 1.0, 0.0),  # official: B
    ("b", 0.0, 1.0),  # official: random (letters are case-sensitive)
    ("(B)", 1.0, 0.0),  # official: B
    ("(b)", 0.0, 1.0),  # official: random
    ("B.", 1.0, 0.0),  # official: B (trailing "." stripped)
    ("B.\n", 0.0, 1.0),  # official: random (only , . ! ? ; : ' are stripped)  # lmms-eval: B
    ("B\n", 0.0, 1.0),  # official: random
    ("\nB", 0.0, 1.0),  # official: random  # lmms-eval: B
    (" B ", 1.0, 0.0),  # official: B
    ("\tB", 0.0, 1.0),  # official: random  # lmms-eval: B
    ("B)", 0.0, 1.0),  # official: random
    ("c)", 0.0, 1.0),  # official: random
    ("(C)", 0.0, 0.0),  # official: C
    ("C.", 0.0, 0.0),  # official: C
    ("B. RNA", 0.0, 1.0),  # official: random (no " B ", 2 words)  # lmms-eval: A ("RNA " holds "A ")
    ("The answer is (B)", 1.0, 0.0),  # official: B
    ("The answer is B.", 1.0, 0.0),  # official: B
    ("The answer is B. RNA carries the code.", 1.0, 0.0),  # official: B (option text, > 5 words)  # lmms-eval: A
    ("**B**", 0.0, 1.0),  # official: random
    ("Answer: B", 1.0, 0.0),  # official: B
    ("A or B", 1.0, 0.0),  # official: B (the last mentioned)
    ("B or A", 0.0, 0.0),  # official: A
    ("(A) is wrong, (B) is right", 1.0, 0.0),  # official: B
    ("A (B)", 1.0, 0.0),  # official: B ("(X)" outranks a bare letter)
    ("(B) but maybe A", 1.0, 0.0),  # official: B
    ("DNA", 0.0, 1.0),  # official: random  # lmms-eval: A
    ("DNA is right", 0.0, 1.0),  # official: random  # lmms-eval: A
    ("I am sure that it is DNA here", 0.0, 0.0),  # official: A (option text)
    ("It is RNA, not DNA, I would say", 0.0, 0.0),  # official: A (option text mentioned last)
    ("It is DNA, not RNA, I would say", 1.0, 0.0),  # official: B
    ("RNA", 0.0, 1.0),  # official: random (option text needs > 5 words)  # lmms-eval: A
    ("", 0.0, 1.0),  # official: random
    ("Ｂ", 0.0, 1.0),  # official: random (fullwidth)
    ("B B", 1.0, 0.0),  # official: B
    ("A B C D", 0.0, 0.0),  # official: D
    ("The options are A, B, C and D; I pick B", 1.0, 0.0),  # official: B
    ("Both  B  and C", 0.0, 0.0),  # official: C
    ("1,234", 0.0, 1.0),  # official: random
    ("I don't know the answer to this one", 0.0, 1.0),  # official: random
    ("Option B is correct.", 1.0, 0.0),  # official: B
    ("B is correct", 1.0, 0.0),  # official: B
    ("It's B'", 1.0, 0.0),  # official: B
    ("'B'", 1.0, 0.0),  # official: B
    ("B!", 1.0, 0.0),  # official: B
    ("B?", 1.0, 0.0),  # official: B
    ("B:", 1.0, 0.0),  # official: B
    ("B,", 1.0, 0.0),  # official: B
    ("B.,", 1.0, 0.0),  # official: B ("," then "." stripped)
    ("B,.", 0.0, 1.0),  # official: random ("," is stripped before "." uncovers it)
    ("Bees", 0.0, 1.0),  # official: random
    ("CAB", 0.0, 1.0),  # official: random  # lmms-eval: B
    ("the answer is b, which is rna", 1.0, 0.0),  # official: B (option text, ignoring case)
    ("The answer is A.B", 0.0, 1.0),  # official: random  # lmms-eval: B
    ("E", 0.0, 0.0),  # official: E
    ("B\u3002", 0.0, 1.0),  # official: random (ideographic full stop)
]


@pytest.mark.parametrize(("response", "acc", "unparsed"), MULTIPLE_CHOICE)
def test_multiple_choice_matches_official(response: str, acc: float, unparsed: float) -> None:
    assert mmmu.process_results(choice_doc(), [response]) == {"mmmu_acc": acc, "mmmu_unparsed": unparsed}


GOLDS = {"n1234": "1234", "neg": "-3.5", "small": "0.001", "half": "0.5", "listed": "['24/7', '3.429']",
         "letter": "C", "word": "embryonic", "five": "5", "fifty": "50"}

# Open questions: (gold, response, mmmu_acc); golds as the official answer_dict_val.json holds them.
OPEN = [
    ("n1234", "1234", 1.0),
    ("n1234", "1,234", 1.0),
    ("n1234", "1234\n", 1.0),
    ("n1234", "  1234  ", 1.0),
    ("n1234", "1 234", 0.0),
    ("n1234", "1234.0", 1.0),
    ("n1234", "1234.004", 1.0),  # numbers compare rounded to 2 decimals
    ("n1234", "1.234e3", 1.0),
    ("n1234", "１２３４", 1.0),  # Python's float() reads fullwidth digits
    ("n1234", "The total is 1,234 dollars", 1.0),
    ("n1234", "$1,234", 1.0),
    ("n1234", "1234kg", 0.0),  # a plain integer must end at a word boundary
    ("n1234", "1234 kg", 1.0),
    ("n1234", "12345", 0.0),
    ("n1234", "1234%", 1.0),
    ("n1234", "about 1234", 1.0),
    ("n1234", "1234 or 4321", 1.0),  # any candidate may match
    ("n1234", "Let me think. The first value is 12 and the final result is 1234.", 1.0),
    ("n1234", "The answer is 1234. I am confident", 1.0),
    ("n1234", "", 0.0),
    ("n1234", "1,2345", 0.0),
    ("n1234", "1234,", 1.0),
    ("neg", "-3.5", 1.0),
    ("neg", "\u22123.5", 0.0),  # a Unicode minus is not read
    ("neg", "-3.50", 1.0),
    ("neg", "x = -3.5", 1.0),
    ("neg", "-3.5 m/s", 1.0),
    ("neg", "3.5", 0.0),
    ("neg", "- 3.5", 0.0),
    ("small", "1e-3", 1.0),
    ("small", "0", 1.0),  # 0.001 rounds to 0.0
    ("small", ".001", 0.0),  # the leading "." is stripped first: 1.0
    ("small", "0.01", 0.0),
    ("half", ".5", 0.0),  # likewise read as 5
    ("half", "1/2", 0.0),
    ("half", "50%", 0.0),
    ("listed", "24/7", 1.0),
    ("listed", "3.43", 1.0),
    ("listed", "3.429", 1.0),
    ("listed", "3.4", 0.0),
    ("listed", "24 / 7", 0.0),
    ("listed", "The ratio is 24/7, about 3.43", 1.0),
    ("listed", "['24/7', '3.429']", 1.0),
    ("letter", "C", 1.0),
    ("letter", "c", 1.0),
    ("letter", "(C)", 0.0),  # a one-letter gold needs a space on one side
    ("letter", "C.", 1.0),
    ("letter", "The answer is C", 1.0),
    ("letter", "Vitamin C", 1.0),
    ("letter", "Cancer", 0.0),
    ("letter", "ABC", 0.0),
    ("letter", "A C", 1.0),
    ("letter", "Ｃ", 0.0),
    ("word", "Embryonic", 1.0),
    ("word", "EMBRYONIC stage", 1.0),
    ("word", "embryo", 0.0),
    ("word", "pre-embryonic", 1.0),  # text golds match as substrings
    ("word", "The stage is embryonic.", 1.0),
    ("word", "Ｅｍｂｒｙｏｎｉｃ", 0.0),
    ("word", "embry onic", 0.0),
    ("five", "5kg", 0.0),
    ("five", "5 kg", 1.0),
    ("five", "The mass is 5kg", 0.0),
    ("five", "The mass is 5 kg.", 1.0),
    ("five", "5.0", 1.0),
    ("five", "five", 0.0),
    ("five", "5.5kg", 0.0),
    ("five", "05", 1.0),
    ("five", "5\n", 1.0),
    ("five", "\n5", 1.0),
    ("five", "5,000", 0.0),
    ("five", "The mass is\n5 kg", 1.0),
    ("five", "5 or 6", 1.0),
    ("five", "It is 5. So the answer is 6", 0.0),  # only the tail after the last indicator counts
    ("fifty", "50%", 1.0),
    ("fifty", "50 %", 1.0),
    ("fifty", "0.5", 0.0),
]


@pytest.mark.parametrize(("gold", "response", "acc"), OPEN)
def test_open_question_matches_official(gold: str, response: str, acc: float) -> None:
    assert mmmu.process_results(open_doc(GOLDS[gold]), [response]) == {"mmmu_acc": acc, "mmmu_unparsed": 0.0}


def test_list_valued_golds_each_count() -> None:
    assert mmmu.answers(open_doc("['24/7', '3.429']")) == ["24/7", "3.429"]
    assert mmmu.answers(open_doc("['$MgS$', 'MgS']")) == ["$MgS$", "MgS"]
    assert mmmu.answers(open_doc("[not a list")) == ["[not a list"]
    assert mmmu.process_results(open_doc("['Tampa', 'Florida']"), ["Tampa, Florida"])["mmmu_acc"] == 1.0


def test_random_fallback_is_seeded_by_document() -> None:
    """Parsed answers score as by default; an unparsed one gets random.Random("mmmu:<id>").choice."""
    doc = choice_doc("A", "validation_Biology_6")  # its seeded letter is A
    random.seed(1)
    first = mmmu.process_results_random_fallback(doc, ["DNA"])
    random.seed(2)
    assert mmmu.process_results_random_fallback(doc, ["DNA"]) == first == {"mmmu_acc": 1.0, "mmmu_unparsed": 1.0}
    assert mmmu.process_results_random_fallback(choice_doc("B", "validation_Biology_2"), ["DNA"])["mmmu_acc"] == 0.0  # E
    for response, acc, unparsed in MULTIPLE_CHOICE:
        if not unparsed:
            assert mmmu.process_results_random_fallback(choice_doc(), [response]) == {"mmmu_acc": acc, "mmmu_unparsed": 0.0}


def test_docstring_examples() -> None:
    assert doctest.testmod(mmmu).failed == 0
    assert doctest.run_docstring_examples(sample.parse_multiple_choice, {"parse_multiple_choice": sample.parse_multiple_choice}) is None


# Eight documents through the shipped tasks: 4 right (docs 1, 4, 5, 7), 2 unparseable (docs 2, 3).
CORPUS = [
    (choice_doc("B", "validation_Biology_1"), "(B)"),
    (choice_doc("B", "validation_Biology_2"), "B. RNA"),  # unparsed; seeded fallback E: wrong
    (choice_doc("A", "validation_Biology_6"), "DNA"),  # unparsed; seeded fallback A: right
    (choice_doc("C", "validation_Biology_3"), "I would go with protein because of the folds"),
    (open_doc("1234", "validation_Finance_1"), "The total is 1,234 dollars"),
    (open_doc("5", "validation_Physics_1"), "The mass is 5kg"),
    (open_doc("['24/7', '3.429']", "validation_Math_15"), "3.43"),
    (open_doc("C", "validation_Pharmacy_1"), "(C)"),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mmmu_val", {"mmmu_acc": 4 / 8, "mmmu_unparsed": 2 / 8}),
        ("mmmu_val_random_fallback", {"mmmu_acc": 5 / 8, "mmmu_unparsed": 2 / 8}),
    ],
)
def test_corpus_scores(name: str, expected: dict[str, float]) -> None:
    task = Task(TaskSpec.from_yaml(available_tasks()[name]))
    scores = [task.score_value(doc, response) for doc, response in CORPUS]
    for metric, value in expected.items():
        assert aggregate(task.aggregation(metric), [s[metric] for s in scores], 0, 0).value == pytest.approx(value)
    assert {m.metric: m.higher_is_better for m in task.metrics} == {"mmmu_acc": True, "mmmu_unparsed": False}
