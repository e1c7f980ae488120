"""Prompt prefixes shared by the requests of a batch, computed once.

Few-shot tasks repeat the same examples before every question (MMLU's five per subject, gsm8k's eight), a
system prompt opens every chat, and a vision benchmark asks many questions about one image. The requests of a
batch are grouped by the leading tokens they share (`share_prefixes`); each group's prefix runs once, and its
cached keys/values (`run_prefixes`) serve every request of the group, which then computes only its own tokens.
The sampler keeps such requests in the same batches (`data.sampler`: a task's requests, and those on one image,
side by side), and a text model keeps the last prefixes it computed for the next batches (`PrefixMemo`): a
subject's five examples run once for all its questions, not once per batch.
"""

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from lmm_lightning.models.loglikelihood import accepts, pad_left

MIN_SHARED_TOKENS = 16  # a shorter common prefix is not worth a forward of its own


def common_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share.

    >>> common_length([1, 2, 3], [1, 2, 4, 5]), common_length([1], [2])
    (2, 0)
    """
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class SharedPrefixes:
    """Distinct prefixes and, for each row, which one it starts with (`group_of`) and how long it is (`starts`)."""

    prefixes: list[list[int]]
    group_of: list[int]

    def start(self, row: int) -> int:
        return len(self.prefixes[self.group_of[row]])

    @property
    def saved_tokens(self) -> int:
        """Prefix tokens not computed again: each group's prefix length times its rows beyond the first."""
        counts = [self.group_of.count(g) for g in range(len(self.prefixes))]
        return sum((count - 1) * len(prefix) for count, prefix in zip(counts, self.prefixes))


def share_prefixes(
    rows: list[list[int]], keep: int = 1, min_length: int = MIN_SHARED_TOKENS, keys: Optional[list[Any]] = None
) -> Optional[SharedPrefixes]:
    """Group consecutive rows that share at least `min_length` leading tokens (and the same `keys[i]`: a vision
    model's rows share a prefix only with rows on the same images, whose image tokens are the same ids); each
    row keeps at least `keep` tokens of its own after its group's prefix (the last context token predicts the
    first answer token). A row that shares with no neighbour is a group alone, its prefix all of it but `keep`
    tokens. None when no group of two or more rows shares `min_length` tokens, or some row is too short to
    split: nothing to gain.

    >>> shared = share_prefixes([[7] * 20 + [1, 2], [7] * 20 + [3], [5, 6, 1]], min_length=16)
    >>> [len(p) for p in shared.prefixes], shared.group_of
    ([20, 2], [0, 0, 1])
    """
    if any(len(row) <= keep for row in rows):
        return None
    prefixes: list[list[int]] = []
    group_of: list[int] = []
    members: list[int] = []
    for i, row in enumerate(rows):
        limit = len(row) - keep
        if prefixes and (keys is None or keys[i] == keys[i - 1]):
            shared = min(common_length(prefixes[-1], row), limit)
            if shared >= min_length:
                prefixes[-1] = prefixes[-1][:shared]
                group_of.append(len(prefixes) - 1)
                members[-1] += 1
                continue
        prefixes.append(list(row[:limit]))
        group_of.append(len(prefixes) - 1)
        members.append(1)
    if not any(count > 1 and len(prefix) >= min_length for count, prefix in zip(members, prefixes)):
        return None
    return SharedPrefixes(prefixes, group_of)


@dataclass
class PrefixState:
    """The prefixes' keys/values, one row per prefix (left-padded), and their attention mask."""

    cache: Any
    mask: torch.Tensor  # (prefixes, width): 1 on prefix tokens, 0 on the left padding

    def for_rows(self, group_of: list[int]) -> tuple[Any, torch.Tensor]:
        """The cache and mask repeated for rows whose prefixes are `group_of` (the cache is reordered in place)."""
        index = torch.tensor(group_of, device=self.mask.device)
        self.cache.reorder_cache(index)
        return self.cache, self.mask[index]


def run_prefixes(model: torch.nn.Module, prefixes: list[list[int]], pad: int, device: torch.device, **inputs: Any) -> PrefixState:
    """One forward over the distinct prefixes (left-padded, so each ends at the last column), keeping their
    keys/values. `inputs` adds what the model needs besides token ids (a vision model's pixel values)."""
    ids, mask = pad_left(prefixes, pad)
    return run_prefix_inputs(model, ids.to(device), mask.to(device), **inputs)


def run_prefix_inputs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, **inputs: Any) -> PrefixState:
    """As `run_prefixes`, on prefixes already padded on the left."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **inputs, **keep)
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    return PrefixState(cache, mask)


Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values, (1, heads, tokens, head size)


class PrefixMemo:
    """The keys/values of the last `size` prefixes computed, one row each and unpadded, for later batches. Only an
    exact match is reused: a prefix's keys/values are always those of one forward over exactly its tokens, so a
    request's numbers do not depend on which batches its rank ran before (world-size invariance). Only text
    models use it (a vision prompt's image tokens are the same ids for every image)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.entries: dict[tuple[int, ...], Layers] = {}
        self.stamp: Optional[tuple[int, int]] = None

    def follow(self, model: torch.nn.Module) -> "PrefixMemo":
        """Forget everything when the model or its weights changed since the last batch: another model, or a
        training step (an optimizer updates parameters in place, which bumps each tensor's version counter)."""
        stamp = (id(model), sum(parameter._version for parameter in model.parameters()))
        if stamp != self.stamp:
            self.entries, self.stamp = {}, stamp
        return self

    def get(self, prefix: list[int]) -> Optional[Layers]:
        return self.entries.get(tuple(prefix))

    def add(self, prefix: list[int], layers: Layers) -> None:
        self.entries.pop(tuple(prefix), None)
        self.entries[tuple(prefix)] = layers
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))


def plain_layers(model: torch.nn.Module) -> bool:
    """Whether every layer of the model keeps a plain, growing key/value cache (no sliding window, no
    recurrent state), which `memo_prefixes` can pad and join; other models compute their prefixes per batch."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(kind == "full_attention" for kind in types) and not getattr(config, "sliding_window", None)


def memo_prefixes(model: torch.nn.Module, shared: SharedPrefixes, device: torch.device, memo: PrefixMemo) -> PrefixState:
    """`run_prefixes` through the memo: each prefix computed alone (one unpadded row) unless an earlier batch
    computed exactly it, then joined left-padded into one cache, as `run_prefixes` gives it."""
    pieces: list[Layers] = []
    for prefix in shared.prefixes:
        layers = memo.get(prefix)
        if layers is None:
            keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
            out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, **keep)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            memo.add(list(prefix), layers)
        pieces.append(layers)
    width = max(len(prefix) for prefix in shared.prefixes)
    joined = []
    for layer in range(len(pieces[0])):
        keys = [F.pad(piece[layer][0], (0, 0, width - len(prefix), 0)) for piece, prefix in zip(pieces, shared.prefixes)]
        values = [F.pad(piece[layer][1], (0, 0, width - len(prefix), 0)) for piece, prefix in zip(pieces, shared.prefixes)]
        joined.append((torch.cat(keys), torch.cat(values)))
    mask = torch.zeros((len(shared.prefixes), width), dtype=torch.long, device=device)
    for i, prefix in enumerate(shared.prefixes):
        mask[i, width - len(prefix) :] = 1
    return PrefixState(DynamicCache(ddp_cache_data=joined), mask)


def group_by_prefix(rows: list[list[int]], lengths: list[int], keep: int = 1, min_length: int = MIN_SHARED_TOKENS) -> Optional[SharedPrefixes]:
    """Group rows by their first `lengths[i]` tokens (the part of its prompt a request shares with its whole task,
    `Request.shared_prefix`), each row keeping at least `keep` tokens of its own; a row whose shared part is shorter
    than `min_length` is a group alone with its first token as prefix. Fixed by each request alone, never by its
    batch. None when no row shares `min_length` tokens, or some row is too short to split.

    >>> shared = group_by_prefix([[7] * 20 + [1], [7] * 20 + [2, 3], [5, 6]], [20, 20, 0], min_length=16)
    >>> [len(p) for p in shared.prefixes], shared.group_of
    ([20, 1], [0, 0, 1])
    """
    if any(len(row) <= keep for row in rows):
        return None
    cuts = [min(length, len(row) - keep) for row, length in zip(rows, lengths)]
    if not any(cut >= min_length for cut in cuts):
        return None
    index: dict[tuple[int, ...], int] = {}
    group_of = []
    for row, cut in zip(rows, cuts):
        prefix = tuple(row[: cut if cut >= min_length else 1])
        group_of.append(index.setdefault(prefix, len(index)))
    return SharedPrefixes([list(prefix) for prefix in index], group_of)
