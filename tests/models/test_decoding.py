"""The own decoding loop against transformers' `generate`: the same text, finished rows leaving the batch."""

from dataclasses import replace

import pytest

from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.generation import StopWindow, generate, own_loop_supported
from lmm_lightning.models.loglikelihood import pad_left
from lmm_lightning.requests import GenerationSpec, Request, RequestType

CONTEXTS = ["one two", "Question: What is the capital of France? Answer:", "red green blue", "The quick brown fox", "Paris"]


@pytest.fixture(scope="module")
def lm(tiny_model):
    module = HFCausalLM(pretrained=str(tiny_model))
    module.configure_model()
    return module


def inputs_of(lm, requests):
    ids, mask = pad_left(lm.tokenizer([r.context for r in requests], add_special_tokens=False).input_ids, lm.tokenizer.pad_token_id)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("spec", [
    GenerationSpec(until=(" ",), max_new_tokens=16),
    GenerationSpec(until=("e", "\n"), max_new_tokens=10),
    GenerationSpec(until=(), max_new_tokens=7),
    GenerationSpec(until=("o",), max_new_tokens=12, do_sample=True, temperature=0.8, top_p=0.9),
])
def test_own_loop_gives_what_generate_gives(lm, spec):
    requests = [Request(i, "g", i, RequestType.GENERATE_UNTIL, c, generation=spec) for i, c in enumerate(CONTEXTS)]
    inputs = inputs_of(lm, requests)
    ours = generate(lm.model, lm.tokenizer, inputs, requests, synced_gpus=False)
    theirs = generate(lm.model, lm.tokenizer, inputs, requests, synced_gpus=False, own_loop=False)
    assert ours == theirs


def test_finished_rows_leave_the_batch(lm):
    spec = GenerationSpec(until=(" ",), max_new_tokens=24)
    requests = [Request(i, "g", i, RequestType.GENERATE_UNTIL, c, generation=spec) for i, c in enumerate(CONTEXTS)]
    rows = []
    hook = lm.model.register_forward_pre_hook(lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    texts = generate(lm.model, lm.tokenizer, inputs_of(lm, requests), requests, synced_gpus=False)
    hook.remove()
    assert rows[0] == len(requests) and rows == sorted(rows, reverse=True)
    assert rows[-1] < len(requests)  # some rows stopped early and were not computed further
    assert sum(rows) < len(requests) * len(rows)
    assert all(" " not in text for text in texts)


def test_a_generation_config_with_its_own_processors_decodes_with_generate(lm):
    config = lm.model.generation_config
    assert own_loop_supported(config)
    lm.model.generation_config = replace_config(config, repetition_penalty=1.5)
    try:
        spec = GenerationSpec(until=(), max_new_tokens=12)
        requests = [Request(0, "g", 0, RequestType.GENERATE_UNTIL, "one two", generation=spec)]
        penalised = generate(lm.model, lm.tokenizer, inputs_of(lm, requests), requests, synced_gpus=False)
        assert penalised == generate(lm.model, lm.tokenizer, inputs_of(lm, requests), requests, synced_gpus=False, own_loop=False)
    finally:
        lm.model.generation_config = config
    plain = generate(lm.model, lm.tokenizer, inputs_of(lm, requests), requests, synced_gpus=False)
    assert penalised != plain  # the penalty was applied: generate's processors were not skipped


def replace_config(config, **changes):
    copy = config.__class__.from_dict(config.to_dict())
    for key, value in changes.items():
        setattr(copy, key, value)
    return copy


def test_stop_window_finds_a_stop_string_in_the_newest_tokens_only(lm):
    tokenizer = lm.tokenizer
    window = StopWindow(tokenizer, ("Answer",))
    tokens = tokenizer("one two three four five six seven eight nine ten Answer", add_special_tokens=False).input_ids
    assert window.stopped(tokens)
    assert not window.stopped(tokens[:-1] if tokenizer.decode(tokens[-1:]).strip() == "Answer" else tokens[:-2])
    assert window.lookback == len("Answer") + 2
    assert not StopWindow(tokenizer, ()).stopped(tokens)


def test_a_static_cache_gives_the_same_generations(tiny_model, lm):
    static = HFCausalLM(pretrained=str(tiny_model), static_cache=True)
    static.configure_model()
    spec = GenerationSpec(until=(" ",), max_new_tokens=10)
    requests = [Request(i, "g", i, RequestType.GENERATE_UNTIL, c, generation=spec) for i, c in enumerate(CONTEXTS)]
    assert [r.text for r in static.generate_until(requests)] == [r.text for r in lm.generate_until(requests)]
