"""Per-document metrics: each call scores one document and returns a float in [0, 1].

Corpus-level aggregation (means, bootstrap errors) lives in `bootstrap.py`; keeping these
functions scalar and pure makes them trivial to test against hand-computed values.
"""

import re
import string
from collections.abc import Sequence

import numpy as np

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)


def acc(logprobs: Sequence[float], gold: int) -> float:
    """1.0 if the highest-scoring choice is `gold`.

    Ties go to the first maximum (numpy argmax), so results match lm-evaluation-harness.
    """
    if len(logprobs) == 0:
        raise ValueError("acc needs at least one choice")
    return float(int(np.argmax(logprobs)) == gold)


def acc_norm(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> float:
    """Like `acc`, but each log-probability is divided by its choice's length in characters.

    Summed log-probabilities favour short answers; dividing by the character length (the
    lm-evaluation-harness definition, tokenizer-independent) removes most of that bias.
    """
    if len(logprobs) != len(choices):
        raise ValueError(f"got {len(logprobs)} logprobs for {len(choices)} choices")
    lengths = np.array([len(c) for c in choices], dtype=np.float64)
    if len(lengths) == 0 or np.any(lengths == 0):
        raise ValueError("acc_norm needs at least one choice and no empty choices")
    return acc(np.asarray(logprobs, dtype=np.float64) / lengths, gold)


def _normalize(
    text: str, ignore_case: bool, ignore_punctuation: bool, ignore_regexes: Sequence[str]
) -> str:
    for pattern in ignore_regexes:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCTUATION_TABLE)
    return text.strip()


def exact_match(
    prediction: str,
    target: str | Sequence[str],
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_regexes: tuple[str, ...] = (),
) -> float:
    """1.0 if the prediction equals the target (or any of several targets) after normalisation.

    Normalisation is applied identically to prediction and targets, in this order: remove each
    regex in `ignore_regexes`, lowercase, remove `string.punctuation`, strip whitespace.
    Regexes run first so they can match the raw text (e.g. a case-sensitive "The answer is").
    """
    targets = [target] if isinstance(target, str) else list(target)
    options = (ignore_case, ignore_punctuation, ignore_regexes)
    pred = _normalize(prediction, *options)
    return float(any(pred == _normalize(t, *options) for t in targets))
