"""Tensor parallelism from the model's own plan: transformers' `tp_plan` applied over the strategy's tensor mesh.

A `transformers` model lists how its layers split across ranks (`model.tp_plan`: attention and MLP projections
"colwise" or "rowwise"). Those rules are applied with `torch.distributed.tensor.parallel` on the tensor-parallel
dimension of Lightning's `ModelParallelStrategy` mesh, so data x tensor layouts (2-D meshes) work, which
transformers' own `from_pretrained(tp_plan=...)` does not give (it builds a mesh over the whole world).
The embeddings and the output head stay whole on every rank: log-probs come from the full vocabulary.
"""

import re
from typing import Any

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel, parallelize_module

from lmm_lightning.errors import InputError

STYLES = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
WHOLE = ("embedding_rowwise", "colwise_gather_output")  # embeddings and output head: kept whole on every rank


def plan_pattern(rule: str) -> re.Pattern:
    """A plan rule (`model.layers.*.mlp.up_proj`) as a pattern over module names.

    >>> bool(plan_pattern("model.layers.*.mlp.up_proj").fullmatch("model.layers.11.mlp.up_proj"))
    True
    """
    return re.compile(re.escape(rule).replace(r"\*", r"\d+"))


def tensor_parallel_plan(model: nn.Module) -> dict[str, ParallelStyle]:
    """Each module the model's plan splits, by qualified name, with the torch style that splits it."""
    rules = dict(getattr(model, "tp_plan", None) or {})
    if not rules:
        raise InputError(f"trainer.strategy: {type(model).__name__} has no tensor-parallel plan (tp_plan); use FSDP or DDP")
    unknown = sorted({style for style in rules.values() if style not in STYLES and style not in WHOLE})
    if unknown:
        raise InputError(
            f"trainer.strategy: {type(model).__name__}'s tensor-parallel plan uses styles {unknown}; "
            f"tensor parallelism here takes {sorted(STYLES)} (use FSDP for this model)"
        )
    patterns = [(plan_pattern(rule), style) for rule, style in rules.items() if style in STYLES]
    plan = {}
    for name, _ in model.named_modules():
        for pattern, style in patterns:
            if pattern.fullmatch(name):
                plan[name] = STYLES[style]()
    return plan


def check_divisible(config: Any, size: int) -> None:
    """Attention heads (query and key/value) and the MLP width must split evenly over `size` ranks."""
    text = getattr(config, "text_config", None) or config
    for field in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        value = getattr(text, field, None)
        if isinstance(value, int) and value % size:
            raise InputError(
                f"trainer.strategy: tensor_parallel_size {size} does not divide the model's {field} ({value}); "
                f"use a size that divides it"
            )


def apply_tensor_parallel(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Split `model` over the ranks of the tensor-parallel `mesh` by its own plan (in place)."""
    check_divisible(model.config, mesh.size())
    return parallelize_module(model, mesh, tensor_parallel_plan(model))


def parallelize_for(trainer: Any, model: nn.Module) -> nn.Module:
    """`model` split over the trainer's tensor-parallel ranks where its strategy has them, else as it is."""
    from lmm_lightning.parallel import tensor_parallel_mesh

    mesh = tensor_parallel_mesh(trainer)
    return model if mesh is None else apply_tensor_parallel(model, mesh)
