"""Prompt prefixes shared by the requests of a batch, computed once.

Few-shot tasks repeat the same examples before every question (MMLU's five per subject, gsm8k's eight), a
system prompt opens every chat, and a vision benchmark asks many questions about one image. The requests of a
batch are grouped by the leading tokens they share (`share_prefixes`); each group's prefix runs once, and its
cached keys/values (`run_prefixes`) serve every request of the group, which then computes only its own tokens.
The sampler keeps such requests in the same batches (`data.sampler`: a task's requests, and those on one image,
side by side).
"""

from dataclasses import dataclass
from typing import Any, Optional

import torch

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
