"""Turning gathered responses into per-document records and per-task metrics (rank 0 only)."""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from lmm_lightning.data.datamodule import TaskDocuments
from lmm_lightning.errors import InputError
from lmm_lightning.metrics import Estimate
from lmm_lightning.metrics.aggregation import aggregate
from lmm_lightning.metrics.groups import aggregate_group, stability_per_document
from lmm_lightning.requests import Request, RequestType, Response


# Per-document stability statistic -> the corpus metric that averages it over documents.
STABILITY_NAMES = {
    "expected_accuracy": "expected_accuracy",
    "consensus_accuracy": "consensus_accuracy",
    "within_question_variance": "mean_within_question_variance",
    "consistent": "consistency_rate",
}


class IntegrityError(RuntimeError):
    """A request was answered twice or not at all: the gathered results cannot be trusted."""


class ScoringError(InputError):
    """A task's scoring code (process_results, a filter, a metric) failed on one document: named in one line."""


@dataclass
class Integrity:
    """Counts in = counts out, written into results.json."""

    documents: int = 0
    requests_expected: int = 0
    requests_answered: int = 0
    padded: int = 0
    dropped: int = 0
    resumed: int = 0
    empty_generations: int = 0  # legitimate (the model stopped at once) but worth seeing
    nonfinite_logprobs: int = 0  # NaN or infinite log-probabilities the model returned (NaN scored as -inf)


@dataclass
class TaskResult:
    """One task's per-document records and aggregated metrics, keyed by (metric, filter)."""

    name: str
    records: list[dict[str, Any]]
    metrics: dict[tuple[str, str], Estimate]
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
    gen = request.generation
    return [request.context, {"until": list(gen.until), "max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample}]


def _response_value(request: Request, response: Response) -> Any:
    if request.request_type is RequestType.LOGLIKELIHOOD:
        return [response.logprob, response.is_greedy]
    return response.text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, bool, np.number)) and not isinstance(value, str)


def is_finite_logprob(response: Response) -> bool:
    return response.logprob is not None and math.isfinite(response.logprob)


def scoreable(request: Request, response: Response) -> Response:
    """A log-prob as scoring sees it: NaN (a broken forward; the gather carries it as None) and +inf become
    -inf, never greedy, so such a choice never wins. The same whether it comes fresh or from the store."""
    if request.request_type is not RequestType.LOGLIKELIHOOD or is_finite_logprob(response) or response.logprob == -math.inf:
        return response
    return replace(response, logprob=-math.inf, is_greedy=False)


def _scoring_failed(task: Any, doc_id: Optional[int], err: Exception) -> ScoringError:
    where = f"task '{task.name}'" + (f" ({task.spec.source})" if task.spec.source else "")
    what = f"process_results ({task.spec.process_results})" if task.spec.process_results else "scoring"
    doc = f", doc_id {doc_id}" if doc_id is not None else ""
    return ScoringError(f"{where}{doc}: {what} failed: {type(err).__name__}: {err}")


def score_task(
    documents: TaskDocuments, requests: list[Request], answers: dict[int, Response], bootstrap_iters: int, seed: int
) -> TaskResult:
    """Score each document of one task from its answered requests, then aggregate each (metric, filter)."""
    task = documents.task
    by_doc: dict[int, list[Request]] = defaultdict(list)
    for request in requests:
        by_doc[request.doc_id].append(request)
    records: list[dict[str, Any]] = []
    values: dict[tuple[str, str], list[Any]] = defaultdict(list)
    repeats: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    single_filter = len(task.filters) == 1
    for doc_id in sorted(by_doc):
        doc_requests = sorted(by_doc[doc_id], key=lambda r: (r.repeat, r.choice_index))
        responses = [scoreable(r, answers[r.uid]) for r in doc_requests]
        doc = documents.docs[doc_id]
        try:
            records.append(_score_document(task, doc_id, doc, doc_requests, responses, values, repeats))
        except Exception as err:  # noqa: BLE001 - the task's own code: whatever it raises, name the document
            raise _scoring_failed(task, doc_id, err) from err

    try:
        metrics = {key: aggregate(task.aggregation(key[0]), v, bootstrap_iters, seed) for key, v in values.items()}
    except Exception as err:  # noqa: BLE001
        raise _scoring_failed(task, None, err) from err
    for (metric, filter_name), matrix in repeats.items():
        per_doc = stability_per_document(np.asarray(matrix, dtype=np.float64))
        key = metric if single_filter else f"{metric},{filter_name}"
        for stat, per_doc_values in per_doc.items():
            for record, v in zip(records, per_doc_values):
                record.setdefault("stability", {}).setdefault(key, {})[stat] = float(v)
            corpus_name = STABILITY_NAMES[stat]
            metrics[(f"{metric}_{corpus_name}", filter_name)] = aggregate("mean", list(per_doc_values), bootstrap_iters, seed)
    empty = sum(1 for r in requests if r.request_type is RequestType.GENERATE_UNTIL and answers[r.uid].text == "")
    nonfinite = sum(
        1 for r in requests if r.request_type is RequestType.LOGLIKELIHOOD and not is_finite_logprob(answers[r.uid])
    )
    integrity = Integrity(
        documents=len(records), requests_expected=len(requests), requests_answered=len(requests),
        empty_generations=empty, nonfinite_logprobs=nonfinite,
    )
    return TaskResult(task.name, records, metrics, integrity)


def _score_document(
    task: Any,
    doc_id: int,
    doc: dict[str, Any],
    doc_requests: list[Request],
    responses: list[Response],
    values: dict[tuple[str, str], list[Any]],
    repeats: dict[tuple[str, str], list[list[float]]],
) -> dict[str, Any]:
    """One document's record; its metric values are added to `values` (and `repeats`)."""
    single_filter = len(task.filters) == 1
    filtered = task.filtered(responses)
    generation = task.spec.output_type == "generate_until"
    per_request = {name: [value] if generation else value for name, value in filtered.items()}
    record: dict[str, Any] = {
        "doc_id": doc_id,
        "doc": doc,
        "target": task.doc_to_target(doc),
        "arguments": [_argument(r) for r in doc_requests],
        "resps": [[_response_value(r, a)] for r, a in zip(doc_requests, responses)],
        # One entry per request, as lm-evaluation-harness writes it (a generation's filtered text is ["Paris"]).
        "filtered_resps": next(iter(per_request.values())) if single_filter else per_request,
    }
    for filter_name, value in filtered.items():
        for metric, score in task.score_value(doc, value).items():
            values[(metric, filter_name)].append(score)
            record[metric if single_filter else f"{metric},{filter_name}"] = score
    if task.spec.repeats > 1:
        for filter_name, metrics in task.score_repeats(doc, responses).items():
            for metric, scores in metrics.items():
                if all(_is_number(s) for s in scores):
                    repeats[(metric, filter_name)].append([float(s) for s in scores])
                    key = metric if single_filter else f"{metric},{filter_name}"
                    record[f"{key}_per_repeat"] = [float(s) for s in scores]
    return record


def score_group(
    subtask_results: list[TaskResult], weight_by_size: dict[str, bool]
) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(score, stderr, size) of a group for every (metric, filter) that all its subtasks report."""
    if not subtask_results:
        return {}
    shared = set.intersection(*(set(r.metrics) for r in subtask_results))
    out = {}
    for key in sorted(shared):
        estimates = [r.metrics[key] for r in subtask_results]
        sizes = [len(r.records) for r in subtask_results]
        score, stderr = aggregate_group(
            [e.value for e in estimates], [e.stderr for e in estimates], sizes, weight_by_size.get(key[0], True)
        )
        out[key] = (score, stderr, sum(sizes))
    return out


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN; write null instead."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
