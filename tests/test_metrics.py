import math

import pytest

from lmm_lightning.metrics import acc, acc_norm, exact_match


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
        ("  Paris\n", "Paris", {}, 1.0),  # whitespace is always stripped
        ("paris", "Paris", {}, 0.0),
        ("paris", "Paris", {"ignore_case": True}, 1.0),
        ("Paris.", "Paris", {}, 0.0),
        ("Paris.", "Paris", {"ignore_punctuation": True}, 1.0),
        ("P.a,r!i's", "Paris", {"ignore_punctuation": True}, 1.0),
        ("PARIS!", "paris", {"ignore_case": True, "ignore_punctuation": True}, 1.0),
        ("The answer is 42", "42", {"ignore_regexes": (r"The answer is",)}, 1.0),
        # Regexes run before lowercasing, so a case-sensitive pattern misses lowercase text.
        ("the answer is 42", "42", {"ignore_regexes": (r"The answer is",), "ignore_case": True}, 0.0),
        ("$1,000", "1000", {"ignore_regexes": (r"\$", ",")}, 1.0),
        # Targets are normalised too.
        ("42", "The answer is 42.", {"ignore_regexes": (r"The answer is",), "ignore_punctuation": True}, 1.0),
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
