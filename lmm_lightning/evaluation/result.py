"""The typed result of one evaluation: what `scoring.evaluate` returns and every output renders.

results.json and the samples files (`results.py`), the printed table (`table.py`), the loggers
(`loggers.py`) and the Hub upload all read an `EvaluationResult`. Only `results.py` writes a
`MetricKey` as the "<metric>,<filter>" text of the files, and reads it back.
"""

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from lmm_lightning.metrics import Estimate
from lmm_lightning.requests import Usage
from lmm_lightning.tasks import Task


@dataclass(frozen=True, order=True)
class MetricKey:
    """One corpus metric of a task: the metric's name and the filter its per-document values went
    through ("none" for log-probability tasks and for generations without a `filter_list`)."""

    metric: str
    filter: str


@dataclass
class Integrity:
    """Counts in = counts out, written into results.json; each counted where it happens."""

    documents: int = 0  # documents scored
    requests_expected: int = 0  # requests those documents need
    requests_answered: int = 0  # of those, the ones with an answer
    padded: int = 0  # padding responses gathered (the sampler repeats requests so every rank runs as many)
    dropped: int = 0  # gathered responses left out of scoring
    resumed: int = 0  # answers read from an earlier run's store instead of computed
    empty_generations: int = 0  # legitimate (the model stopped at once) but worth seeing
    nonfinite_logprobs: int = 0  # NaN or infinite log-probabilities the model returned (NaN scored as -inf)


@dataclass(frozen=True)
class UsageTotals:
    """What a served model's (or judge's) answers of one task cost in this run, for results.json `usage`."""

    requests: int  # answered by the server in this run
    resumed: int  # answered by an earlier run and read from the store: not paid again
    prompt_tokens: int
    completion_tokens: int
    retries: int
    latency_p50_s: Optional[float]
    latency_p95_s: Optional[float]

    @classmethod
    def of(cls, usages: list[Usage], resumed: int) -> "UsageTotals":
        """Totals and latency percentiles (linear interpolation, as numpy's default) of this run's answers.

        >>> UsageTotals.of([Usage(10, 2, 0.1, 0), Usage(12, 3, 0.3, 1)], resumed=5).latency_p50_s
        0.2
        """
        latencies = sorted(u.latency_s for u in usages)
        p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95)) if latencies else (None, None)
        return cls(
            requests=len(usages),
            resumed=resumed,
            prompt_tokens=sum(u.prompt_tokens for u in usages),
            completion_tokens=sum(u.completion_tokens for u in usages),
            retries=sum(u.retries for u in usages),
            latency_p50_s=None if p50 is None else round(p50, 6),
            latency_p95_s=None if p95 is None else round(p95, 6),
        )


@dataclass(frozen=True)
class JudgingSummary:
    """How one judged task's documents were judged, for results.json `judge`."""

    model: dict[str, Any]  # the judge model's identity (class and settings; never an API key)
    documents: int
    asked: int  # documents the judge model was asked about (this run or resumed)
    by_rule: int  # answered by the task's `quick` rule, without the judge
    resumed: int  # judge answers read from the judge store
    unparsed: int  # judge answers the parser could not read: those documents are not scored
    unparsed_doc_ids: list[int]
    usage: Optional[UsageTotals] = None


@dataclass
class TaskResult:
    """One task: its per-document records (the samples file's lines) and its corpus metrics."""

    task: Task
    records: list[dict[str, Any]]
    metrics: dict[MetricKey, Estimate]
    integrity: Integrity
    n_original: int  # documents in the evaluated split, before limit and offset
    usage: Optional[UsageTotals] = None  # a served model's cost (None for a local model)
    judging: Optional[JudgingSummary] = None  # a judged task's judging

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def higher_is_better(self) -> dict[str, bool]:
        return {m.metric: m.higher_is_better for m in self.task.metrics}


@dataclass(frozen=True)
class GroupResult:
    """A group of tasks (e.g. MMLU's 57 subjects): each metric all its subtasks report, combined."""

    name: str
    subtasks: list[str]
    metrics: dict[MetricKey, Estimate]  # `n` is the documents of all subtasks together
    higher_is_better: dict[str, bool]  # its subtasks', merged


@dataclass(frozen=True)
class Settings:
    """The run being scored: how scoring resamples (`bootstrap_iters`, `seed`), and what results.json
    records of the run besides (its "config" and "world_size")."""

    bootstrap_iters: int
    seed: int
    model: str
    model_args: dict[str, Any]
    batch_size: Any  # as configured: a size, "auto", or a size per request type
    limit: Union[int, float, None]
    offset: int
    world_size: int
    # The files evaluated, resolved: folder, hub repo and commit, adapter, and a digest of the weights'
    # names, sizes, mtimes and sampled contents (None for a model without files).
    model_source: Optional[dict[str, Any]] = None

    @property
    def config(self) -> dict[str, Any]:
        """results.json's "config" (also the loggers' hyperparameters)."""
        return {
            "model": self.model,
            "model_args": self.model_args,
            "batch_size": self.batch_size,
            "limit": self.limit,
            "offset": self.offset,
            "bootstrap_iters": self.bootstrap_iters,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class EvaluationResult:
    """Every task and group of one run, scored, with the settings it was scored under."""

    tasks: list[TaskResult]
    groups: list[GroupResult]
    settings: Settings

    @property
    def entries(self) -> list[Union[TaskResult, GroupResult]]:
        """Every task, then every group: the order results.json, the table and the loggers list them."""
        return [*self.tasks, *self.groups]
