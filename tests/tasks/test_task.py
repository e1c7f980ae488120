"""Task specs, document selection and request building."""

from types import SimpleNamespace
from typing import get_args

import pytest

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.loading import select_range
from lmm_lightning.requests import RequestType, Response
from lmm_lightning.tasks import GroupSpec, OutputType, Target, Task, TaskSpec, TaskSpecError, resolve_tasks
from lmm_lightning.tasks.output_types import OUTPUT_KINDS, Generation, Loglikelihood, MultipleChoice
from lmm_lightning.tasks.rolling import Rolling


def test_multiple_choice_document_yields_one_loglikelihood_request_per_choice(tiny_tasks):
    task = Task(TaskSpec.from_yaml(tiny_tasks / "tiny_mc.yaml"))
    doc = {"country": "France", "capital": "Paris", "choices": ["Rome", "Paris", "Oslo"], "answer": 1}
    requests = task.build_requests(7, doc, first_uid=10)
    assert [r.uid for r in requests] == [10, 11, 12]
    assert all(r.request_type is RequestType.LOGLIKELIHOOD and r.doc_id == 7 for r in requests)
    assert [r.continuation for r in requests] == [" Rome", " Paris", " Oslo"]
    assert [r.choice_index for r in requests] == [0, 1, 2]
    assert requests[0].context == "Question: What is the capital of France? Answer:"
    assert task.doc_to_target(doc) == 1


def test_generation_document_yields_one_request_with_its_stop_strings(tiny_tasks):
    task = Task(TaskSpec.from_yaml(tiny_tasks / "tiny_gen.yaml"))
    [request] = task.build_requests(0, {"country": "Peru", "capital": "Lima"}, first_uid=0)
    assert request.request_type is RequestType.GENERATE_UNTIL
    assert request.generation.until == (".",) and request.generation.max_new_tokens == 6
    assert task.score({"country": "Peru", "capital": "Lima"}, [type("R", (), {"text": " lima"})()]) == {"none": {"exact_match": 1.0}}


@pytest.mark.parametrize(
    "n,limit,offset,expected",
    [
        (10, None, 0, range(0, 10)),
        (10, 3, 0, range(0, 3)),
        (10, 3, 8, range(8, 10)),
        (10, 0.25, 0, range(0, 3)),  # ceil(2.5)
        (10, 1.0, 0, range(0, 10)),
        (10, 100, 4, range(4, 10)),
    ],
)
def test_select_range(n, limit, offset, expected):
    assert select_range(n, limit, offset) == expected


@pytest.mark.parametrize("limit,offset", [(3, 10), (3, -1), (0, 0), (-2, 0)])
def test_select_range_rejects_out_of_range(limit, offset):
    with pytest.raises(ValueError):
        select_range(10, limit, offset)


def test_datamodule_applies_limit_and_offset_globally(tiny_tasks):
    dm = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], limit=4, offset=3)
    dm.setup("predict")
    assert sorted(dm.documents["tiny_mc"].docs) == [3, 4, 5, 6]
    assert sorted(dm.documents["tiny_gen"].docs) == [3, 4, 5, 6]
    assert len(dm.requests) == 4 * 3 + 4
    assert [r.uid for r in dm.requests] == list(range(len(dm.requests)))


def test_tasks_resolve_by_name_path_and_folder(tiny_tasks):
    assert [s.task for s in resolve_tasks([str(tiny_tasks)])] == ["tiny_gen", "tiny_mc"]
    assert [s.task for s in resolve_tasks(["tiny_mc"], include_path=str(tiny_tasks))] == ["tiny_mc"]
    with pytest.raises(TaskSpecError, match="unknown task 'nope'"):
        resolve_tasks(["nope"])


BASE = "task: t\noutput_type: generate_until\ndoc_to_text: q\ndoc_to_target: a\n"


@pytest.mark.parametrize(
    "text,message",
    [
        ("- a\n- b\n", "expected a mapping"),
        ("task: [\n", "not valid YAML"),
        ("output_type: generate_until\ndoc_to_text: q\ndoc_to_target: a\n", "missing required field 'task'"),
        (BASE + "fewshot_config: {sampler: balanced}\n", "field 'fewshot_config.sampler': expected 'default' or 'first_n'"),
        (BASE.replace("generate_until", "classify"), "field 'output_type': expected one of"),
        (BASE.replace("generate_until", "multiple_choice"), "field 'doc_to_choice' is required"),
        (BASE + "generation_kwargs: 5\n", "field 'generation_kwargs': expected a mapping"),
        (BASE + "metric_list: [{name: acc}]\n", "field 'metric_list[0]': expected a mapping with a 'metric' key"),
        (BASE + "doc_to_txt: q\n", "unknown field(s) ['doc_to_txt']"),
        (BASE + "data_files: 3\n", "field 'data_files'"),
    ],
)
def test_spec_errors_name_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaskSpecError) as err:
        TaskSpec.from_yaml(path)
    assert str(path) in str(err.value) and message in str(err.value)


# --- output types ---------------------------------------------------------------------------------
MC_DOC = {"country": "France", "capital": "Paris", "choices": ["Rome", "Paris", "Oslo"], "answer": 1}


def test_each_output_type_has_one_class():
    assert list(OUTPUT_KINDS) == list(get_args(OutputType))
    assert set(OUTPUT_KINDS.values()) == {MultipleChoice, Generation, Loglikelihood, Rolling}


def test_multiple_choice_target_is_an_index_and_its_choice(tiny_tasks):
    task = Task(TaskSpec.from_yaml(tiny_tasks / "tiny_mc.yaml"))
    assert isinstance(task.kind, MultipleChoice)
    assert task.target(MC_DOC) == Target(("Paris",), index=1)
    for given in (1, "1", "Paris", "b", "B"):
        assert task.kind.doc_to_target({**MC_DOC, "answer": given}) == 1


def test_generation_target_is_always_a_sequence_of_texts(tiny_tasks):
    task = Task(TaskSpec.from_yaml(tiny_tasks / "tiny_gen.yaml"))
    assert task.target({"capital": "Lima"}) == Target(("Lima",))
    assert task.doc_to_target({"capital": "Lima"}) == "Lima"  # the samples file keeps the YAML's shape
    assert task.target({"capital": ["Lima", "lima"]}).texts == ("Lima", "lima")
    assert task.doc_to_target({"capital": ["Lima", 7]}) == ["Lima", "7"]


def test_describe_reads_a_multiple_choice_record(tiny_tasks):
    task = Task(TaskSpec.from_yaml(tiny_tasks / "tiny_mc.yaml"))
    arguments = [["Q", " Rome"], ["Q", " Paris"], ["Q", " Oslo"]]
    record = {"arguments": arguments, "filtered_resps": [(-3.0, False), (-1.0, True), (-2.0, False)], "target": 1}
    assert task.describe(record) == ("Paris", "Paris")
    assert task.describe({**record, "target": 7}) == ("Paris", "7")  # an index out of range is shown as is
    assert task.describe({"arguments": arguments, "filtered_resps": [], "target": 0}) == ("", "Rome")


def test_describe_reads_a_generation_record(tiny_tasks):
    task = Task(TaskSpec.from_yaml(tiny_tasks / "tiny_gen.yaml"))
    assert task.describe({"filtered_resps": ["Lima"], "target": "Lima"}) == ("Lima", "Lima")
    record = {"filtered_resps": {"strict": ["Lima"], "loose": ["lima"]}, "target": ["Lima", "lima"]}
    assert task.describe(record) == ("strict: Lima / loose: lima", "['Lima', 'lima']")


def test_describe_reads_a_loglikelihood_record(tmp_path, tiny_tasks):
    path = tmp_path / "ll.yaml"
    path.write_text(
        f"task: ll\ndataset_path: json\ndata_files: {tiny_tasks / 'docs.jsonl'}\noutput_type: loglikelihood\n"
        "doc_to_text: 'The capital of {{country}} is'\ndoc_to_target: \"{{' ' + capital}}\"\n"
    )
    task = Task(TaskSpec.from_yaml(path))
    assert task.describe({"filtered_resps": [(-1.23456, True)], "target": " Paris"}) == ("logprob -1.2346 (greedy)", " Paris")
    assert task.describe({"filtered_resps": [], "target": " Paris"}) == ("logprob nan", " Paris")
    [request] = task.build_requests(0, {"country": "France", "capital": "Paris"}, first_uid=3)
    assert (request.uid, request.context, request.continuation) == (3, "The capital of France is", " Paris")


def test_process_results_gets_one_entry_per_request(tmp_path, tiny_tasks):
    (tmp_path / "scoring.py").write_text("def process(doc, results):\n    return {'n': len(results), 'first': results[0]}\n")
    for output_type, extra, value, expected in [
        ("generate_until", "", "Lima", {"n": 1, "first": "Lima"}),
        ("multiple_choice", "doc_to_choice: choices\n", [(-1.0, True), (-2.0, False)], {"n": 2, "first": (-1.0, True)}),
    ]:
        path = tmp_path / f"{output_type}.yaml"
        path.write_text(
            f"task: t\ndataset_path: json\ndata_files: {tiny_tasks / 'docs.jsonl'}\noutput_type: {output_type}\n"
            f"doc_to_text: q\ndoc_to_target: answer\n{extra}process_results: scoring:process\n"
            "metric_list: [{metric: n}, {metric: first}]\n"
        )
        assert Task(TaskSpec.from_yaml(path)).score_value(MC_DOC, value) == expected


def test_mutual_info_asks_each_choice_again_without_the_question(tmp_path, tiny_tasks):
    path = tmp_path / "mi.yaml"
    path.write_text((tiny_tasks / "tiny_mc.yaml").read_text() + "metric_list: [{metric: acc}, {metric: acc_mutual_info}]\n")
    task = Task(TaskSpec.from_yaml(path))
    requests = task.build_requests(0, MC_DOC, first_uid=0)
    assert [(r.context != "", r.continuation, r.choice_index) for r in requests] == [
        (True, " Rome", 0), (True, " Paris", 1), (True, " Oslo", 2), (False, " Rome", 3), (False, " Paris", 4), (False, " Oslo", 5),
    ]
    responses = [Response(uid=i, logprob=lp, is_greedy=False) for i, lp in enumerate([-5.0, -4.0, -1.0, -9.0, -2.0, -0.5])]
    # with the question Oslo wins; less each choice's own log-probability (-9, -2, -0.5), Rome does (+4, -2, -0.5)
    assert task.score(MC_DOC, responses) == {"none": {"acc": 0.0, "acc_mutual_info": 0.0}}
    assert task.score({**MC_DOC, "answer": 0}, responses) == {"none": {"acc": 0.0, "acc_mutual_info": 1.0}}


def test_only_a_generation_task_reads_its_filter_list(tmp_path, tiny_tasks):
    filters = "filter_list: [{name: lower, filter: [{function: lowercase}, {function: take_first}]}]\n"
    gen, mc = tmp_path / "gen.yaml", tmp_path / "mc.yaml"
    gen.write_text((tiny_tasks / "tiny_gen.yaml").read_text() + filters)
    mc.write_text((tiny_tasks / "tiny_mc.yaml").read_text() + filters)
    assert [name for name, _ in Task(TaskSpec.from_yaml(gen)).filters] == ["lower"]
    assert [name for name, _ in Task(TaskSpec.from_yaml(mc)).filters] == ["none"]
    assert Task(TaskSpec.from_yaml(gen)).filtered([Response(uid=0, text=" LIMA\n")]) == {"lower": "lima"}


def test_perplexity_is_lower_is_better_unless_the_yaml_says_otherwise(tmp_path, tiny_tasks):
    path = tmp_path / "ppl.yaml"
    path.write_text(
        f"task: ppl\ndataset_path: json\ndata_files: {tiny_tasks / 'docs.jsonl'}\noutput_type: loglikelihood\n"
        "doc_to_text: country\ndoc_to_target: capital\n"
        "metric_list: [{metric: word_perplexity}, {metric: bits_per_byte, higher_is_better: true}, {metric: acc}]\n"
    )
    task = Task(TaskSpec.from_yaml(path))
    assert [(m.metric, m.higher_is_better) for m in task.metrics] == [
        ("word_perplexity", False), ("bits_per_byte", True), ("acc", True),
    ]
    assert [task.aggregation(m.metric) for m in task.metrics] == ["weighted_perplexity", "bits_per_byte", "mean"]


def test_group_spec_from_yaml_and_its_weights(tmp_path, tiny_tasks):
    path = tmp_path / "group.yaml"
    path.write_text("group: g\ntask: [tiny_mc]\naggregate_metric_list: [{metric: acc, weight_by_size: false}]\n")
    group = GroupSpec.from_yaml(path)
    assert (group.group, group.task, group.weight_by_size("acc"), group.weight_by_size("acc_norm")) == ("g", ["tiny_mc"], False, True)
    with pytest.raises(TaskSpecError, match="is a group YAML"):
        TaskSpec.from_yaml(path)
    with pytest.raises(TaskSpecError, match="is a task YAML"):
        GroupSpec.from_yaml(tiny_tasks / "tiny_mc.yaml")


# --- the data module's one door for late settings ---------------------------------------------------
def test_connect_hands_over_done_uids_and_a_resolved_batch_size(tiny_tasks):
    dm = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml")], batch_size="auto")
    dm.setup()
    assert dm.done_uids == frozenset()
    dm.connect(done_uids={0, 1})
    dm.connect(batch_size={"loglikelihood": 5, "generate_until": 2})  # the other setting keeps its value
    assert dm.done_uids == {0, 1}
    assert dm.resolved_batch_size() == {"loglikelihood": 5, "generate_until": 2}
    assert dm.batch_size == "auto"  # as configured: results.json writes this one
    with pytest.raises(ValueError, match="still holds 'auto'"):
        dm.connect(batch_size={"loglikelihood": "auto"})


def test_the_sampler_skips_what_connect_says_is_done(tiny_tasks):
    dm = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml")], batch_size=4)
    dm.setup()
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0)
    dm.connect(done_uids=set(range(len(dm.requests) - 2)))
    planned = [uid for batch in dm.predict_dataloader().sampler for uid in batch.uids]
    assert sorted(planned) == [len(dm.requests) - 2, len(dm.requests) - 1]
