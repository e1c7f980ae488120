"""Shared prompt prefixes computed once: the same log-probs and generations as computing every request alone."""

import pytest
import torch

from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.prefix import group_by_prefix, share_prefixes
from lmm_lightning.requests import GenerationSpec, Request, RequestType

FEWSHOT = "".join(f"Question: What is the capital of {c}? Answer: {k}\n\n" for c, k in [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome")])
OTHER = "one two three four five six seven eight nine ten\n" * 3


def mc_requests() -> list[Request]:
    """Three few-shot questions sharing their examples, two on another prefix, one alone; 3 choices each."""
    questions = [FEWSHOT + f"Question: What is the capital of {c}? Answer:" for c in ("Germany", "Peru", "Norway")]
    questions += [OTHER + "red green", OTHER + "blue", "alone here"]
    choices = [" Paris", " Berlin Madrid", " Oslo"]
    shared = [FEWSHOT] * 3 + [OTHER] * 2 + [""]  # what the data module finds each task's questions share
    return [
        Request(len(choices) * q + j, "t", q, RequestType.LOGLIKELIHOOD, context, choice, j, shared_prefix=shared[q])
        for q, context in enumerate(questions)
        for j, choice in enumerate(choices)
    ]


def model(tiny_model, **options) -> HFCausalLM:
    module = HFCausalLM(pretrained=str(tiny_model), **options)
    module.configure_model()
    return module


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prefixes_give_the_log_probs_of_separate_forwards(tiny_model, attention):
    requests = mc_requests()
    shared = model(tiny_model, attn_implementation=attention)
    alone = model(tiny_model, attn_implementation=attention, share_prefix=False, reuse_context=False)
    encoded = shared._encode(requests)
    prefixes = group_by_prefix([c for c, _ in encoded], shared.shared_lengths(requests, [c for c, _ in encoded]))
    assert prefixes is not None and len(prefixes.prefixes) == 3  # the few-shot block, the other block, the lone one
    calls = []
    hook = shared.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    got = shared.loglikelihood(requests)
    hook.remove()
    want = alone.loglikelihood(requests)
    assert [shape[0] for shape in calls] == [1, 1, 1, 6]  # each new prefix alone, then one packed forward
    assert calls[-1][1] < len(encoded[0][0]) - 20  # the packed rows left the shared examples out
    for g, w in zip(got, want):
        assert abs(g.logprob - w.logprob) < 1e-4
        assert g.is_greedy == w.is_greedy
    # The next batches find the prefixes in the memo: one forward, and a new question on the examples reuses them.
    calls.clear()
    later = [
        Request(100 + j, "t", 50, RequestType.LOGLIKELIHOOD, FEWSHOT + "Question: Where is Lima? Answer:", c, j, shared_prefix=FEWSHOT)
        for j, c in enumerate([" Peru", " Spain"])
    ]
    hook = shared.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    again = shared.loglikelihood(requests[:9] + later)
    hook.remove()
    assert len(calls) == 1
    for g, w in zip(again, want[:9] + alone.loglikelihood(later)):
        assert abs(g.logprob - w.logprob) < 1e-4 and g.is_greedy == w.is_greedy


def test_a_batch_without_a_shared_prefix_runs_one_forward(tiny_model):
    shared = model(tiny_model)
    requests = [Request(i, "t", i, RequestType.LOGLIKELIHOOD, c, " a") for i, c in enumerate(["one two", "red green", "Paris"])]
    calls = []
    hook = shared.model.register_forward_pre_hook(lambda *args: calls.append(1))
    shared.loglikelihood(requests)
    hook.remove()
    assert len(calls) == 1


def test_shared_prefixes_keep_generations_identical(tiny_model):
    spec = GenerationSpec(until=("\n\n",), max_new_tokens=12)
    contexts = [FEWSHOT + f"Question: What is the capital of {c}? Answer:" for c in ("Germany", "Peru", "Norway", "Greece")]
    contexts += ["one two", OTHER + "red"]
    shared = [FEWSHOT] * 4 + ["", OTHER]
    requests = [Request(i, "g", i, RequestType.GENERATE_UNTIL, c, generation=spec, shared_prefix=shared[i]) for i, c in enumerate(contexts)]
    got = [r.text for r in model(tiny_model).generate_until(requests)]
    alone = model(tiny_model, share_prefix=False)
    want = [alone.generate_until([r])[0].text for r in requests]  # each request alone: no padding, no sharing
    assert got == want
    assert any(got)


def test_share_prefixes_groups_neighbours_and_keeps_a_token_each():
    rows = [[1] * 30 + [2], [1] * 30 + [3, 4], [1] * 30, [9] * 5]
    shared = share_prefixes(rows, keep=1, min_length=16)
    assert shared.group_of == [0, 0, 0, 1]
    assert len(shared.prefixes[0]) == 29  # the third row keeps its last token
    assert shared.saved_tokens == 2 * 29
    assert share_prefixes([[1] * 30, [2] * 30]) is None  # nothing in common
    assert share_prefixes([[1] * 30, [1]]) is None  # a row of one token cannot be split


def test_the_memo_forgets_prefixes_when_the_weights_change(tiny_model):
    shared = model(tiny_model)
    requests = mc_requests()[:9]
    before = shared.loglikelihood(requests)
    with torch.no_grad():
        for parameter in shared.model.parameters():
            parameter.mul_(1.01)  # a training step, in place
    after = shared.loglikelihood(requests)
    fresh = model(tiny_model, share_prefix=False, reuse_context=False)
    fresh.model.load_state_dict(shared.model.state_dict())
    for a, f, b in zip(after, fresh.loglikelihood(requests), before):
        assert abs(a.logprob - f.logprob) < 1e-4 and a.logprob != b.logprob
