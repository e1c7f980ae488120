"""Log-probabilities of continuations given their contexts, the same for the text and the vision model.

A continuation's score is the sum of its tokens' log-probabilities and whether each token is the argmax
(`score_continuation`). Requests that share a context (the choices of a question) can be scored three ways,
chosen by `reuse_mode`: one sequence per request (`score_full`), the context once with its cached keys/values
serving every continuation (`score_cached`, `score_shared_contexts`), or one packed row per context holding
every choice under a block mask (`score_packed`). A whole text longer than the context is scored in disjoint
windows (`rolling_windows`, `score_rolling`), for perplexity.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F

from lmm_lightning.errors import InputError
from lmm_lightning.requests import Request, Response

REUSE_MODES = ("packed", "cache", "none")
PACKED_ATTENTION = ("sdpa", "eager")
Encoded = list[tuple[list[int], list[int]]]  # (context tokens, continuation tokens) of each request
Scored = list[tuple[float, bool]]  # (log-probability, is greedy) of each request


def as_responses(requests: list[Request], scored: Scored) -> list[Response]:
    """The responses to loglikelihood requests, from their scores in the same order."""
    return [Response(uid=request.uid, logprob=logprob, is_greedy=greedy) for request, (logprob, greedy) in zip(requests, scored)]


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing whitespace of the context onto the continuation, as lm-evaluation-harness does.

    >>> split_context("Answer: ", "Paris"), split_context("Answer:", " Paris")
    (('Answer:', ' Paris'), ('Answer:', ' Paris'))
    """
    stripped = context.rstrip()
    spaces = len(context) - len(stripped)
    return (stripped, context[len(stripped):] + continuation) if spaces else (context, continuation)


def reuse_mode(reuse_context: Union[bool, str], attention: Optional[str] = None) -> str:
    """"packed", "cache" or "none" from the `reuse_context` setting; True packs where the attention kernel
    takes a block mask (SDPA, eager) and reuses the cache elsewhere.

    >>> reuse_mode(True, "sdpa"), reuse_mode(True, "flash_attention_2"), reuse_mode(False)
    ('packed', 'cache', 'none')
    """
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


def score_continuation(logits: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
    """Sum of log-probs of the continuation tokens, and whether each is the argmax (from their logits rows).

    The log-softmax and the sum run in float32 whatever the model's dtype; the logits themselves are float32
    from the head (`precision.float32_head`), so a 16-bit model's scores are not rounded to 16 bits first."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(continuation, dtype=torch.long, device=logprobs.device)
    logprob = logprobs.gather(-1, target[:, None]).sum().item()
    return logprob, bool((logprobs.argmax(-1) == target).all().item())


# --- one sequence per request ----------------------------------------------------------------------
def score_full(model: torch.nn.Module, encoded: Encoded, pad: int, device: torch.device) -> Scored:
    """One right-padded forward over context + continuation (less its last token) for every request."""
    rows = [(context + continuation)[:-1] for context, continuation in encoded]
    input_ids, mask = pad_right(rows, pad)
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    return [
        score_continuation(logits[i, len(row) - len(continuation) : len(row)], continuation)
        for i, (row, (_, continuation)) in enumerate(zip(rows, encoded))
    ]


def pad_right(rows: list[list[int]], pad: int, width: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of rows padded on the right to `width` (the longest row's by default).

    >>> pad_right([[1, 2], [3]], pad=0)[0].tolist()
    [[1, 2], [3, 0]]
    """
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def pad_left(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of rows padded on the left to the longest row's width, so all end together.

    >>> pad_left([[1, 2], [3]], pad=0)[0].tolist()
    [[1, 2], [0, 3]]
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


# --- each context once, its keys/values cached for all its continuations ----------------------------
def score_cached(model: torch.nn.Module, encoded: Encoded, pad: int, device: torch.device, two_forwards: bool = False) -> Scored:
    """Each distinct context runs once (left-padded); its cached keys/values serve all its continuations."""
    groups: dict[tuple[int, ...], int] = {}
    group_of = [groups.setdefault(tuple(context), len(groups)) for context, _ in encoded]
    context_ids, context_mask = pad_left([list(context) for context in groups], pad)
    context_inputs = {"input_ids": context_ids.to(device), "attention_mask": context_mask.to(device)}
    return score_shared_contexts(model, context_inputs, group_of, [continuation for _, continuation in encoded], pad, two_forwards)


def score_shared_contexts(
    model: torch.nn.Module,
    context_inputs: dict[str, torch.Tensor],
    group_of: list[int],
    continuations: list[list[int]],
    pad: int,
    two_forwards: bool = False,
) -> Scored:
    """Score continuations that share contexts: one forward over the distinct contexts (left-padded
    `context_inputs`, images included for vision models), then one over all continuations on top of the
    contexts' cached keys/values. `group_of[i]` is the context row of continuation i. A 4-choice question
    costs one context forward, not four.

    The second forward is needed only when some continuation has more than one token. `two_forwards` runs
    it always (on a one-token stand-in, its logits unused), so the count of forwards does not depend on
    the batch: under FSDP every rank must run as many forwards as the others (`EvalModule.synced_generation`)."""
    mask = context_inputs["attention_mask"]
    device = mask.device
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    out = model(**context_inputs, position_ids=positions, use_cache=True, **keep)
    last_logits = out.logits[:, -1]  # predicts each continuation's first token
    width = max(len(c) for c in continuations)
    if two_forwards:
        width = max(width, 2)  # one padding column: the stand-in
    rest_logits = None
    if width > 1:
        index = torch.tensor(group_of, device=device)
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        cache.reorder_cache(index)
        rest_ids, rest_mask = pad_right([c[:-1] for c in continuations], pad, width - 1)
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
        logit_rows = last_logits[group_of[i]][None]
        if len(continuation) > 1:
            logit_rows = torch.cat([logit_rows, rest_logits[i, : len(continuation) - 1]], dim=0)
        scores.append(score_continuation(logit_rows, continuation))
    return scores


def accepts(model: torch.nn.Module, argument: str) -> bool:
    """Whether the (possibly FSDP-wrapped) model's forward takes `argument`."""
    return argument in inspect.signature(getattr(model, "module", model).forward).parameters


def cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that takes a key/value cache: `cache` in recent transformers, `past_key_values` before."""
    return "cache" if accepts(model, "cache") else "past_key_values"


# --- one packed row per context, every choice after it under a block mask ----------------------------
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
    first: list[int] = field(default_factory=list)  # per row: the first request packed in it


def score_packed(
    model: torch.nn.Module,
    encoded: Encoded,
    pad: int,
    device: torch.device,
    prefix: Optional[tuple[Any, list[int], list[int]]] = None,
) -> Scored:
    """Score multiple-choice requests in one forward per batch: a question's context and all its choices
    share one row, and the language-model head runs only from the contexts' last column on.

    With `prefix` (a `prefix.PrefixState`, and per request its prefix's row in it and that prefix's length),
    each context's leading tokens are already computed: its row holds only the rest of the context and the
    choices, on top of the prefix's cached keys/values."""
    state, group_of, starts = prefix if prefix is not None else (None, None, None)
    packed = pack_choices(encoded, pad, starts)
    additive = None if attention_implementation(model) == "sdpa" else model.get_input_embeddings().weight.dtype
    extra: dict[str, Any] = {}
    prefix_mask = None
    if state is not None:
        row_groups = [group_of[packed.first[r]] for r in range(len(packed.ids))]
        cache, prefix_mask = state.for_rows(row_groups)
        extra[cache_argument(model)] = cache
    inputs = {k: v.to(device) for k, v in packed_inputs(packed, pad, additive, prefix_mask).items()}
    kept_from = packed.context_width - 1  # the first column whose logits are kept
    logits = model(**inputs, use_cache=False, logits_to_keep=inputs["input_ids"].shape[1] - kept_from, **extra).logits
    return [
        score_continuation(logits[r, [column - kept_from for column in columns]], continuation)
        for (_, continuation), (r, columns) in zip(encoded, packed.where)
    ]


def attention_implementation(model: torch.nn.Module) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def pack_choices(encoded: Encoded, pad: int, starts: Optional[list[int]] = None) -> PackedRows:
    """Each distinct context once, followed by the tokens of every continuation that shares it (less their last).
    `starts[i]`: leading tokens of request i's context already computed (a shared prefix), left out of its row;
    positions count from there.

    >>> pack_choices([([5, 6], [1]), ([5, 6], [2, 3])], pad=0).ids
    [[5, 6, 2]]
    >>> pack_choices([([5, 6, 7], [1]), ([5, 8], [2])], pad=0, starts=[2, 1]).positions
    [[2], [1]]
    """
    starts = starts or [0] * len(encoded)
    packed = PackedRows(context_width=max(len(ctx) - start for (ctx, _), start in zip(encoded, starts)))
    row_of: dict[tuple[int, ...], int] = {}
    for i, ((context, continuation), start) in enumerate(zip(encoded, starts)):
        if tuple(context) not in row_of:
            row_of[tuple(context)] = len(packed.ids)
            packed.first.append(i)
            own = list(context[start:])
            padding = packed.context_width - len(own)
            packed.ids.append([pad] * padding + own)
            packed.positions.append([0] * padding + list(range(start, len(context))))
            packed.segments.append([-1] * padding + [0] * len(own))
        r = row_of[tuple(context)]
        extra = continuation[:-1]
        begin = len(packed.ids[r])
        packed.ids[r].extend(extra)
        packed.positions[r].extend(range(len(context), len(context) + len(extra)))
        packed.segments[r].extend([max(packed.segments[r]) + 1] * len(extra))
        packed.where.append((r, [packed.context_width - 1] + list(range(begin, begin + len(extra)))))
    return packed


def packed_inputs(
    packed: PackedRows, pad: int, additive: Optional[torch.dtype] = None, prefix_mask: Optional[torch.Tensor] = None
) -> dict[str, torch.Tensor]:
    """Right-padded ids, position ids that restart after the context for each choice, and a (rows, 1, width,
    width) mask in which a token sees earlier context tokens and earlier tokens of its own choice (padding
    sees itself only): boolean (True = attend) for SDPA, or additive in `additive` dtype for eager attention.
    `prefix_mask` (rows, prefix width): the cached prefix of each row, which its tokens (not its padding) see."""
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
    if prefix_mask is not None:
        sees_prefix = prefix_mask.bool().cpu()[:, None, :] & (query >= 0)
        allowed = torch.cat([sees_prefix, allowed], dim=-1)
    mask = allowed if additive is None else torch.zeros(allowed.shape, dtype=additive).masked_fill_(~allowed, torch.finfo(additive).min)
    return {"input_ids": ids, "attention_mask": mask[:, None], "position_ids": positions}


# --- a whole text in windows of the context (loglikelihood_rolling) ---------------------------------
def rolling_windows(tokens: list[int], max_length: int, prefix: int, context_length: int = 1) -> Encoded:
    """Disjoint (context, predicted) windows that predict every token of `tokens` once, as lm-evaluation-harness
    builds them (`get_rolling_token_windows` then `make_disjoint_window`). Each window's input, context plus
    predicted tokens less the last, is at most `max_length` tokens.

    The first window predicts up to `max_length` tokens after `prefix` (the BOS token, or EOS, so the first
    token has something to condition on); each later one predicts the next `max_length - context_length + 1`
    tokens (or what is left) after as many earlier tokens as fit.

    >>> rolling_windows([1, 2, 3, 4, 5], max_length=2, prefix=0)
    [([0], [1, 2]), ([2], [3, 4]), ([3, 4], [5])]
    >>> rolling_windows([], max_length=2, prefix=0)
    []
    """
    if not 1 <= context_length <= max_length:
        raise ValueError(f"context_length must be in 1..max_length ({max_length}), got {context_length}")
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix], tokens[:first])]
    step, done = max_length - context_length + 1, first
    while done < len(tokens):
        end = min(len(tokens), done + step)
        windows.append((tokens[end - max_length - 1 : done], tokens[done:end]))
        done = end
    return windows


def score_rolling(
    model: torch.nn.Module,
    texts: list[Encoded],
    pad: int,
    device: torch.device,
    rows: int,
    forwards: Callable[[int], int] = lambda count: count,
) -> Scored:
    """Each text's summed log-probability over its windows, and whether every token was the argmax.

    The windows of all texts run as one sequence each (`score_full`), at most `rows` per forward, so memory
    stays that of a batch of `rows` full-length sequences however long the texts. A text without tokens
    scores 0. `forwards(n)` is how many forwards to run when these windows need n: under FSDP the largest
    count over the ranks (`EvalModule.synced_count`); the extra ones score a one-token stand-in and are dropped.
    """
    flat = [(i, window) for i, windows in enumerate(texts) for window in windows]
    chunks = [flat[start : start + rows] for start in range(0, len(flat), rows)]
    logprobs, greedy = [0.0] * len(texts), [True] * len(texts)
    for k in range(forwards(len(chunks))):
        if k >= len(chunks):
            score_full(model, [([pad], [pad])], pad, device)  # keeps this rank in step with the others
            continue
        owners, windows = zip(*chunks[k])
        for i, (logprob, is_greedy) in zip(owners, score_full(model, list(windows), pad, device)):
            logprobs[i] += logprob
            greedy[i] = greedy[i] and is_greedy
    return list(zip(logprobs, greedy))
