"""The Hugging Face causal LM: log-probs equal a direct transformers computation; generation stops."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.loglikelihood import split_context
from lmm_lightning.requests import GenerationSpec, Request, RequestType

PAIRS = [
    ("Question: What is the capital of France? Answer:", " Paris"),
    ("Question: What is the capital of Spain? Answer: ", "Madrid"),
    ("one two three", " four five six seven"),
    ("", "The quick brown fox"),
    ("red green blue yellow circle square triangle rectangle red green", " blue"),
]


def direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """Unbatched reference: score the continuation tokens of the whole string, one sequence at a time."""
    context, continuation = split_context(context, continuation)
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    n_ctx = len(tokenizer(context, add_special_tokens=False).input_ids)
    if n_ctx == 0:
        whole, n_ctx = [tokenizer.bos_token_id] + whole, 1
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logprobs = F.log_softmax(logits.float(), -1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))


@pytest.fixture(scope="module")
def lm(tiny_model):
    module = HFCausalLM(pretrained=str(tiny_model))
    module.configure_model()
    return module


def requests_for(pairs):
    return [Request(i, "t", i, RequestType.LOGLIKELIHOOD, c, k) for i, (c, k) in enumerate(pairs)]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_loglikelihood_matches_direct_transformers(lm, tiny_model, batch_size):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    requests = requests_for(PAIRS)
    got = []
    for i in range(0, len(requests), batch_size):
        got.extend(lm.loglikelihood(requests[i : i + batch_size]))
    for (context, continuation), response in zip(PAIRS, got):
        assert response.logprob == pytest.approx(direct_loglikelihood(model, tokenizer, context, continuation), abs=1e-4)


def test_is_greedy_is_true_for_the_models_own_greedy_continuation(lm):
    context = "one two three"
    ids = lm.tokenizer(context, add_special_tokens=False, return_tensors="pt").input_ids
    out = lm.model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    greedy = lm.tokenizer.decode(out[0, ids.shape[1] :])
    [response] = lm.loglikelihood(requests_for([(context, greedy)]))
    assert response.is_greedy
    [other] = lm.loglikelihood(requests_for([(context, greedy + "zzzz")]))
    assert not other.is_greedy


def test_generation_is_batch_invariant_and_respects_budget(lm):
    spec = GenerationSpec(until=(), max_new_tokens=5)
    requests = [Request(i, "g", i, RequestType.GENERATE_UNTIL, c, generation=spec) for i, (c, _) in enumerate(PAIRS[:4]) if c]
    batched = [r.text for r in lm.generate_until(requests)]
    single = [lm.generate_until([r])[0].text for r in requests]
    assert batched == single
    for request, text in zip(requests, single):  # exactly max_new_tokens greedy tokens, as transformers gives them
        ids = lm.tokenizer(request.context, add_special_tokens=False, return_tensors="pt").input_ids
        out = lm.model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
        assert out.shape[1] - ids.shape[1] == 5
        assert text == lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_generation_cuts_at_stop_strings(lm):
    spec = GenerationSpec(until=(), max_new_tokens=12)
    request = Request(0, "g", 0, RequestType.GENERATE_UNTIL, "one two", generation=spec)
    free = lm.generate_until([request])[0].text
    assert len(free) > 2
    stop = free[1:3]
    stopped = lm.generate_until([Request(0, "g", 0, RequestType.GENERATE_UNTIL, "one two", generation=GenerationSpec((stop,), 12))])[0].text
    assert stopped == free.split(stop, 1)[0]


def test_predict_step_dispatches_by_request_type(lm):
    ll = RequestBatch(requests_for(PAIRS[:2]), [False, False])
    assert all(r.logprob is not None and r.text is None for r in lm.predict_step(ll))
    gen = RequestBatch([Request(0, "g", 0, RequestType.GENERATE_UNTIL, "one", generation=GenerationSpec(("\n",), 3))], [False])
    [response] = lm.predict_step(gen)
    assert response.text is not None and response.logprob is None


def test_sampled_generation_is_seeded_by_the_batch(lm):
    spec = GenerationSpec(until=(), max_new_tokens=6, do_sample=True, temperature=1.0)
    requests = [Request(i, "g", 0, RequestType.GENERATE_UNTIL, "one two", generation=spec, repeat=i) for i in range(4)]
    drawn = [r.text for r in lm.generate_until(requests)]
    torch.manual_seed(999)  # whatever ran before does not matter
    assert [r.text for r in lm.generate_until(requests)] == drawn
    assert len(set(drawn)) > 1  # repeats really sample


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["packed", "cache"])
def test_shared_context_reuse_matches_separate_forwards(tiny_model, mode, attention):
    """A multiple-choice batch (contexts of different lengths, one-token and long choices): contexts run
    once and serve every choice, with the same log-probs and greedy flags as one forward per request."""
    contexts = ["Question: What is the capital of France? Answer:", "one two three four", "red green"]
    choices = [" Paris", " Berlin", " Madrid la Vella", " five six seven eight nine", "x"]
    requests = [
        Request(len(contexts) * j + i, "t", i, RequestType.LOGLIKELIHOOD, c, k, j)
        for i, c in enumerate(contexts)
        for j, k in enumerate(choices)
    ]
    requests.append(Request(99, "t", 9, RequestType.LOGLIKELIHOOD, "alone", " here", 0))  # a context with one choice
    shared = HFCausalLM(pretrained=str(tiny_model), reuse_context=mode, attn_implementation=attention)
    separate = HFCausalLM(pretrained=str(tiny_model), reuse_context=False, attn_implementation=attention)
    shared.configure_model()
    separate.configure_model()
    a, b = shared.loglikelihood(requests), separate.loglikelihood(requests)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for request, x, y in zip(requests, a, b):
        direct = direct_loglikelihood(model, tokenizer, request.context, request.continuation)
        assert x.logprob == pytest.approx(direct, abs=1e-4) and y.logprob == pytest.approx(direct, abs=1e-4)
        assert x.is_greedy == y.is_greedy
    # the requests in another order (another packing) give the same scores
    again = {r.uid: r for r in shared.loglikelihood(requests[::-1])}
    assert all(again[x.uid].logprob == pytest.approx(x.logprob, abs=1e-5) for x in a)


def test_a_bad_reuse_context_fails_before_the_model_loads(tiny_model):
    from lmm_lightning.errors import InputError

    with pytest.raises(InputError, match="model.reuse_context: expected true, false or one of"):
        HFCausalLM(pretrained=str(tiny_model), reuse_context="sometimes")


def test_chat_template_wraps_the_context(tiny_model):
    module = HFCausalLM(pretrained=str(tiny_model), system_prompt="Be brief.")  # the tiny tokenizer has no template
    module.configure_model()
    module.tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    module.hparams.use_chat_template = True
    assert module.prompt("Hi?") == "<system>Be brief.<user>Hi?<assistant>"
    plain = HFCausalLM(pretrained=str(tiny_model))
    plain.configure_model()
    assert plain.prompt("Hi?") == "Hi?"


class _SmallMemoryLM(HFCausalLM):
    """Pretends anything above 12 sequences runs out of memory."""

    def probe(self, batch_size: int, seq_len: int) -> None:
        if batch_size > 12:
            raise torch.OutOfMemoryError("pretend")
        super().probe(batch_size, seq_len)


def test_auto_batch_size_finds_the_largest_power_of_two_that_fits(tiny_model, tiny_tasks):
    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.errors import InputError
    from lmm_lightning.evaluation.callback import connect_batch_size

    model = _SmallMemoryLM(pretrained=str(tiny_model))
    model.configure_model()
    tasks = [str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")]
    resolved = lambda **kwargs: (dm := BenchmarkDataModule(tasks, **kwargs), dm.setup(), connect_batch_size(dm, model))[0].resolved_batch_size()
    assert resolved(batch_size="auto", max_batch_size=64) == {"loglikelihood": 8, "generate_until": 8}
    assert resolved(batch_size="auto", max_batch_size=4) == {"loglikelihood": 4, "generate_until": 4}
    assert resolved(batch_size={"loglikelihood": "auto", "generate_until": 3}, max_batch_size=4) == {"loglikelihood": 4, "generate_until": 3}
    unresolved = BenchmarkDataModule(tasks, batch_size="auto")
    unresolved.setup()
    with pytest.raises(InputError, match="'auto' is probed on the loaded model"):
        unresolved.resolved_batch_size()


def test_generation_kwargs_override_from_the_datamodule(tiny_tasks):
    from lmm_lightning.data import BenchmarkDataModule

    dm = BenchmarkDataModule([str(tiny_tasks / "tiny_gen.yaml")], generation_kwargs={"tiny_gen": {"max_new_tokens": 3}, "*": {"until": ["\n"]}})
    dm.setup()
    assert {r.generation for r in dm.requests} == {GenerationSpec(until=("\n",), max_new_tokens=3)}


def test_release_frees_the_model_and_configure_model_reloads_it(tiny_model):
    module = HFCausalLM(pretrained=str(tiny_model))
    module.configure_model()
    module.release()
    assert module.model is None and module.tokenizer is None
    module.configure_model()
    assert module.model is not None


def test_each_distinct_context_is_tokenised_once_per_batch(tiny_model, monkeypatch):
    """Two questions with three choices each: one tokenizer call for the six whole strings and one for
    the two distinct contexts, not one context tokenisation per choice."""
    lm = HFCausalLM(pretrained=str(tiny_model))
    lm.configure_model()
    pairs = [(c, k) for c in ("Question: 2 + 2 = ?", "Capital of Peru?") for k in (" 4", " five", " Lima ")]
    calls = []
    tokenize = type(lm.tokenizer).__call__
    monkeypatch.setattr(type(lm.tokenizer), "__call__", lambda self, text, **kw: calls.append(text) or tokenize(self, text, **kw))
    got = lm.loglikelihood(requests_for(pairs))
    assert len(calls) == 2 and len(calls[0]) == 6 and sorted(calls[1]) == ["Capital of Peru?", "Question: 2 + 2 = ?"]
    monkeypatch.undo()
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for (context, continuation), response in zip(pairs, got):
        assert response.logprob == pytest.approx(direct_loglikelihood(model, lm.tokenizer, context, continuation), abs=1e-4)


def rolling(texts: list[str]) -> list[Request]:
    return [Request(uid=i, task="t", doc_id=i, request_type=RequestType.LOGLIKELIHOOD_ROLLING, context="", continuation=t)
            for i, t in enumerate(texts)]


def test_a_rolling_text_that_fits_scores_as_the_whole_text_after_the_prefix(tiny_model):
    model = HFCausalLM(pretrained=str(tiny_model), max_length=64)
    model.configure_model()
    text = "The quick brown fox jumps over the lazy dog."
    (scored,) = model.loglikelihood_rolling(rolling([text]))
    (whole,) = model.loglikelihood([Request(0, "t", 0, RequestType.LOGLIKELIHOOD, "", text)])  # after the BOS token
    assert scored.logprob == pytest.approx(whole.logprob, abs=1e-4) and scored.is_greedy == whole.is_greedy


def test_rolling_texts_longer_than_the_context_are_batch_invariant(tiny_model):
    model = HFCausalLM(pretrained=str(tiny_model), max_length=5)
    model.configure_model()
    texts = ["one two three four five six seven eight nine ten " * 2, "", "Paris", "red green blue yellow circle square"]
    together = model.loglikelihood_rolling(rolling(texts))
    alone = [model.loglikelihood_rolling(rolling([t]))[0] for t in texts]
    assert [r.logprob for r in together] == pytest.approx([r.logprob for r in alone], abs=1e-5)
    assert together[1].logprob == 0.0  # nothing to score
    wide = HFCausalLM(pretrained=str(tiny_model), max_length=64)
    wide.configure_model()
    assert wide.loglikelihood_rolling(rolling(texts[:1]))[0].logprob != pytest.approx(together[0].logprob, abs=1e-3)
    assert model.predict_step(RequestBatch(rolling(texts), [False] * 4))[2].logprob == pytest.approx(alone[2].logprob, abs=1e-5)
