"""Rank 0's scoring as one pure function: `evaluate(benchmark, answers, settings) -> EvaluationResult`.

Every request is checked to be answered exactly once; each task's documents are scored into records
and their values aggregated into corpus metrics with bootstrap errors; groups combine their tasks.
No trainer and no callback state: the callback gathers the answers and hands the result on.
"""

import hashlib
import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from lmm_lightning.data import BenchmarkDataModule, TaskDocuments
from lmm_lightning.data.loading import image_digest
from lmm_lightning.errors import InputError
from lmm_lightning.evaluation.judge import Judgement
from lmm_lightning.evaluation.result import (
    EvaluationResult, GroupResult, Integrity, JudgingSummary, MetricKey, Settings, TaskResult, UsageTotals,
)
from lmm_lightning.evaluation.results import finite_or_none, record_field, record_value
from lmm_lightning.metrics import Estimate
from lmm_lightning.metrics.aggregation import aggregate, is_number
from lmm_lightning.metrics.bootstrap import SEMethod, cluster_mean_stderr
from lmm_lightning.metrics.groups import aggregate_group
from lmm_lightning.metrics.stability import STABILITY_NAMES, stability_per_document
from lmm_lightning.requests import Request, RequestType, Response, Usage
from lmm_lightning.tasks import GroupSpec, Task

# The normal 97.5% quantile, to the six decimals the group intervals of results.json have always used.
Z95 = 1.959964


class IntegrityError(RuntimeError):
    """A request was answered twice or not at all: the gathered results cannot be trusted."""


class ScoringError(InputError):
    """A task's scoring code (process_results, a filter, a metric) failed on one document: named in one line."""


@dataclass(frozen=True)
class Benchmark:
    """What was asked: each task's documents, every request (`requests[uid]`), and the groups of tasks."""

    documents: dict[str, TaskDocuments]
    requests: list[Request]
    groups: list[GroupSpec] = field(default_factory=list)
    group_subtasks: dict[str, list[str]] = field(default_factory=dict)  # group -> the tasks it combines

    @classmethod
    def from_datamodule(cls, datamodule: BenchmarkDataModule) -> "Benchmark":
        return cls(datamodule.documents, datamodule.requests, datamodule.groups, datamodule.group_subtasks)


@dataclass(frozen=True)
class Answers:
    """What rank 0 holds: every rank's gathered (response, is_padding) pairs, and the answers an
    earlier run stored (resume)."""

    gathered: list[tuple[Response, bool]]
    resumed: list[Response] = field(default_factory=list)
    # A judged task's judgement of each document (task -> doc_id -> Judgement), and the judge's identity.
    judgements: dict[str, dict[int, Judgement]] = field(default_factory=dict)
    judge: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerCounts:
    """One task's responses that were not computed and scored once each, as `check_exactly_once` met them."""

    padded: int = 0  # padding responses gathered
    dropped: int = 0  # gathered responses left out of scoring
    resumed: int = 0  # answers read from the store


def evaluate(benchmark: Benchmark, answers: Answers, settings: Settings) -> EvaluationResult:
    """Score every task of `benchmark` from `answers`, then every group from its tasks."""
    responses, counts = check_exactly_once(benchmark.requests, answers)
    by_task: dict[str, list[Request]] = {name: [] for name in benchmark.documents}
    for request in benchmark.requests:
        by_task[request.task].append(request)
    usage = usage_by_task(benchmark.requests, answers)
    tasks = [
        score_task(
            benchmark.documents[name], requests, responses, settings.bootstrap_iters, settings.seed,
            counts.get(name, AnswerCounts()), answers.judgements.get(name), usage.get(name), answers.judge,
        )
        for name, requests in by_task.items()
    ]
    by_name = {result.name: result for result in tasks}
    groups = [score_group(spec, [by_name[t] for t in benchmark.group_subtasks[spec.group]]) for spec in benchmark.groups]
    return EvaluationResult(tasks, groups, settings)


def check_exactly_once(requests: list[Request], answers: Answers) -> tuple[dict[int, Response], dict[str, AnswerCounts]]:
    """Drop padding and verify that every request was answered exactly once; returns each request's
    answer, and per task the padding gathered, the responses dropped and the answers resumed."""
    kept = [response for response, padding in answers.gathered if not padding] + list(answers.resumed)
    counts = Counter(response.uid for response in kept)
    duplicated = sorted(uid for uid, count in counts.items() if count > 1)
    missing = sorted(set(range(len(requests))) - set(counts))
    if duplicated or missing:
        describe = lambda uids: ", ".join(f"{requests[u].task}/doc {requests[u].doc_id}" for u in uids[:5])
        raise IntegrityError(
            f"responses do not match requests: {len(duplicated)} answered more than once ({describe(duplicated)}), "
            f"{len(missing)} never answered ({describe(missing)})"
        )
    task_of = lambda response: requests[response.uid].task
    padded = Counter(task_of(response) for response, padding in answers.gathered if padding)
    fresh = Counter(task_of(response) for response, padding in answers.gathered if not padding)
    dropped = Counter(task_of(response) for response, _ in answers.gathered) - fresh  # gathered, not kept
    resumed = Counter(task_of(response) for response in answers.resumed)
    tasks = dict.fromkeys(request.task for request in requests)
    return {r.uid: r for r in kept}, {t: AnswerCounts(padded[t], dropped[t], resumed[t]) for t in tasks}


def usage_by_task(requests: list[Request], answers: Answers) -> dict[str, UsageTotals]:
    """Per task whose answers report a cost (a served model): this run's totals, and how many were resumed."""
    fresh: dict[str, list[Usage]] = defaultdict(list)
    resumed: Counter = Counter()
    served: set[str] = set()
    for response, padding in answers.gathered:
        if response.usage is not None:
            served.add(requests[response.uid].task)
            if not padding:
                fresh[requests[response.uid].task].append(response.usage)
    for response in answers.resumed:
        resumed[requests[response.uid].task] += 1
        if response.usage is not None:
            served.add(requests[response.uid].task)
    return {task: UsageTotals.of(fresh[task], resumed[task]) for task in sorted(served)}


def judging_summary(judgements: dict[int, Judgement], judge: dict[str, Any]) -> JudgingSummary:
    asked = [j for j in judgements.values() if j.source == "judge"]
    unparsed = sorted(doc_id for doc_id, j in judgements.items() if not j.parsed)
    usages = [j.usage for j in asked if j.usage is not None and not j.resumed]
    served = any(j.usage is not None for j in asked)
    return JudgingSummary(
        model=judge,
        documents=len(judgements),
        asked=len(asked),
        by_rule=len(judgements) - len(asked),
        resumed=sum(j.resumed for j in asked),
        unparsed=len(unparsed),
        unparsed_doc_ids=unparsed,
        usage=UsageTotals.of(usages, sum(j.resumed for j in asked)) if served else None,
    )


# --- one task -----------------------------------------------------------------------------------
@dataclass
class DocumentScores:
    """One document's value of each metric, and with `repeats` > 1 each repeat's numeric scores."""

    values: dict[MetricKey, Any]
    per_repeat: dict[MetricKey, list[float]]
    cluster: Any = None  # the document's value of the task's `cluster_key` (None: documents are the units)


def score_task(
    documents: TaskDocuments,
    requests: list[Request],
    answers: dict[int, Response],
    bootstrap_iters: int,
    seed: int,
    counts: AnswerCounts = AnswerCounts(),
    judgements: Optional[dict[int, Judgement]] = None,
    usage: Optional[UsageTotals] = None,
    judge: Optional[dict[str, Any]] = None,
) -> TaskResult:
    """Score each document of one task from its answered requests, then aggregate each metric.

    `counts`: the task's padding, dropped and resumed responses (none for answers handed over as they are).
    A judged task needs `judgements` (doc_id -> Judgement): its documents are scored on the judged value, and
    one whose judge answer was unreadable is recorded but not scored.
    """
    if task_is_judged := documents.task.spec.judge is not None:
        missing = sorted(set(r.doc_id for r in requests) - set(judgements or {}))
        if missing:
            raise IntegrityError(f"task '{documents.task.name}' is judged, but {len(missing)} document(s) have no judgement (doc_id {missing[:5]})")
    task = documents.task
    single_filter = len(task.filters) == 1
    by_doc: dict[int, list[Request]] = defaultdict(list)
    for request in requests:
        by_doc[request.doc_id].append(request)
    records, scores = [], []
    for doc_id in sorted(by_doc):
        doc_requests = sorted(by_doc[doc_id], key=lambda r: (r.repeat, r.choice_index))
        responses = [scoreable(r, answers[r.uid]) for r in doc_requests]
        doc = documents.docs[doc_id]
        judgement = judgements[doc_id] if task_is_judged else None
        try:
            record, doc_scores = _score_document(task, doc_id, doc, doc_requests, responses, single_filter, judgement)
        except Exception as err:  # noqa: BLE001 - the task's own code: whatever it raises, name the document
            raise _scoring_failed(task, doc_id, err) from err
        cluster = cluster_of(task, doc_id, doc, documents)
        if cluster is not None:  # the label `power` and `compare` read back (an image's is not in `doc`)
            record["cluster"] = list(cluster) if isinstance(cluster, tuple) else cluster
        records.append(record)
        scores.append(replace(doc_scores, cluster=cluster))
    metrics = _aggregate(task, scores, bootstrap_iters, seed)
    metrics.update(_stability(records, scores, single_filter, bootstrap_iters, seed))
    integrity = _count_integrity(requests, answers, len(records), counts)
    judging = judging_summary(judgements, judge or {}) if task_is_judged else None
    return TaskResult(task, records, metrics, integrity, documents.n_original, usage, judging)


def _score_document(
    task: Task,
    doc_id: int,
    doc: dict[str, Any],
    doc_requests: list[Request],
    responses: list[Response],
    single_filter: bool,
    judgement: Optional[Judgement] = None,
) -> tuple[dict[str, Any], DocumentScores]:
    """One document's record (a line of its samples file), and its metric values (a judged document's from
    its judged value; none when the judge's answer could not be read)."""
    per_request = {name: task.kind.per_request(value) for name, value in task.filtered(responses).items()}
    record: dict[str, Any] = {
        "doc_id": doc_id,
        "doc": doc,
        "target": task.doc_to_target(doc),
        "arguments": [_argument(r) for r in doc_requests],
        "resps": [[_response_value(r, a)] for r, a in zip(doc_requests, responses)],
        # One entry per request, as lm-evaluation-harness writes it (a generation's filtered text is ["Paris"]).
        "filtered_resps": next(iter(per_request.values())) if single_filter else per_request,
    }
    if judgement is not None:
        record["judge"] = judgement.record()
        filter_name = next(iter(per_request))
        judged = task.score_judged(doc, judgement.value) if judgement.parsed else {}
        values = {MetricKey(metric, filter_name): value for metric, value in judged.items()}
    else:
        values = {
            MetricKey(metric, filter_name): value
            for filter_name, metrics in task.score(doc, responses).items()
            for metric, value in metrics.items()
        }
    for key, value in values.items():
        record[record_field(key, single_filter)] = value
    per_repeat = _per_repeat(task, doc, responses) if task.spec.repeats > 1 else {}
    for key, repeat_scores in per_repeat.items():
        record[record_field(key, single_filter, "_per_repeat")] = repeat_scores
    return record, DocumentScores(values, per_repeat)


def _per_repeat(task: Task, doc: dict[str, Any], responses: list[Response]) -> dict[MetricKey, list[float]]:
    """Each repeat scored alone, for the metrics whose every repeat scores a number (k-sample stability)."""
    out = {}
    for filter_name, metrics in task.score_repeats(doc, responses).items():
        for metric, repeat_scores in metrics.items():
            if all(is_number(s) for s in repeat_scores):
                out[MetricKey(metric, filter_name)] = [float(s) for s in repeat_scores]
    return out


def cluster_value(value: Any) -> Any:
    """A `cluster_key` field's value as a cluster label: an image column (a decoded picture, its encoded bytes,
    a list of pictures) is labelled by its content, so documents showing the same picture share a cluster
    whether or not the dataset has an image id (ScienceQA, AI2D).

    >>> cluster_value("img_7"), cluster_value([1, 2])
    ('img_7', (1, 2))
    >>> cluster_value({"bytes": b"PNG..."}) == cluster_value({"bytes": b"PNG...", "path": None})
    True
    """
    if hasattr(value, "tobytes") and hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        return "image:" + image_digest(value)
    if isinstance(value, dict) and isinstance(value.get("bytes"), bytes):
        return "image:" + hashlib.sha256(value["bytes"]).hexdigest()
    if isinstance(value, bytes):
        return "bytes:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, (list, tuple)):
        return tuple(cluster_value(v) for v in value)
    return value


def cluster_of(task: Task, doc_id: int, doc: dict[str, Any], documents: Optional[TaskDocuments] = None) -> Any:
    """The document's cluster (its `cluster_key` field, an image column by its content: read from the split, the
    text documents leave images out), or None for a task without one."""
    key = task.spec.cluster_key
    if key is None:
        return None
    if key not in doc and documents is not None:
        value = documents.raw_value(doc_id, key)
        if value is not None:
            return cluster_value(value)
    if key not in doc or doc[key] is None:
        raise InputError(f"{task.spec.source or task.name}: field 'cluster_key': document {doc_id} has no {key!r} "
                         f"(its columns are {sorted(doc)}); expected a column every document has")
    return cluster_value(doc[key])


def _aggregate(task: Task, scores: list[DocumentScores], bootstrap_iters: int, seed: int) -> dict[MetricKey, Estimate]:
    """Each metric's per-document values into one corpus estimate, with the task's aggregation (resampling the
    task's clusters where it names a `cluster_key`)."""
    values: dict[MetricKey, list[Any]] = defaultdict(list)
    clusters: dict[MetricKey, list[Any]] = defaultdict(list)
    for doc_scores in scores:
        for key, value in doc_scores.values.items():
            values[key].append(value)
            clusters[key].append(doc_scores.cluster)
    key_name = task.spec.cluster_key
    try:
        out = {
            key: aggregate(task.aggregation(key.metric), v, bootstrap_iters, seed,
                           clusters=clusters[key] if key_name else None, cluster_key=key_name)
            for key, v in values.items()
        }
    except Exception as err:  # noqa: BLE001
        raise _scoring_failed(task, None, err) from err
    for key, estimate in out.items():
        warn_if_errors_disagree(task.name, key, estimate)
    return out


class StatisticsWarning(UserWarning):
    """A metric's analytic and bootstrap standard errors disagree: too few documents, or a skewed score."""


DISAGREEMENT = 0.25  # the share by which the analytic and bootstrap standard errors may differ before a warning


def warn_if_errors_disagree(task: str, key: MetricKey, estimate: Estimate) -> None:
    """Warn when a mean's closed-form stderr and its bootstrap's differ by more than `DISAGREEMENT` of the larger:
    their interval is then not to be trusted (small n, skew); results.json `standard_errors` holds both."""
    method = estimate.method
    analytic, bootstrap = estimate.stderr, method.bootstrap_stderr if method is not None else None
    if bootstrap is None or not (math.isfinite(analytic) and math.isfinite(bootstrap)) or max(analytic, bootstrap) <= 0:
        return
    share = abs(analytic - bootstrap) / max(analytic, bootstrap)
    if share > DISAGREEMENT:
        warnings.warn(
            f"{task} {key.metric},{key.filter}: the {method.stderr} standard error {analytic:.4g} and the bootstrap's "
            f"{bootstrap:.4g} differ by {100 * share:.0f}% ({estimate.n} units): too few documents or a skewed score "
            "for either to be trusted", StatisticsWarning,
        )


def _stability(
    records: list[dict[str, Any]], scores: list[DocumentScores], single_filter: bool, bootstrap_iters: int, seed: int
) -> dict[MetricKey, Estimate]:
    """The stability statistics of repeated metrics: per document into `records["stability"]`, and
    their corpus means ("<metric>_<statistic>", e.g. "exact_match_consistency_rate")."""
    matrices: dict[MetricKey, list[list[float]]] = defaultdict(list)
    for doc_scores in scores:
        for key, repeat_scores in doc_scores.per_repeat.items():
            matrices[key].append(repeat_scores)
    metrics = {}
    for key, matrix in matrices.items():
        name = record_field(key, single_filter)
        for stat, per_doc in stability_per_document(np.asarray(matrix, dtype=np.float64)).items():
            for record, value in zip(records, per_doc):
                record.setdefault("stability", {}).setdefault(name, {})[stat] = float(value)
            corpus = MetricKey(f"{key.metric}_{STABILITY_NAMES[stat]}", key.filter)
            metrics[corpus] = aggregate("mean", list(per_doc), bootstrap_iters, seed)
    return metrics


def _count_integrity(
    requests: list[Request], answers: dict[int, Response], documents: int, counts: AnswerCounts
) -> Integrity:
    answered = [(r, answers[r.uid]) for r in requests if r.uid in answers]
    generated = [a for r, a in answered if r.request_type is RequestType.GENERATE_UNTIL]
    logprobs = [a for r, a in answered if r.request_type.scores_logprob]
    return Integrity(
        documents=documents,
        requests_expected=len(requests),
        requests_answered=len(answered),
        padded=counts.padded,
        dropped=counts.dropped,
        resumed=counts.resumed,
        empty_generations=sum(a.text == "" for a in generated),
        nonfinite_logprobs=sum(not is_finite_logprob(a) for a in logprobs),
    )


def _argument(request: Request) -> list[Any]:
    if request.request_type is RequestType.LOGLIKELIHOOD_ROLLING:
        return [request.continuation]  # the whole text, as lm-evaluation-harness's (doc_to_target,)
    if request.request_type is RequestType.LOGLIKELIHOOD:
        return [request.context, request.continuation]
    gen = request.generation
    return [request.context, {"until": list(gen.until), "max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample}]


def _response_value(request: Request, response: Response) -> Any:
    if request.request_type is RequestType.LOGLIKELIHOOD_ROLLING:
        return response.logprob
    if request.request_type is RequestType.LOGLIKELIHOOD:
        return [response.logprob, response.is_greedy]
    return response.text


def is_finite_logprob(response: Response) -> bool:
    return response.logprob is not None and math.isfinite(response.logprob)


def scoreable(request: Request, response: Response) -> Response:
    """A log-prob as scoring sees it: NaN (a broken forward; the gather carries it as None) and +inf become
    -inf, never greedy, so such a choice never wins. The same whether it comes fresh or from the store."""
    if not request.request_type.scores_logprob or is_finite_logprob(response) or response.logprob == -math.inf:
        return response
    return replace(response, logprob=-math.inf, is_greedy=False)


def _scoring_failed(task: Task, doc_id: Optional[int], err: Exception) -> ScoringError:
    where = f"task '{task.name}'" + (f" ({task.spec.source})" if task.spec.source else "")
    what = f"process_results ({task.spec.process_results})" if task.spec.process_results else "scoring"
    doc = f", doc_id {doc_id}" if doc_id is not None else ""
    return ScoringError(f"{where}{doc}: {what} failed: {type(err).__name__}: {err}")


# --- groups -------------------------------------------------------------------------------------
def score_group(spec: GroupSpec, members: list[TaskResult]) -> GroupResult:
    """A group's score, stderr and interval for every metric all its subtasks report; with `cluster_key: subtask`
    the stderr of a size-weighted mean is the cluster-robust one over the subtasks' documents."""
    shared = set.intersection(*(set(m.metrics) for m in members)) if members else set()
    sizes = [len(m.records) for m in members]
    metrics = {}
    for key in sorted(shared):
        weighted = spec.weight_by_size(key.metric)
        metrics[key] = _group_estimate([m.metrics[key] for m in members], sizes, weighted)
        if weighted and spec.clusters_subtasks(key.metric):
            metrics[key] = _subtask_clustered(metrics[key], members, key)
    higher_is_better = {metric: value for m in members for metric, value in m.higher_is_better.items()}
    return GroupResult(spec.group, [m.name for m in members], metrics, higher_is_better)


def _subtask_clustered(pooled: Estimate, members: list[TaskResult], key: MetricKey) -> Estimate:
    """The group's mean with the cluster-robust stderr over its subtasks (their documents the clusters) and a normal
    interval; the pooled stderr, which takes every document as independent, beside it as `naive_stderr`. Left as
    pooled where a subtask's metric is not a per-document mean."""
    values: list[float] = []
    labels: list[str] = []
    for member in members:
        if member.task.aggregation(key.metric) != "mean":
            return pooled
        member_values = [record_value(record, key) for record in member.records]
        if not all(is_number(v) for v in member_values):
            return pooled
        values += [float(v) for v in member_values]
        labels += [member.name] * len(member_values)
    stderr = cluster_mean_stderr(values, labels)
    method = SEMethod("cluster-robust", "normal", "subtask", len(members), naive_stderr=finite_or_none(pooled.stderr))
    return Estimate(pooled.value, stderr, pooled.value - Z95 * stderr, pooled.value + Z95 * stderr, pooled.n, method)


def _group_estimate(estimates: list[Estimate], sizes: list[int], weight_by_size: bool) -> Estimate:
    """Subtask estimates combined (see `aggregate_group`), with a normal 95% interval."""
    value, stderr = aggregate_group([e.value for e in estimates], [e.stderr for e in estimates], sizes, weight_by_size)
    return Estimate(value, stderr, value - Z95 * stderr, value + Z95 * stderr, sum(sizes))
