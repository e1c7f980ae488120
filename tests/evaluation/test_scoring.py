"""Rank-0 scoring, `evaluate(benchmark, answers, settings)`, on documents built in memory: no Trainer."""

import math

import numpy as np
import pytest
from tests.evaluation.builder import QUESTIONS, HERE, gold, make_benchmark, make_group, make_settings, make_task, respond

from lmm_lightning.evaluation.result import MetricKey
from lmm_lightning.evaluation.results import build_results
from lmm_lightning.evaluation.scoring import (
    Answers, IntegrityError, ScoringError, Z95, check_exactly_once, evaluate,
)
from lmm_lightning.metrics import Estimate
from lmm_lightning.requests import Response

ACC = MetricKey("acc", "none")


def right_for(benchmark, doc_ids):
    """Choose the gold choice on `doc_ids`, a wrong one elsewhere."""
    answer = gold(benchmark)
    return lambda r: answer(r) if r.doc_id in doc_ids else (answer(r) + 1) % 3


def test_a_mean_metric_is_scored_per_document_then_averaged():
    benchmark = make_benchmark([(make_task("mc"), QUESTIONS)])
    result = evaluate(benchmark, respond(benchmark, choice=right_for(benchmark, {0, 1})), make_settings())
    (task,) = result.tasks
    assert [r["acc"] for r in task.records] == [1.0, 1.0, 0.0, 0.0]
    assert task.records[0]["filtered_resps"] == [(-1.0, False), (0.0, True), (-1.0, False)]
    stderr = np.std([1, 1, 0, 0], ddof=1) / 2  # analytic: no resampling
    estimate = task.metrics[ACC]
    assert (estimate.value, estimate.n) == (0.5, 4) and estimate.stderr == pytest.approx(stderr)
    assert estimate.ci_lower == pytest.approx(0.5 - 1.959964 * stderr, abs=1e-6)
    assert list(task.metrics) == [ACC, MetricKey("acc_norm", "none")]


def test_a_corpus_metric_aggregates_the_pairs_of_all_documents():
    task = make_task("yes", metric_list=[{"metric": "f1", "aggregation": "f1"}], process_results=f"{HERE}:yes_pair")
    benchmark = make_benchmark([(task, QUESTIONS)])
    chosen = {0: 1, 1: 1, 2: 0, 3: 1}  # gold is choice 1 for documents 0 and 3: tp 2, fp 1, fn 0
    result = evaluate(benchmark, respond(benchmark, choice=lambda r: chosen[r.doc_id]), make_settings())
    assert [r["f1"] for r in result.tasks[0].records] == [(1, 1), (1, 0), (0, 0), (1, 1)]
    estimate = result.tasks[0].metrics[MetricKey("f1", "none")]
    assert estimate.value == pytest.approx(2 * 2 / (2 * 2 + 1)) and math.isnan(estimate.stderr)
    resampled = evaluate(benchmark, respond(benchmark, choice=lambda r: chosen[r.doc_id]), make_settings(200))
    assert resampled.tasks[0].metrics[MetricKey("f1", "none")].stderr > 0


@pytest.mark.parametrize("weight_by_size", [True, False])
def test_a_group_combines_its_subtasks_with_an_interval(weight_by_size):
    big, small = make_task("big"), make_task("small")
    group = make_group("both", ["big", "small"], weight_by_size)
    benchmark = make_benchmark([(big, QUESTIONS), (small, QUESTIONS[:2])], [group])
    result = evaluate(benchmark, respond(benchmark, choice=right_for(benchmark, {0})), make_settings())
    (scored,) = result.groups
    big_acc, small_acc = (t.metrics[ACC] for t in result.tasks)
    estimate = scored.metrics[ACC]
    if weight_by_size:
        assert estimate.value == pytest.approx((4 * big_acc.value + 2 * small_acc.value) / 6)
    else:
        assert estimate.value == pytest.approx((big_acc.value + small_acc.value) / 2)
        assert estimate.stderr == pytest.approx(math.hypot(big_acc.stderr, small_acc.stderr) / 2)
    half_width = Z95 * estimate.stderr
    assert (estimate.ci_lower, estimate.ci_upper) == (estimate.value - half_width, estimate.value + half_width)
    assert estimate.n == 6 and scored.subtasks == ["big", "small"]
    assert scored.higher_is_better == {"acc": True, "acc_norm": True}
    document = build_results(result)
    assert document["results"]["both"]["samples"] == 6 and document["group_subtasks"]["both"] == ["big", "small"]
    assert document["confidence_intervals"]["both"]["acc,none"] == [estimate.ci_lower, estimate.ci_upper]


def test_repeats_give_each_repeat_and_the_stability_statistics():
    task = make_task("rep", "generate_until", repeats=3)
    benchmark = make_benchmark([(task, QUESTIONS[:3])])
    right = {0: (1, 1, 1), 1: (1, 0, 1), 2: (0, 0, 0)}  # repeats answered right, per document
    target = lambda r: QUESTIONS[r.doc_id]["choices"][QUESTIONS[r.doc_id]["answer"]]
    text = lambda r: target(r) if right[r.doc_id][r.repeat] else "no idea"
    result = evaluate(benchmark, respond(benchmark, text=text), make_settings())
    records, metrics = result.tasks[0].records, result.tasks[0].metrics
    assert [r["exact_match_per_repeat"] for r in records] == [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert records[1]["stability"]["exact_match"] == {
        "expected_accuracy": 2 / 3,
        "consensus_accuracy": 1.0,
        "within_question_variance": pytest.approx(1 / 3),
        "consistent": 0.0,
    }
    assert metrics[MetricKey("exact_match_expected_accuracy", "none")].value == pytest.approx(5 / 9)
    assert metrics[MetricKey("exact_match_consensus_accuracy", "none")].value == pytest.approx(2 / 3)
    assert metrics[MetricKey("exact_match_consistency_rate", "none")].value == pytest.approx(2 / 3)


def test_several_filters_name_record_fields_with_their_filter():
    filters = [{"name": "first", "filter": [{"function": "take_first"}]},
               {"name": "lower", "filter": [{"function": "lowercase"}, {"function": "take_first"}]}]
    task = make_task("gen", "generate_until", filter_list=filters)
    benchmark = make_benchmark([(task, QUESTIONS[1:2])])
    result = evaluate(benchmark, respond(benchmark, text=lambda r: "Paris"), make_settings())
    (record,) = result.tasks[0].records
    assert record["filtered_resps"] == {"first": ["Paris"], "lower": ["paris"]}
    assert (record["exact_match,first"], record["exact_match,lower"]) == (1.0, 0.0)
    assert list(result.tasks[0].metrics) == [MetricKey("exact_match", "first"), MetricKey("exact_match", "lower")]


def test_integrity_counts_padding_dropped_resumed_and_non_finite():
    benchmark = make_benchmark([(make_task("mc"), QUESTIONS), (make_task("gen", "generate_until"), QUESTIONS[:2])])
    fresh = respond(benchmark, choice=gold(benchmark), text=lambda r: "" if r.doc_id == 0 else "4").gathered
    fresh[1] = (Response(1, logprob=None, is_greedy=None), False)  # NaN from the gather: never wins
    stored = [response for response, _ in fresh[9:12]]  # document 3 of "mc", from an earlier run
    gathered = fresh[:9] + fresh[12:] + [(fresh[0][0], True), (fresh[12][0], True)]  # padding repeats uids 0 and 12
    result = evaluate(benchmark, Answers(gathered, stored), make_settings())
    mc, gen = (t.integrity for t in result.tasks)
    assert (mc.documents, mc.requests_expected, mc.requests_answered) == (4, 12, 12)
    assert (mc.padded, mc.dropped, mc.resumed, mc.nonfinite_logprobs) == (1, 1, 3, 1)
    assert (gen.padded, gen.dropped, gen.resumed, gen.empty_generations) == (1, 1, 0, 1)
    record = result.tasks[0].records[0]
    assert record["resps"][1] == [[-math.inf, False]] and record["acc"] == 0.0  # the gold choice, scored as -inf


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: Answers(a.gathered, [a.gathered[0][0]]), "1 answered more than once"),
        (lambda a: Answers(a.gathered[1:] + [(a.gathered[0][0], True)]), "1 never answered"),
    ],
)
def test_a_request_answered_twice_or_never_stops_scoring(change, message):
    benchmark = make_benchmark([(make_task("mc"), QUESTIONS)])
    with pytest.raises(IntegrityError, match=message + r" \(mc/doc 0\)"):
        evaluate(benchmark, change(respond(benchmark)), make_settings())


def test_exactly_once_returns_each_answer_and_counts_per_task():
    benchmark = make_benchmark([(make_task("mc"), QUESTIONS[:1])])
    answers = respond(benchmark)
    responses, counts = check_exactly_once(benchmark.requests, Answers(answers.gathered + [(answers.gathered[2][0], True)]))
    assert sorted(responses) == [0, 1, 2] and counts["mc"].padded == counts["mc"].dropped == 1


def test_a_failing_process_results_names_the_document():
    task = make_task("own", metric_list=[{"metric": "acc"}], process_results=f"{HERE}:failing")
    benchmark = make_benchmark([(task, QUESTIONS)])
    with pytest.raises(ScoringError, match=r"task 'own', doc_id 2: process_results .* KeyError: 'boiling_point'"):
        evaluate(benchmark, respond(benchmark), make_settings())


def test_group_estimate_is_an_estimate():
    benchmark = make_benchmark([(make_task("a"), QUESTIONS)], [make_group("g", ["a"])])
    result = evaluate(benchmark, respond(benchmark), make_settings())
    assert isinstance(result.groups[0].metrics[ACC], Estimate) and [e.name for e in result.entries] == ["a", "g"]


def test_a_group_clustered_by_subtask_takes_the_subjects_as_clusters():
    """MMLU's subjects: `cluster_key: subtask` gives the cluster-robust stderr over the subtasks' documents, the
    value unchanged, the pooled (lm-eval) stderr beside it, and results.json says which is which."""
    from lmm_lightning.metrics.bootstrap import cluster_mean_stderr
    from lmm_lightning.metrics.groups import pooled_stderr
    from lmm_lightning.tasks import GroupSpec

    tasks = [make_task(n) for n in ("easy", "mid", "hard")]
    docs = {"easy": (QUESTIONS * 2)[:6], "mid": (QUESTIONS * 2)[:6], "hard": (QUESTIONS * 2)[:6]}
    group = GroupSpec(group="subjects", task=["easy", "mid", "hard"],
                      aggregate_metric_list=[{"metric": "acc", "weight_by_size": True, "cluster_key": "subtask"}])
    benchmark = make_benchmark([(t, docs[t.name]) for t in tasks], [group])
    right = {"easy": {0, 1, 2, 3, 4, 5}, "mid": {0, 1, 3}, "hard": {4}}  # the subjects differ: a between-subject spread
    result = evaluate(benchmark, respond(benchmark, choice=lambda r: benchmark.documents[r.task].docs[r.doc_id]["answer"]
                      if r.doc_id in right[r.task] else (benchmark.documents[r.task].docs[r.doc_id]["answer"] + 1) % 3), make_settings())
    (scored,) = result.groups
    estimate = scored.metrics[ACC]
    values = [float(i in right[t]) for t in ("easy", "mid", "hard") for i in range(6)]
    assert estimate.value == pytest.approx(10 / 18)
    assert estimate.stderr == pytest.approx(cluster_mean_stderr(values, [t for t in ("easy", "mid", "hard") for _ in range(6)]))
    pooled = pooled_stderr([t.metrics[ACC].stderr for t in result.tasks], [6, 6, 6])
    assert estimate.stderr > pooled and estimate.method.naive_stderr == pytest.approx(pooled)
    assert (estimate.ci_lower, estimate.ci_upper) == pytest.approx((estimate.value - Z95 * estimate.stderr, estimate.value + Z95 * estimate.stderr))
    errors = build_results(result)["standard_errors"]["subjects"]["acc,none"]
    assert (errors["stderr"], errors["cluster_key"], errors["clusters"]) == ("cluster-robust", "subtask", 3)


def test_a_group_cluster_key_other_than_subtask_is_an_error_naming_the_field(tmp_path):
    from lmm_lightning.tasks import GroupSpec
    from lmm_lightning.tasks.spec import TaskSpecError

    raw = {"group": "g", "task": ["a"], "aggregate_metric_list": [{"metric": "acc", "cluster_key": "image"}]}
    with pytest.raises(TaskSpecError, match=r"aggregate_metric_list\[0\]\.cluster_key.*'subtask'"):
        GroupSpec.from_dict(raw, tmp_path / "g.yaml")
    assert GroupSpec.from_dict({**raw, "aggregate_metric_list": [{"metric": "acc", "cluster_key": "subtask"}]}, tmp_path / "g.yaml").clusters_subtasks("acc")
