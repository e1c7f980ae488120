"""Collecting responses on each rank and gathering them with torchmetrics `cat` states."""

import math
from typing import Optional

import torch
from torchmetrics import Metric

from lmm_lightning.requests import Response, Usage

_NAN = float("nan")


class Gathered:
    """Every rank's computed (response, is_padding) pairs, in rank order, and the stored answers the
    ranks handed in (resume: each held by one rank, the lowest whose store has it).

    A plain holder on purpose, not a list or a dataclass: torchmetrics passes whatever `compute()`
    returns through `apply_to_collection`, which would rebuild every `Response` with `copy.deepcopy`
    (twice; about 0.4 ms per record on every rank, 6.5 s for 100,000 records)."""

    __slots__ = ("pairs", "resumed")

    def __init__(self, pairs: list[tuple[Response, bool]], resumed: Optional[list[Response]] = None) -> None:
        self.pairs = pairs
        self.resumed = resumed if resumed is not None else []

    def __len__(self) -> int:
        return len(self.pairs)


class ResponseCollector(Metric):
    """Holds one rank's responses as tensors; `compute()` returns every rank's, in rank order.

    Texts travel as UTF-8 bytes with their lengths, so the whole gather is a handful of
    tensor collectives (gloo or NCCL) rather than pickled objects. Stored answers a rank resumes travel
    the same way, flagged, so answers stored on any node's folder reach rank 0.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__(sync_on_compute=True, compute_with_cache=False)
        for name in ("uid", "padding", "resumed", "logprob", "is_greedy", "text_bytes", "text_length", "prompt_tokens", "completion_tokens", "retries", "latency"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, responses: list[Response], padding: list[bool], resumed: bool = False) -> None:
        """Add computed responses (with their padding flags), or with `resumed` the stored answers this rank holds.

        Every rank should call it at least once, even with nothing: a state no rank filled is gathered
        as floats, which would turn uids and bytes into floats on the ranks that did fill it."""
        encoded = [(r.text or "").encode("utf-8") if r.text is not None else None for r in responses]
        device = self.device
        self.uid.append(torch.tensor([r.uid for r in responses], dtype=torch.long, device=device))
        self.padding.append(torch.tensor(padding, dtype=torch.bool, device=device))
        self.resumed.append(torch.full((len(responses),), resumed, dtype=torch.bool, device=device))
        self.logprob.append(
            torch.tensor([_NAN if r.logprob is None else r.logprob for r in responses], dtype=torch.float64, device=device)
        )
        self.is_greedy.append(
            torch.tensor([-1 if r.is_greedy is None else int(r.is_greedy) for r in responses], dtype=torch.int8, device=device)
        )
        self.text_length.append(
            torch.tensor([-1 if e is None else len(e) for e in encoded], dtype=torch.long, device=device)
        )
        self.text_bytes.append(torch.tensor(list(b"".join(e for e in encoded if e)), dtype=torch.uint8, device=device))
        # A served model's cost per response (-1 where the model reported none), as flat tensors like the rest.
        for name in ("prompt_tokens", "completion_tokens", "retries"):
            values = [-1 if r.usage is None else getattr(r.usage, name) for r in responses]
            getattr(self, name).append(torch.tensor(values, dtype=torch.long, device=device))
        self.latency.append(
            torch.tensor([r.usage.latency_s if r.usage else _NAN for r in responses], dtype=torch.float64, device=device)
        )

    def compute(self) -> Gathered:
        """Every gathered (response, is_padding) pair, and apart from them the resumed answers."""
        cat = lambda x: x if isinstance(x, torch.Tensor) else torch.cat(x) if x else torch.empty(0)
        uids = cat(self.uid).tolist()
        padding = cat(self.padding).tolist()
        resumed = cat(self.resumed).tolist()
        logprobs = cat(self.logprob).tolist()
        greedy = cat(self.is_greedy).tolist()
        lengths = cat(self.text_length).tolist()
        data = bytes(cat(self.text_bytes).cpu().numpy().tobytes())
        tokens = zip(*(cat(getattr(self, name)).tolist() for name in ("prompt_tokens", "completion_tokens", "retries")))
        latencies = cat(self.latency).tolist()
        out, stored, position = [], [], 0
        rows = zip(uids, padding, resumed, logprobs, greedy, lengths, tokens, latencies)
        for uid, pad, from_store, logprob, is_greedy, length, (prompt, completion, retries), latency in rows:
            text = None
            if length >= 0:
                text = data[position : position + length].decode("utf-8")
                position += length
            response = Response(
                uid=uid,
                logprob=None if math.isnan(logprob) else logprob,
                is_greedy=None if is_greedy < 0 else bool(is_greedy),
                text=text,
                usage=None if prompt < 0 else Usage(prompt, completion, latency, retries),
            )
            if from_store:
                stored.append(response)
            else:
                out.append((response, bool(pad)))
        return Gathered(out, stored)
