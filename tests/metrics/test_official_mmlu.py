"""MMLU against lm-evaluation-harness, on adversarial log-probabilities.

Every expected acc is what lm-evaluation-harness 0.4.13 (PyPI) returns, obtained by running its own
`ConfigurableTask.process_results` (lm_eval/api/task.py, multiple_choice branch: `argmax(lls)`,
numpy's first maximum on ties and the first nan if any) on its `mmlu_anatomy` task
(lm_eval/tasks/mmlu/default/_default_template_yaml: choices "A".."D", metric acc only), with each
document given as a local dataset. The prompts (description, "Answer:", " A".." D", first_n
few-shot examples from dev) were rendered by the same lm-eval task. No departures.
"""

import dataclasses
from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

INF = float("inf")
NAN = float("nan")

# (log-probabilities of " A".." D", gold index, acc), from lm-eval 0.4.13
CASES = [
    ([-1.0, -2.0, -3.0, -4.0], 0, 1.0),  # gold highest
    ([-1.0, -2.0, -3.0, -4.0], 1, 0.0),  # gold second
    ([-4.0, -3.0, -2.0, -1.0], 3, 1.0),  # gold last
    ([-2.0, -2.0, -2.0, -2.0], 0, 1.0),  # four-way tie, gold first
    ([-2.0, -2.0, -2.0, -2.0], 3, 0.0),  # four-way tie, gold last
    ([-3.0, -1.0, -1.0, -3.0], 1, 1.0),  # tie B/C, gold B
    ([-3.0, -1.0, -1.0, -3.0], 2, 0.0),  # tie B/C, gold C
    ([-INF, -INF, -INF, -INF], 0, 1.0),  # all -inf, gold A
    ([-INF, -INF, -INF, -INF], 2, 0.0),  # all -inf, gold C
    ([-INF, -INF, -0.1, -INF], 2, 1.0),  # one finite
    ([-0.1, -INF, -INF, -INF], 2, 0.0),  # gold -inf
    ([NAN, -1.0, -2.0, -3.0], 0, 1.0),  # nan first: argmax is the nan
    ([-1.0, NAN, -2.0, -3.0], 0, 0.0),  # nan second
    ([-1.0, NAN, -2.0, -3.0], 1, 1.0),  # nan second, gold the nan
    ([0.0, -1e-09, -1e-09, -1e-09], 0, 1.0),  # log-prob 0
    ([-1e-09, 0.0, -1e-09, -1e-09], 0, 0.0),  # log-prob 0 on another
    ([-1.0000001, -1.0, -1.0000002, -5.0], 1, 1.0),  # near ties
    ([-1.0000001, -1.0, -1.0000002, -5.0], 0, 0.0),  # near ties, gold just below
    ([-1e+300, -1e+300, -1e+299, -1e+301], 2, 1.0),  # huge magnitudes
    ([-5e-324, -1e-323, -2e-323, -3e-323], 0, 1.0),  # subnormals
    ([-0.0, 0.0, -1.0, -1.0], 0, 1.0),  # -0.0 and 0.0 tie: first wins
    ([-0.0, 0.0, -1.0, -1.0], 1, 0.0),  # -0.0 and 0.0 tie, gold second
    ([-2.3, -0.7, -5.1, -3.3], 1, 1.0),  # typical
    ([-2.3, -0.7, -5.1, -3.3], 3, 0.0),  # typical, wrong
    ([-10.5, -10.4, -10.6, -10.45], 1, 1.0),  # close values
    ([-10.5, -10.4, -10.6, -10.45], 3, 0.0),  # close values, wrong
    ([-1.0, -2.0, -3.0, -4.0], 2, 0.0),  # gold third
    ([-4.0, -1.0, -2.0, -3.0], 1, 1.0),  # gold B highest
    ([-4.0, -3.0, -1.0, -2.0], 2, 1.0),  # gold C highest
    ([-4.0, -3.0, -1.0, -2.0], 0, 0.0),  # gold A lowest
    ([-INF, -1.0, -INF, -1.0], 3, 0.0),  # -inf and a tie, gold the second of the tie
    ([-INF, -1.0, -INF, -1.0], 1, 1.0),  # -inf and a tie, gold the first of the tie
    ([-1.5, -1.5, -1.4, -1.5], 2, 1.0),  # one above three tied
    ([-1.5, -1.5, -1.6, -1.5], 2, 0.0),  # one below three tied
    ([-1.5, -1.5, -1.6, -1.5], 0, 1.0),  # one below three tied, gold the first tied
    ([-100.0, -0.001, -50.0, -75.0], 1, 1.0),  # confident
    ([-100.0, -0.001, -50.0, -75.0], 2, 0.0),  # confident, wrong
    ([-0.69, -0.69, -0.69, -0.7], 2, 0.0),  # three tied then one lower, gold third
    ([-3.0, -2.0, -2.0, -2.0], 1, 1.0),  # tie B/C/D, gold B
    ([-3.0, -2.0, -2.0, -2.0], 3, 0.0),  # tie B/C/D, gold D
    ([-7.25, -7.5, -7.125, -7.0625], 3, 1.0),  # exact binary fractions
]


@lru_cache(maxsize=None)
def builtin(name: str = "mmlu_anatomy", num_fewshot: int = 0) -> Task:
    return Task(dataclasses.replace(TaskSpec.from_yaml(available_tasks()[name]), num_fewshot=num_fewshot))


def mmlu_doc(answer: int, question: str = " Which organ pumps blood? ", choices: tuple = ("lung", "heart", "liver", "skin")) -> dict:
    return {"question": question, "subject": "anatomy", "choices": list(choices), "answer": answer}


@pytest.mark.parametrize(("logprobs", "gold", "acc"), CASES)
def test_mmlu_scores_as_lm_eval(logprobs, gold, acc) -> None:
    assert builtin().score_value(mmlu_doc(gold), [(lp, False) for lp in logprobs]) == {"acc": acc}


DEV = [mmlu_doc(1, "What is 1+1?", ("1", "2", "3", "4")), mmlu_doc(3, "  Spaces around?  ", (" a ", "b", "c", "d")),
       mmlu_doc(0, "Third", ("w", "x", "y", "z"))]  # fmt: skip
DESCRIPTION = "The following are multiple choice questions (with answers) about anatomy.\n\n"
SHOTS = "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\nSpaces around?\nA.  a \nB. b\nC. c\nD. d\nAnswer: D\n\n"
# (doc, num_fewshot, context), rendered by lm-eval 0.4.13's mmlu_anatomy with DEV as its dev split
PROMPTS = [
    (mmlu_doc(1), 0, DESCRIPTION + "Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. skin\nAnswer:"),
    (mmlu_doc(1), 2, DESCRIPTION + SHOTS + "Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. skin\nAnswer:"),
    (mmlu_doc(0, "Ｆｕｌｌwidth 1,234 kg?\n", ("１２３", "5kg", "50%", "")), 0,
     DESCRIPTION + "Ｆｕｌｌwidth 1,234 kg?\nA. １２３\nB. 5kg\nC. 50%\nD. \nAnswer:"),
    (mmlu_doc(0, "Ｆｕｌｌwidth 1,234 kg?\n", ("１２３", "5kg", "50%", "")), 2,
     DESCRIPTION + SHOTS + "Ｆｕｌｌwidth 1,234 kg?\nA. １２３\nB. 5kg\nC. 50%\nD. \nAnswer:"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "num_fewshot", "context"), PROMPTS)
def test_mmlu_requests_match_lm_eval(doc, num_fewshot, context) -> None:
    task = builtin(num_fewshot=num_fewshot)
    task.fewshot_pool = list(enumerate(DEV))
    requests = task.build_requests(0, doc, 0)
    assert [r.context for r in requests] == [context] * 4
    assert [r.continuation for r in requests] == [" A", " B", " C", " D"]
    assert task.doc_to_target(doc) == doc["answer"]


def test_mmlu_corpus_accuracy_through_the_task() -> None:
    # 6 documents; by hand (first maximum on ties): right on 1, 3, 4 -> acc 3/6.
    docs = [
        (mmlu_doc(1), [-2.0, -0.5, -3.0, -4.0]),  # B, right
        (mmlu_doc(2), [-2.0, -0.5, -3.0, -4.0]),  # B, wrong
        (mmlu_doc(0), [-1.0, -1.0, -1.0, -1.0]),  # tie: A, right
        (mmlu_doc(2), [-INF, -INF, -0.1, -INF]),  # C, right
        (mmlu_doc(3), [-INF, -1.0, -INF, -1.0]),  # tie B/D: B, wrong
        (mmlu_doc(3), [NAN, -1.0, -2.0, -0.5]),  # the nan wins: A, wrong
    ]
    task = builtin()
    scores = []
    for doc, logprobs in docs:
        requests = task.build_requests(0, doc, 0)
        responses = [Response(uid=r.uid, logprob=lp, is_greedy=False) for r, lp in zip(requests, logprobs)]
        scores.append(task.score(doc, responses)["none"]["acc"])
    assert scores == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert aggregate("mean", scores, 0, 0).value == pytest.approx(3 / 6)
