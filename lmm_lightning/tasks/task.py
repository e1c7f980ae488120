"""A Task: one benchmark's templates, few-shot prompts and metrics; its output type does the rest."""

import random
from typing import Any, Union

from lmm_lightning.errors import InputError
from lmm_lightning.metrics.registry import default_aggregation, metrics_for
from lmm_lightning.requests import Request, Response
from lmm_lightning.tasks.output_types import OUTPUT_KINDS, OutputKind
from lmm_lightning.tasks.postprocess import postprocess_generation
from lmm_lightning.tasks.spec import MetricSpec, TaskSpec, TaskSpecError
from lmm_lightning.tasks.target import Target
from lmm_lightning.tasks.templates import is_reference, render, render_choices, resolve_reference


class Task:
    """One benchmark, built from its spec. Holds no model state; every rank builds the same one.

    `kind` (chosen once from `spec.output_type`, see `output_types.py`) builds the requests, filters
    the responses, scores a document and describes a record; the methods of the same name ask it.
    """

    def __init__(self, spec: TaskSpec, seed: int = 1234) -> None:
        self.spec = spec
        self.seed = seed
        where = str(spec.source or spec.task)
        names = ("doc_to_text", "doc_to_target", "doc_to_choice", "doc_to_visual", "process_results")
        self._text, self._target, self._choice, self._visual, self._process_results = [self._template(n, where) for n in names]
        self.kind: OutputKind = OUTPUT_KINDS[spec.output_type](self)
        self.metrics = spec.metric_list or [MetricSpec.from_dict({"metric": m}) for m in self.kind.default_metrics]
        self._check_metrics(where)
        self.filters = self.kind.filters(where)
        self.fewshot_pool: list[tuple[int, dict[str, Any]]] = []  # (doc_id, doc), filled by the data module
        # Few-shot examples drawn from the evaluated split itself never include the document asked.
        self.fewshot_same_split = spec.fewshot_source == spec.evaluated_split

    def _template(self, name: str, where: str) -> Any:
        """A spec field as written, or the function a `module:function` reference names."""
        value = getattr(self.spec, name)
        if not is_reference(value):
            return value
        root = self.spec.source.parent if self.spec.source else None
        return resolve_reference(value, root, f"{where}: field '{name}'")

    def _check_metrics(self, where: str) -> None:
        if self._process_results is not None:
            return  # the task's own function returns its metrics
        known = metrics_for(self.spec.output_type)
        for i, metric in enumerate(self.metrics):
            if metric.metric not in known:
                raise TaskSpecError(
                    f"{where}: field 'metric_list[{i}].metric': unknown metric '{metric.metric}' for "
                    f"{self.spec.output_type}; expected one of {known} or a process_results function"
                )

    @property
    def name(self) -> str:
        return self.spec.task

    @property
    def has_visuals(self) -> bool:
        return self._visual is not None

    def aggregation(self, metric: str) -> str:
        """The YAML's aggregation of `metric` where it names one other than "mean", else the metric table's."""
        for spec in self.metrics:
            if spec.metric == metric and spec.aggregation != "mean":
                return spec.aggregation
        return default_aggregation(metric)

    # --- documents to text -------------------------------------------------------------------
    def doc_to_text(self, doc: dict[str, Any]) -> str:
        return str(render(self._text, doc))

    def doc_to_choice(self, doc: dict[str, Any]) -> list[str]:
        return render_choices(self._choice, doc)

    def doc_to_visual(self, doc: dict[str, Any]) -> list[Any]:
        """The document's images (a column holding one image or a list, or a function)."""
        if self._visual is None:
            return []
        value = render(self._visual, doc) if not isinstance(self._visual, str) else doc[self._visual]
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def render_target(self, doc: dict[str, Any]) -> Any:
        """`doc_to_target` rendered on the document, before the output type reads it."""
        return render(self._target, doc)

    def doc_to_target(self, doc: dict[str, Any]) -> Union[int, str, list[str]]:
        """The gold answer as the samples file writes it: a choice index for multiple choice, the
        reference text(s) otherwise."""
        return self.kind.doc_to_target(doc)

    def target(self, doc: dict[str, Any]) -> Target:
        """The gold answer as metrics and few-shot examples read it."""
        return self.kind.target(doc)

    # --- few-shot -----------------------------------------------------------------------------
    def fewshot_examples(self, doc_id: int) -> list[dict[str, Any]]:
        """Examples seeded by (seed, task, doc_id): the same on every rank and for every world size."""
        k = self.spec.num_fewshot
        if k == 0:
            return []
        pool = [d for i, d in self.fewshot_pool if not (self.fewshot_same_split and i == doc_id)]
        if len(pool) < k:
            raise InputError(f"{self.spec.source}: field 'num_fewshot' is {k} but only {len(pool)} few-shot documents exist")
        if self.spec.fewshot_sampler == "first_n":  # lm-evaluation-harness's MMLU: the first k, in order
            return pool[:k]
        rng = random.Random(f"{self.seed}:{self.name}:{doc_id}")
        return rng.sample(pool, k)

    def context(self, doc_id: int, doc: dict[str, Any]) -> str:
        shots = [
            self.doc_to_text(ex) + self.spec.target_delimiter + self.target(ex).text for ex in self.fewshot_examples(doc_id)
        ]
        body = self.spec.fewshot_delimiter.join(shots + [self.doc_to_text(doc)])
        return self.spec.description + body

    # --- requests and scoring: the output type's --------------------------------------------
    def build_requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        """The requests one document needs; a multiple-choice document yields one per choice."""
        return self.kind.requests(doc_id, doc, first_uid)

    def filtered(self, responses: list[Response]) -> dict[str, Any]:
        """Each filter's output for one document (generation), or the raw (logprob, is_greedy) pairs."""
        return self.kind.filtered(responses)

    def postprocess(self, text: str) -> str:
        """A generation as filters and metrics see it: reasoning blocks removed, whitespace stripped."""
        return postprocess_generation(text, self.spec.strip_generation, self.spec.reasoning_tags)

    def score(self, doc: dict[str, Any], responses: list[Response]) -> dict[str, dict[str, Any]]:
        """Per-document metric values for each filter: {filter: {metric: value}}."""
        return {name: self.score_value(doc, value) for name, value in self.filtered(responses).items()}

    def score_repeats(self, doc: dict[str, Any], responses: list[Response]) -> dict[str, dict[str, list[Any]]]:
        """With `repeats` > 1: each repeat scored alone, for the k-sample stability metrics."""
        out: dict[str, dict[str, list[Any]]] = {}
        for response in responses:
            for name, metrics in self.score(doc, [response]).items():
                for metric, value in metrics.items():
                    out.setdefault(name, {}).setdefault(metric, []).append(value)
        return out

    def score_value(self, doc: dict[str, Any], value: Any) -> dict[str, Any]:
        """The metrics of one filter's output: the task's `process_results`, else the output type's."""
        if self._process_results is not None:
            return dict(self._process_results(doc, self.kind.per_request(value)))
        return self.kind.score(doc, value)

    def describe(self, record: dict[str, Any]) -> tuple[str, str]:
        """What the model answered and the gold answer of one samples record, as text for the loggers."""
        return self.kind.describe(record)
