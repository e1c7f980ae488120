"""HellaSwag against lm-evaluation-harness: its text cleaning and acc / acc_norm.

Every expected value is what lm-evaluation-harness 0.4.13 (PyPI) returns, obtained by running its
own code: lm_eval/tasks/hellaswag/utils.py (`preprocess`, `process_docs`) for the cleaned context
and endings, and `ConfigurableTask.process_results` (lm_eval/api/task.py, multiple_choice branch:
`argmax(lls)` and `argmax(lls / [len(ending) ...])` over the CLEANED endings, numpy's first maximum
on ties) on its `hellaswag` task with each document given as a local dataset. No departures, except
one noted below: an ending that cleans to "" (e.g. "[step]").
"""

from functools import lru_cache

import pytest

from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.hellaswag.utils import preprocess

INF = float("inf")
NAN = float("nan")

# (raw text, lm-eval's preprocess(text))
PREPROCESS = [
    ('plain text', 'plain text'),
    ('  padded  ', 'padded'),
    ('[header] How to X', ' How to X'),
    ('How to X [title] Do Y', 'How to X. Do Y'),
    ('How to X[title] Do Y', 'How to X Do Y'),
    ('[title] at start', ' at start'),
    ('a [step] b', 'a b'),
    ('a  b', 'a b'),
    ('a   b', 'a  b'),
    ('a    b', 'a  b'),
    ('a\tb', 'a\tb'),
    ('a\n b', 'a\n b'),
    ('Nested [a [b] c] d', 'Nested c] d'),
    ('[[double]]', ']'),
    ('unclosed [ bracket', 'unclosed [ bracket'),
    ('stray ] bracket', 'stray ] bracket'),
    ('[]', ''),
    ('[step]', ''),
    (' [title]', ''),
    ('x [title]', 'x. '),
    ('x [title] [step] y', 'x.  y'),
    ('x [TITLE] y', 'x y'),
    ('x（fullwidth）[y]', 'x（fullwidth）'),
    ('１,２３４ kg', '１,２３４ kg'),
    ('50% [substeps] off', '50% off'),
    ('', ''),
    ('   ', ''),
    ('[a]\n[b]', '\n'),
    ('[multi\nline] x', '[multi\nline] x'),
    ('end.  [title] next', 'end. . next'),
    ('x [title]  y', 'x.  y'),
    ('a [b]  c', 'a  c'),
    ('Ｔｅｘｔ [ｔｉｔｌｅ] ok', 'Ｔｅｘｔ ok'),
    ('\n[step] Lead newline\n', ' Lead newline'),
    ('It costs 1,234 [title] 5kg', 'It costs 1,234. 5kg'),
]


@pytest.mark.parametrize(("text", "expected"), PREPROCESS)
def test_preprocess_as_lm_eval(text: str, expected: str) -> None:
    assert preprocess(text) == expected


@lru_cache(maxsize=None)
def hellaswag() -> Task:
    return Task(TaskSpec.from_yaml(available_tasks()["hellaswag"]))


def hs_doc(ctx_a: str, ctx_b: str, endings: list[str], label: int, activity: str = "Roof shingle removal") -> dict:
    return {"ind": 1, "activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": ctx_a + " " + ctx_b,
            "endings": endings, "source_id": "wikihow~1", "split": "val", "split_type": "indomain", "label": str(label)}  # fmt: skip


# (activity_label, ctx_a, ctx_b, endings, lm-eval's query, lm-eval's choices)
DOCS = [
    ('Roof shingle removal', 'A man is sitting on a roof.', 'he', ['is using wrap.', 'is ripping tiles.', 'is holding a cube.', 'starts pulling up roofing.'], 'Roof shingle removal: A man is sitting on a roof. He', ['is using wrap.', 'is ripping tiles.', 'is holding a cube.', 'starts pulling up roofing.']),
    ('Home and Garden', '[header] How to clean a pan [title] Fill the pan.', '', ['[step] Add soap and water.', 'Paint the pan.', 'Throw it away.', 'Sell it.'], 'Home and Garden: How to clean a pan. Fill the pan.', [' Add soap and water.', 'Paint the pan.', 'Throw it away.', 'Sell it.']),
    ('Home and Garden', '[header] How to X [title] Do Y [step] Then Z.', '', ['[substeps] A [title] B.', '[title]C', 'x [title]', '[step]'], 'Home and Garden: How to X. Do Y Then Z.', [' A. B.', 'C', 'x. ', '']),
    ('Personal Care', '  Leading and trailing  ', '  spaced ctx_b  ', ['  two  spaces  ', 'three   spaces', 'four    spaces', 'tab\there'], 'Personal Care:  Leading and trailing   spaced ctx_b', ['two spaces', 'three  spaces', 'four  spaces', 'tab\there']),
    ('Cooking', 'Nested [a [b] c] brackets.', 'and [unclosed bracket', ['] stray close', '[] empty', '[[double]]', 'a]b[c'], 'Cooking: Nested c] brackets. And [unclosed bracket', ['] stray close', ' empty', ']', 'a]b[c']),
    ('Sports', 'He runs.', 'SHE JUMPS HIGH', ['OK.', 'ok.', 'Ok.', 'oK.'], 'Sports: He runs. She jumps high', ['OK.', 'ok.', 'Ok.', 'oK.']),
    ('Music', 'A woman sings.', 'élan vital', ['ｆｕｌｌｗｉｄｔｈ', '１２３', 'Ａ', 'naïve'], 'Music: A woman sings. Élan vital', ['ｆｕｌｌｗｉｄｔｈ', '１２３', 'Ａ', 'naïve']),
    ('Travel', 'Line\nbreak in ctx_a.', 'then\nmore', ['end\n', '\nstart', 'mid\ndle', 'tab\t'], 'Travel: Line\nbreak in ctx_a. Then\nmore', ['end', 'start', 'mid\ndle', 'tab']),
    ('[title] Odd activity', 'ctx', 'b', ['a', 'b', 'c', 'd'], ' Odd activity: ctx B', ['a', 'b', 'c', 'd']),
    ('Food', 'Costs 1,234 dollars.', 'it weighs 5kg', ['50% off.', '5 kg.', '1,234.', '$5.'], 'Food: Costs 1,234 dollars. It weighs 5kg', ['50% off.', '5 kg.', '1,234.', '$5.']),
    ('Cleaning', 'Text [title]  then two spaces.', '[title] starts ctx_b', ['x [title] y', '[title]', ' [title] ', 'a  [title]  b'], 'Cleaning: Text.  then two spaces.. starts ctx_b', ['x. y', '', '', 'a .  b']),
    ('Empty', '', '', ['a', 'b', 'c', 'd'], 'Empty:', ['a', 'b', 'c', 'd']),
    ('Pets', 'Dog.', '  lower after spaces', ['[step] [substeps] nested markers', '[header]', 'plain', '[title][title]'], 'Pets: Dog.  lower after spaces', [' nested markers', '', 'plain', '']),
]


@pytest.mark.parametrize(("activity", "ctx_a", "ctx_b", "endings", "query", "choices"), DOCS)
def test_document_cleaned_as_lm_eval(activity, ctx_a, ctx_b, endings, query, choices) -> None:
    task = hellaswag()
    doc = hs_doc(ctx_a, ctx_b, endings, 0, activity)
    assert task.doc_to_text(doc) == query
    assert task.doc_to_choice(doc) == choices
    requests = task.build_requests(0, doc, 0)
    assert [r.context for r in requests] == [query] * 4  # zero-shot: the query alone
    assert [r.continuation for r in requests] == [" " + c for c in choices]


# (raw endings, label, log-probabilities, acc, acc_norm), from lm-eval 0.4.13 on
# hs_doc("A man is sitting on a roof.", "he", endings, label)
CASES = [
    (['a', 'bb', 'ccc', 'dddd'], 3, [-1.0, -2.0, -3.0, -3.9], 0.0, 1.0),  # acc picks a, acc_norm picks dddd
    (['a', 'bb', 'ccc', 'dddd'], 0, [-1.0, -2.0, -3.0, -3.9], 1.0, 0.0),  # gold a
    (['a', 'bb', 'ccc', 'dddd'], 1, [-1.0, -2.0, -3.0, -4.0], 0.0, 0.0),  # acc_norm four-way tie: first wins
    (['a', 'bb', 'ccc', 'dddd'], 0, [-1.0, -2.0, -3.0, -4.0], 1.0, 1.0),  # acc_norm four-way tie, gold first
    (['[step] Add soap.', 'Add soap.', 'Paint it.', 'Sell it.'], 0, [-9.0, -9.0, -20.0, -20.0], 1.0, 1.0),  # '[step] ' removed: equal text and length, tie
    (['[step] Add soap.', 'Add soap.', 'Paint it.', 'Sell it.'], 1, [-9.0, -9.0, -20.0, -20.0], 0.0, 0.0),  # tie after preprocessing, gold second
    (['[header] x', 'xx', 'yyy', 'zzzz'], 0, [-2.0, -3.0, -4.0, -5.0], 1.0, 1.0),  # '[header] x' -> ' x' (2 chars, the space kept): -1 per char
    (['[header] x', 'xx', 'yyy', 'zzzz'], 1, [-2.0, -3.0, -4.0, -5.0], 0.0, 0.0),  # same, gold xx
    (['[header] x', 'xx', 'yyy', 'zzzz'], 3, [-2.0, -3.0, -4.0, -4.5], 0.0, 0.0),  # ' x' (-1 per char) still beats 'zzzz' (-1.125)
    (['end [title] more', 'abcdefghijklmnop', 'q', 'r'], 0, [-15.0, -17.0, -2.0, -3.0], 0.0, 0.0),  # 'end. more' (9 chars) after ' [title]' -> '. '
    (['end [title] more', 'abcdefghijklmnop', 'q', 'r'], 1, [-15.0, -17.0, -2.0, -3.0], 0.0, 1.0),  # same, gold the 16-char one
    (['two  spaces', 'two spaces', 'x', 'y'], 0, [-10.0, -10.0, -5.0, -5.0], 0.0, 1.0),  # double space collapsed: equal lengths, tie
    (['two  spaces', 'two spaces', 'x', 'y'], 1, [-10.0, -10.0, -0.5, -0.5], 0.0, 0.0),  # short endings win both
    (['three   spaces', 'three spaces', 'x', 'y'], 0, [-13.0, -12.0, -50.0, -50.0], 0.0, 1.0),  # three spaces -> two: 13 vs 12 chars
    (['three   spaces', 'three spaces', 'x', 'y'], 1, [-13.0, -12.0, -50.0, -50.0], 1.0, 0.0),  # same, gold the single-spaced
    (['  padded  ', 'padded', 'x', 'y'], 0, [-6.0, -6.5, -9.0, -9.0], 1.0, 1.0),  # strip: '  padded  ' -> 'padded'
    (['  padded  ', 'padded', 'x', 'y'], 1, [-6.0, -6.5, -9.0, -9.0], 0.0, 0.0),  # strip, gold second
    (['日本語です', 'abcde', 'x', 'y'], 0, [-5.0, -5.0, -10.0, -10.0], 1.0, 1.0),  # CJK: characters, not bytes, tie
    (['日本語です', 'abcdefghij', 'x', 'y'], 0, [-5.0, -9.0, -10.0, -10.0], 1.0, 0.0),  # CJK 5 chars vs 10 ascii
    (['日本語です', 'abcdefghij', 'x', 'y'], 1, [-5.0, -9.0, -10.0, -10.0], 0.0, 1.0),  # same, gold ascii
    (['😀😀', 'ab', 'x', 'y'], 0, [-2.0, -2.0, -3.0, -3.0], 1.0, 1.0),  # emoji 1 char each
    (['ｆｕｌｌ', 'full', 'x', 'y'], 1, [-4.0, -3.9, -5.0, -5.0], 1.0, 1.0),  # fullwidth: same char length
    (['a', 'b', 'c', 'd'], 2, [-INF, -INF, -INF, -INF], 0.0, 0.0),  # all -inf
    (['a', 'b', 'c', 'd'], 0, [-INF, -INF, -INF, -INF], 1.0, 1.0),  # all -inf, gold first
    (['a', 'bb', 'c', 'd'], 1, [-INF, -3.0, -INF, -INF], 1.0, 1.0),  # one finite
    (['a', 'bb', 'c', 'd'], 0, [NAN, -3.0, -1.0, -1.0], 1.0, 1.0),  # nan first
    (['aaaa', 'bb', 'c', 'dd'], 2, [-4.0, -2.0, -1.0, -2.0], 1.0, 0.0),  # all -1 per char: acc_norm tie, acc picks c
    (['aaaa', 'bb', 'c', 'dd'], 0, [-4.0, -2.0, -1.0, -2.0], 0.0, 1.0),  # same, gold first
    (['[title] x', 'x', 'y', 'z'], 0, [-1.0, -1.0, -9.0, -9.0], 1.0, 1.0),  # '[title] x' -> ' x': no space before, so no '. '
    (['long ending with many words here', 'short', 'mid length', 'tiny'], 0, [-20.0, -5.0, -9.0, -4.0], 0.0, 1.0),  # long ending, acc_norm picks it
    (['long ending with many words here', 'short', 'mid length', 'tiny'], 3, [-20.0, -5.0, -9.0, -4.0], 1.0, 0.0),  # long ending, gold tiny
]


@pytest.mark.parametrize(("endings", "label", "logprobs", "acc", "acc_norm"), CASES)
def test_hellaswag_scores_as_lm_eval(endings, label, logprobs, acc, acc_norm) -> None:
    doc = hs_doc("A man is sitting on a roof.", "he", endings, label)
    assert hellaswag().score_value(doc, [(lp, False) for lp in logprobs]) == {"acc": acc, "acc_norm": acc_norm}


# lm-eval divides by a zero length: -1/0 = -inf (never picked), 0/0 = nan (picked by argmax).
# Here acc_norm rejects an empty choice (lmm_lightning.metrics.acc_norm raises ValueError) instead.
EMPTY_ENDING = [
    (["[step]", "ab", "c", "d"], 0, [-1.0, -2.0, -3.0, -4.0], 1.0, 0.0),
    (["[step]", "ab", "c", "d"], 0, [0.0, -2.0, -3.0, -4.0], 1.0, 1.0),
    (["[step]", "ab", "c", "d"], 1, [-1.0, -0.5, -3.0, -4.0], 1.0, 1.0),
]


@pytest.mark.parametrize(("endings", "label", "logprobs", "acc", "acc_norm"), EMPTY_ENDING)
def test_empty_ending_is_refused_where_lm_eval_divides_by_zero(endings, label, logprobs, acc, acc_norm) -> None:
    """Deliberate departure (hellaswag.yaml header): lm-eval's values above come from a division by
    zero (0/0 = nan wins the argmax); a length-normalised score of an empty ending is refused instead."""
    doc = hs_doc("ctx.", "b", endings, label, "Home and Garden")
    with pytest.raises(ValueError, match="empty choices"):
        hellaswag().score_value(doc, [(lp, False) for lp in logprobs])


def test_hellaswag_corpus_accuracy_through_the_task() -> None:
    # 6 documents; by hand (cleaned ending lengths in brackets), confirmed by lm-eval 0.4.13:
    docs = [
        # [14, 17, 18, 26]: acc picks 0; per char -0.57 -0.53 -0.56 -0.46: acc_norm picks 3 (gold)
        (hs_doc("A man is sitting on a roof.", "he", ["is using wrap.", "is ripping tiles.", "is holding a cube.",
                                                      "starts pulling up roofing."], 3), [-8.0, -9.0, -10.0, -12.0]),
        # "[step] Add soap and water." -> " Add soap and water." [20, 14, 14, 8]: acc picks 1; acc_norm picks 0 (gold)
        (hs_doc("[header] How to clean a pan [title] Fill the pan.", "", ["[step] Add soap and water.", "Paint the pan.",
                                                                         "Throw it away.", "Sell it."], 0, "Home and Garden"),
         [-10.0, -9.0, -12.0, -11.0]),
        # [1, 2, 3, 4]: acc picks 0; per char -1 -1 -1 -0.975: acc_norm picks 3 (gold)
        (hs_doc("He runs.", "she", ["a", "bb", "ccc", "dddd"], 3), [-1.0, -2.0, -3.0, -3.9]),
        # "two  spaces" -> "two spaces": equal lengths and log-probs, both pick 0, gold 1
        (hs_doc("He runs.", "she", ["two  spaces", "two spaces", "x", "y"], 1), [-10.0, -10.0, -15.0, -15.0]),
        # [5, 10, 1, 1] characters (not bytes): acc picks 0 (gold); per char -1 vs -0.9: acc_norm picks 1
        (hs_doc("He runs.", "she", ["日本語です", "abcdefghij", "x", "y"], 0), [-5.0, -9.0, -INF, -INF]),
        # [4, 2, 1, 2], all -1 per char: acc picks 2 (gold); acc_norm tie -> 0
        (hs_doc("He runs.", "she", ["aaaa", "bb", "c", "dd"], 2), [-4.0, -2.0, -1.0, -2.0]),
    ]  # fmt: skip
    task = hellaswag()
    scores = []
    for doc, logprobs in docs:
        requests = task.build_requests(0, doc, 0)
        responses = [Response(uid=r.uid, logprob=lp, is_greedy=False) for r, lp in zip(requests, logprobs)]
        scores.append(task.score(doc, responses)["none"])
    assert [s["acc"] for s in scores] == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert [s["acc_norm"] for s in scores] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert aggregate("mean", [s["acc"] for s in scores], 0, 0).value == pytest.approx(2 / 6)
    assert aggregate("mean", [s["acc_norm"] for s in scores], 0, 0).value == pytest.approx(3 / 6)
