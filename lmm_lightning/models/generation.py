"""Batched generation, the same for the text and the vision model: one `generate` call over left-padded
prompts, stopped and cut at the stop strings, greedy unless a request samples with its own seed.

Sampling never touches a global random generator: each sampled row draws from its own `torch.Generator`,
seeded by its request (`request_seed`), so no `torch.random.fork_rng` is needed and nothing else's draws move.
"""

import hashlib
import inspect
from typing import Any, Optional

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import (
    LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
)

from lmm_lightning.requests import GenerationSpec, Request


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    inputs: dict[str, torch.Tensor],
    requests: list[Request],
    synced_gpus: bool,
    prefix: Optional[tuple[Any, torch.Tensor]] = None,
    own_loop: bool = True,
    static_cache: bool = False,
    compile: bool = False,
) -> list[str]:
    """The continuation of each row of `inputs` (left-padded, so every row's new tokens start at the same
    column), cut at the first stop string. The requests of a batch share one generation spec.

    Decoding runs in `decode` (a row that has finished leaves the batch) where it gives what `generate` would:
    one process per model (not FSDP, whose ranks must step together), greedy or seeded sampling, and a
    generation config that adds no logits processor of its own. Elsewhere, and with `own_loop` False, it is
    transformers' `generate`. `prefix`: the cached keys/values and mask of a prompt prefix the rows share,
    computed once (`models.prefix`), in front of `inputs`. `static_cache` (and `compile`, which needs it) decode
    with transformers' `generate` on a preallocated cache, its decode step compiled by `torch.compile` when
    `compile` is set (transformers' own automatic compilation, also on the CPU)."""
    if own_loop and not (static_cache or compile) and uses_own_loop(model, synced_gpus):
        return decode(model, tokenizer, inputs, requests, prefix)
    if prefix is not None:
        raise ValueError("a shared prefix needs the own decoding loop")
    spec = requests[0].generation
    width = inputs["input_ids"].shape[1]
    stops = stop_strings(spec)
    criteria = StoppingCriteriaList([StopOnStrings(tokenizer, stops, width)]) if stops else None
    output = model.generate(
        **inputs,
        max_new_tokens=spec.max_new_tokens,
        stopping_criteria=criteria,
        pad_token_id=tokenizer.pad_token_id,
        synced_gpus=synced_gpus,
        **sampling_kwargs(requests, model.generation_config),
        **static_kwargs(static_cache, compile),
    )
    texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [cut_at_stops(text, stops) for text in texts]


# Generation settings under which `generate`'s greedy search adds a logits processor or changes the search; a
# model whose generation config sets one of them to something else decodes with `generate` itself.
NEUTRAL_SETTINGS = {
    "num_beams": (None, 1), "num_beam_groups": (None, 1), "penalty_alpha": (None, 0), "dola_layers": (None,),
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0), "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "sequence_bias": (None,), "renormalize_logits": (None, False),
    "guidance_scale": (None, 1.0), "watermarking_config": (None,), "prompt_lookup_num_tokens": (None,), "token_healing": (None, False),
    "diversity_penalty": (None, 0.0), "low_memory": (None, False), "forced_decoder_ids": (None,),
}


def uses_own_loop(model: Any, synced_gpus: bool) -> bool:
    """Whether `generate` decodes with `decode` (which a shared prefix needs) rather than transformers' `generate`."""
    return not synced_gpus and own_loop_supported(model.generation_config)


def own_loop_supported(config: Any) -> bool:
    """Whether the model's generation config leaves greedy search plain (nothing in `NEUTRAL_SETTINGS` set).

    >>> from transformers import GenerationConfig
    >>> own_loop_supported(GenerationConfig()), own_loop_supported(GenerationConfig(repetition_penalty=1.2))
    (True, False)
    """
    return all(getattr(config, name, None) in neutral for name, neutral in NEUTRAL_SETTINGS.items())


def eos_ids(config: Any) -> set[int]:
    """The tokens that end a sequence, as `generate` reads them from the generation config.

    >>> from transformers import GenerationConfig
    >>> sorted(eos_ids(GenerationConfig(eos_token_id=[2, 7]))), eos_ids(GenerationConfig())
    ([2, 7], set())
    """
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def decode(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    inputs: dict[str, torch.Tensor],
    requests: list[Request],
    prefix: Optional[tuple[Any, torch.Tensor]] = None,
) -> list[str]:
    """Greedy (or seeded sampling) decoding with a key/value cache, one new token per row and step, as `generate`
    does; a row that ends (its end-of-sequence token, a stop string in its last tokens, or its token budget)
    leaves the batch at once, its cache rows dropped, so the rest run without it.

    The stop strings are looked for in the last few tokens of a row only (`StopWindow`), not in its whole text
    decoded again each step; the text returned is still the whole continuation cut at its first stop string."""
    spec = requests[0].generation
    stops = stop_strings(spec)
    window = StopWindow(tokenizer, stops)
    ends = eos_ids(model.generation_config)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    cache = None
    if prefix is not None:
        cache, prefix_mask = prefix
        mask = torch.cat([prefix_mask.to(mask.dtype), mask], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
    processors = sampling_kwargs(requests, model.generation_config).get("logits_processor")
    sampler = processors[0] if processors else None  # SeededSampling
    parameters = inspect.signature(model.forward).parameters
    keep = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    argument = "cache" if "cache" in parameters else "past_key_values"
    rows = list(range(len(requests)))  # the requests still decoding, in batch order
    new: list[list[int]] = [[] for _ in requests]
    step_ids = ids
    for _ in range(spec.max_new_tokens):
        given = {argument: cache} if cache is not None else {}
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True, **given, **extra, **keep)
        extra = {}  # images and videos go in with the prompt only
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        scores = out.logits[:, -1].float()
        if sampler is not None:
            scores = sampler(step_ids, scores)
        tokens = scores.argmax(-1)
        going = []
        for position, (row, token) in enumerate(zip(rows, tokens.tolist())):
            new[row].append(token)
            if token not in ends and not window.stopped(new[row]):
                going.append(position)
        if not going:
            break
        if len(going) < len(rows):
            index = torch.tensor(going, device=tokens.device)
            cache.batch_select_indices(index)
            tokens, mask, positions = tokens[index], mask[index], positions[index]
            rows = [rows[p] for p in going]
            if sampler is not None:
                sampler.select(going)
        step_ids = tokens[:, None]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        positions = positions[:, -1:] + 1
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return [cut_at_stops(text, stops) for text in texts]


class StopWindow:
    """Whether a row's newest tokens complete a stop string: only the last few tokens are decoded (as many as
    the longest stop string has characters, plus two), so each step costs the same however long the row is.
    A stop string that ends in the newest token lies within them, since a token decodes to at least one
    character; what is returned is still cut from the whole text (`cut_at_stops`)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.lookback = max((len(stop) for stop in stops), default=0) + 2

    def stopped(self, tokens: list[int]) -> bool:
        if not self.stops:
            return False
        tail = self.tokenizer.decode(tokens[-self.lookback :], skip_special_tokens=True)
        return any(stop in tail for stop in self.stops)


def static_kwargs(static_cache: bool, compile: bool) -> dict[str, Any]:
    """`generate` options for a static cache, compiled or not (transformers compiles the decode step itself when
    the cache is static; `_compile_all_devices` extends that from accelerators to the CPU).

    >>> static_kwargs(False, False)
    {}
    >>> static_kwargs(True, False)["cache_implementation"], static_kwargs(True, False)["disable_compile"]
    ('static', True)
    """
    if not (static_cache or compile):
        return {}
    if not compile:
        return {"cache_implementation": "static", "disable_compile": True}
    from transformers import CompileConfig

    config = CompileConfig()
    config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": config}


def prompt_budget(max_length: int, spec: GenerationSpec) -> int:
    """Tokens a prompt may keep so that it and the new tokens fit in the context window (at least one).

    >>> prompt_budget(2048, GenerationSpec(max_new_tokens=256)), prompt_budget(8, GenerationSpec(max_new_tokens=256))
    (1792, 1)
    """
    return max(max_length - spec.max_new_tokens, 1)


def stop_strings(spec: GenerationSpec) -> tuple[str, ...]:
    """The spec's stop strings, less empty ones (an empty string would stop at once).

    >>> stop_strings(GenerationSpec(until=("\\n", "")))
    ('\\n',)
    """
    return tuple(stop for stop in spec.until if stop)


def cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    """The text before the first occurrence of any stop string.

    >>> cut_at_stops("Paris. Next", (".", "\\n"))
    'Paris'
    """
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class StopOnStrings(StoppingCriteria):
    """Stops each row of transformers' `generate` once its newest tokens complete a stop string (`StopWindow`)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...], prompt_length: int) -> None:
        self.window = StopWindow(tokenizer, stops)
        self.prompt_length = prompt_length
        self.done: Optional[list[bool]] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        if self.done is None:
            self.done = [False] * input_ids.shape[0]
        new = input_ids[:, max(self.prompt_length, input_ids.shape[1] - self.window.lookback) :].tolist()
        self.done = [done or self.window.stopped(row) for done, row in zip(self.done, new)]
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def sampling_kwargs(requests: list[Request], config: Any = None) -> dict:
    """`generate` options: greedy unless a request samples; then each request draws with its own settings and seed."""
    warpers = [sampling_warpers(r.generation, config) for r in requests]
    if all(w is None for w in warpers):
        return {"do_sample": False}
    rows = [None if w is None else (request_seed(r), w) for r, w in zip(requests, warpers)]
    return {"do_sample": False, "logits_processor": LogitsProcessorList([SeededSampling(rows)])}


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

    def select(self, keep: list[int]) -> None:
        """Keep the rows at positions `keep` (the others finished and left the batch), each with its own generator."""
        self.rows = [self.rows[i] for i in keep]
        if self.generators is not None:
            self.generators = [self.generators[i] for i in keep]

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
