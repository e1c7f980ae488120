"""Precision and numerics: the trainer's precision plugins run the model in one dtype, that dtype is part of the
model's identity, log-probs come from float32 logits, and a missing flash attention kernel falls back to SDPA."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision
from transformers import LlamaConfig, LlamaForCausalLM

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.errors import InputError
from lmm_lightning.evaluation.store import config_digest
from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.loading import attention_to_load
from lmm_lightning.models.loglikelihood import reuse_mode
from lmm_lightning.models.precision import (
    compute_dtype, float32_head, has_float32_head, load_dtype, numerics, precision_identity, weights_dtype,
)
from lmm_lightning.requests import Request, RequestType
from tests.fixtures import COUNTRIES

# Largest |log-prob| difference of a packed or cached forward from one sequence per request, per dtype, on the
# tiny model's multiple-choice requests (measured: float32 4e-6, bfloat16 5.5e-4, float16 1.4e-4).
PACKED_TOLERANCE = {"float32": 1e-4, "bfloat16": 1e-3, "float16": 5e-4}


def choice_requests() -> list[Request]:
    """Three choices per question, one of them several tokens long: contexts shared as in multiple choice."""
    capitals = [capital for _, capital in COUNTRIES]
    requests = []
    for i, (country, capital) in enumerate(COUNTRIES):
        for choice in (capital, capitals[(i + 1) % len(capitals)], capitals[(i + 5) % len(capitals)] + " is the answer"):
            context = f"Question: What is the capital of {country}? Answer:"
            requests.append(Request(len(requests), "t", i, RequestType.LOGLIKELIHOOD, context, " " + choice))
    return requests


def loaded(tiny_model, **options) -> HFCausalLM:
    module = HFCausalLM(pretrained=str(tiny_model), **options)
    module.configure_model()
    return module


# --- a batch passes through Lightning's precision plugins -------------------------------------------
@pytest.mark.parametrize(
    "plugin", [HalfPrecision("bf16-true"), HalfPrecision("16-true"), DoublePrecision(), MixedPrecision("bf16-mixed", "cpu")]
)
def test_a_request_batch_passes_through_every_precision_plugin_untouched(plugin):
    batch = RequestBatch(choice_requests()[:3], [False, False, True], [["an image"], [], []])
    assert plugin.convert_input(batch) is batch


def test_a_request_batch_is_compared_and_shown_by_its_fields():
    requests = choice_requests()[:2]
    assert RequestBatch(requests, [False, False]) == RequestBatch(list(requests), [False, False], [])
    assert RequestBatch(requests, [False, False]) != RequestBatch(requests, [False, True])
    assert repr(RequestBatch(requests[:1], [False])).startswith("RequestBatch(requests=[Request(")


# --- one coherent compute dtype ---------------------------------------------------------------------
def test_the_compute_dtype_of_each_precision():
    assert compute_dtype("32-true", torch.bfloat16) is torch.bfloat16
    assert compute_dtype("bf16-true", torch.float32) is torch.bfloat16 and compute_dtype("16-true", torch.float16) is torch.float16
    assert compute_dtype("64-true", torch.float32) is torch.float64
    assert compute_dtype("bf16-mixed", torch.float32) is torch.bfloat16 and compute_dtype("16-mixed", torch.float32) is torch.float16
    assert compute_dtype("transformer-engine", torch.float32) is None


def test_a_true_precision_refuses_a_model_dtype_it_would_overrule():
    with pytest.raises(InputError, match=r"model.dtype: 'float16' conflicts with trainer.precision 'bf16-true'.*'bfloat16'"):
        compute_dtype("bf16-true", torch.float16)
    with HalfPrecision("bf16-true").module_init_context():
        assert load_dtype(torch.float32) is torch.bfloat16 and load_dtype(torch.bfloat16) is torch.bfloat16
        with pytest.raises(InputError, match="model.dtype: 'float16' conflicts with trainer.precision"):
            load_dtype(torch.float16)
    assert load_dtype(torch.float16) is torch.float16  # no plugin: model.dtype as given


def test_a_true_precision_loads_the_model_in_its_dtype(tiny_model):
    # Lightning calls configure_model inside the plugin's module_init_context: the weights load in bfloat16,
    # not in float32 first (which matters for a device_map model, which the plugin's conversion never reaches).
    module = HFCausalLM(pretrained=str(tiny_model))
    with HalfPrecision("bf16-true").module_init_context():
        module.configure_model()
    assert {p.dtype for p in module.model.parameters()} == {torch.bfloat16} and weights_dtype(module.model) is torch.bfloat16


class RecordDtypes(Callback):
    """The dtype of a matrix product inside the model (a query projection's output: what the model computes in,
    autocast included) and of the logits."""

    def __init__(self) -> None:
        self.hidden: set[torch.dtype] = set()
        self.logits: set[torch.dtype] = set()

    def on_predict_start(self, trainer, pl_module) -> None:
        pl_module.model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, out: self.hidden.add(out.dtype))
        pl_module.model.lm_head.register_forward_hook(lambda m, i, out: self.logits.add(out.dtype))


@pytest.mark.parametrize(
    "precision, computes", [("32-true", torch.float32), ("bf16-true", torch.bfloat16), ("16-true", torch.float16), ("bf16-mixed", torch.bfloat16)]
)
def test_the_model_runs_in_the_precisions_dtype_with_float32_logits(tiny_model, tiny_tasks, precision, computes):
    from lmm_lightning.data import BenchmarkDataModule

    record = RecordDtypes()
    trainer = Trainer(
        accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, callbacks=[record],
    )
    datamodule = BenchmarkDataModule(tasks=[str(tiny_tasks / "tiny_mc.yaml")], batch_size=4, limit=2)
    responses = [r for batch in trainer.predict(HFCausalLM(pretrained=str(tiny_model)), datamodule=datamodule) for r in batch]
    assert len(responses) == 6 and all(isinstance(r.logprob, float) for r in responses)
    assert record.hidden == {computes}
    assert record.logits == {torch.float32}  # the head computes float32 logits whatever the model's dtype


# --- precision in the model's identity --------------------------------------------------------------
def test_precision_joins_the_identity_only_where_it_changes_the_numbers(tiny_model):
    module = HFCausalLM(pretrained=str(tiny_model))
    outside = module.identity()
    identities = {}
    for precision in ("32-true", "bf16-mixed", "bf16-true", "16-true"):
        module.trainer = Trainer(accelerator="cpu", devices=1, precision=precision, logger=False)
        identities[precision] = module.identity()
    assert identities["32-true"] == outside  # stores written before precision counted are reused under the default
    assert identities["bf16-mixed"] == {**outside, "precision": "bf16-mixed", "compute_dtype": "bfloat16"}
    assert identities["16-true"] == {**outside, "precision": "16-true", "compute_dtype": "float16"}
    assert len({config_digest(identity) for identity in identities.values()}) == 4  # each precision, its own answers
    module.trainer = Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", logger=False)
    assert config_digest(module.identity()) == config_digest(identities["bf16-mixed"])  # the same precision reuses


def test_precision_identity_and_numerics():
    assert precision_identity("32-true", torch.float16) == {}
    assert precision_identity("bf16-mixed", None) == {"precision": "bf16-mixed", "compute_dtype": "bfloat16"}
    assert numerics("32-true", torch.float16) == {"precision": "32-true", "compute_dtype": "float16", "logprob_dtype": "float32"}


# --- float32 logits -----------------------------------------------------------------------------------
def tied_llama(scale: float) -> LlamaForCausalLM:
    """A tiny Llama whose head is its input embedding, its logits scaled up by `scale`."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
    return model


def head_inputs_and_logits(model: torch.nn.Module, ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    seen = []
    handle = model.lm_head.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        logits = model(input_ids=ids, **kwargs).logits
    handle.remove()
    return seen[0], logits


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_head_computes_float32_logits_from_the_hidden_states(dtype):
    model = tied_llama(scale=80.0).to(dtype)
    ids = torch.randint(0, 64, (2, 12))
    hidden, rounded = head_inputs_and_logits(model, ids)
    exact = F.linear(hidden.double(), model.lm_head.weight.double())
    assert exact.abs().max() > 10  # logits as large as a trained model's, where 16-bit rounding costs most
    assert rounded.dtype is dtype and (rounded.double() - exact).abs().max() > 1e-3  # what the fix removes
    names = [name for name, _ in model.named_parameters()]
    float32_head(model)
    hidden, logits = head_inputs_and_logits(model, ids)
    assert logits.dtype is torch.float32 and (logits.double() - F.linear(hidden.double(), model.lm_head.weight.double())).abs().max() < 1e-4
    # same weights, names and tie; only the kept positions run through the head
    assert model.lm_head.weight is model.get_input_embeddings().weight and [name for name, _ in model.named_parameters()] == names
    assert model.lm_head.weight.dtype is dtype and has_float32_head(model)
    assert head_inputs_and_logits(model, ids, logits_to_keep=3)[1].shape == (2, 3, 64)


def test_the_float32_head_ignores_autocast_and_changes_nothing_in_float32():
    model = tied_llama(scale=20.0)
    ids = torch.randint(0, 64, (2, 12))
    _, before = head_inputs_and_logits(model, ids)
    float32_head(model)
    _, after = head_inputs_and_logits(model, ids)
    assert torch.equal(before, after)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden, logits = head_inputs_and_logits(model, ids)
    assert logits.dtype is torch.float32
    assert (logits.double() - F.linear(hidden.double(), model.lm_head.weight.double())).abs().max() < 1e-4


def test_the_float32_head_survives_a_dtype_conversion_and_a_copy():
    import copy

    model = float32_head(tied_llama(scale=1.0)).to(torch.bfloat16)
    twin = copy.deepcopy(model)
    assert has_float32_head(twin) and twin.lm_head.forward.__self__ is twin.lm_head  # bound to the copy's own head
    assert twin(input_ids=torch.tensor([[1, 2, 3]])).logits.dtype is torch.float32


def test_a_loaded_model_has_a_float32_head(tiny_model):
    assert has_float32_head(loaded(tiny_model, dtype="bfloat16").model)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_packed_and_cached_forwards_match_one_sequence_per_request_within_the_dtypes_tolerance(tiny_model, dtype):
    requests = choice_requests()
    scores = {}
    for mode in ("none", "packed", "cache"):
        module = loaded(tiny_model, dtype=dtype, reuse_context=mode)
        float32_head(module.model)  # as loading does (idempotent), so this holds whoever loads the model
        scores[mode] = [r.logprob for start in range(0, len(requests), 8) for r in module.loglikelihood(requests[start : start + 8])]
    for mode in ("packed", "cache"):
        assert max(abs(a - b) for a, b in zip(scores[mode], scores["none"])) < PACKED_TOLERANCE[dtype]


# --- flash attention where it cannot run --------------------------------------------------------------
def test_a_missing_flash_attention_falls_back_to_sdpa_with_one_warning(tiny_model):
    attention_to_load.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = loaded(tiny_model, attn_implementation="flash_attention_2")
        module.configure_model()
        identity = module.identity()
        loaded(tiny_model, attn_implementation="flash_attention_2")
    messages = [str(w.message) for w in caught if "flash_attention_2" in str(w.message)]
    assert len(messages) == 1 and "using 'sdpa' instead" in messages[0], messages
    assert module.model.config._attn_implementation == "sdpa"
    assert reuse_mode(module.hparams.reuse_context, "sdpa") == "packed"
    assert identity["attn_implementation_used"] == "sdpa"  # its answers are SDPA's, not flash attention's
    reference = loaded(tiny_model, attn_implementation="sdpa")
    requests = choice_requests()[:6]
    assert [r.logprob for r in module.loglikelihood(requests)] == [r.logprob for r in reference.loglikelihood(requests)]
    assert "attn_implementation_used" not in reference.identity()
