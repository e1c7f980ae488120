"""One class per output type: the requests a document needs, its metrics for one filter's output, and how
one of its records reads in a logger. `OUTPUT_KINDS` picks the class once, from the task's `output_type`.

Every class holds its `Task` (templates, few-shot context, metrics, filters) and no model state.
"""

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Union

import numpy as np

from lmm_lightning.metrics.registry import METRICS
from lmm_lightning.requests import GenerationSpec, Request, RequestType, Response
from lmm_lightning.tasks.filters import FilterPipeline, apply_pipeline, build_pipeline, default_pipeline
from lmm_lightning.tasks.target import Target

if TYPE_CHECKING:
    from lmm_lightning.tasks.spec import OutputType
    from lmm_lightning.tasks.task import Task

# lm-evaluation-harness's default generation budget (`max_gen_toks`) when a task sets none.
DEFAULT_MAX_NEW_TOKENS = 256
LETTERS = "ABCDEFGHIJ"


def generation_spec(kwargs: dict[str, Any], seed: int, default_until: str = "\n\n") -> GenerationSpec:
    """A task's `generation_kwargs` read as lm-evaluation-harness reads them (`max_gen_toks` too; without
    `until`, generation stops at the task's `fewshot_delimiter`, `default_until`).

    >>> generation_spec({"until": "\\n", "max_gen_toks": 32}, seed=1)
    GenerationSpec(until=('\\n',), max_new_tokens=32, do_sample=False, temperature=1.0, top_p=1.0, seed=1)
    """
    until = kwargs.get("until", [default_until])
    return GenerationSpec(
        until=tuple([until] if isinstance(until, str) else until),
        max_new_tokens=int(kwargs.get("max_new_tokens", kwargs.get("max_gen_toks", DEFAULT_MAX_NEW_TOKENS))),
        do_sample=bool(kwargs.get("do_sample", False)),
        temperature=float(kwargs.get("temperature", 1.0)),
        top_p=float(kwargs.get("top_p", 1.0)),
        seed=seed,
    )


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


class OutputKind(ABC):
    """What a task's output type decides; the default methods are those of the log-probability kinds."""

    output_type: ClassVar["OutputType"]
    default_metrics: ClassVar[tuple[str, ...]]

    def __init__(self, task: "Task") -> None:
        self.task = task

    def _metric(self, name: str) -> Callable[..., Any]:
        """The function computing metric `name` for this output type (see `metrics/registry.py`)."""
        return METRICS[name].score[self.output_type]

    def _request(self, doc_id: int, uid: int, **fields: Any) -> Request:
        return Request(uid=uid, task=self.task.name, doc_id=doc_id, **fields)

    def filters(self, where: str) -> list[tuple[str, FilterPipeline]]:
        """The named pipelines the responses go through: here the one "none", keeping them as they are."""
        return [("none", default_pipeline())]

    def doc_to_target(self, doc: dict[str, Any]) -> Union[int, str, list[str]]:
        """The gold answer as the samples file writes it: the reference text, or a list of them."""
        target = self.task.render_target(doc)
        return [str(t) for t in target] if isinstance(target, list) else str(target)

    def target(self, doc: dict[str, Any]) -> Target:
        return Target.of(self.doc_to_target(doc))

    def filtered(self, responses: list[Response]) -> dict[str, Any]:
        """The (logprob, is_greedy) pair of each of the document's requests, under the filter "none"."""
        return {"none": [(r.logprob, r.is_greedy) for r in responses]}

    def per_request(self, value: Any) -> list[Any]:
        """One filter's output as one entry per request, as `process_results` and `filtered_resps` get it."""
        return value

    def empty_answer(self, doc: dict[str, Any]) -> Optional[str]:
        """Why the document cannot be scored (an empty choice or target, whose likelihood means nothing), or None."""
        return None

    @abstractmethod
    def requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        """The requests one document needs, numbered from `first_uid`."""

    @abstractmethod
    def score(self, doc: dict[str, Any], value: Any) -> dict[str, Any]:
        """Each of the task's metrics for one document, from one filter's output."""

    @abstractmethod
    def describe(self, record: dict[str, Any]) -> tuple[str, str]:
        """What the model answered and the gold answer of a samples record, as text a person reads."""


class MultipleChoice(OutputKind):
    """A log-probability per choice (and per choice without the question, for `acc_mutual_info`)."""

    output_type = "multiple_choice"
    default_metrics = ("acc", "acc_norm")

    def doc_to_target(self, doc: dict[str, Any]) -> int:
        """The gold choice's index: given as an index, one of the choices, a digit string, or a letter A-J;
        for a multiple-input task (winogrande) `doc_to_text` gives it (lm-evaluation-harness)."""
        if self.task.multiple_input(doc):
            return self.task.doc_to_text(doc)
        target = self.task.render_target(doc)
        if isinstance(target, int):
            return target
        choices = self.task.doc_to_choice(doc)
        if target in choices:
            return choices.index(target)
        text = str(target).strip()
        if text.isdigit():
            return int(text)
        if len(text) == 1 and text.upper() in LETTERS:
            return LETTERS.index(text.upper())
        raise ValueError(f"target {target!r} is neither an index, a letter nor one of the choices {choices}")

    def target(self, doc: dict[str, Any]) -> Target:
        index = self.doc_to_target(doc)
        return Target((self.task.doc_to_choice(doc)[index],), index=index)

    def requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        delimiter = self.task.spec.target_delimiter
        choices = [delimiter + c for c in self.task.doc_to_choice(doc)]
        target = self.doc_to_target(doc)  # checked now, not after the model has run
        if not 0 <= target < len(choices):
            raise ValueError(f"target index {target} is out of range for {len(choices)} choices")
        if self.task.multiple_input(doc):  # each choice completes the context; the target is the continuation
            continuation = delimiter + str(self.task.render_target(doc))
            pairs = [(context, continuation) for context in self.task.contexts(doc_id, doc)]
        else:
            context = self.task.context(doc_id, doc)
            pairs = [(context, choice) for choice in choices]
        if any(m.metric == "acc_mutual_info" for m in self.task.metrics):
            pairs += [("", choice) for choice in choices]  # each choice again, without the question
        messages = self.task.messages(doc_id, doc)
        return [
            self._request(doc_id, first_uid + i, request_type=RequestType.LOGLIKELIHOOD, context=c, continuation=choice,
                          choice_index=i, messages=messages if c else ())
            for i, (c, choice) in enumerate(pairs)
        ]

    def score(self, doc: dict[str, Any], value: Any) -> dict[str, Any]:
        gold = self.doc_to_target(doc)
        choices = self.task.doc_to_choice(doc)
        logprobs = [lp for lp, _ in value[: len(choices)]]
        unconditional = [lp for lp, _ in value[len(choices) :]]
        return {m.metric: self._metric(m.metric)(logprobs, unconditional, choices, gold) for m in self.task.metrics}

    def describe(self, record: dict[str, Any]) -> tuple[str, str]:
        """The choice with the highest log-probability, and the gold choice."""
        choices = [str(arg[1]).strip() for arg in record.get("arguments", [])]
        logprobs = [pair[0] for pair in record.get("filtered_resps") or []]
        chosen = choices[int(np.argmax(logprobs))] if logprobs else ""
        target = record.get("target")
        gold = choices[target] if isinstance(target, int) and 0 <= target < len(choices) else target
        return chosen, str(gold)

    def empty_answer(self, doc: dict[str, Any]) -> Optional[str]:
        choices = self.task.doc_to_choice(doc)
        empty = [i for i, choice in enumerate(choices) if not choice.strip()]
        return f"choice(s) {empty} of {choices} are empty (doc_to_choice); every choice needs some text" if empty else None


class Generation(OutputKind):
    """Text generated until a stop string, `repeats` times, then filtered and compared with the references."""

    output_type = "generate_until"
    default_metrics = ("exact_match",)

    def __init__(self, task: "Task") -> None:
        super().__init__(task)
        self.generation = generation_spec(task.spec.generation_kwargs, task.seed, task.spec.fewshot_delimiter)

    def filters(self, where: str) -> list[tuple[str, FilterPipeline]]:
        """The task's `filter_list`, or the one pipeline "none" (the first response as is)."""
        specs = self.task.spec.filter_list
        pipelines = [build_pipeline(spec, f"{where}: filter_list[{i}]") for i, spec in enumerate(specs)]
        return [(p.name, p) for p in pipelines] or super().filters(where)

    def requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        context, messages = self.task.context(doc_id, doc), self.task.messages(doc_id, doc)
        return [
            self._request(doc_id, first_uid + r, request_type=RequestType.GENERATE_UNTIL, context=context,
                          generation=self.generation, repeat=r, messages=messages)
            for r in range(self.task.spec.repeats)
        ]

    def filtered(self, responses: list[Response]) -> dict[str, Any]:
        """Each filter's one text, from the document's generations as `Task.postprocess` leaves them."""
        texts = [self.task.postprocess(r.text or "") for r in responses]
        return {name: apply_pipeline(pipeline, texts) for name, pipeline in self.task.filters}

    def per_request(self, value: Any) -> list[Any]:
        return [value]

    def score(self, doc: dict[str, Any], value: Any) -> dict[str, Any]:
        references = self.target(doc).texts
        return {m.metric: self._metric(m.metric)(value, references, **m.options) for m in self.task.metrics}

    def describe(self, record: dict[str, Any]) -> tuple[str, str]:
        """The filtered generation (each filter's, named, when there are several), and the target."""
        filtered, target = record.get("filtered_resps"), record.get("target")
        if isinstance(filtered, dict):
            return " / ".join(f"{name}: {_first(value)}" for name, value in filtered.items()), str(target)
        return str(_first(filtered)), str(target)


class Loglikelihood(OutputKind):
    """The log-probability of the target after the context, and whether it is the greedy continuation."""

    output_type = "loglikelihood"
    default_metrics = ("acc",)

    def requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        context = self.task.context(doc_id, doc)
        target = self.target(doc).text  # sent as is, without target_delimiter (lm-evaluation-harness)
        return [self._request(doc_id, first_uid, request_type=RequestType.LOGLIKELIHOOD, context=context, continuation=target,
                              messages=self.task.messages(doc_id, doc))]

    def score(self, doc: dict[str, Any], value: Any) -> dict[str, Any]:
        logprob, is_greedy = value[0]
        text = self.target(doc).text
        return {m.metric: self._metric(m.metric)(logprob, is_greedy, text) for m in self.task.metrics}

    def describe(self, record: dict[str, Any]) -> tuple[str, str]:
        """The target's log-probability (and whether it is greedy), and the target."""
        logprob, greedy = _first(record.get("filtered_resps")) or (float("nan"), False)
        return f"logprob {logprob:.4f}{' (greedy)' if greedy else ''}", str(record.get("target"))

    def empty_answer(self, doc: dict[str, Any]) -> Optional[str]:
        if not self.target(doc).text.strip():
            return "the target is empty (doc_to_target); a loglikelihood task needs a continuation to score"
        return None


# Here, not at the top: `rolling.py` subclasses `OutputKind` above.
from lmm_lightning.tasks.rolling import Rolling  # noqa: E402

OUTPUT_KINDS: dict["OutputType", type[OutputKind]] = {
    "multiple_choice": MultipleChoice,
    "generate_until": Generation,
    "loglikelihood": Loglikelihood,
    "loglikelihood_rolling": Rolling,
}
