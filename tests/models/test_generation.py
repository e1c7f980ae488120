"""models/generation.py: stop strings, the prompt budget, per-request seeded sampling and the shared `generate` call."""

import doctest
from dataclasses import replace

import torch
from transformers.generation.logits_process import LogitsProcessorList, TemperatureLogitsWarper

import lmm_lightning.models.generation as generation
from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.generation import (
    SeededSampling, StopOnStrings, cut_at_stops, generate, request_seed, sampling_kwargs, sampling_warpers,
)
from lmm_lightning.requests import GenerationSpec, Request, RequestType

SAMPLED = GenerationSpec(until=(), max_new_tokens=4, do_sample=True, temperature=1.0)


def request(doc_id: int = 0, repeat: int = 0, spec: GenerationSpec = SAMPLED, uid: int = 0) -> Request:
    return Request(uid, "g", doc_id, RequestType.GENERATE_UNTIL, "one two", generation=spec, repeat=repeat)


def test_docstring_examples_run():
    results = doctest.testmod(generation)
    assert results.attempted > 0 and results.failed == 0


def test_cut_at_stops_keeps_the_text_before_the_first_stop():
    assert cut_at_stops("Paris. Next", (".", "\n")) == "Paris"
    assert cut_at_stops("a\nb.c", (".", "\n")) == "a"
    assert cut_at_stops("no stop here", ()) == "no stop here"


class _Characters:
    """A tokenizer whose token i is the character chr(i)."""

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(row) for row in rows]

    def decode(self, row, skip_special_tokens=True):
        return "".join(map(chr, row.tolist() if hasattr(row, "tolist") else row))


def test_stop_on_strings_looks_only_at_the_generated_text():
    ids = torch.tensor([[ord(c) for c in "ab.c"], [ord(c) for c in ".bcd"]])
    stop = StopOnStrings(_Characters(), (".",), prompt_length=1)
    assert stop(ids, None).tolist() == [True, False]  # the second row's "." is in its prompt


def test_request_seed_depends_on_seed_task_doc_and_repeat_only():
    assert request_seed(request(uid=0)) == request_seed(request(uid=7))
    assert len({request_seed(request(doc_id=d, repeat=k)) for d in range(3) for k in range(3)}) == 9
    assert request_seed(request()) != request_seed(request(spec=replace(SAMPLED, seed=1)))


def test_greedy_unless_a_request_samples():
    greedy = GenerationSpec(max_new_tokens=4)
    assert sampling_kwargs([request(spec=greedy)]) == {"do_sample": False}
    assert sampling_warpers(replace(SAMPLED, temperature=0.0), None) is None  # temperature 0 is greedy
    kwargs = sampling_kwargs([request(spec=greedy), request()])
    assert kwargs["do_sample"] is False and kwargs["logits_processor"][0].rows[0] is None
    assert len(sampling_warpers(replace(SAMPLED, top_p=0.9), None)) == 3  # temperature, the default top-k 50, top-p


def test_a_rows_draws_do_not_depend_on_its_batch_nor_touch_the_global_generator():
    warpers = LogitsProcessorList([TemperatureLogitsWarper(1.0)])
    scores = torch.zeros(3, 50)
    ids = torch.zeros(3, 1, dtype=torch.long)
    state = torch.random.get_rng_state()
    together = SeededSampling([(1, warpers), None, (2, warpers)])(ids, scores)
    assert torch.equal(torch.random.get_rng_state(), state)
    alone = SeededSampling([(2, warpers)])(ids[:1], scores[:1])
    assert torch.equal(together[2], alone[0])
    assert torch.equal(together[1], scores[1])  # a greedy row is left as it is


def test_generate_cuts_every_row_at_its_stop_string_and_keeps_the_global_generator(tiny_model):
    lm = HFCausalLM(pretrained=str(tiny_model))
    lm.configure_model()
    free = lm.generate_until([request(spec=GenerationSpec(max_new_tokens=8))])[0].text
    stop = free[2:4]
    lm.tokenizer.padding_side = "left"
    inputs = dict(lm.tokenizer(["one two", "three"], add_special_tokens=False, padding=True, return_tensors="pt"))
    requests = [request(spec=GenerationSpec(until=(stop,), max_new_tokens=8), uid=i) for i in range(2)]
    texts = generate(lm.model, lm.tokenizer, inputs, requests, synced_gpus=False)
    assert texts[0] == free.split(stop, 1)[0] and all(stop not in text for text in texts)
    state = torch.random.get_rng_state()
    generate(lm.model, lm.tokenizer, inputs, [request(uid=i, repeat=i) for i in range(2)], synced_gpus=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # sampling draws from its own generators
