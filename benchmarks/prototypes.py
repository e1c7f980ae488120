"""Prototypes of optimisations proposed for the library, to measure their gain (not used by the library).

`PackedHFCausalLM` scores multiple-choice requests in ONE forward per batch instead of two:
each distinct context is one row, `context | choice 1 | choice 2 | ...`, with a 4D attention mask
in which every choice sees the context and itself only, and position ids that restart after
the context for each choice. The language-model head runs only on the positions whose
log-probabilities are needed (the context's last token and each choice's tokens but its last),
not on every context token. Usable as `--model.class_path prototypes.PackedHFCausalLM` from the
scripts in this folder (they put it on the path).
"""

import torch
import torch.nn.functional as F

from lmm_lightning.models import HFCausalLM


def pack_rows(encoded: list[tuple[list[int], list[int]]]) -> tuple[list[list[int]], list[list[int]], list[list[int]], list[tuple[int, list[int]]]]:
    """Rows of `context + choices[:-1]` per distinct context, their position ids, segment ids
    (0 = context, j = choice j) and, per request, (row, indices of the positions predicting its tokens)."""
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    segments: list[list[int]] = []
    row_of: dict[tuple[int, ...], int] = {}
    where: list[tuple[int, list[int]]] = []
    for context, continuation in encoded:
        key = tuple(context)
        if key not in row_of:
            row_of[key] = len(rows)
            rows.append(list(context))
            positions.append(list(range(len(context))))
            segments.append([0] * len(context))
        r = row_of[key]
        segment = max(segments[r]) + 1
        start = len(rows[r])
        extra = continuation[:-1]
        rows[r].extend(extra)
        positions[r].extend(range(len(context), len(context) + len(extra)))
        segments[r].extend([segment] * len(extra))
        where.append((r, [len(context) - 1] + list(range(start, start + len(extra)))))
    return rows, positions, segments, where


def packed_mask(
    segments: list[list[int]], positions: list[list[int]], width: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive (rows, 1, width, width) mask (0 = attend, dtype's minimum = not) and position ids:
    a token attends to earlier context tokens and to earlier tokens of its own choice; padding
    attends to itself only. Additive, so eager attention takes it as well as SDPA."""
    seg = torch.full((len(segments), width), -1, dtype=torch.long)
    pos = torch.zeros((len(segments), width), dtype=torch.long)
    for i, (s, p) in enumerate(zip(segments, positions)):
        seg[i, : len(s)] = torch.tensor(s)
        pos[i, : len(p)] = torch.tensor(p)
    index = torch.arange(width)
    causal = index[None, :, None] >= index[None, None, :]  # (1, q, k): key not after query in the row
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    allowed = causal & (k_seg >= 0) & (q_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding rows: attend to themselves
    additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return additive[:, None], pos


class PackedHFCausalLM(HFCausalLM):
    """HFCausalLM whose shared-context scoring runs one forward per batch and the head on needed positions only."""

    def _score_shared_contexts(self, encoded: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        rows, positions, segments, where = pack_rows(encoded)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        mask, pos = packed_mask(segments, positions, width, self.model.dtype)
        device = self.device
        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)).last_hidden_state
        row_index = torch.tensor([r for r, idx in where for _ in idx], device=device)
        col_index = torch.tensor([c for _, idx in where for c in idx], device=device)
        logprobs = F.log_softmax(head(hidden[row_index, col_index]).float(), dim=-1)
        out, start = [], 0
        for (_, continuation), (_, idx) in zip(encoded, where):
            target = torch.tensor(continuation, device=device)
            rows_lp = logprobs[start : start + len(idx)]
            start += len(idx)
            out.append((rows_lp.gather(-1, target[:, None]).sum().item(), bool((rows_lp.argmax(-1) == target).all().item())))
        return out
