"""A Task: the documents of one benchmark, the requests they need, and how to score them."""

import math
import random
from pathlib import Path
from typing import Any, Callable, Optional, Union

import datasets

from lmm_lightning.errors import InputError
from lmm_lightning.metrics import acc, acc_norm, anls, exact_match, relaxed_accuracy, vqa_accuracy
from lmm_lightning.requests import GenerationSpec, Request, RequestType, Response
from lmm_lightning.tasks.filters import apply_pipeline, build_pipeline
from lmm_lightning.tasks.postprocess import postprocess_generation
from lmm_lightning.tasks.spec import MetricSpec, TaskSpec, TaskSpecError
from lmm_lightning.tasks.templates import is_reference, render, render_choices, resolve_reference

DEFAULT_METRICS = {
    "multiple_choice": ("acc", "acc_norm"),
    "generate_until": ("exact_match",),
    "loglikelihood": ("acc",),
}
NONE_FILTER = {"name": "none", "filter": [{"function": "take_first"}]}
# lm-evaluation-harness's default generation budget (`max_gen_toks`) when a task sets none.
DEFAULT_MAX_NEW_TOKENS = 256

# Per-document metrics, by output type: (doc target, model output, options) -> value.
GENERATION_METRICS: dict[str, Callable[..., Any]] = {
    "exact_match": lambda target, text, **o: exact_match(text, target, **o),
    "vqa_accuracy": lambda target, text, **o: vqa_accuracy(text, target if isinstance(target, list) else [target]),
    "anls": lambda target, text, **o: anls(text, target if isinstance(target, list) else [target], **o),
    "relaxed_accuracy": lambda target, text, **o: relaxed_accuracy(text, target, **o),
}
CHOICE_METRICS = ("acc", "acc_norm", "acc_mutual_info")
LOGLIKELIHOOD_METRICS = ("acc", "logprob", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
DEFAULT_AGGREGATION = {
    "perplexity": "weighted_perplexity",
    "word_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
}


def select_range(n_docs: int, limit: Union[int, float, None], offset: int) -> range:
    """The documents to evaluate: `offset` first, then at most `limit`.

    `limit` is a count (an int, or a float with no fraction such as 100.0), a fraction of the split
    (a float in (0, 1]: 0.1 is 10 %, 1.0 all), or None / -1 for all documents. lm-evaluation-harness
    reads a float below 1.0 the same way but 1.0 as one document; -1 means all in both.

    >>> select_range(10, 0.25, 0), select_range(10, 3, 8), select_range(10, -1, 2)
    (range(0, 3), range(8, 10), range(2, 10))
    """
    if offset < 0 or (n_docs and offset >= n_docs):
        raise ValueError(f"offset {offset} is out of range for {n_docs} documents")
    available = n_docs - offset
    if isinstance(limit, bool):
        raise ValueError(f"limit {limit!r} must be a number of documents, a fraction in (0, 1], or -1 for all")
    if limit is None or limit == -1:
        count = available
    elif isinstance(limit, float) and 0 < limit <= 1.0:
        count = int(math.ceil(n_docs * limit))
    elif isinstance(limit, float) and limit > 1.0 and not limit.is_integer():
        raise ValueError(f"limit {limit} is neither a whole number of documents nor a fraction in (0, 1]")
    elif limit <= 0:
        raise ValueError(f"limit {limit} must be positive (a count or a fraction in (0, 1]), or -1 for all documents")
    else:
        count = int(limit)
    return range(offset, offset + min(count, available))


class Task:
    """One benchmark, built from its spec. Holds no model state; every rank builds the same one."""

    def __init__(self, spec: TaskSpec, seed: int = 1234) -> None:
        self.spec = spec
        self.seed = seed
        root = spec.source.parent if spec.source else None
        where = str(spec.source or spec.task)
        field = lambda name: (
            resolve_reference(getattr(spec, name), root, f"{where}: field '{name}'")
            if is_reference(getattr(spec, name))
            else getattr(spec, name)
        )
        self._text, self._target, self._choice = field("doc_to_text"), field("doc_to_target"), field("doc_to_choice")
        self._visual = field("doc_to_visual")
        self._process_results = field("process_results")
        self.metrics = spec.metric_list or [MetricSpec(metric=m) for m in DEFAULT_METRICS[spec.output_type]]
        self._check_metrics(where)
        gen = dict(spec.generation_kwargs)
        until = gen.get("until", ["\n\n"])
        self.generation = GenerationSpec(
            until=tuple([until] if isinstance(until, str) else until),
            max_new_tokens=int(gen.get("max_new_tokens", gen.get("max_gen_toks", DEFAULT_MAX_NEW_TOKENS))),
            do_sample=bool(gen.get("do_sample", False)),
            temperature=float(gen.get("temperature", 1.0)),
            top_p=float(gen.get("top_p", 1.0)),
            seed=seed,
        )
        filters = spec.filter_list if spec.output_type == "generate_until" and spec.filter_list else [NONE_FILTER]
        self.filters = [(f.get("name", f"filter_{i}"), build_pipeline(f, f"{where}: filter_list[{i}]")) for i, f in enumerate(filters)]
        self.fewshot_pool: list[tuple[int, dict[str, Any]]] = []
        # Few-shot examples drawn from the evaluated split itself never include the document asked.
        self.fewshot_same_split = spec.fewshot_source == spec.evaluated_split

    def _check_metrics(self, where: str) -> None:
        if self._process_results is not None:
            return  # the task's own function returns its metrics
        known = {
            "multiple_choice": CHOICE_METRICS,
            "loglikelihood": LOGLIKELIHOOD_METRICS,
            "generate_until": tuple(GENERATION_METRICS),
        }[self.spec.output_type]
        for i, metric in enumerate(self.metrics):
            if metric.metric not in known:
                raise TaskSpecError(
                    f"{where}: field 'metric_list[{i}].metric': unknown metric '{metric.metric}' for "
                    f"{self.spec.output_type}; expected one of {list(known)} or a process_results function"
                )

    @property
    def name(self) -> str:
        return self.spec.task

    @property
    def has_visuals(self) -> bool:
        return self._visual is not None

    def aggregation(self, metric: str) -> str:
        for spec in self.metrics:
            if spec.metric == metric and spec.aggregation != "mean":
                return spec.aggregation
        return DEFAULT_AGGREGATION.get(metric, "mean")

    def load_split(self, split: Optional[str] = None) -> datasets.Dataset:
        """One split (a hub dataset, local files relative to the YAML, or a `module:function(split)` loader)."""
        split = split or self.spec.evaluated_split
        if is_reference(self.spec.dataset_path):
            root = self.spec.source.parent if self.spec.source else None
            loader = resolve_reference(self.spec.dataset_path, root, f"{self.spec.source}: field 'dataset_path'")
            return loader(split)
        data_files = self.spec.data_files
        if data_files is not None and self.spec.source is not None:
            data_files = _resolve_files(data_files, self.spec.source.parent)
        return datasets.load_dataset(
            self.spec.dataset_path, self.spec.dataset_name, data_files=data_files, split=split
        )

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

    def doc_to_target(self, doc: dict[str, Any]) -> Union[int, str, list[str]]:
        """The gold answer: a choice index for multiple choice, the reference text(s) otherwise."""
        target = render(self._target, doc)
        if self.spec.output_type != "multiple_choice":
            return [str(t) for t in target] if isinstance(target, list) else str(target)
        if isinstance(target, int):
            return target
        choices = self.doc_to_choice(doc)
        if str(target).strip().isdigit():
            return int(str(target).strip())
        if target in choices:
            return choices.index(target)
        if len(str(target).strip()) == 1 and str(target).strip().upper() in "ABCDEFGHIJ":
            return "ABCDEFGHIJ".index(str(target).strip().upper())
        raise ValueError(f"target {target!r} is neither an index, a letter nor one of the choices {choices}")

    def target_text(self, doc: dict[str, Any]) -> str:
        """The gold answer as text, as a few-shot example shows it."""
        target = self.doc_to_target(doc)
        if self.spec.output_type == "multiple_choice":
            return self.doc_to_choice(doc)[target]
        return target[0] if isinstance(target, list) else target

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
            self.doc_to_text(ex) + self.spec.target_delimiter + self.target_text(ex) for ex in self.fewshot_examples(doc_id)
        ]
        body = self.spec.fewshot_delimiter.join(shots + [self.doc_to_text(doc)])
        return self.spec.description + body

    # --- requests -----------------------------------------------------------------------------
    def build_requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        """The requests one document needs; a multiple-choice document yields one per choice."""
        context = self.context(doc_id, doc)
        make = lambda i, **kw: Request(uid=first_uid + i, task=self.name, doc_id=doc_id, **kw)
        kind = self.spec.output_type
        if kind == "multiple_choice":
            choices = [self.spec.target_delimiter + c for c in self.doc_to_choice(doc)]
            target = self.doc_to_target(doc)  # checked now, not after the model has run
            if not 0 <= target < len(choices):
                raise ValueError(f"target index {target} is out of range for {len(choices)} choices")
            requests = [
                make(i, request_type=RequestType.LOGLIKELIHOOD, context=context, continuation=c, choice_index=i)
                for i, c in enumerate(choices)
            ]
            if any(m.metric == "acc_mutual_info" for m in self.metrics):
                n = len(choices)
                requests += [
                    make(n + i, request_type=RequestType.LOGLIKELIHOOD, context="", continuation=c, choice_index=n + i)
                    for i, c in enumerate(choices)
                ]
            return requests
        if kind == "loglikelihood":  # the target is sent as is, without target_delimiter (lm-evaluation-harness)
            target = self.target_text(doc)
            return [make(0, request_type=RequestType.LOGLIKELIHOOD, context=context, continuation=target)]
        return [
            make(r, request_type=RequestType.GENERATE_UNTIL, context=context, generation=self.generation, repeat=r)
            for r in range(self.spec.repeats)
        ]

    # --- scoring ------------------------------------------------------------------------------
    def filtered(self, responses: list[Response]) -> dict[str, Any]:
        """Each filter's output for one document (generation), or the raw (logprob, is_greedy) pairs."""
        if self.spec.output_type != "generate_until":
            return {"none": [(r.logprob, r.is_greedy) for r in responses]}
        texts = [self.postprocess(r.text or "") for r in responses]
        return {name: apply_pipeline(pipeline, texts) for name, pipeline in self.filters}

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
        kind = self.spec.output_type
        if self._process_results is not None:
            results = value if kind != "generate_until" else [value]
            return dict(self._process_results(doc, results))
        target = self.doc_to_target(doc)
        scores: dict[str, Any] = {}
        for metric in self.metrics:
            name = metric.metric
            if kind == "multiple_choice":
                choices = self.doc_to_choice(doc)
                logprobs = [lp for lp, _ in value[: len(choices)]]
                if name == "acc":
                    scores[name] = acc(logprobs, target)
                elif name == "acc_norm":
                    scores[name] = acc_norm(logprobs, choices, target)
                else:
                    unconditional = [lp for lp, _ in value[len(choices) :]]
                    scores[name] = acc([a - b for a, b in zip(logprobs, unconditional)], target)
            elif kind == "loglikelihood":
                logprob, is_greedy = value[0]
                text = self.target_text(doc)
                if name == "acc":
                    scores[name] = float(bool(is_greedy))
                elif name == "logprob":
                    scores[name] = logprob
                elif name in ("perplexity",):
                    scores[name] = (logprob, 1)
                elif name == "word_perplexity":
                    scores[name] = (logprob, len(text.split()))
                else:
                    scores[name] = (logprob, len(text.encode("utf-8")))
            else:
                scores[name] = GENERATION_METRICS[name](target, value, **metric.options)
        return scores


def _resolve_files(data_files: Union[str, list, dict], root: Path) -> Union[str, list, dict]:
    """Make relative data file paths relative to the task YAML's folder."""
    if isinstance(data_files, dict):
        return {split: _resolve_files(files, root) for split, files in data_files.items()}
    if isinstance(data_files, list):
        return [_resolve_files(f, root) for f in data_files]
    path = Path(data_files)
    return str(path if path.is_absolute() else root / path)
