"""models/loglikelihood.py: a continuation's log-probability, and the three ways to score shared contexts."""

import doctest

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import lmm_lightning.models.loglikelihood as loglikelihood
from lmm_lightning.errors import InputError
from lmm_lightning.models.loglikelihood import (
    pack_choices, packed_inputs, reuse_mode, score_cached, score_continuation, score_full, score_packed,
)

# (context tokens, continuation tokens): shared contexts of different lengths, one-token and long continuations
ENCODED = [([5, 6, 7], [1, 2]), ([5, 6, 7], [3]), ([8], [4, 4, 4]), ([9, 10], [11]), ([8], [12, 13])]


def test_docstring_examples_run():
    results = doctest.testmod(loglikelihood)
    assert results.attempted > 0 and results.failed == 0


def test_score_continuation_sums_the_log_probs_of_its_tokens():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    logprob, greedy = score_continuation(logits, [1, 0])
    expected = F.log_softmax(logits, -1)
    assert logprob == pytest.approx((expected[0, 1] + expected[1, 0]).item()) and greedy
    assert score_continuation(logits, [2, 0])[1] is False
    assert score_continuation(logits[:0], []) == (0.0, True)  # nothing to score


def test_reuse_context_values():
    assert reuse_mode(True, "sdpa") == "packed" and reuse_mode(True, "flash_attention_2") == "cache"
    assert reuse_mode(False, "sdpa") == "none" and reuse_mode("cache", "eager") == "cache"
    with pytest.raises(InputError, match="model.reuse_context: 'packed' needs attention"):
        reuse_mode("packed", "flash_attention_2")
    with pytest.raises(InputError, match="model.reuse_context: expected true, false or one of"):
        reuse_mode("sometimes")


def test_packed_rows_put_every_choice_after_its_context():
    encoded = [([5, 6, 7], [1, 2]), ([5, 6, 7], [3]), ([8], [4, 4, 4])]
    packed = pack_choices(encoded, pad=0)
    assert packed.ids == [[5, 6, 7, 1], [0, 0, 8, 4, 4]]
    assert packed.positions == [[0, 1, 2, 3], [0, 0, 0, 1, 2]]
    assert packed.segments == [[0, 0, 0, 1], [-1, -1, 0, 1, 1]]
    assert packed.where == [(0, [2, 3]), (0, [2]), (1, [2, 3, 4])]
    inputs = packed_inputs(packed, pad=0)
    mask = inputs["attention_mask"][:, 0]
    assert mask.shape == (2, 5, 5) and mask.dtype == torch.bool
    assert mask[1, 4].tolist() == [False, False, True, True, True]  # a choice token: its context and its own choice
    assert mask[1, 0].tolist() == [True, False, False, False, False]  # padding sees itself only
    additive = packed_inputs(packed, pad=0, additive=torch.float32)["attention_mask"][:, 0]
    assert (additive == 0).equal(mask)


def direct(model: torch.nn.Module, context: list[int], continuation: list[int]) -> float:
    """One unpadded forward per request: the reference."""
    with torch.no_grad():
        logits = model(torch.tensor([context + continuation])).logits[0]
    logprobs = F.log_softmax(logits.float(), -1)
    return sum(logprobs[len(context) + i - 1, token].item() for i, token in enumerate(continuation))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_three_scorers_agree_with_one_forward_per_request(tiny_model, attention):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention).eval()
    device = torch.device("cpu")
    with torch.no_grad():
        full, cached, packed = (score(model, ENCODED, 0, device) for score in (score_full, score_cached, score_packed))
    for (context, continuation), a, b, c in zip(ENCODED, full, cached, packed):
        reference = direct(model, context, continuation)
        assert a[0] == pytest.approx(reference, abs=1e-4)
        assert b[0] == pytest.approx(reference, abs=1e-4) and c[0] == pytest.approx(reference, abs=1e-4)
        assert a[1] == b[1] == c[1]


# --- rolling windows (loglikelihood_rolling) ----------------------------------------------------------
def lm_eval_windows(tokens: list[int], max_length: int, prefix: int, context_length: int) -> list:
    """lm-evaluation-harness 0.4.13's own windows, as its HFLM.loglikelihood_rolling builds them."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    return [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, prefix, max_length, context_length)]


@pytest.mark.parametrize("max_length", [1, 2, 3, 5, 8, 16])
def test_rolling_windows_equal_lm_evals(max_length):
    # docs shorter than, as long as, one longer than and many times longer than the context
    lengths = sorted({0, 1, 2, max_length - 1, max_length, max_length + 1, 2 * max_length, 2 * max_length + 1, 7 * max_length + 3, 50})
    for length in (n for n in lengths if n >= 0):
        tokens = list(range(100, 100 + length))
        for context_length in range(1, max_length + 1):
            got = loglikelihood.rolling_windows(tokens, max_length, prefix=7, context_length=context_length)
            assert got == lm_eval_windows(tokens, max_length, 7, context_length), (length, max_length, context_length)


@pytest.mark.parametrize("length,max_length", [(0, 4), (1, 4), (4, 4), (5, 4), (37, 4), (16, 16), (100, 16)])
def test_rolling_windows_predict_every_token_once_within_the_context(length, max_length):
    tokens = list(range(1, length + 1))
    windows = loglikelihood.rolling_windows(tokens, max_length, prefix=0)
    assert [t for _, predicted in windows for t in predicted] == tokens
    assert all(len(context) + len(predicted) - 1 <= max_length and context for context, predicted in windows)
    if windows:  # the first token is predicted from the prefix token, every later one from the tokens before it
        assert windows[0][0] == [0]
        for context, predicted in windows[1:]:
            start = tokens.index(predicted[0])
            assert context == tokens[start - len(context) : start]


def test_rolling_windows_refuse_a_context_longer_than_the_window():
    with pytest.raises(ValueError, match="context_length must be in 1..max_length"):
        loglikelihood.rolling_windows([1, 2, 3], max_length=2, prefix=0, context_length=3)


def test_score_rolling_sums_each_texts_windows_in_forwards_of_bounded_size(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    texts = [loglikelihood.rolling_windows(list(range(3, 3 + n)), 4, prefix=0) for n in (0, 3, 9, 17)]
    calls = []
    hook = model.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    with torch.no_grad():
        got = loglikelihood.score_rolling(model, texts, pad=0, device=torch.device("cpu"), rows=3)
        one_by_one = [[score_full(model, [w], 0, torch.device("cpu"))[0] for w in windows] for windows in texts]
        calls.clear()
        padded = loglikelihood.score_rolling(model, texts, 0, torch.device("cpu"), rows=3, forwards=lambda n: n + 2)
    hook.remove()
    assert got[0] == (0.0, True)  # an empty text scores nothing
    for (logprob, greedy), windows in zip(got[1:], one_by_one[1:]):
        assert logprob == pytest.approx(sum(lp for lp, _ in windows), abs=1e-4)
        assert greedy == all(g for _, g in windows)
    # 1 + 3 + 5 windows in forwards of at most 3 rows: 3 forwards, and 2 more when the ranks need 5
    assert len(calls) == 5 and all(shape[0] <= 3 for shape in calls)
    assert padded == got
