"""The dtype a model computes in, from `trainer.precision` and the `model.dtype` option, and float32
log-probabilities whatever that dtype.

Lightning's precision plugin decides, and `model.dtype` follows it:

- "32-true" (the default): the model is loaded and runs in `model.dtype` (float32, bfloat16 or float16).
- "16-true", "bf16-true", "64-true": the model is loaded and runs in float16, bfloat16 or float64. Lightning
  calls `configure_model` inside the plugin's `module_init_context`, which sets torch's default dtype;
  loading follows it (`load_dtype`), so no float32 copy is built first, and a `device_map` model (which
  the plugin's module conversion does not reach) gets the same dtype. `model.dtype` must be left at
  float32 or name that same dtype.
- "16-mixed", "bf16-mixed": the weights stay in `model.dtype`; matrix products run under autocast in
  float16 or bfloat16.

In every case the language-model head computes float32 logits from the hidden states (`float32_head`),
so the log-softmax of a continuation never sees logits rounded to 8 (bfloat16) or 11 (float16) bits of
mantissa. What is left between two ways of scoring the same request (packed, cached, one sequence each)
is the rounding of the 16-bit layers below the head.
"""

import types
from typing import Any, Optional

import torch
import torch.nn.functional as F

from lmm_lightning.errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of the `model.dtype` option.

    >>> torch_dtype("bfloat16")
    torch.bfloat16
    """
    if name not in DTYPES:
        raise InputError(f"model.dtype: expected one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


# The dtype a "true" precision plugin builds, loads and runs the model in.
TRUE_PRECISION = {"16-true": torch.float16, "bf16-true": torch.bfloat16, "64-true": torch.float64}
# The dtype autocast runs matrix products in under a mixed precision plugin; the weights keep theirs.
MIXED_PRECISION = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
DEFAULT_PRECISION = "32-true"


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as the `model.dtype` option and results.json spell it.

    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


def compute_dtype(precision: str, dtype: Optional[torch.dtype]) -> Optional[torch.dtype]:
    """The dtype the model computes in under `precision` with weights loaded as `dtype` (`model.dtype`);
    None where neither says (a plugin of its own, a model without a dtype option).

    >>> compute_dtype("bf16-true", torch.float32), compute_dtype("bf16-mixed", torch.float32), compute_dtype("32-true", torch.float16)
    (torch.bfloat16, torch.bfloat16, torch.float16)
    """
    if precision in TRUE_PRECISION:
        check_true_precision(precision, dtype)
        return TRUE_PRECISION[precision]
    if precision in MIXED_PRECISION:
        return MIXED_PRECISION[precision]
    return dtype if precision == DEFAULT_PRECISION else None


def check_true_precision(precision: str, dtype: Optional[torch.dtype]) -> None:
    """A "true" precision runs the model in its own dtype: `model.dtype` may only be the default or agree."""
    wanted = TRUE_PRECISION[precision]
    if dtype is not None and dtype not in (torch.float32, wanted):
        raise InputError(
            f"model.dtype: {dtype_name(dtype)!r} conflicts with trainer.precision {precision!r}, which loads and runs the model "
            f"in {dtype_name(wanted)}; set model.dtype to {dtype_name(wanted)!r} (or leave it float32), or use trainer.precision 32-true"
        )


def precision_identity(precision: str, dtype: Optional[torch.dtype]) -> dict[str, Any]:
    """What the trainer's precision adds to a model's identity: nothing under the default "32-true" (the
    `dtype` option already says how it computes, and stores written before precision counted stay valid),
    else the precision and the dtype it computes in, so a rerun in another precision recomputes its answers."""
    if precision == DEFAULT_PRECISION:
        return {}
    computed = compute_dtype(precision, dtype)
    return {"precision": precision, "compute_dtype": None if computed is None else dtype_name(computed)}


def numerics(precision: str, dtype: Optional[torch.dtype]) -> dict[str, Any]:
    """The precision and compute dtype of a run, as results.json shows them (also under "32-true").

    >>> numerics("bf16-mixed", torch.float32)
    {'precision': 'bf16-mixed', 'compute_dtype': 'bfloat16', 'logprob_dtype': 'float32'}
    """
    computed = compute_dtype(precision, dtype)
    return {"precision": precision, "compute_dtype": None if computed is None else dtype_name(computed), "logprob_dtype": "float32"}


def module_precision(module: Any) -> tuple[str, Optional[torch.dtype]]:
    """A LightningModule's trainer precision ("32-true" outside a trainer) and its `dtype` option (None if it has none)."""
    trainer = getattr(module, "_trainer", None)
    precision = trainer.precision if trainer is not None else DEFAULT_PRECISION
    dtype = getattr(module, "hparams", {}).get("dtype")
    return precision, DTYPES.get(dtype) if isinstance(dtype, str) else None


def module_numerics(module: Any) -> dict[str, Any]:
    """`numerics` of a LightningModule under its trainer, for results.json."""
    return numerics(*module_precision(module))


def load_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to load weights in: `dtype` (`model.dtype`), or the dtype a "true" precision plugin set as
    torch's default around `configure_model` (bfloat16 under "bf16-true"), which the model runs in anyway."""
    ambient = torch.get_default_dtype()
    if ambient in (torch.float32, dtype):
        return dtype
    if dtype != torch.float32:
        raise InputError(
            f"model.dtype: {dtype_name(dtype)!r} conflicts with trainer.precision, which loads and runs the model in "
            f"{dtype_name(ambient)}; set model.dtype to {dtype_name(ambient)!r} (or leave it float32)"
        )
    return ambient


def weights_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's floating-point weights: what its inputs (pixel values) must be cast to."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


# --- float32 logits -------------------------------------------------------------------------------
def float32_linear(self: torch.nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """`Linear.forward` in float32, autocast off: logits of about 10-30 rounded to bfloat16 are off by up
    to 0.06-0.125 each, and those errors reach the log-softmax unchanged."""
    with torch.autocast(hidden.device.type, enabled=False):
        bias = None if self.bias is None else self.bias.float()
        return F.linear(hidden.float(), self.weight.float(), bias)


def float32_head(model: torch.nn.Module) -> torch.nn.Module:
    """Make the model's language-model head compute float32 logits, in place; returns the model.

    The head keeps its weights, names and ties (a tied head shares the input embedding's weight): only its
    forward is replaced, on the instance, so it works wherever the head is called, inside an FSDP forward
    (which gathers the weight first), on the positions `logits_to_keep` kept, and after Lightning converts
    the module's dtype. The weight is upcast per call, which costs one float32 copy of the head (vocabulary x
    hidden size x 4 bytes) during the forward. A head that is not a plain floating-point `Linear` (a
    quantized one) is left as it is. Already float32 and outside autocast, the result is unchanged."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Linear) and head.weight.is_floating_point():
        head.forward = types.MethodType(float32_linear, head)
    return model


def has_float32_head(model: torch.nn.Module) -> bool:
    """Whether `float32_head` was applied to the model's head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    forward = getattr(head, "forward", None)
    return getattr(forward, "__func__", None) is float32_linear
