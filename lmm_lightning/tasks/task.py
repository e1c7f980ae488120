"""A Task: one benchmark's templates, few-shot prompts and metrics; its output type does the rest.

Documents become text as lm-evaluation-harness 0.4 makes them (`ConfigurableTask.doc_to_text`,
`doc_to_target`, `doc_to_choice`, `fewshot_context`), so its YAMLs give the same prompts here.
"""

import ast
import random
from dataclasses import replace
from typing import Any, Callable, Literal, Optional, Union

from lmm_lightning.errors import InputError
from lmm_lightning.metrics.registry import default_aggregation, metrics_for
from lmm_lightning.requests import ChatMessage, Request, Response
from lmm_lightning.tasks.output_types import OUTPUT_KINDS, OutputKind
from lmm_lightning.tasks.postprocess import postprocess_generation
from lmm_lightning.tasks.spec import FewshotConfig, FunctionRef, MetricSpec, TaskSpec, TaskSpecError
from lmm_lightning.tasks.target import Target
from lmm_lightning.tasks.templates import is_reference, render, resolve_reference

FewshotSelection = Literal["seeded", "lm_eval"]
FEWSHOT_SELECTIONS = ("seeded", "lm_eval")
# The options a metric accepts in `metric_list`, under lm-evaluation-harness's names (and ours).
METRIC_OPTIONS: dict[str, tuple[str, ...]] = {
    "exact_match": ("ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore", "ignore_regexes"),
}


def _metric_options(metric: MetricSpec, where: str) -> dict[str, Any]:
    """A metric's options as its function takes them: lm-eval's `regexes_to_ignore` is our
    `ignore_regexes`; `ignore_numbers` removes the digits 0-9 after the other regexes, as lm-eval does."""
    known = METRIC_OPTIONS.get(str(metric.metric), ())
    unknown = sorted(set(metric.options) - set(known))
    if unknown:
        raise TaskSpecError(
            f"{where}: field 'metric_list' ({metric.metric}): unknown option(s) {unknown}; "
            f"{metric.metric} accepts {list(known) or 'no options'}"
        )
    options = dict(metric.options)
    regexes = list(options.pop("regexes_to_ignore", None) or []) + list(options.pop("ignore_regexes", None) or [])
    if options.pop("ignore_numbers", False):
        regexes.append("[0-9]")
    if regexes:
        options["ignore_regexes"] = tuple(regexes)
    return options


def prompt_kwargs(spec: TaskSpec, model_name: Optional[str] = None) -> Optional[dict[str, Any]]:
    """lmms-eval's `lmms_eval_specific_kwargs` as lmms-eval 0.7 (`ConfigurableTask.__init__`) hands them to a
    model: its own entry where the mapping has one (`qwen2_vl: {...}`), else the mapping with its `default`
    (or `dataset`) entry merged in. `video_dir` is added: the task's video folder (`TaskSpec.video_folder`)."""
    kwargs = spec.lmms_eval_specific_kwargs
    if kwargs is None:
        return None
    video = {"video_dir": str(spec.video_folder)}  # where a video task's functions find its videos and subtitles
    if model_name is not None and isinstance(kwargs.get(model_name), dict):
        return {**video, **kwargs[model_name]}
    for key in ("default", "dataset"):
        if isinstance(kwargs.get(key), dict):
            return {**video, **kwargs, **kwargs[key]}
    return {**video, **kwargs}


class Task:
    """One benchmark, built from its spec. Holds no model state; every rank builds the same one.

    `kind` (chosen once from `spec.output_type`, see `output_types.py`) builds the requests, filters
    the responses, scores a document and describes a record; the methods of the same name ask it.

    `fewshot_selection`: "seeded" draws each document's examples from (seed, task, doc_id), the same
    for any world size; "lm_eval" draws them as lm-evaluation-harness 0.4.13 does in one process (one
    `random.Random(seed)` advanced document by document, see `plan_fewshot`).
    """

    def __init__(
        self,
        spec: TaskSpec,
        seed: int = 1234,
        fewshot_selection: FewshotSelection = "seeded",
        fewshot_as_multiturn: bool = False,
        prompt_model: Optional[str] = None,
    ) -> None:
        if fewshot_selection not in FEWSHOT_SELECTIONS:
            raise InputError(f"data.fewshot_selection: expected one of {list(FEWSHOT_SELECTIONS)}, got {fewshot_selection!r}")
        self.spec = spec
        self.seed = seed
        self.frame_sampling: Any = None  # a video task's `FrameSampling`, set by the data module
        self.fewshot_selection = fewshot_selection
        self.fewshot_as_multiturn = fewshot_as_multiturn
        self.where = where = str(spec.source or spec.task)
        self._check_prompt_fields()
        names = ("doc_to_text", "doc_to_target", "doc_to_choice", "doc_to_visual", "process_results", "process_docs")
        self._text, self._target, self._choice, self._visual, self._process_results, self.process_docs = [
            self._template(getattr(spec, n), n) for n in names
        ]
        self.fewshot_config = spec.fewshot_config or FewshotConfig()
        self._shot_text, self._shot_target, self._shot_choice = [
            self._template(getattr(self.fewshot_config, n), f"fewshot_config.{n}") for n in ("doc_to_text", "doc_to_target", "doc_to_choice")
        ]
        self.fewshot_process_docs = self._template(self.fewshot_config.process_docs, "fewshot_config.process_docs")
        self.prompt_kwargs = prompt_kwargs(spec, prompt_model)
        self.kind: OutputKind = OUTPUT_KINDS[spec.output_type](self)
        self.metrics = spec.metric_list or [MetricSpec.from_dict({"metric": m}) for m in self.kind.default_metrics]
        self._check_metrics(where)
        self.metrics = [replace(m, options=_metric_options(m, where)) for m in self.metrics]
        self.filters = self.kind.filters(where)
        self.fewshot_pool: list[tuple[int, dict[str, Any]]] = []  # (doc_id, doc), filled by the data module
        self.fewshot_plan: dict[int, list[dict[str, Any]]] = {}  # doc_id -> its examples ("lm_eval" selection)
        # Few-shot examples drawn from the evaluated split itself never include the document asked.
        self.fewshot_same_split = spec.fewshot_source == spec.evaluated_split

    def _check_prompt_fields(self) -> None:
        for name in ("doc_to_text", "doc_to_target"):
            if getattr(self.spec, name) is None:
                extra = " (lmms-eval's doc_to_messages alone is not supported)" if self.spec.doc_to_messages is not None else ""
                raise TaskSpecError(f"{self.where}: field '{name}' is required to build this task's requests{extra}")

    def _template(self, value: Any, name: str) -> Any:
        """A spec field as written, or the function a `!function` tag or `module:function` reference names."""
        if isinstance(value, FunctionRef):
            return value.resolve(f"{self.where}: field '{name}'")
        if not is_reference(value):
            return value
        root = self.spec.source.parent if self.spec.source else None
        return resolve_reference(value, root, f"{self.where}: field '{name}'")

    def _check_metrics(self, where: str) -> None:
        """Metric names known for the output type; `!function` aggregations and directions resolved now."""
        self._aggregation_functions: dict[str, Callable[[list], float]] = {}
        for i, metric in enumerate(self.metrics):
            field_name = f"metric_list[{i}]"
            if isinstance(metric.metric, FunctionRef):
                raise TaskSpecError(
                    f"{where}: field '{field_name}.metric': {metric.metric} is not supported; name a metric of "
                    "the table or return it from a process_results function (see `lmm-lightning tasks`)"
                )
            if isinstance(metric.aggregation, FunctionRef):
                self._aggregation_functions[metric.metric] = metric.aggregation.resolve(f"{where}: field '{field_name}.aggregation'")
            if isinstance(metric.higher_is_better, FunctionRef):
                metric.higher_is_better = _direction(metric.higher_is_better, f"{where}: field '{field_name}.higher_is_better'")
        if self._process_results is not None or self.spec.judge is not None:
            return  # the task's own function (or its judge) gives its metrics
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

    def aggregation(self, metric: str) -> Union[str, Callable[[list], float]]:
        """The YAML's aggregation of `metric` (a name other than "mean", or a `!function` over the per-document
        values), else the metric table's."""
        if metric in self._aggregation_functions:
            return self._aggregation_functions[metric]
        for spec in self.metrics:
            if spec.metric == metric and spec.aggregation != "mean":
                return spec.aggregation
        return default_aggregation(metric)

    # --- documents to text, as lm-evaluation-harness reads each field ----------------------------
    def doc_to_text(self, doc: dict[str, Any], template: Any = None) -> Union[str, int]:
        """The question; an int (a template rendering digits, with choices) is the gold index of a
        "multiple input" task such as winogrande, whose choices are the contexts."""
        template = self._text if template is None else template
        if callable(template) and self.prompt_kwargs is not None:
            return template(doc, self.prompt_kwargs)  # lmms-eval passes its prompt settings second
        value = render(template, doc)
        if isinstance(template, str) and template not in doc and value.isdigit() and self.spec.doc_to_choice is not None:
            return int(value)
        return value

    def doc_to_choice(self, doc: dict[str, Any], template: Any = None) -> list[str]:
        template = self._choice if template is None else template
        value = render(template, doc)
        if isinstance(template, str) and template not in doc:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ValueError(f"doc_to_choice rendered {value!r}, which is not a list literal") from None
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"doc_to_choice must give a non-empty list of strings, got {value!r}")
        return [str(choice) for choice in value]

    def doc_to_visual(self, doc: dict[str, Any]) -> list[Any]:
        """The document's images (a column holding one image or a list, or a function)."""
        if self._visual is None:
            return []
        if isinstance(self._visual, str):
            value = doc[self._visual]
        elif self.prompt_kwargs is not None and _n_parameters(self._visual) == 2:
            value = self._visual(doc, self.prompt_kwargs)
        else:
            value = render(self._visual, doc)
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def render_target(self, doc: dict[str, Any], template: Any = None) -> Any:
        """`doc_to_target` on the document: an index, a list of references, or a text (a template that
        renders digits is an index when the task has choices, one that renders a list literal a list)."""
        template = self._target if template is None else template
        value = render(template, doc)
        if not isinstance(template, str) or template in doc:
            return value
        if value.isdigit() and self.spec.doc_to_choice is not None:
            return int(value)
        if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
            try:
                return ast.literal_eval(value)
            except (SyntaxError, ValueError):
                return value
        return value

    def multiple_input(self, doc: dict[str, Any]) -> bool:
        """lm-evaluation-harness's "multiple input": `doc_to_text` gives an index, the choices are contexts."""
        return self.spec.doc_to_choice is not None and isinstance(self.doc_to_text(doc), int)

    def doc_to_target(self, doc: dict[str, Any]) -> Union[int, str, list[str]]:
        """The gold answer as the samples file writes it: a choice index for multiple choice, the
        reference text(s) otherwise; for a multiple-input task (winogrande) the continuation every choice
        shares, as lm-evaluation-harness writes it (the gold index is `doc_to_text`'s)."""
        if self.multiple_input(doc):
            return self.render_target(doc)
        return self.kind.doc_to_target(doc)

    def target(self, doc: dict[str, Any]) -> Target:
        """The gold answer as metrics read it."""
        return self.kind.target(doc)

    # --- few-shot -----------------------------------------------------------------------------
    def fewshot_examples(self, doc_id: int) -> list[dict[str, Any]]:
        """The document's examples: planned ("lm_eval"), or seeded by (seed, task, doc_id), the same on
        every rank and for every world size."""
        k = self.spec.num_fewshot
        if k == 0:
            return []
        if self.fewshot_selection == "lm_eval":
            return self.fewshot_plan[doc_id]
        pool = [d for i, d in self.fewshot_pool if not (self.fewshot_same_split and i == doc_id)]
        if len(pool) < k:
            raise InputError(f"{self.spec.source}: field 'num_fewshot' is {k} but only {len(pool)} few-shot documents exist")
        if self.spec.sampler == "first_n":  # lm-evaluation-harness's MMLU: the first k, in order
            return pool[:k]
        rng = random.Random(f"{self.seed}:{self.name}:{doc_id}")
        return rng.sample(pool, k)

    def plan_fewshot(self, eval_docs: list[dict[str, Any]]) -> None:
        """lm-evaluation-harness 0.4.13's examples for every document, in document order (so they do not
        depend on the world size): one `random.Random(seed)` whose `sample(pool, k)` runs per document;
        when the examples come from the evaluated split (its `fewshot_split == test_split`) it samples
        k + 1 and drops the document itself (and any equal to it); `first_n` takes the first k."""
        k, pool = self.spec.num_fewshot, [d for _, d in self.fewshot_pool]
        if k == 0:
            return
        if len(pool) < k:
            raise InputError(f"{self.spec.source}: field 'num_fewshot' is {k} but only {len(pool)} few-shot documents exist")
        exclude = self.spec.explicit_fewshot_split == self.spec.test_split
        rng = random.Random(self.seed)
        for doc_id, doc in enumerate(eval_docs):
            eval_doc = doc if exclude else None
            if self.spec.sampler == "first_n":
                shots = [d for d in pool if d != eval_doc][:k] if eval_doc is not None else pool[:k]
            elif eval_doc is None:
                shots = rng.sample(pool, k)
            else:
                shots = [d for d in rng.sample(pool, k + 1) if d != eval_doc][:k]
                if len(shots) < k:
                    shots = rng.sample([d for d in pool if d != eval_doc], k)
            self.fewshot_plan[doc_id] = shots

    def shot_parts(self, doc: dict[str, Any]) -> tuple[str, Optional[str]]:
        """One example's question and answer (None when it has none), each field from `fewshot_config`
        where it sets one."""
        text = self.doc_to_text(doc, self._shot_text)
        choices = self.doc_to_choice(doc, self._shot_choice) if (self._shot_choice or self._choice) is not None else None
        answer = self.render_target(doc, self._shot_target)
        if isinstance(text, int) and choices is not None:  # multiple input: the gold context, then the continuation
            text, choices = choices[text], None
        if answer is None or answer == "":
            return str(text), None
        if choices and isinstance(answer, int):
            answer = choices[answer]
        elif isinstance(answer, list):
            answer = answer[0]
        return str(text), str(answer)

    def shot(self, doc: dict[str, Any]) -> str:
        """One example as lm-eval writes it: text, target_delimiter, answer, fewshot_delimiter."""
        config = self.fewshot_config
        text, answer = self.shot_parts(doc)
        if answer is None:
            return text
        target_delimiter = self.spec.target_delimiter if config.target_delimiter is None else config.target_delimiter
        fewshot_delimiter = self.spec.fewshot_delimiter if config.fewshot_delimiter is None else config.fewshot_delimiter
        return f"{text}{target_delimiter}{answer}{fewshot_delimiter}"

    def prefix(self, doc_id: int, doc: dict[str, Any]) -> str:
        """The description (a Jinja2 template or column, as in lm-eval) and the examples."""
        description = str(render(self.spec.description, doc)) if self.spec.description else ""
        return description + "".join(self.shot(ex) for ex in self.fewshot_examples(doc_id))

    def context(self, doc_id: int, doc: dict[str, Any]) -> str:
        return self.prefix(doc_id, doc) + str(self.doc_to_text(doc))

    def messages(self, doc_id: int, doc: dict[str, Any]) -> tuple[ChatMessage, ...]:
        """The context as lm-eval 0.4.13 sends it to a chat template: the description as a system turn, then
        with `fewshot_as_multiturn` each example a user turn (its question) and an assistant turn (its answer)
        and the question (delimiters dropped), else the rest of the context as one user turn. None when
        neither applies (no description, one turn) and for multiple input."""
        if self.multiple_input(doc):
            return ()
        description = str(render(self.spec.description, doc)) if self.spec.description else ""
        turns = [ChatMessage("system", description)] if description else []
        if not self.fewshot_as_multiturn:
            if not description:
                return ()
            rest = "".join(self.shot(ex) for ex in self.fewshot_examples(doc_id)) + str(self.doc_to_text(doc))
            return (*turns, ChatMessage("user", rest))
        for example in self.fewshot_examples(doc_id):
            text, answer = self.shot_parts(example)
            turns.append(ChatMessage("user", text))
            if answer is not None:
                turns.append(ChatMessage("assistant", answer))
        turns.append(ChatMessage("user", str(self.doc_to_text(doc))))
        return tuple(turns)

    def contexts(self, doc_id: int, doc: dict[str, Any]) -> list[str]:
        """A multiple-input document's contexts: the prefix and each choice."""
        prefix = self.prefix(doc_id, doc)
        return [prefix + choice for choice in self.doc_to_choice(doc)]

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

    def score_judged(self, doc: dict[str, Any], value: Any) -> dict[str, Any]:
        """The metrics of a judged document: the task's `process_results` over the judged value (an extracted
        answer, a score), else that value as every metric's."""
        if self._process_results is not None:
            return dict(self._process_results(doc, [value]))
        return {m.metric: value for m in self.metrics}

    def describe(self, record: dict[str, Any]) -> tuple[str, str]:
        """What the model answered and the gold answer of one samples record, as text for the loggers."""
        return self.kind.describe(record)


def _n_parameters(function: Any) -> int:
    import inspect

    try:
        return len(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return 1


def _direction(reference: FunctionRef, where: str) -> bool:
    """A `higher_is_better: !function` entry: the function, called without arguments, says true or false."""
    function = reference.resolve(where)
    try:
        value = function()
    except TypeError as err:
        raise TaskSpecError(f"{where}: {reference} must be callable without arguments and return true or false: {err}") from None
    if not isinstance(value, bool):
        raise TaskSpecError(f"{where}: {reference} returned {value!r}; expected true or false")
    return value
