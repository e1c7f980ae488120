"""The metric table: each metric's functions, output types, aggregation and direction in one place."""

import pytest

from lmm_lightning.metrics import AGGREGATIONS, perplexity, word_perplexity
from lmm_lightning.metrics.registry import METRICS, default_aggregation, default_higher_is_better, metrics_for
from lmm_lightning.tasks import Task, TaskSpec
from lmm_lightning.tasks.spec import OUTPUT_TYPES


def test_every_entry_names_known_output_types_and_aggregations():
    for name, metric in METRICS.items():
        assert metric.output_types and set(metric.output_types) <= set(OUTPUT_TYPES), name
        assert metric.aggregation in AGGREGATIONS, name


def test_metrics_by_output_type_keep_the_table_order():
    assert metrics_for("multiple_choice") == ["acc", "acc_norm", "acc_mutual_info"]
    assert metrics_for("loglikelihood") == ["acc", "logprob", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"]
    assert metrics_for("generate_until") == ["exact_match", "vqa_accuracy", "anls", "relaxed_accuracy"]
    assert metrics_for("loglikelihood_rolling") == ["word_perplexity", "byte_perplexity", "bits_per_byte"]


def test_defaults_outside_the_table():
    assert default_aggregation("mmmu_acc") == "mean" and default_higher_is_better("mmmu_acc") is True
    assert default_higher_is_better(["not", "a", "name"]) is True  # reported later as an unknown metric
    assert [default_higher_is_better(m) for m in ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")] == [False] * 4


@pytest.mark.parametrize(
    ("output_type", "args", "expected"),
    [
        ("multiple_choice", ([-1.0, -2.0], [], ["a", "bbbb"], 1), {"acc": 0.0, "acc_norm": 1.0}),  # -2 / 4 > -1 / 1
        ("loglikelihood", (-3.0, True, " two  words"), {"acc": 1.0, "logprob": -3.0, "perplexity": -3.0,
                                                        "word_perplexity": (-3.0, 3), "byte_perplexity": (-3.0, 11)}),
        ("generate_until", ("Paris", ("paris", "Paris")), {"exact_match": 1.0, "anls": 1.0, "relaxed_accuracy": 1.0}),
        ("loglikelihood_rolling", (-3.0, " two  words"), {"word_perplexity": (-3.0, 3), "byte_perplexity": (-3.0, 11),
                                                          "bits_per_byte": (-3.0, 11)}),
    ],
)
def test_each_output_type_calls_its_metrics_with_one_signature(output_type, args, expected):
    assert {name: METRICS[name].score[output_type](*args) for name in expected} == expected


@pytest.fixture
def lambada_like(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"text": "the cat sat"}\n')
    path = tmp_path / "ll.yaml"
    path.write_text(
        "task: ll\ndataset_path: json\ndata_files: docs.jsonl\noutput_type: loglikelihood\n"
        "doc_to_text: \"{{text.split(' ')[0]}}\"\ndoc_to_target: \"{{' ' + text.split(' ', 1)[1]}}\"\n"
        "metric_list: [{metric: perplexity}, {metric: word_perplexity}, {metric: byte_perplexity}, {metric: bits_per_byte}]\n"
    )
    return Task(TaskSpec.from_yaml(path))


def test_a_run_uses_the_tested_perplexity_helpers(lambada_like):
    doc = {"text": "the cat sat"}
    scores = lambada_like.score_value(doc, [(-4.0, False)])
    target = " cat sat"
    assert scores["perplexity"] == perplexity(-4.0, target)
    # words as lm-eval counts them, re.split(r"\s+"): "", "cat", "sat" (str.split would say 2)
    assert scores["word_perplexity"] == word_perplexity(-4.0, target) == (-4.0, 3)
    assert scores["byte_perplexity"] == scores["bits_per_byte"] == (-4.0, 8)
    assert [lambada_like.aggregation(m.metric) for m in lambada_like.metrics] == [
        "perplexity", "weighted_perplexity", "weighted_perplexity", "bits_per_byte",
    ]
    assert not any(m.higher_is_better for m in lambada_like.metrics)
