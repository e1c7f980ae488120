"""How FSDP shards a Hugging Face model: one shard unit per block the model says must not be split."""

from typing import Optional

from torch import nn


def no_split_module_names(root: nn.Module) -> set[str]:
    """Class names every Hugging Face submodule lists in `_no_split_modules` (decoder layers, vision blocks)."""
    names: set[str] = set()
    for module in root.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return names


class NoSplitModulesPolicy:
    """An FSDP auto-wrap policy that wraps each block the model declares unsplittable.

    It reads the names from the model itself on its first call (the root module), so one policy
    fits Llama, Qwen2-VL, LLaVA and any other `transformers` model without listing classes.
    """

    def __init__(self) -> None:
        self.names: Optional[set[str]] = None

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int = 0) -> bool:
        if self.names is None:
            self.names = no_split_module_names(module)
        if recurse:
            return True
        return type(module).__name__ in self.names


def shard_plan(root: nn.Module, policy: NoSplitModulesPolicy) -> list[str]:
    """The qualified names of the modules the policy would wrap (what FSDP shards), for inspection and tests."""
    policy(root, recurse=True)
    return [name for name, module in root.named_modules() if name and policy(module, recurse=False)]
