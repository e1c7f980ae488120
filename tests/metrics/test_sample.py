import math

import pytest

from lmm_lightning.metrics import (
    acc,
    acc_norm,
    anls,
    bits_per_byte,
    byte_perplexity,
    exact_match,
    levenshtein,
    normalize_vqa_answer,
    parse_multiple_choice,
    relaxed_accuracy,
    vqa_accuracy,
    word_perplexity,
    yes_no,
)


@pytest.mark.parametrize(
    ("logprobs", "gold", "expected"),
    [
        ([-1.0, -0.5, -3.0], 1, 1.0),
        ([-1.0, -0.5, -3.0], 0, 0.0),
        ([-2.0], 0, 1.0),
        ([-0.5, -0.5, -1.0], 0, 1.0),  # tie: the first maximum wins
        ([-0.5, -0.5, -1.0], 1, 0.0),
        ([-9.0, -0.1, -0.1], 2, 0.0),
    ],
)
def test_acc(logprobs: list[float], gold: int, expected: float) -> None:
    assert acc(logprobs, gold) == expected


def test_acc_rejects_no_choices() -> None:
    with pytest.raises(ValueError):
        acc([], 0)


def test_acc_norm_picks_a_different_answer_than_acc() -> None:
    # Raw: -4.0 > -6.0, so acc picks the short choice. Per character: -4/2 = -2.0 < -6/12 = -0.5.
    logprobs = [-4.0, -6.0]
    choices = ["no", "yes, exactly"]
    assert acc(logprobs, 0) == 1.0
    assert acc_norm(logprobs, choices, 0) == 0.0
    assert acc_norm(logprobs, choices, 1) == 1.0


@pytest.mark.parametrize(
    ("logprobs", "choices", "gold", "expected"),
    [
        ([-3.0, -3.0], ["abc", "abcdef"], 1, 1.0),  # -1.0 vs -0.5
        ([-1.0, -4.0, -9.0], ["a", "bb", "ccc"], 0, 1.0),  # -1.0, -2.0, -3.0
        ([-3.0, -4.0, -4.5], ["a", "bb", "ccc"], 2, 1.0),  # -3.0, -2.0, -1.5
        ([-2.0, -4.0], [" ab", " abcde"], 1, 0.0),  # -2/3 vs -4/6: exact tie, first wins
        ([-2.0, -4.0], [" ab", " abcde"], 0, 1.0),
    ],
)
def test_acc_norm(logprobs: list[float], choices: list[str], gold: int, expected: float) -> None:
    assert acc_norm(logprobs, choices, gold) == expected


def test_acc_norm_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        acc_norm([-1.0, -2.0], ["a"], 0)
    with pytest.raises(ValueError):
        acc_norm([-1.0, -2.0], ["a", ""], 0)


@pytest.mark.parametrize(
    ("prediction", "target", "kwargs", "expected"),
    [
        ("Paris", "Paris", {}, 1.0),
        ("  Paris\n", "Paris", {}, 0.0),  # whitespace is kept, as lm-eval (the pipeline strips generations first)
        ("paris", "Paris", {}, 0.0),
        ("paris", "Paris", {"ignore_case": True}, 1.0),
        ("Paris.", "Paris", {}, 0.0),
        ("Paris.", "Paris", {"ignore_punctuation": True}, 1.0),
        ("P.a,r!i's", "Paris", {"ignore_punctuation": True}, 1.0),
        ("PARIS!", "paris", {"ignore_case": True, "ignore_punctuation": True}, 1.0),
        ("The answer is 42", "42", {"ignore_regexes": (r"The answer is",)}, 0.0),  # " 42": lm-eval gives 0 too
        ("The answer is 42", "42", {"ignore_regexes": (r"The answer is ",)}, 1.0),
        # Regexes run before lowercasing, so a case-sensitive pattern misses lowercase text.
        ("the answer is 42", "42", {"ignore_regexes": (r"The answer is",), "ignore_case": True}, 0.0),
        ("$1,000", "1000", {"ignore_regexes": (r"\$", ",")}, 1.0),
        # Targets are normalised too.
        ("42", "The answer is 42.", {"ignore_regexes": (r"The answer is ",), "ignore_punctuation": True}, 1.0),
        ("Rome", ["Paris", "rome"], {"ignore_case": True}, 1.0),
        ("Rome", ["Paris", "rome"], {}, 0.0),
        ("Rome", [], {}, 0.0),
        ("", "", {}, 1.0),
    ],
)
def test_exact_match(prediction: str, target: str | list[str], kwargs: dict, expected: float) -> None:
    assert exact_match(prediction, target, **kwargs) == expected


def test_exact_match_returns_float() -> None:
    result = exact_match("a", "a")
    assert isinstance(result, float) and not math.isnan(result)


# --- VQA v2 accuracy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two dogs!", "2 dogs"),  # number word -> digit, "!" not next to a space -> space, then split
        ("A dog.", "dog"),  # article dropped, trailing period dropped
        ("the cat", "cat"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # digit,digit anywhere: punctuation is deleted, not spaced
        ("t-shirt", "t shirt"),  # "-" with no space around it becomes a space
        ("yes, it is", "yes it is"),  # ", " has a space next to it: deleted
        ("dont", "don't"),
        ("none", "0"),
        ("  Ten\n", "10"),
    ],
)
def test_normalize_vqa_answer(text: str, expected: str) -> None:
    assert normalize_vqa_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("2", ["2"] * 10, 1.0),
        ("Two", ["2"] * 10, 1.0),
        ("2", ["2"] * 4 + ["3"] * 6, 1.0),  # every leave-one-out subset still has >= 3 matches
        # 3 matches: the 3 matching annotators leave 2 others (2/3), the 7 others leave 3 (1): 9/10.
        ("2", ["2"] * 3 + ["3"] * 7, 0.9),
        ("2", ["2"] * 2 + ["3"] * 8, 0.6),  # (2 * 1/3 + 8 * 2/3) / 10
        ("2", ["2"] * 1 + ["3"] * 9, 0.3),  # (1 * 0 + 9 * 1/3) / 10
        ("4", ["2"] * 10, 0.0),
        ("yes", ["Yes", "yes.", "YES"], 2 / 3),  # fewer answers: each leaves 2 matches -> 2/3
        ("yes", ["yes"], 0.0),  # one answer: leaving it out leaves nothing to match
        ("A t-shirt.", ["t shirt"] * 10, 1.0),
    ],
)
def test_vqa_accuracy(prediction: str, answers: list[str], expected: float) -> None:
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_vqa_accuracy_rejects_no_answers() -> None:
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("2", [])


# --- ANLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0), ("flaw", "lawn", 2), ("a", "", 1)],
)
def test_levenshtein(a: str, b: str, expected: int) -> None:
    assert levenshtein(a, b) == expected == levenshtein(b, a)


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("  Hello   World ", ["hello world"], 1.0),  # case, outer and inner whitespace
        ("helo", ["hello"], 0.8),  # distance 1 / length 5
        ("helo", ["xyz", "hello"], 0.8),  # best answer
        ("abcd", ["abxy"], 0.5),  # exactly at the threshold: kept
        ("abc", ["axy"], 0.0),  # 1 - 2/3 < 0.5
        ("", [""], 1.0),
    ],
)
def test_anls(prediction: str, answers: list[str], expected: float) -> None:
    assert anls(prediction, answers) == pytest.approx(expected)


def test_anls_threshold() -> None:
    assert anls("abc", ["axy"], threshold=0.3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        anls("a", [])


# --- ChartQA relaxed accuracy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("10.4", "10", 1.0),  # 4% off
        ("10.6", "10", 0.0),  # 6% off
        ("9.6", "10", 1.0),
        ("1,020", "1000", 0.0),  # not a Python float: compared as strings (pix2struct)
        ("45%", "0.45", 1.0),  # "x%" reads as x / 100
        ("45%", "45", 0.0),  # ... so it does not match the bare number (as in pix2struct)
        ("-5", "5", 0.0),
        ("0.0", "0", 0.0),  # a zero target falls back to comparing the strings (pix2struct)
        ("0.01", "0", 0.0),
        ("Yes", "yes", 1.0),  # non-numeric: case-insensitive exact match
        ("Yes ", "no", 0.0),
        ("ten", "10", 0.0),
    ],
)
def test_relaxed_accuracy(prediction: str, target: str, expected: float) -> None:
    assert relaxed_accuracy(prediction, target) == expected


def test_relaxed_accuracy_tolerance() -> None:
    assert relaxed_accuracy("11", "10", tolerance=0.1) == 1.0
    assert relaxed_accuracy("11", "10") == 0.0


# --- MMMU multiple-choice parsing (values from the official parse_multi_choice_response) ----------

OPTIONS = ["London", "Paris", "Rome", "Berlin"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("(B)", 1),
        ("The answer is (C).", 2),
        ("A", 0),
        ("B.", 1),  # trailing punctuation is stripped, then " B " matches
        ("B. Paris", -1),  # official MMMU: no " B " and only 2 words -> its random fallback, here -1
        ("D is correct", 3),
        ("(A) is wrong, (B) is right", 1),  # several hits: the last mentioned
        ("C or A", 0),
        ("A (B)", 1),  # "(X)" outranks a bare letter
        ("I believe the capital city is clearly Paris", 1),  # > 5 words: option text
        ("Paris, not London, is the capital of France", 0),  # last mentioned option text
        ("Paris", -1),  # <= 5 words: no option-text matching (as MMMU) -> deterministic -1
        ("I do not know", -1),
        ("", -1),
    ],
)
def test_parse_multiple_choice(response: str, expected: int) -> None:
    assert parse_multiple_choice(response, OPTIONS) == expected


def test_parse_multiple_choice_custom_letters_and_errors() -> None:
    assert parse_multiple_choice("(2)", ["x", "y"], letters=["1", "2"]) == 1
    with pytest.raises(ValueError, match="letters"):
        parse_multiple_choice("A", ["x", "y"], letters=["A"])


def test_parse_multiple_choice_is_deterministic() -> None:
    assert {parse_multiple_choice("no idea at all", OPTIONS) for _ in range(20)} == {-1}


# --- POPE yes/no ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Yes, there is a dog in the image.", "yes"),
        ("No, there is no dog.", "no"),
        ("No, there is", "no"),  # the comma is removed before splitting
        ("There is not a dog in the image", "no"),
        ("Yes. No cat though.", "yes"),  # only the first sentence counts
        ("no", "no"),
        ("The dog is present", "yes"),  # anything without no/not is "yes"
        ("Nope", "yes"),  # POPE quirks, kept for comparable numbers
        ("NO", "yes"),
    ],
)
def test_yes_no(response: str, expected: str) -> None:
    assert yes_no(response) == expected


# --- perplexity per-document values ---------------------------------------------------------------


def test_perplexity_units() -> None:
    assert word_perplexity(-3.0, "a b  c") == (-3.0, 3)  # split on runs of whitespace
    assert word_perplexity(-1.0, "one") == (-1.0, 1)
    assert byte_perplexity(-2.0, "héllo") == (-2.0, 6)  # é is two UTF-8 bytes
    assert bits_per_byte(-2.0, "héllo") == (-2.0, 6)
