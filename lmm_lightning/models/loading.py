"""Loading a pretrained model, the same for the text and the vision model: where its files are (a local
folder, an offline asset, or a Hugging Face hub id resolved through the hub cache), the `from_pretrained`
options, an optional PEFT adapter, and every check that is cheap enough to run before any weights load."""

import functools
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from lightning.pytorch.utilities import rank_zero_warn
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

from lmm_lightning.assets import KNOWN_ASSETS, resolve_pretrained
from lmm_lightning.errors import InputError
from lmm_lightning.models.base import folder_fingerprint
from lmm_lightning.models.precision import DTYPES, load_dtype, torch_dtype  # noqa: F401 - DTYPES, torch_dtype: imported from here

# A hub id: `name` or `org/name` (letters, digits, `-`, `_`, `.`); anything else is only ever a local path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# Files a checkpoint may carry that `from_pretrained` never reads: not downloaded.
UNUSED_FILES = ["*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ot", "*.tflite", "onnx/*", "openvino/*"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: the folder `from_pretrained` loads, and for a hub id the repository and
    the commit the revision resolved to (a branch moves; the commit says which files were evaluated)."""

    path: str
    repo_id: Optional[str] = None
    commit: Optional[str] = None


def resolve_source(name: str, revision: Optional[str] = None, field: str = "model.pretrained") -> ModelSource:
    """A local folder, an offline asset name, or a hub id (with an optional branch, tag or commit)."""
    if os.path.isdir(name) or name in KNOWN_ASSETS or not HUB_ID.fullmatch(name):
        if revision is not None:
            raise InputError(f"model.revision: {revision!r} selects a version of a Hugging Face hub id; {name!r} is not one")
        return ModelSource(resolve_pretrained(name) if field == "model.pretrained" else name)
    path = hub_snapshot(name, revision, field)
    return ModelSource(path, repo_id=name, commit=Path(path).name)


def hub_snapshot(repo_id: str, revision: Optional[str], field: str) -> str:
    """The snapshot folder of `repo_id` at `revision`, found by huggingface_hub's own cache lookup
    (HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface/hub); downloaded unless HF_HUB_OFFLINE is set."""
    from huggingface_hub import constants, snapshot_download

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        return snapshot_download(repo_id, revision=revision, local_files_only=offline, ignore_patterns=UNUSED_FILES)
    except Exception as err:  # noqa: BLE001 - not cached, no network, no such repository or revision: all one message
        why = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else "download failed: " + " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise InputError(
            f"{field}: {repo_id!r} is not a local folder{' or an offline asset ' + str(list(KNOWN_ASSETS)) if field == 'model.pretrained' else ''}, "
            f"and the Hugging Face cache {constants.HF_HUB_CACHE} has no {repo_id!r} at revision {revision or 'main'!r}; {why}"
        ) from None


def resolve_adapter(peft: Optional[str]) -> Optional[ModelSource]:
    """The PEFT adapter folder (a local folder or a hub id) with its adapter_config.json; peft must be installed."""
    if peft is None:
        return None
    if importlib.util.find_spec("peft") is None:
        raise InputError("model.peft: loading an adapter needs the `peft` package: pip install peft")
    source = resolve_source(peft, field="model.peft")
    if not (Path(source.path) / "adapter_config.json").is_file():
        raise InputError(f"model.peft: {source.path} has no adapter_config.json; expected a PEFT adapter folder (save_pretrained of a PeftModel)")
    return source


def with_adapter(model: Any, adapter: Optional[ModelSource]) -> Any:
    """The model with the adapter loaded on top, merged into the weights when the adapter type allows
    (LoRA and kin): a plain model again, scored as fast as the base."""
    if adapter is None:
        return model
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, adapter.path)
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def source_identity(source: ModelSource, adapter: Optional[ModelSource]) -> dict[str, Any]:
    """What identifies the files evaluated: the resolved folder, the hub commit, and a fingerprint of
    every file of the model and of the adapter (content digests: new weights under the same path differ)."""
    identity: dict[str, Any] = {"path": source.path, "repo_id": source.repo_id, "commit": source.commit}
    identity["files"] = folder_fingerprint(source.path)
    if adapter is not None:
        identity["peft"] = {"path": adapter.path, "commit": adapter.commit, "files": folder_fingerprint(adapter.path)}
    return identity


def check_device_map(device_map: Union[str, dict, None], world_size: int) -> None:
    """`device_map` spreads one model over this process's devices; with several processes each would
    spread its own copy over the same devices."""
    if device_map is not None and world_size > 1:
        raise InputError(
            f"model.device_map: {device_map!r} spreads one copy of the model over the devices of one process, but the run "
            f"has {world_size} processes; use trainer.devices 1 with device_map, or drop device_map (one copy per device)"
        )


def pretrained_options(hparams: Any, source: Optional[ModelSource] = None) -> tuple[str, dict[str, Any]]:
    """The local model folder and the `from_pretrained` options of a model's hyperparameters.

    The weights load in `model.dtype`, or in the dtype of a "true" `trainer.precision` (`load_dtype`). A flash
    attention kernel that cannot run here loads as SDPA (`attention_to_load`).
    `dtype=` is the argument's name since transformers 4.56 (the oldest we support); before, it was `torch_dtype`."""
    options: dict[str, Any] = {"dtype": load_dtype(torch_dtype(hparams.dtype)), "trust_remote_code": hparams.trust_remote_code}
    attention = attention_to_load(hparams.attn_implementation)
    if attention:
        options["attn_implementation"] = attention
    if getattr(hparams, "device_map", None) is not None:
        options["device_map"] = hparams.device_map
    if source is None:
        source = resolve_source(hparams.pretrained, getattr(hparams, "revision", None))
    return source.path, options


def check_pretrained(hparams: Any) -> ModelSource:
    """Every model option that can be checked without loading the weights; returns where the model is."""
    torch_dtype(hparams.dtype)
    if hparams.max_length is not None and (isinstance(hparams.max_length, bool) or not isinstance(hparams.max_length, int) or hparams.max_length < 1):
        raise InputError(f"model.max_length: expected a positive number of tokens, got {hparams.max_length!r}")
    check_attention(hparams.attn_implementation)
    attention_to_load(hparams.attn_implementation)  # its warning, once, before anything loads
    source = resolve_source(hparams.pretrained, getattr(hparams, "revision", None))
    check_model_folder(source.path, hparams.trust_remote_code)
    return source


def check_attention(attn_implementation: Optional[str]) -> None:
    """A known attention kernel (or a Hub kernel `org/repo`)."""
    if attn_implementation is None or "/" in attn_implementation:
        return
    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if attn_implementation not in known:
        raise InputError(f"model.attn_implementation: unknown attention {attn_implementation!r}; expected one of {known}")


# Flash attention kernels: the package each needs (with a GPU), and transformers' check that both are there.
FLASH_ATTENTION = {
    "flash_attention_2": ("flash_attn", is_flash_attn_2_available),
    "flash_attention_3": ("flash_attn_interface", is_flash_attn_3_available),
}


@functools.lru_cache(maxsize=None)  # one warning per process, however many times the model loads
def attention_to_load(attn_implementation: Optional[str]) -> Optional[str]:
    """The attention kernel to load: the one asked for, or "sdpa" in place of a flash attention kernel
    that cannot run on this machine (transformers would raise an ImportError, or try to download a kernel).
    The scores then are SDPA's, and `reuse_context: true` packs choices as it does for SDPA."""
    if attn_implementation not in FLASH_ATTENTION:
        return attn_implementation
    package, available = FLASH_ATTENTION[attn_implementation]
    if available():
        return attn_implementation
    why = f"the {package} package is not installed" if importlib.util.find_spec(package) is None else "no CUDA GPU is available"
    rank_zero_warn(f"model.attn_implementation: {attn_implementation!r} cannot run here ({why}); using 'sdpa' instead")
    return "sdpa"


def attention_identity(attn_implementation: Optional[str]) -> dict[str, Any]:
    """What a model's identity gains when another attention kernel stands in for the one asked for (its
    answers differ in the last digits): nothing when the kernel runs as asked.

    >>> attention_identity("sdpa"), attention_identity(None)
    ({}, {})
    """
    used = attention_to_load(attn_implementation)
    return {} if used == attn_implementation else {"attn_implementation_used": used}


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
