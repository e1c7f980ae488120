"""The task system end to end: include, groups, few-shot, function references, filters, repeats."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.metrics.groups import pooled_stderr
from lmm_lightning.tasks import GroupSpec, Task, TaskSpec, TaskSpecError, resolve

from tests.integration.test_end_to_end import cli, outputs, run


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_tasks) -> Path:
    """Task YAMLs exercising every spec feature, over the tiny tasks' documents."""
    folder = tmp_path_factory.mktemp("suite")
    docs = tiny_tasks / "docs.jsonl"
    (folder / "utils.py").write_text(
        "def question(doc):\n"
        "    return 'Q: capital of ' + doc['country'] + '? A:'\n"
    )
    (folder / "base_mc.yaml").write_text(
        f"task: base_mc\ndataset_path: json\ndata_files: {docs}\noutput_type: multiple_choice\n"
        "doc_to_text: utils:question\ndoc_to_choice: choices\ndoc_to_target: answer\n"
    )
    (folder / "fewshot_mc.yaml").write_text(
        "include: base_mc.yaml\ntask: fewshot_mc\nnum_fewshot: 2\ndescription: \"Capitals.\\n\\n\"\n"
        "metric_list: [{metric: acc}, {metric: acc_norm}, {metric: acc_mutual_info}]\n"
    )
    (folder / "filtered_gen.yaml").write_text(
        f"task: filtered_gen\ndataset_path: json\ndata_files: {docs}\noutput_type: generate_until\n"
        "doc_to_text: 'Capital of {{country}}:'\ndoc_to_target: capital\nrepeats: 3\n"
        "generation_kwargs: {until: ['\\n'], max_new_tokens: 4, do_sample: true, temperature: 1.0}\n"
        "filter_list:\n"
        "  - name: first-word\n    filter: [{function: regex, regex_pattern: '(\\w+)', group_select: 0}, {function: take_first}]\n"
        "  - name: vote\n    filter: [{function: strip}, {function: majority_vote}]\n"
        "metric_list: [{metric: exact_match, ignore_case: true}]\n"
    )
    (folder / "capitals_group.yaml").write_text(
        "group: capitals_group\ntask: [base_mc, fewshot_mc]\naggregate_metric_list: [{metric: acc, weight_by_size: true}]\n"
    )
    return folder


def test_include_inherits_and_overrides(suite):
    spec = TaskSpec.from_yaml(suite / "fewshot_mc.yaml")
    assert spec.task == "fewshot_mc" and spec.num_fewshot == 2 and spec.doc_to_choice == "choices"
    assert spec.doc_to_text == str(suite.resolve() / "utils.py") + ":question" and [m.metric for m in spec.metric_list][-1] == "acc_mutual_info"


def test_function_reference_resolves_beside_the_yaml(suite):
    task = Task(TaskSpec.from_yaml(suite / "base_mc.yaml"))
    assert task.doc_to_text({"country": "Peru"}) == "Q: capital of Peru? A:"


def test_group_resolves_to_its_subtasks(suite):
    resolved = resolve([str(suite / "capitals_group.yaml")], include_path=str(suite))
    assert [t.task for t in resolved.tasks] == ["base_mc", "fewshot_mc"]
    assert resolved.subtasks == {"capitals_group": ["base_mc", "fewshot_mc"]}
    assert GroupSpec.from_yaml(suite / "capitals_group.yaml").task == ["base_mc", "fewshot_mc"]


def test_fewshot_examples_are_seeded_per_document_and_exclude_it(suite):
    dm = BenchmarkDataModule([str(suite / "fewshot_mc.yaml")], seed=7)
    dm.setup()
    task = dm.tasks["fewshot_mc"]
    first = [task.context(i, doc) for i, doc in dm.documents["fewshot_mc"].docs.items()]
    again = BenchmarkDataModule([str(suite / "fewshot_mc.yaml")], seed=7, offset=5)
    again.setup()
    for doc_id, doc in again.documents["fewshot_mc"].docs.items():
        assert again.tasks["fewshot_mc"].context(doc_id, doc) == first[doc_id]  # independent of which docs run
    for doc_id, doc in dm.documents["fewshot_mc"].docs.items():
        context = first[doc_id]
        assert context.startswith("Capitals.\n\n") and context.count("Q: capital of") == 3
        assert context.count(f"Q: capital of {doc['country']}?") == 1  # never its own answer
    other = BenchmarkDataModule([str(suite / "fewshot_mc.yaml")], seed=8)
    other.setup()
    assert [other.tasks["fewshot_mc"].context(i, d) for i, d in other.documents["fewshot_mc"].docs.items()] != first


def test_unknown_metric_names_the_file_and_field(tmp_path, tiny_tasks):
    path = tmp_path / "bad.yaml"
    path.write_text((tiny_tasks / "tiny_mc.yaml").read_text() + "metric_list: [{metric: bleu}]\n")
    with pytest.raises(TaskSpecError, match=r"bad.yaml: field 'metric_list\[0\].metric': unknown metric 'bleu'"):
        Task(TaskSpec.from_yaml(path))


def test_tasks_subcommand_lists_builtin_tasks(suite):
    result = subprocess.run([sys.executable, "-m", "lmm_lightning", "tasks", str(suite)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "capitals_mc" in result.stdout and "capitals_group" in result.stdout and "group" in result.stdout


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory, tiny_model, suite):
    folder = tmp_path_factory.mktemp("suite_runs")
    config = {
        "model": {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(tiny_model)}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": ["capitals_group", "filtered_gen"], "include_path": str(suite), "batch_size": 3},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 500},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run(cli(path, folder / "one"), folder)
    run(cli(path, folder / "two", "--trainer.devices", "2", "--trainer.strategy", "ddp"), folder)
    return outputs(folder / "one"), outputs(folder / "two")


def test_suite_is_identical_on_one_and_two_processes(suite_runs):
    one, two = suite_runs
    assert one["samples"] == two["samples"]  # few-shot contexts, sampled generations and scores
    assert one["results"] == two["results"]


def test_group_score_and_stderr_follow_the_formulas(suite_runs):
    doc = suite_runs[0]["doc"]
    subtasks = doc["group_subtasks"]["capitals_group"]
    assert subtasks == ["base_mc", "fewshot_mc"]
    values = [doc["results"][t]["acc,none"] for t in subtasks]
    stderrs = [doc["results"][t]["acc_stderr,none"] for t in subtasks]
    sizes = [doc["n-samples"][t]["effective"] for t in subtasks]
    group = doc["groups"]["capitals_group"]
    assert group["acc,none"] == pytest.approx(sum(v * n for v, n in zip(values, sizes)) / sum(sizes))
    assert group["acc_stderr,none"] == pytest.approx(pooled_stderr(stderrs, sizes))


def test_filters_repeats_and_fewshot_show_in_results(suite_runs):
    one, _ = suite_runs
    gen = one["results"]["filtered_gen"]
    assert {"exact_match,first-word", "exact_match,vote"} <= set(gen)
    for stat in ("expected_accuracy", "consensus_accuracy", "mean_within_question_variance", "consistency_rate"):
        assert f"exact_match_{stat},first-word" in gen
    lines = [json.loads(l) for l in one["samples"]["samples_filtered_gen.jsonl"].splitlines()]
    assert len(lines[0]["resps"]) == 3 and set(lines[0]["filtered_resps"]) == {"first-word", "vote"}
    assert "exact_match,first-word" in lines[0]["stability"]
    assert one["doc"]["n-shot"]["fewshot_mc"] == 2
    fewshot = [json.loads(l) for l in one["samples"]["samples_fewshot_mc.jsonl"].splitlines()]
    assert len(fewshot[0]["arguments"]) == 6  # 3 choices + 3 unconditional for acc_mutual_info
    assert "acc_mutual_info,none" in one["results"]["fewshot_mc"]


def test_include_from_another_folder_keeps_the_base_files_and_functions(suite, tmp_path):
    child = tmp_path / "elsewhere" / "child.yaml"
    child.parent.mkdir()
    child.write_text(f"include: {suite / 'base_mc.yaml'}\ntask: child_mc\n")
    task = Task(TaskSpec.from_yaml(child))
    assert task.doc_to_text({"country": "Peru"}) == "Q: capital of Peru? A:"  # utils.py beside base_mc.yaml
    relative = tmp_path / "rel"
    relative.mkdir()
    (relative / "base.yaml").write_text("task: b\ndataset_path: json\ndata_files: docs.jsonl\noutput_type: generate_until\ndoc_to_text: q\ndoc_to_target: a\n")
    (tmp_path / "child2.yaml").write_text("include: rel/base.yaml\ntask: c\n")
    assert TaskSpec.from_yaml(tmp_path / "child2.yaml").data_files == str((relative / "docs.jsonl").resolve())


def test_num_fewshot_override_and_first_n_sampler(suite, tmp_path):
    path = tmp_path / "first.yaml"
    path.write_text(f"include: {suite / 'base_mc.yaml'}\ntask: first_mc\nfewshot_sampler: first_n\n")
    dm = BenchmarkDataModule([str(path)], num_fewshot=2)
    dm.setup()
    task = dm.tasks["first_mc"]
    contexts = {i: task.context(i, doc) for i, doc in dm.documents["first_mc"].docs.items()}
    assert contexts[5].startswith("Q: capital of France? A: Paris\n\nQ: capital of Germany? A: Berlin\n\n")
    assert contexts[0].startswith("Q: capital of Germany? A: Berlin\n\nQ: capital of Spain? A: Madrid\n\n")  # never itself
