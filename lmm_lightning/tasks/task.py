"""A Task: the documents of one benchmark, the requests they need, and how to score them."""

import math
from pathlib import Path
from typing import Any, Optional, Union

import datasets

from lmm_lightning.metrics import acc, acc_norm, exact_match
from lmm_lightning.requests import GenerationSpec, Request, RequestType, Response
from lmm_lightning.tasks.spec import MetricSpec, TaskSpec
from lmm_lightning.tasks.templates import render, render_choices

DEFAULT_METRICS = {
    "multiple_choice": ("acc", "acc_norm"),
    "generate_until": ("exact_match",),
    "loglikelihood": ("acc",),
}


def select_range(n_docs: int, limit: Union[int, float, None], offset: int) -> range:
    """The documents to evaluate: `offset` first, then at most `limit` (an int or a fraction of the split)."""
    if offset < 0 or (n_docs and offset >= n_docs):
        raise ValueError(f"offset {offset} is out of range for {n_docs} documents")
    available = n_docs - offset
    if limit is None:
        count = available
    elif isinstance(limit, float) and limit <= 1.0:
        if limit <= 0:
            raise ValueError(f"limit {limit} must be positive")
        count = int(math.ceil(n_docs * limit))
    else:
        if limit <= 0:
            raise ValueError(f"limit {limit} must be positive")
        count = int(limit)
    return range(offset, offset + min(count, available))


class Task:
    """One benchmark, built from its spec. Holds no model state; every rank builds the same one."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.metrics = spec.metric_list or [MetricSpec(metric=m) for m in DEFAULT_METRICS[spec.output_type]]
        gen = spec.generation_kwargs
        until = gen.get("until", ["\n\n"])
        self.generation = GenerationSpec(
            until=tuple([until] if isinstance(until, str) else until),
            max_new_tokens=int(gen.get("max_new_tokens", gen.get("max_gen_toks", 64))),
        )

    @property
    def name(self) -> str:
        return self.spec.task

    def load_split(self) -> datasets.Dataset:
        """All documents of the test split (a hub dataset or local files relative to the YAML)."""
        data_files = self.spec.data_files
        if data_files is not None and self.spec.source is not None:
            data_files = _resolve_files(data_files, self.spec.source.parent)
        return datasets.load_dataset(
            self.spec.dataset_path, self.spec.dataset_name, data_files=data_files, split=self.spec.test_split
        )

    def doc_to_text(self, doc: dict[str, Any]) -> str:
        return str(render(self.spec.doc_to_text, doc))

    def doc_to_choice(self, doc: dict[str, Any]) -> list[str]:
        return render_choices(self.spec.doc_to_choice, doc)

    def doc_to_target(self, doc: dict[str, Any]) -> Union[int, str, list[str]]:
        """The gold answer: a choice index for multiple choice, the reference text(s) otherwise."""
        target = render(self.spec.doc_to_target, doc)
        if self.spec.output_type != "multiple_choice":
            return target if isinstance(target, list) else str(target)
        if isinstance(target, int):
            return target
        choices = self.doc_to_choice(doc)
        if str(target).strip().isdigit():
            return int(str(target).strip())
        if target in choices:
            return choices.index(target)
        raise ValueError(f"target {target!r} is neither an index nor one of the choices {choices}")

    def build_requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        """The requests one document needs; a multiple-choice document yields one per choice."""
        context = self.doc_to_text(doc)
        kind = self.spec.output_type
        if kind == "multiple_choice":
            return [
                Request(
                    uid=first_uid + i,
                    task=self.name,
                    doc_id=doc_id,
                    request_type=RequestType.LOGLIKELIHOOD,
                    context=context,
                    continuation=self.spec.target_delimiter + choice,
                    choice_index=i,
                )
                for i, choice in enumerate(self.doc_to_choice(doc))
            ]
        if kind == "loglikelihood":
            target = self.doc_to_target(doc)
            target = target[0] if isinstance(target, list) else target
            return [
                Request(
                    uid=first_uid,
                    task=self.name,
                    doc_id=doc_id,
                    request_type=RequestType.LOGLIKELIHOOD,
                    context=context,
                    continuation=self.spec.target_delimiter + target,
                )
            ]
        return [
            Request(
                uid=first_uid,
                task=self.name,
                doc_id=doc_id,
                request_type=RequestType.GENERATE_UNTIL,
                context=context,
                generation=self.generation,
            )
        ]

    def score(self, doc: dict[str, Any], responses: list[Response]) -> dict[str, float]:
        """Per-document metric values from the document's responses, in choice order."""
        target = self.doc_to_target(doc)
        scores: dict[str, float] = {}
        for metric in self.metrics:
            name = metric.metric
            if self.spec.output_type == "multiple_choice":
                logprobs = [r.logprob for r in responses]
                if name == "acc":
                    scores[name] = acc(logprobs, target)
                elif name == "acc_norm":
                    scores[name] = acc_norm(logprobs, self.doc_to_choice(doc), target)
                else:
                    raise ValueError(f"{self.spec.source}: metric '{name}' does not apply to multiple_choice")
            elif self.spec.output_type == "loglikelihood":
                if name == "acc":
                    scores[name] = float(bool(responses[0].is_greedy))
                elif name == "logprob":
                    scores[name] = float(responses[0].logprob)
                else:
                    raise ValueError(f"{self.spec.source}: metric '{name}' does not apply to loglikelihood")
            else:
                if name == "exact_match":
                    scores[name] = exact_match(responses[0].text or "", target, **metric.options)
                else:
                    raise ValueError(f"{self.spec.source}: metric '{name}' does not apply to generate_until")
        return scores


def _resolve_files(data_files: Union[str, list, dict], root: Path) -> Union[str, list, dict]:
    """Make relative data file paths relative to the task YAML's folder."""
    if isinstance(data_files, dict):
        return {split: _resolve_files(files, root) for split, files in data_files.items()}
    if isinstance(data_files, list):
        return [_resolve_files(f, root) for f in data_files]
    path = Path(data_files)
    return str(path if path.is_absolute() else root / path)
