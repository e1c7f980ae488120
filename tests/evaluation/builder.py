"""Tasks, documents, requests and answers built in memory, so rank-0 scoring (`evaluate`) runs in
milliseconds without a Trainer, a data module or a model.

    benchmark = make_benchmark([(make_task("mc"), QUESTIONS)])
    result = evaluate(benchmark, respond(benchmark, choice=gold), make_settings())
"""

from pathlib import Path
from typing import Any, Callable, Optional

from lmm_lightning.data import TaskDocuments
from lmm_lightning.evaluation.result import Settings
from lmm_lightning.evaluation.scoring import Answers, Benchmark
from lmm_lightning.requests import Request, RequestType, Response
from lmm_lightning.tasks import GroupSpec, MetricSpec, Task, TaskSpec

QUESTIONS = [
    {"question": "2 + 2 =", "choices": ["3", "4", "5"], "answer": 1},
    {"question": "The capital of France is", "choices": ["Paris", "Rome", "Oslo"], "answer": 0},
    {"question": "Water boils at", "choices": ["50 C", "80 C", "100 C"], "answer": 2},
    {"question": "A week has", "choices": ["5 days", "7 days", "9 days"], "answer": 1},
]

FIELDS = {
    "multiple_choice": {"doc_to_text": "{{question}}", "doc_to_choice": "choices", "doc_to_target": "answer"},
    "generate_until": {"doc_to_text": "{{question}}", "doc_to_target": "{{choices[answer]}}",
                       "generation_kwargs": {"until": ["."], "max_new_tokens": 4}},
    "loglikelihood": {"doc_to_text": "{{question}}", "doc_to_target": " {{choices[answer]}}"},
}

HERE = Path(__file__).resolve()


def make_task(name: str, output_type: str = "multiple_choice", **fields: Any) -> Task:
    """A task over documents like `QUESTIONS`; `fields` are TaskSpec fields (metric_list as YAML writes it)."""
    spec = {**FIELDS[output_type], "data_files": "docs.jsonl", **fields}
    if "metric_list" in spec:
        spec["metric_list"] = [MetricSpec.from_dict(m) for m in spec["metric_list"]]
    return Task(TaskSpec(task=name, output_type=output_type, **spec))


def make_group(name: str, tasks: list[str], weight_by_size: bool = True, metric: str = "acc") -> GroupSpec:
    return GroupSpec(group=name, task=tasks, aggregate_metric_list=[{"metric": metric, "weight_by_size": weight_by_size}])


def make_benchmark(tasks: list[tuple[Task, list[dict[str, Any]]]], groups: Optional[list[GroupSpec]] = None) -> Benchmark:
    """Each task's documents (doc_id = position, nothing cut by limit) and their requests, numbered in order."""
    documents, requests = {}, []
    for task, docs in tasks:
        documents[task.name] = TaskDocuments(task, dict(enumerate(docs)), len(docs))
        for doc_id, doc in enumerate(docs):
            requests.extend(task.build_requests(doc_id, doc, first_uid=len(requests)))
    groups = groups or []
    return Benchmark(documents, requests, groups, {g.group: list(g.task) for g in groups})


def gold(benchmark: Benchmark) -> Callable[[Request], int]:
    """The choice each document's target names: every answer right."""
    return lambda r: benchmark.documents[r.task].docs[r.doc_id]["answer"]


def respond(
    benchmark: Benchmark,
    choice: Callable[[Request], int] = lambda r: 0,
    text: Callable[[Request], str] = lambda r: "",
) -> Answers:
    """One fresh answer per request: a generation's `text(request)`; for log-probabilities 0.0 and greedy
    for the choice `choice(request)` names in the request's document, -1.0 for the others."""
    responses = []
    for r in benchmark.requests:
        if r.request_type is RequestType.GENERATE_UNTIL:
            responses.append(Response(r.uid, text=text(r)))
        else:
            chosen = r.choice_index == choice(r)
            responses.append(Response(r.uid, logprob=0.0 if chosen else -1.0, is_greedy=chosen))
    return Answers([(response, False) for response in responses])


def make_settings(bootstrap_iters: int = 0, seed: int = 1234, **run: Any) -> Settings:
    """Settings of a run with no resampling (analytic stderr for means, nan for the others) unless asked."""
    fields = {"model": "Scripted", "model_args": {}, "batch_size": 4, "limit": None, "offset": 0, "world_size": 1, **run}
    return Settings(bootstrap_iters=bootstrap_iters, seed=seed, **fields)


def yes_pair(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, Any]:
    """A process_results function (`f"{HERE}:yes_pair"`): (the model chose choice 1, the gold is choice 1)."""
    chosen = max(range(len(results)), key=lambda i: results[i][0])
    return {"f1": (int(chosen == 1), int(doc["answer"] == 1))}


def failing(doc: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    """A process_results function that fails on the document asking "Water boils at"."""
    if doc["question"].startswith("Water"):
        raise KeyError("boiling_point")
    return {"acc": 1.0}
