"""Judged tasks (MM-Vet, MathVista's answer extraction): a judge model reads each answer after inference.

On rank 0, once every answer is gathered and the evaluated model released, `Judge.run` asks the judge model
about each document of every task whose YAML has a `judge:` section (`JudgeSpec`): the task's prompt over the
document, the model's answer and the target, sent as a generation request. The judge's answers are stored as
they come (`<run folder>/judge/store/`, keyed by the judge prompt and the judge model's identity), so a rerun
pays for none twice; a task's `quick` rule answers what needs no judge. Each document gets a `Judgement`:
its raw judge answer and the parsed value that scoring uses (None: unreadable, counted, never scored).
"""

import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.errors import InputError
from lmm_lightning.evaluation.store import ResponseStore, StoreWarning, config_digest, request_key
from lmm_lightning.models.base import EvalModule, check_response
from lmm_lightning.requests import ChatMessage, GenerationSpec, Request, RequestType, Response, Usage
from lmm_lightning.tasks import Task
from lmm_lightning.tasks.spec import FunctionRef, JudgeSpec, TaskSpecError
from lmm_lightning.tasks.templates import render

JUDGE_DIR = "judge"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Judgement:
    """One document's judging: what the judge was asked and answered, and the value scored."""

    value: Any  # what scoring uses; None: the judge's answer could not be read (the document is not scored)
    source: str  # "judge" (asked the judge model) or "rule" (the task's `quick` rule answered)
    prompt: Optional[str] = None
    answer: Optional[str] = None  # the judge's raw answer
    resumed: bool = False  # the judge's answer came from the judge store (not paid again)
    usage: Optional[Usage] = None

    @property
    def parsed(self) -> bool:
        return self.value is not None

    def record(self) -> dict[str, Any]:
        """The samples file's `judge` field."""
        return {"source": self.source, "prompt": self.prompt, "answer": self.answer, "parsed": self.value}


def first_number(text: str) -> Optional[float]:
    """The "number" parser: the first number in the judge's answer, else None.

    >>> first_number(" 0.7\\n"), first_number("Score: .5 out of 1"), first_number("none")
    (0.7, 0.5, None)
    """
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def stripped_text(text: str) -> Optional[str]:
    """The "text" parser: the answer without surrounding whitespace; an empty answer is unreadable.

    >>> stripped_text("  (B) \\n"), stripped_text("   ")
    ('(B)', None)
    """
    return text.strip() or None


PARSERS: dict[str, Callable[[str], Any]] = {"number": first_number, "text": stripped_text}


def check_judged(task: Task) -> None:
    """A judged task reads one answer per document: one filter, no repeats, a generation."""
    if task.spec.judge is None:
        return
    where = f"{task.where}: field 'judge'"
    if task.spec.output_type != "generate_until":
        raise TaskSpecError(f"{where}: a judged task must be output_type generate_until, got {task.spec.output_type}")
    if task.spec.repeats != 1 or len(task.filters) != 1:
        raise TaskSpecError(f"{where}: a judged task scores one answer per document (repeats 1, at most one filter_list entry)")


@dataclass
class JudgeRules:
    """A task's judge section with its functions resolved (imported when judging starts)."""

    spec: JudgeSpec
    prompt: Callable[[dict[str, Any], str, Any], str]
    parser: Callable[[str], Any]
    quick: Optional[Callable[[dict[str, Any], str], Any]] = None

    @classmethod
    def of(cls, task: Task) -> "JudgeRules":
        spec = task.spec.judge
        where = f"{task.where}: field 'judge"
        resolve = lambda ref, name: ref.resolve(f"{where}.{name}'")
        if isinstance(spec.prompt, FunctionRef):
            function = resolve(spec.prompt, "prompt")
            prompt = lambda doc, response, target: function(doc, response)
        else:
            template = spec.prompt
            prompt = lambda doc, response, target: str(render(template, {**doc, "response": response, "target": target}))
        parser = resolve(spec.parser, "parser") if isinstance(spec.parser, FunctionRef) else PARSERS[spec.parser]
        quick = resolve(spec.quick, "quick") if spec.quick is not None else None
        return cls(spec, prompt, parser, quick)


@dataclass
class Pending:
    """A document the judge model must be asked about."""

    task: str
    doc_id: int
    request: Request
    key: str


def model_answer(task: Task, responses: list[Response]) -> str:
    """The model's answer as the task scores it: its one filter's output (reasoning removed, stripped)."""
    value = next(iter(task.filtered(responses).values()))
    return value if isinstance(value, str) else str(value)


@dataclass
class Judge:
    """Runs a judge model over the judged tasks of a benchmark, storing each judge answer as it arrives.

    Args:
        model: the judge (any `EvalModule`: a served model, or a local transformers model).
        folder: the run's folder; judge answers go to `<folder>/judge/store/`.
        batch_size: judge requests per call of the judge model (a served judge sends them concurrently).
    """

    model: EvalModule
    folder: Path
    batch_size: int = 16
    device: Optional[torch.device] = None
    loaded: bool = field(default=False, init=False)

    @property
    def identity(self) -> str:
        return config_digest(self.model.identity())

    def run(self, tasks: dict[str, Task], docs: dict[str, dict[int, dict[str, Any]]],
            doc_responses: dict[str, dict[int, list[Response]]]) -> dict[str, dict[int, Judgement]]:
        """Every judged task's `Judgement` per document. `docs[task][doc_id]` is the document and
        `doc_responses[task][doc_id]` its answered requests (in request order)."""
        identity = self.identity
        store = ResponseStore(self.folder / JUDGE_DIR, 0, identity)
        scan = store.load()
        for message in scan.warnings(store.folder):  # a torn line, another judge's answers: asked again
            warnings.warn(message, StoreWarning)
        stored = scan.responses
        out: dict[str, dict[int, Judgement]] = {}
        pending: list[Pending] = []
        rules_of = {name: JudgeRules.of(task) for name, task in tasks.items() if task.spec.judge is not None}
        try:
            for name, rules in rules_of.items():
                task = tasks[name]
                out[name] = {}
                for doc_id in sorted(doc_responses[name]):
                    doc = docs[name][doc_id]
                    answer = model_answer(task, doc_responses[name][doc_id])
                    quick = rules.quick(doc, answer) if rules.quick is not None else None
                    if quick is not None:
                        out[name][doc_id] = Judgement(quick, "rule")
                        continue
                    request = self._request(len(pending), name, doc_id, rules, rules.prompt(doc, answer, task.doc_to_target(doc)))
                    key = request_key(request, config_digest([name, asdict(rules.spec)]), identity)
                    pending.append(Pending(name, doc_id, request, key))
            answers = {p.request.uid: stored[p.key] for p in pending if p.key in stored}
            missing = [p for p in pending if p.request.uid not in answers]
            if missing:
                answers.update(self._ask(missing, store))
        finally:
            store.close()
        for p in pending:
            response = answers[p.request.uid]
            try:
                value = rules_of[p.task].parser(response.text)
            except Exception as err:  # noqa: BLE001 - the task's own parser: name the document
                raise InputError(f"task '{p.task}', doc_id {p.doc_id}: judge.parser failed on {response.text!r}: "
                                 f"{type(err).__name__}: {err}") from err
            out[p.task][p.doc_id] = Judgement(
                value, "judge", p.request.context, response.text, resumed=p.key in stored, usage=response.usage,
            )
        return out

    def _request(self, uid: int, task: str, doc_id: int, rules: JudgeRules, prompt: str) -> Request:
        spec = rules.spec
        messages = (ChatMessage("system", spec.system_prompt), ChatMessage("user", prompt)) if spec.system_prompt else ()
        generation = GenerationSpec(until=tuple(spec.until), max_new_tokens=spec.max_new_tokens)
        return Request(uid, task, doc_id, RequestType.GENERATE_UNTIL, prompt, generation=generation, messages=messages)

    def _ask(self, pending: list[Pending], store: ResponseStore) -> dict[int, Response]:
        """The judge model's answers to `pending`, each stored the moment it exists."""
        if not self.loaded:
            self.model.configure_model()
            if self.device is not None:
                self.model.to(self.device)
            self.model.eval()
            self.loaded = True
        out: dict[int, Response] = {}
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            keys = {p.request.uid: p.key for p in chunk}

            def keep(index: int, response: Response, chunk: list[Pending] = chunk) -> None:
                check_response(self.model, chunk[index].request, response)
                if response.uid not in out:
                    store.append([(keys[response.uid], response)])
                    out[response.uid] = response

            self.model.answer_sink = keep
            try:
                with torch.inference_mode():
                    responses = self.model.answer(RequestBatch([p.request for p in chunk], [False] * len(chunk)))
            finally:
                self.model.answer_sink = None
            if len(responses) != len(chunk):
                raise RuntimeError(f"judge {type(self.model).__name__} returned {len(responses)} answers for {len(chunk)} requests")
            for index, response in enumerate(responses):
                keep(index, response)
        return out

    def release(self) -> None:
        if self.loaded:
            self.model.release()
            self.loaded = False
