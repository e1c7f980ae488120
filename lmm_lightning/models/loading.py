"""Loading a pretrained folder, the same for the text and the vision model: the `from_pretrained` options,
and every check of the folder and options that is cheap enough to run before any weights load."""

import json
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lmm_lightning.assets import resolve_pretrained
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


def pretrained_options(hparams: Any) -> tuple[str, dict[str, Any]]:
    """The local model folder and the `from_pretrained` options of a model's hyperparameters."""
    options: dict[str, Any] = {"dtype": torch_dtype(hparams.dtype), "trust_remote_code": hparams.trust_remote_code}
    if hparams.attn_implementation:
        options["attn_implementation"] = hparams.attn_implementation
    return resolve_pretrained(hparams.pretrained), options


def check_pretrained(hparams: Any) -> str:
    """Every model option that can be checked without loading the weights; returns the model folder."""
    torch_dtype(hparams.dtype)
    if hparams.max_length is not None and (isinstance(hparams.max_length, bool) or not isinstance(hparams.max_length, int) or hparams.max_length < 1):
        raise InputError(f"model.max_length: expected a positive number of tokens, got {hparams.max_length!r}")
    check_attention(hparams.attn_implementation)
    path = resolve_pretrained(hparams.pretrained)
    check_model_folder(path, hparams.trust_remote_code)
    return path


def check_attention(attn_implementation: Optional[str]) -> None:
    """A known attention kernel (or a Hub kernel `org/repo`)."""
    if attn_implementation is None or "/" in attn_implementation:
        return
    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if attn_implementation not in known:
        raise InputError(f"model.attn_implementation: unknown attention {attn_implementation!r}; expected one of {known}")


def check_model_folder(path: str, trust_remote_code: bool) -> None:
    """A local checkpoint folder: config.json is valid, and the weights exist and are complete."""
    config = Path(path) / "config.json"
    try:
        json.loads(config.read_text())
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - invalid JSON, an unknown model_type, ...: all one message
        raise InputError(f"model.pretrained: {config} is not a valid model config: {type(err).__name__}: {err}") from None
    for shard in weight_files(Path(path)):
        if shard.suffix == ".safetensors":
            check_safetensors(shard)


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files: one file, or the shards its index names (each must exist)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    for index in (folder / "model.safetensors.index.json", folder / "pytorch_model.bin.index.json"):
        if index.is_file():
            try:
                shards = sorted({folder / shard for shard in json.loads(index.read_text())["weight_map"].values()})
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise InputError(f"model.pretrained: {index} is not a valid weight index ({type(err).__name__}: {err})") from None
            missing = [str(s.name) for s in shards if not s.is_file()]
            if missing:
                raise InputError(f"model.pretrained: {index} names shards that are missing: {missing}")
            return shards
    raise InputError(
        f"model.pretrained: {folder} has a config.json but no weights; expected model.safetensors, "
        "pytorch_model.bin or a sharded *.index.json with its shards"
    )


def check_safetensors(path: Path) -> None:
    """The header parses and the file is as long as the header says (a cut-off download is not)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > size - 8:
                raise ValueError(f"a header of {length} bytes in a file of {size}")
            header = json.loads(handle.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise InputError(f"model.pretrained: {path} is not a readable safetensors file ({err}); is it damaged or incomplete?") from None
    if size != 8 + length + end:
        raise InputError(f"model.pretrained: {path} is truncated or damaged: its header describes {8 + length + end} bytes, the file has {size}")


def load_tokenizer(path: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, with a padding token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - missing or broken tokenizer files raise many types
        raise InputError(
            f"model.pretrained: {path} has no usable tokenizer (tokenizer.json, tokenizer.model or vocabulary files): "
            f"{type(err).__name__}: {err}"
        ) from None
    fill_pad_token(tokenizer)
    return tokenizer


def fill_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Batches are padded, and many causal models ship without a padding token: pad with end-of-sequence."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
