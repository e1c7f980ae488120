"""Dealing requests to ranks: whole batches, strided, padded so every rank runs the same batches.

Batches are formed once over the global request list (grouped by request type and generation
settings, then by task and shared images, longest first) and only then dealt to ranks. A batch therefore holds the same requests
whatever the world size, so its numbers are identical on 1 or N processes. Ranks with fewer
batches of a kind get padding batches (their last real request, flagged) so that collective
operations inside the model (FSDP, synced generation) never wait on a rank that has finished.
"""

import math
from collections.abc import Callable, Iterator, Sequence, Set as AbstractSet
from dataclasses import dataclass
from typing import Literal, Union

from torch.utils.data import Dataset, DistributedSampler

from lmm_lightning.errors import InputError
from lmm_lightning.requests import Request, RequestType

BatchSize = Union[int, Literal["auto"], dict[str, Union[int, Literal["auto"]]]]


@dataclass(frozen=True)
class BatchIndex:
    """What the sampler yields: request uids and which of them are padding."""

    uids: tuple[int, ...]
    padding: tuple[bool, ...]


def batch_size_for(batch_size: BatchSize, request_type: RequestType) -> int:
    size = batch_size.get(request_type.value, 1) if isinstance(batch_size, dict) else batch_size
    if not isinstance(size, int) or size < 1:
        raise InputError(f"data.batch_size: batch size for {request_type.value} must be at least 1, got {size}")
    return size


def holds_auto(batch_size: BatchSize) -> bool:
    """Whether a batch size (one, or one per request type) still has an `auto` to probe.

    >>> holds_auto("auto"), holds_auto({"loglikelihood": 8, "generate_until": "auto"}), holds_auto(8)
    (True, True, False)
    """
    return "auto" in (batch_size.values() if isinstance(batch_size, dict) else [batch_size])


def resolve_batch_size(
    requests: Sequence[Request], batch_size: BatchSize, probe: Callable[[Request], int], all_min: Callable[[int], int]
) -> BatchSize:
    """`batch_size` with each `auto` replaced by what `probe` finds for the longest request of that type,
    and the smallest of that over all ranks (`all_min`, a collective), so every rank plans the same
    batches. Numbers stay as given; the result names the request types the benchmark has (a type
    without requests runs no batch).

    >>> requests = [Request(0, "t", 0, RequestType.LOGLIKELIHOOD, "context", " a")]
    >>> resolve_batch_size(requests, "auto", probe=lambda request: 16, all_min=lambda size: size)
    {'loglikelihood': 16}
    >>> resolve_batch_size(requests, 4, probe=lambda request: 16, all_min=lambda size: size)
    4
    """
    if not holds_auto(batch_size):
        return batch_size
    sizes = batch_size if isinstance(batch_size, dict) else {t.value: batch_size for t in RequestType}
    resolved = {}
    for kind in RequestType:
        size = sizes.get(kind.value, 1)
        of_kind = [r for r in requests if r.request_type is kind]
        if not of_kind:
            continue
        if size != "auto":
            resolved[kind.value] = size
            continue
        longest = max(of_kind, key=lambda r: (r.length, -r.uid))
        resolved[kind.value] = all_min(probe(longest))
    return resolved


# Batches run request type by request type, in this order; generations also by their settings.
_TYPE_ORDER = {RequestType.LOGLIKELIHOOD: 0, RequestType.GENERATE_UNTIL: 1, RequestType.LOGLIKELIHOOD_ROLLING: 2}


def _group_key(request: Request) -> tuple:
    order = _TYPE_ORDER[request.request_type]
    gen = request.generation
    return (order, gen.max_new_tokens, gen.until) if request.request_type is RequestType.GENERATE_UNTIL else (order, 0, ())


def _sort_key(request: Request) -> tuple:
    """A task's requests side by side, and among them those on the same images (`Request.shares`), so the
    requests of a batch share their few-shot examples or their image and a model computes that prefix once
    (`models.prefix`); then longest first, and requests sharing a context (the choices of a question) side by
    side so a model can run their context once."""
    if request.request_type is RequestType.LOGLIKELIHOOD:
        return (request.task, request.shares, -len(request.context), request.context, -len(request.continuation), request.uid)
    return (request.task, request.shares, -request.length, request.uid)


def global_batches(requests: Sequence[Request], batch_size: BatchSize) -> list[list[Request]]:
    """Homogeneous batches (one request type and generation setting each), longest requests first."""
    groups: dict[tuple, list[Request]] = {}
    for request in requests:
        groups.setdefault(_group_key(request), []).append(request)
    batches = []
    for key in sorted(groups):
        group = sorted(groups[key], key=_sort_key)
        size = batch_size_for(batch_size, group[0].request_type)
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    return batches


def plan_rank(
    requests: Sequence[Request], batch_size: BatchSize, num_replicas: int, rank: int, done: AbstractSet[int] = frozenset()
) -> list[BatchIndex]:
    """The batches one rank runs: strided over each group's batches, padded to the longest rank.

    Requests answered by an earlier run (`done`) are left out before batching: batches are formed
    over the requests still to answer, globally, and only then dealt. So no answered request is
    computed again, whatever limit, offset or batch size the earlier run had, and every rank (of
    any world size) runs the same batches. After a crash, whole batches are done, so the rest keep
    the composition an uninterrupted run gives them.
    """
    pending = [r for r in requests if r.uid not in done] if done else requests
    by_group: dict[tuple, list[list[Request]]] = {}
    for batch in global_batches(pending, batch_size):
        by_group.setdefault(_group_key(batch[0]), []).append(batch)
    plan: list[BatchIndex] = []
    for key in sorted(by_group):
        batches = by_group[key]
        mine = batches[rank::num_replicas]
        plan.extend(BatchIndex(tuple(r.uid for r in b), (False,) * len(b)) for b in mine)
        last = mine[-1][-1] if mine else batches[-1][-1]
        missing = math.ceil(len(batches) / num_replicas) - len(mine)
        plan.extend(BatchIndex((last.uid,), (True,)) for _ in range(missing))
    if not plan and requests:
        # Everything was answered by an earlier run: one padding batch keeps the predict loop (and
        # the gathers at its end) running on every rank instead of being skipped.
        plan.append(BatchIndex((requests[0].uid,), (True,)))
    return plan


class PaddedDistributedSampler(DistributedSampler):
    """A `DistributedSampler` that yields whole padded batches (use with `DataLoader(batch_size=None)`).

    Lightning keeps it as it is because it already is a `DistributedSampler`.
    """

    def __init__(
        self,
        dataset: Dataset,
        requests: Sequence[Request],
        batch_size: BatchSize,
        num_replicas: int,
        rank: int,
        done: AbstractSet[int] = frozenset(),
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.plan = plan_rank(requests, batch_size, num_replicas, rank, done)

    def __iter__(self) -> Iterator[BatchIndex]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)
