"""Turning gathered responses into per-document records and per-task metrics (rank 0 only)."""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmm_lightning.data.datamodule import TaskDocuments
from lmm_lightning.metrics import Estimate, bootstrap_mean, mean_stderr
from lmm_lightning.requests import Request, RequestType, Response


class IntegrityError(RuntimeError):
    """A request was answered twice or not at all: the gathered results cannot be trusted."""


@dataclass
class Integrity:
    """Counts in = counts out, written into results.json."""

    documents: int = 0
    requests_expected: int = 0
    requests_answered: int = 0
    padded: int = 0
    dropped: int = 0


@dataclass
class TaskResult:
    """One task's per-document records and aggregated metrics."""

    name: str
    records: list[dict[str, Any]]
    metrics: dict[str, Estimate]
    integrity: Integrity = field(default_factory=Integrity)


def check_exactly_once(
    requests: list[Request], gathered: list[tuple[Response, bool]]
) -> tuple[dict[int, Response], Counter]:
    """Drop padding and verify that every request was answered exactly once; returns answers and padding per task."""
    counts = Counter(response.uid for response, padding in gathered if not padding)
    duplicated = sorted(uid for uid, count in counts.items() if count > 1)
    missing = sorted(set(range(len(requests))) - set(counts))
    if duplicated or missing:
        describe = lambda uids: ", ".join(f"{requests[u].task}/doc {requests[u].doc_id}" for u in uids[:5])
        raise IntegrityError(
            f"responses do not match requests: {len(duplicated)} answered more than once ({describe(duplicated)}), "
            f"{len(missing)} never answered ({describe(missing)})"
        )
    answers = {response.uid: response for response, padding in gathered if not padding}
    return answers, Counter(requests[response.uid].task for response, padding in gathered if padding)


def _argument(request: Request) -> list[Any]:
    if request.request_type is RequestType.LOGLIKELIHOOD:
        return [request.context, request.continuation]
    return [request.context, {"until": list(request.generation.until), "max_new_tokens": request.generation.max_new_tokens}]


def _response_value(request: Request, response: Response) -> Any:
    if request.request_type is RequestType.LOGLIKELIHOOD:
        return [response.logprob, response.is_greedy]
    return response.text


def estimate(values: list[float], bootstrap_iters: int, seed: int) -> Estimate:
    """Mean with a bootstrap standard error and percentile interval (analytic when iters < 2)."""
    array = np.asarray(values, dtype=np.float64)
    if bootstrap_iters >= 2 and len(array) >= 2:
        return bootstrap_mean(array, iters=bootstrap_iters, seed=seed)
    value = float(array.mean())
    stderr = mean_stderr(array)
    return Estimate(value, stderr, value - 1.959964 * stderr, value + 1.959964 * stderr)


def score_task(
    documents: TaskDocuments, requests: list[Request], answers: dict[int, Response], bootstrap_iters: int, seed: int
) -> TaskResult:
    """Score each document of one task from its answered requests."""
    task = documents.task
    by_doc: dict[int, list[Request]] = defaultdict(list)
    for request in requests:
        by_doc[request.doc_id].append(request)
    records, values = [], defaultdict(list)
    for doc_id in sorted(by_doc):
        doc_requests = sorted(by_doc[doc_id], key=lambda r: (r.repeat, r.choice_index))
        responses = [answers[r.uid] for r in doc_requests]
        doc = documents.docs[doc_id]
        scores = task.score(doc, responses)
        for name, value in scores.items():
            values[name].append(value)
        records.append(
            {
                "doc_id": doc_id,
                "doc": doc,
                "target": task.doc_to_target(doc),
                "arguments": [_argument(r) for r in doc_requests],
                "resps": [[_response_value(r, a)] for r, a in zip(doc_requests, responses)],
                "filtered_resps": [_response_value(r, a) for r, a in zip(doc_requests, responses)],
                **scores,
            }
        )
    metrics = {name: estimate(v, bootstrap_iters, seed) for name, v in values.items()}
    integrity = Integrity(documents=len(records), requests_expected=len(requests), requests_answered=len(requests))
    return TaskResult(task.name, records, metrics, integrity)


def finite_or_none(value: float) -> Any:
    """JSON has no NaN; write null instead."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
