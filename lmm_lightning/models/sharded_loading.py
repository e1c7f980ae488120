"""Loading a checkpoint once per FSDP run instead of once per rank.

Every rank reading the whole checkpoint into host memory costs one copy of the model per process: eight
copies of a 70B model on an 8-GPU node. Under FSDP only global rank 0 reads the weights; the other ranks
build the same model on the meta device (no memory), and FSDP materialises their modules empty
(`param_init_fn`) and copies rank 0's values into them as it shards (`sync_module_states`). Host memory per
node is then about one model, whatever the number of ranks.
"""

from typing import Any, Optional

import torch
from torch import nn
from transformers import AutoConfig, GenerationConfig

from lmm_lightning.models.loading import ModelSource


def loads_once(trainer: Any, options: dict[str, Any], adapter: Optional[ModelSource]) -> bool:
    """Whether the run shards with FSDP over several processes, so that rank 0's weights can be broadcast.
    An adapter changes the model's structure as it merges, so with one every rank loads as before."""
    from lightning.pytorch.strategies import FSDPStrategy

    if trainer is None or trainer.world_size < 2 or not isinstance(trainer.strategy, FSDPStrategy):
        return False
    return adapter is None and options.get("device_map") is None


def load_pretrained(trainer: Any, auto_class: Any, path: str, options: dict[str, Any], adapter: Optional[ModelSource] = None) -> nn.Module:
    """`auto_class.from_pretrained(path, **options)`, or under FSDP that on rank 0 and the same model on the
    meta device elsewhere, the strategy told to fill it from rank 0 as it shards. The ranks wait for rank 0
    here, so none looks done loading (to the watchdog) while rank 0 still reads the checkpoint."""
    if not loads_once(trainer, options, adapter):
        return auto_class.from_pretrained(path, **options)
    strategy = trainer.strategy
    strategy.kwargs["sync_module_states"] = True
    strategy.kwargs.setdefault("param_init_fn", EmptyOn(strategy.root_device))
    model = auto_class.from_pretrained(path, **options) if trainer.global_rank == 0 else on_meta(auto_class, path, options)
    strategy.barrier("sharded_loading")
    return model


def on_meta(auto_class: Any, path: str, options: dict[str, Any]) -> nn.Module:
    """The model of `path`'s config with every tensor on the meta device, and the checkpoint's generation
    config (its defaults, e.g. top_k, shape what `generate` does, so every rank must hold the same)."""
    config = AutoConfig.from_pretrained(path, trust_remote_code=options.get("trust_remote_code", False))
    extra = {k: v for k, v in options.items() if k in ("dtype", "attn_implementation", "trust_remote_code")}
    with torch.device("meta"):
        model = auto_class.from_config(config, **extra)
    try:
        model.generation_config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: from_pretrained keeps the one made from the config, as here
        pass
    return model


class EmptyOn:
    """FSDP's `param_init_fn`: allocate a meta module's own tensors, uninitialised, on `device` (its
    children get their own call); `sync_module_states` then overwrites them with rank 0's values."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, module: nn.Module) -> None:
        module.to_empty(device=self.device, recurse=False)
