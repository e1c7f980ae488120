"""Batched generation, the same for the text and the vision model: one `generate` call over left-padded
prompts, stopped and cut at the stop strings, greedy unless a request samples with its own seed.

Sampling never touches a global random generator: each sampled row draws from its own `torch.Generator`,
seeded by its request (`request_seed`), so no `torch.random.fork_rng` is needed and nothing else's draws move.
"""

import hashlib
from typing import Any, Optional

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import (
    LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
)

from lmm_lightning.requests import GenerationSpec, Request


def generate(
    model: Any, tokenizer: PreTrainedTokenizerBase, inputs: dict[str, torch.Tensor], requests: list[Request], synced_gpus: bool
) -> list[str]:
    """The continuation of each row of `inputs` (left-padded, so every row's new tokens start at the same
    column), cut at the first stop string. The requests of a batch share one generation spec."""
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
    )
    texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [cut_at_stops(text, stops) for text in texts]


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
    """Stops each row once its generated text contains a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


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
