"""How FSDP shards a Hugging Face model: one shard unit per block of its text model that the model says
must not be split, a CPU variant of Lightning's FSDP strategy, and releasing the shards after inference."""

from typing import Optional

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def no_split_module_names(root: nn.Module) -> set[str]:
    """Class names every Hugging Face submodule lists in `_no_split_modules` (decoder layers, vision blocks)."""
    names: set[str] = set()
    for module in root.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return names


def text_blocks(root: nn.Module) -> list[nn.Module]:
    """The unsplittable blocks (`_no_split_modules`) of the text model, the part every forward runs.

    A vision tower runs only for a batch with images. As FSDP units of their own its blocks would be
    gathered on the ranks whose batch has images and not on the others, and the ranks would wait on each
    other forever; left in the root unit they are gathered with it, on every forward of every rank. A block
    is in the text model when the nearest module above it with a `config` has the outermost model's config
    or its text config (the same config for a text-only model)."""
    names = no_split_module_names(root)
    outer = next((m.config for m in root.modules() if hasattr(getattr(m, "config", None), "get_text_config")), None)
    text_configs = {id(outer), id(outer.get_text_config())} if outer is not None else set()
    blocks: list[nn.Module] = []

    def visit(module: nn.Module, in_text: bool) -> None:
        config = getattr(module, "config", None)
        if hasattr(config, "get_text_config"):
            in_text = id(config) in text_configs
        if in_text and type(module).__name__ in names:
            blocks.append(module)
        for child in module.children():
            visit(child, in_text)

    visit(root, True)
    return blocks


class NoSplitModulesPolicy:
    """An FSDP auto-wrap policy that wraps each block of the text model the model declares unsplittable.

    It reads the blocks from the model itself on its first call (the root module), so one policy fits
    Llama, Qwen2-VL, LLaVA and any other `transformers` model without listing classes (`text_blocks`).
    """

    def __init__(self) -> None:
        self.blocks: Optional[set[int]] = None

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int = 0) -> bool:
        if self.blocks is None:
            self.blocks = {id(block) for block in text_blocks(module)}
        if recurse:
            return True
        return id(module) in self.blocks


def shard_plan(root: nn.Module, policy: NoSplitModulesPolicy) -> list[str]:
    """The qualified names of the modules the policy would wrap (what FSDP shards), for inspection and tests."""
    policy(root, recurse=True)
    return [name for name, module in root.named_modules() if name and policy(module, recurse=False)]


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's `FSDPStrategy` on CPU processes (gloo), for tests and CPU-only machines.

    Lightning hands FSDP the root device's index, which a CPU device lacks, and FSDP then looks for an
    accelerator and refuses to run; this strategy hands it the CPU device itself. FSDP's broadcast of rank
    0's weights (`sync_module_states`, used by `sharded_loading`) refuses CPU tensors although gloo
    broadcasts them; that check is lifted while the model is wrapped. On a GPU it is FSDPStrategy.
    """

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel, _init_utils

        if self.root_device.type != "cpu" or any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)
        check = _init_utils._check_module_states_for_sync_module_states
        _init_utils._check_module_states_for_sync_module_states = lambda states: None
        try:
            return FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
        finally:
            _init_utils._check_module_states_for_sync_module_states = check


def release_shards(wrapper: Optional[nn.Module]) -> int:
    """Free every FSDP flat parameter under `wrapper` (the strategy's model), the tensors FSDP keeps beside
    it (local shard, gathered and mixed-precision copies) and the original parameters' views into it;
    returns the bytes freed. Dropping the module's reference to the model frees nothing while the wrapper
    still holds these. Each tensor is emptied and its storage resized to 0, so a reference held elsewhere
    cannot keep the memory alive."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    units = [m for m in wrapper.modules() if isinstance(m, FullyShardedDataParallel)] if wrapper is not None else []
    if not units:
        return 0
    tensors = list(wrapper.parameters())
    for unit in units:
        flat = unit._handle.flat_param if unit._handle is not None else None
        if flat is not None:
            tensors += [flat, *(value for value in vars(flat).values() if isinstance(value, torch.Tensor))]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage() for t in tensors if t.untyped_storage().nbytes()}
    freed = sum(storage.nbytes() for storage in storages.values())
    for tensor in tensors:
        tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    for storage in storages.values():
        storage.resize_(0)
    return freed
