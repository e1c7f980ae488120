"""tasks/rolling.py: `loglikelihood_rolling` requests and per-document values as lm-evaluation-harness makes them."""

import math

import pytest
from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
from lm_eval.api.task import Task as LmEvalTask

from lmm_lightning.evaluation.result import MetricKey
from lmm_lightning.evaluation.scoring import score_task
from lmm_lightning.data import TaskDocuments
from lmm_lightning.metrics.registry import default_aggregation, default_higher_is_better, metrics_for
from lmm_lightning.requests import RequestType, Response
from lmm_lightning.tasks import MetricSpec, Task, TaskSpec, TaskSpecError
from lmm_lightning.tasks.rolling import Rolling
from tests.fixtures.pages import PAGES, WIKITEXT, write_pages_tasks

METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def rolling_task(**fields) -> Task:
    spec = {"doc_to_text": "", "doc_to_target": "page", "data_files": "pages.jsonl", **fields}
    return Task(TaskSpec(task="pages", output_type="loglikelihood_rolling", **spec))


def test_a_document_is_one_request_for_its_whole_text_without_prompt_or_shots():
    task = rolling_task(num_fewshot=2, description="ignored: ")  # lm-eval ignores both for rolling requests
    task.fewshot_pool = [(9, {"page": "a shot"}), (8, {"page": "another"})]
    requests = task.build_requests(3, {"page": PAGES[6]}, first_uid=5)
    assert len(requests) == 1
    request = requests[0]
    assert (request.uid, request.doc_id, request.request_type) == (5, 3, RequestType.LOGLIKELIHOOD_ROLLING)
    assert request.context == "" and request.continuation == PAGES[6]
    assert isinstance(task.kind, Rolling)


def test_default_metrics_and_their_aggregations_are_lm_evals():
    task = rolling_task()
    assert [m.metric for m in task.metrics] == list(METRICS) == metrics_for("loglikelihood_rolling")
    assert [task.aggregation(m) for m in METRICS] == ["weighted_perplexity", "weighted_perplexity", "bits_per_byte"]
    assert not any(default_higher_is_better(m) for m in METRICS)
    assert default_aggregation("word_perplexity") == "weighted_perplexity"


def test_a_metric_rolling_cannot_compute_is_refused_when_the_task_is_built():
    with pytest.raises(TaskSpecError, match="field 'metric_list\\[0\\].metric': unknown metric 'acc' for loglikelihood_rolling"):
        Task(TaskSpec(task="pages", output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="page",
                      data_files="x.jsonl", metric_list=[MetricSpec.from_dict({"metric": "acc"})]))


@pytest.mark.parametrize("page", PAGES)
def test_per_document_values_count_words_and_bytes_as_lm_eval(page):
    task = rolling_task()
    scores = task.score({"page": page}, [Response(uid=0, logprob=-12.5, is_greedy=False)])
    words, n_bytes = LmEvalTask.count_words(page), LmEvalTask.count_bytes(page)
    assert scores == {"none": {"word_perplexity": (-12.5, words), "byte_perplexity": (-12.5, n_bytes), "bits_per_byte": (-12.5, n_bytes)}}


def test_process_results_gets_the_log_likelihood_as_lm_evals_results(tmp_path):
    """wikitext's own process_results (lm-eval's file) unpacks `(loglikelihood,) = results` and counts the raw page."""
    folder = write_pages_tasks(tmp_path)
    task = Task(TaskSpec.from_yaml(folder / "wikitext_local.yaml"))
    doc = {"page": PAGES[5]}
    detokenized = task.build_requests(0, doc, 0)[0].continuation
    assert detokenized != PAGES[5]  # the detokenizer ran
    scores = task.score(doc, [Response(uid=0, logprob=-3.0, is_greedy=True)])["none"]
    assert scores["word_perplexity"] == (-3.0, LmEvalTask.count_words(PAGES[5]))  # the page, not the target
    assert scores["bits_per_byte"] == (-3.0, LmEvalTask.count_bytes(PAGES[5]))


def test_scored_task_matches_lm_evals_aggregations_and_writes_its_sample_format():
    task = rolling_task()
    docs = {doc_id: {"page": page} for doc_id, page in enumerate(PAGES)}
    requests = [r for doc_id, doc in docs.items() for r in task.build_requests(doc_id, doc, first_uid=doc_id)]
    logprobs = [0.0 if not page else -1.7 * len(page) - doc_id for doc_id, page in enumerate(PAGES)]
    answers = {r.uid: Response(r.uid, logprob=lp, is_greedy=False) for r, lp in zip(requests, logprobs)}
    result = score_task(TaskDocuments(task, docs, len(docs)), requests, answers, bootstrap_iters=200, seed=1)
    words = [(lp, LmEvalTask.count_words(p)) for lp, p in zip(logprobs, PAGES)]
    n_bytes = [(lp, LmEvalTask.count_bytes(p)) for lp, p in zip(logprobs, PAGES)]
    assert result.metrics[MetricKey("word_perplexity", "none")].value == pytest.approx(weighted_perplexity(words), rel=1e-12)
    assert result.metrics[MetricKey("byte_perplexity", "none")].value == pytest.approx(weighted_perplexity(n_bytes), rel=1e-12)
    assert result.metrics[MetricKey("bits_per_byte", "none")].value == pytest.approx(bits_per_byte(n_bytes), rel=1e-12)
    assert all(math.isfinite(e.stderr) and e.n == len(PAGES) for e in result.metrics.values())
    record = result.records[6]
    assert record["arguments"] == [[PAGES[6]]] and record["resps"] == [[logprobs[6]]] and record["filtered_resps"] == [logprobs[6]]
    assert task.describe(record) == (f"logprob {logprobs[6]:.4f}", PAGES[6])


def test_lm_evals_installed_wikitext_yaml_builds_a_task():
    """The YAML unchanged (its `!function` detokenizer and process_results); its data needs the hub, so a doc is given."""
    spec = TaskSpec.from_yaml(WIKITEXT / "wikitext.yaml")
    task = Task(spec)
    assert spec.output_type == "loglikelihood_rolling" and isinstance(task.kind, Rolling)
    assert [m.metric for m in task.metrics] == list(METRICS)
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("preprocess_wikitext", WIKITEXT / "preprocess_wikitext.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    doc = {"page": PAGES[5]}
    assert task.build_requests(0, doc, 0)[0].continuation == module.wikitext_detokenizer(doc)
    assert task.score(doc, [Response(uid=0, logprob=-3.0)])["none"] == module.process_results(doc, [-3.0])
