"""Task specs, document selection and request building."""

import pytest

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.requests import RequestType
from lmm_lightning.tasks import Task, TaskSpecError, load_task_spec, resolve_tasks
from lmm_lightning.tasks.task import select_range


def test_multiple_choice_document_yields_one_loglikelihood_request_per_choice(tiny_tasks):
    task = Task(load_task_spec(tiny_tasks / "tiny_mc.yaml"))
    doc = {"country": "France", "capital": "Paris", "choices": ["Rome", "Paris", "Oslo"], "answer": 1}
    requests = task.build_requests(7, doc, first_uid=10)
    assert [r.uid for r in requests] == [10, 11, 12]
    assert all(r.request_type is RequestType.LOGLIKELIHOOD and r.doc_id == 7 for r in requests)
    assert [r.continuation for r in requests] == [" Rome", " Paris", " Oslo"]
    assert [r.choice_index for r in requests] == [0, 1, 2]
    assert requests[0].context == "Question: What is the capital of France? Answer:"
    assert task.doc_to_target(doc) == 1


def test_generation_document_yields_one_request_with_its_stop_strings(tiny_tasks):
    task = Task(load_task_spec(tiny_tasks / "tiny_gen.yaml"))
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
        ("task: t\ndoc_to_text: q\ndoc_to_target: a\n", "missing required field 'output_type'"),
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
        load_task_spec(path)
    assert str(path) in str(err.value) and message in str(err.value)
