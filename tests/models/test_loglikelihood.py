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
