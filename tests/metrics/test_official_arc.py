"""ARC-Easy / ARC-Challenge against lm-evaluation-harness, on adversarial log-probabilities.

Every expected acc / acc_norm is what lm-evaluation-harness 0.4.13 (PyPI) returns, obtained by
running its own `ConfigurableTask.process_results` (lm_eval/api/task.py, multiple_choice branch:
`argmax(lls)` and `argmax(lls / [len(choice) ...])`, numpy's first maximum on ties) on the task
built from its lm_eval/tasks/arc/arc_easy.yaml, with each document given as a local dataset.
acc_norm divides by the length in characters of the choice text (not bytes, not tokens, without
the target delimiter). The prompts were rendered by the same lm-eval tasks. No departures, except
that an empty choice is rejected here (lm-eval divides by zero; no ARC choice is empty).
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks

INF = float("inf")
NAN = float("nan")

# (choice texts, labels, answerKey, log-probabilities, acc, acc_norm), from lm-eval 0.4.13
CASES = [
    (['the Sun', 'a rock', 'a cup'], ['A', 'B', 'C'], 'A', [-1.0, -2.0, -3.0], 1.0, 1.0),  # plain: gold highest
    (['the Sun', 'a rock', 'a cup'], ['A', 'B', 'C'], 'B', [-1.0, -2.0, -3.0], 0.0, 0.0),  # plain: gold not highest
    (['salt', 'sand', 'light', 'ice'], ['1', '2', '3', '4'], '3', [-4.0, -4.0, -1.0, -4.0], 1.0, 1.0),  # numeric answer keys
    (['yes', 'no'], ['A', 'B'], 'A', [-2.0, -2.0], 1.0, 1.0),  # tie: first maximum wins (gold first)
    (['yes', 'no'], ['A', 'B'], 'B', [-2.0, -2.0], 0.0, 0.0),  # tie: first maximum wins (gold second)
    (['cat', 'dog', 'cow'], ['A', 'B', 'C'], 'C', [-3.0, -1.5, -1.5], 0.0, 0.0),  # tie on two later choices, gold the second
    (['cat', 'dog', 'cow'], ['A', 'B', 'C'], 'B', [-3.0, -1.5, -1.5], 1.0, 1.0),  # tie on two later choices, gold the first
    (['a', 'bb'], ['A', 'B'], 'B', [-1.0, -1.5], 0.0, 1.0),  # acc_norm flips: per char -1 vs -0.75
    (['a', 'bb'], ['A', 'B'], 'A', [-1.0, -1.5], 1.0, 0.0),  # acc_norm flips, gold the short one
    (['a', 'bb'], ['A', 'B'], 'A', [-1.0, -2.0], 1.0, 1.0),  # acc_norm tie (-1 vs -1): first wins
    (['a', 'bb'], ['A', 'B'], 'B', [-1.0, -2.0], 0.0, 0.0),  # acc_norm tie, gold second
    (['photosynthesis in green plants', 'sun'], ['A', 'B'], 'A', [-12.0, -3.0], 0.0, 1.0),  # long choice loses acc, wins acc_norm
    (['photosynthesis in green plants', 'sun'], ['A', 'B'], 'B', [-12.0, -3.0], 1.0, 0.0),  # long choice, gold the short
    (['x', 'a very very very long answer indeed'], ['A', 'B'], 'B', [-0.5, -10.0], 0.0, 1.0),  # 1 char vs 35 chars
    (['red', 'blue', 'green', 'pink'], ['A', 'B', 'C', 'D'], 'D', [-INF, -INF, -INF, -INF], 0.0, 0.0),  # all -inf: argmax is the first
    (['red', 'blue', 'green', 'pink'], ['A', 'B', 'C', 'D'], 'A', [-INF, -INF, -INF, -INF], 1.0, 1.0),  # all -inf, gold first
    (['red', 'blue', 'green', 'pink'], ['A', 'B', 'C', 'D'], 'C', [-INF, -5.0, -6.0, -INF], 0.0, 1.0),  # some -inf
    (['red', 'blue', 'green', 'pink'], ['A', 'B', 'C', 'D'], 'A', [-INF, -5.0, -6.0, -7.0], 0.0, 0.0),  # gold -inf
    (['red', 'blue'], ['A', 'B'], 'B', [NAN, -1.0], 0.0, 0.0),  # nan: numpy argmax returns the nan
    (['red', 'blue'], ['A', 'B'], 'A', [NAN, -1.0], 1.0, 1.0),  # nan, gold is the nan
    (['red', 'blue'], ['A', 'B'], 'A', [0.0, -1.0], 1.0, 1.0),  # log-prob 0 (certain)
    (['red', 'blue'], ['A', 'B'], 'A', [-1.0000000001, -1.0], 0.0, 0.0),  # near tie, 1e-10 apart
    (['red', 'blue'], ['A', 'B'], 'B', [-1.0000000001, -1.0], 1.0, 1.0),  # near tie, gold the larger
    (['abc', 'xyz'], ['A', 'B'], 'B', [-3.0, -2.999], 1.0, 1.0),  # equal lengths: acc_norm = acc
    (['abc', 'xyz', 'pqr'], ['A', 'B', 'C'], 'A', [-3.0, -3.0, -3.0], 1.0, 1.0),  # equal lengths, three-way tie
    (['é', 'e'], ['A', 'B'], 'A', [-1.0, -1.0], 1.0, 1.0),  # é is 1 char (2 bytes): characters count, tie
    (['日本語', 'abc'], ['A', 'B'], 'A', [-3.0, -3.5], 1.0, 1.0),  # CJK: 3 chars, 9 bytes
    (['日本語', 'abcdefgh'], ['A', 'B'], 'B', [-3.0, -7.0], 0.0, 1.0),  # CJK vs 8 ASCII: per char -1 vs -0.875
    (['日本語', 'abcdefgh'], ['A', 'B'], 'A', [-3.0, -7.0], 1.0, 0.0),  # CJK vs 8 ASCII, gold CJK
    (['é', 'é'], ['A', 'B'], 'A', [-2.0, -1.5], 0.0, 1.0),  # combining accent: 2 chars vs 1
    (['é', 'é'], ['A', 'B'], 'B', [-2.0, -1.5], 1.0, 0.0),  # combining accent, gold precomposed
    (['😀', 'ab'], ['A', 'B'], 'A', [-1.5, -2.5], 1.0, 0.0),  # emoji is 1 char (4 bytes)
    (['😀', 'ab'], ['A', 'B'], 'B', [-1.5, -2.5], 0.0, 1.0),  # emoji, gold ascii
    (['Ａ', 'AA'], ['A', 'B'], 'B', [-1.0, -1.9], 0.0, 1.0),  # fullwidth letter is 1 char
    ([' leading space', 'leading space'], ['A', 'B'], 'A', [-14.0, -13.5], 0.0, 1.0),  # a leading space counts as a character
    ([' leading space', 'leading space'], ['A', 'B'], 'B', [-14.0, -13.5], 1.0, 0.0),  # leading space, gold the bare one
    (['trailing  ', 'trailing'], ['A', 'B'], 'A', [-9.0, -8.5], 0.0, 1.0),  # trailing spaces count too
    (['1,234', '1234'], ['A', 'B'], 'A', [-5.0, -4.2], 0.0, 1.0),  # thousands separator is a character
    (['5kg', '5 kg'], ['A', 'B'], 'B', [-3.0, -3.9], 0.0, 1.0),  # unit with/without space
    (['50%', '0.5'], ['A', 'B'], 'A', [-3.0, -3.0], 1.0, 1.0),  # percent sign, equal length tie
    (['a', 'b', 'c', 'd', 'e'], ['A', 'B', 'C', 'D', 'E'], 'E', [-9.0, -8.0, -7.0, -6.0, -5.0], 1.0, 1.0),  # five choices, gold last
    (['line\nbreak', 'tab\tbed'], ['A', 'B'], 'A', [-10.0, -8.0], 0.0, 1.0),  # newline/tab inside a choice count as characters
    (['one', 'two', 'three'], ['A', 'B', 'C'], 'C', [-1e+300, -1e+300, -2e+300], 0.0, 0.0),  # huge magnitudes
    (['one', 'two', 'three'], ['A', 'B', 'C'], 'B', [-1e-300, -2e-300, -5e-301], 0.0, 0.0),  # tiny magnitudes
]


@lru_cache(maxsize=None)
def builtin(name: str) -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()[name]))


def arc_doc(texts: list[str], labels: list[str], key: str, question: str = "Which is right?") -> dict:
    return {"id": "Mercury_1", "question": question, "choices": {"text": texts, "label": labels}, "answerKey": key}


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge"])
@pytest.mark.parametrize(("texts", "labels", "key", "logprobs", "acc", "acc_norm"), CASES)
def test_arc_scores_as_lm_eval(name, texts, labels, key, logprobs, acc, acc_norm) -> None:
    scores = builtin(name).score_value(arc_doc(texts, labels, key), [(lp, False) for lp in logprobs])
    assert scores == {"acc": acc, "acc_norm": acc_norm}


# (doc, context, continuations, target), rendered by lm-eval 0.4.13's arc_easy and arc_challenge
PROMPTS = [
    (arc_doc(["the Sun", "a rock", "a cup"], ["A", "B", "C"], "A", "Which is a source of light?"),
     "Question: Which is a source of light?\nAnswer:", [" the Sun", " a rock", " a cup"], 0),
    (arc_doc(["salt", " sand", "light ", "ice"], ["1", "2", "3", "4"], "3", "  What do plants need?\n"),
     "Question:   What do plants need?\n\nAnswer:", [" salt", "  sand", " light ", " ice"], 2),
]  # fmt: skip


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge"])
@pytest.mark.parametrize(("doc", "context", "continuations", "target"), PROMPTS)
def test_arc_requests_match_lm_eval(name, doc, context, continuations, target) -> None:
    task = builtin(name)
    requests = task.build_requests(0, doc, 0)
    assert [r.context for r in requests] == [context] * len(continuations)
    assert [r.continuation for r in requests] == continuations
    assert task.doc_to_target(doc) == target


def test_arc_corpus_accuracy_through_the_task() -> None:
    # 6 documents; by hand: acc right on 1, 3, 4, 6 (4/6); acc_norm right on 1, 2, 3, 5 (4/6).
    docs = [
        (arc_doc(["the Sun", "a rock", "a cup"], ["A", "B", "C"], "A"), [-1.0, -3.0, -4.0]),  # both right
        (arc_doc(["a", "bb"], ["A", "B"], "B"), [-1.0, -1.5]),  # acc picks a; per char -1 vs -0.75: acc_norm bb
        (arc_doc(["yes", "no"], ["A", "B"], "A"), [-2.0, -2.0]),  # tie: the first, both right
        (arc_doc(["photosynthesis", "sun"], ["1", "2"], "2"), [-7.0, -3.0]),  # acc right; -0.5 vs -1: acc_norm wrong
        (arc_doc(["red", "blue", "green", "pink"], ["A", "B", "C", "D"], "C"), [-INF, -5.0, -6.0, -INF]),  # acc_norm only
        (arc_doc(["日本語", "abcdefgh"], ["A", "B"], "A"), [-3.0, -7.0]),  # acc right; -1 vs -0.875: acc_norm wrong
    ]
    task = builtin("arc_challenge")
    scores = []
    for doc, logprobs in docs:
        requests = task.build_requests(0, doc, 0)
        responses = [Response(uid=r.uid, logprob=lp, is_greedy=False) for r, lp in zip(requests, logprobs)]
        scores.append(task.score(doc, responses)["none"])
    assert [s["acc"] for s in scores] == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert [s["acc_norm"] for s in scores] == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert aggregate("mean", [s["acc"] for s in scores], 0, 0).value == pytest.approx(4 / 6)
    assert aggregate("mean", [s["acc_norm"] for s in scores], 0, 0).value == pytest.approx(4 / 6)
