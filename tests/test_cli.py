"""cli.py: one table of subcommands, each listed by `lmm-lightning --help`, the light start of `--help`, `tasks`
and `compare` (no torch, no Lightning), and the private Lightning methods lightning_cli.py overrides."""

import doctest
import inspect
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from lightning.pytorch.cli import LightningCLI

import lmm_lightning.cli as cli
import lmm_lightning.lightning_cli as lightning_cli
from lmm_lightning.cli import SUBCOMMANDS, EvalCLI, main

HEAVY = ("torch", "lightning", "transformers", "datasets")


def run_main(args: list[str], capsys) -> tuple[object, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize("module", [cli, lightning_cli])
def test_docstring_examples_run(module):
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_subcommand_with_its_help(flag, capsys):
    code, out, _ = run_main([flag], capsys)
    assert code == 0
    assert {"eval", "predict", "tasks", "compare"} <= set(SUBCOMMANDS)
    for name, (_, summary) in SUBCOMMANDS.items():
        assert f"  {name}  " in out and summary in out
    assert len(out.splitlines()) == 5 + len(SUBCOMMANDS)  # one line each


def imported_after(args: list[str], tmp_path) -> tuple[list[str], str]:
    """The heavy modules loaded by `python -m lmm_lightning ARGS`, read from `sys.modules` at exit."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(tmp_path / 'mods.json')!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        "sys.argv = ['lmm-lightning', *sys.argv[1:]]\n"
        "from lmm_lightning.cli import main\n"
        "main()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(probe), *args], capture_output=True, text=True, timeout=120, env=env)
    modules = json.loads((tmp_path / "mods.json").read_text())
    return [m for m in HEAVY if m in modules], result.stdout


@pytest.mark.parametrize("args", [["--help"], ["tasks"], ["compare", "--help"], ["eval", "--help"]])
def test_help_tasks_and_compare_import_no_torch_or_lightning(args, tmp_path):
    heavy, out = imported_after(args, tmp_path)
    assert out and heavy == []


def test_compare_of_two_runs_imports_no_torch_or_lightning(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"results": {"t": {"acc,none": 0.5}}}))
    (folder / "samples_t.jsonl").write_text("".join(json.dumps({"doc_id": i, "acc": float(i % 2)}) + "\n" for i in range(6)))
    heavy, out = imported_after(["compare", str(folder), str(folder), "--iters", "50"], tmp_path)
    assert "| t | acc | 6 |" in out and heavy == []


@pytest.mark.parametrize("args", [["--help"], ["tasks"], ["compare", "--help"]])
def test_help_tasks_and_compare_start_in_under_two_seconds(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lmm_lightning", *args], capture_output=True, text=True, timeout=60, env=env)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and elapsed < 2.0, f"{args}: {elapsed:.2f}s"


def test_the_console_script_prints_the_same_help():
    result = subprocess.run([sys.executable, "-m", "lmm_lightning", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and all(name in result.stdout for name in SUBCOMMANDS)


def test_each_subcommand_gets_the_arguments_after_its_name(monkeypatch, capsys):
    for name in SUBCOMMANDS:
        calls = []
        monkeypatch.setitem(SUBCOMMANDS, name, (lambda args, calls=calls: calls.append(args) or 3, "help"))
        code, _, _ = run_main([name, "a", "--b"], capsys)
        assert code == 3 and calls == [["a", "--b"]]


def test_a_finished_predict_run_returns_to_an_in_process_caller(monkeypatch):
    monkeypatch.setitem(SUBCOMMANDS, "predict", (lambda args: None, "help"))
    assert main(["predict", "--config", "x.yaml"]) is None


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "expected a subcommand, one of {eval,predict,tasks,compare,power,eval-checkpoints}"),
        (["bogus"], "unknown subcommand 'bogus' (expected one of {eval,predict,tasks,compare,power,eval-checkpoints})"),
        (["predcit"], "did you mean 'predict'?"),
    ],
)
def test_a_missing_or_unknown_subcommand_is_one_line_and_exit_2(args, expected, capsys):
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lmm-lightning: error: command line: ") and expected in err


def listed(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}


def test_tasks_lists_each_tasks_modality_and_output_type(capsys):
    code, out, _ = run_main(["tasks"], capsys)
    rows = listed(out)
    assert code == 0 and out.splitlines()[0].split() == ["name", "modality", "output", "type", "file"]
    assert rows["capitals_mc"] == ["text", "multiple_choice"] and rows["capitals_gen"] == ["text", "generate_until"]
    assert rows["mme"] == ["vision", "generate_until"] and rows["mmlu"] == ["-", "group"]


def test_tasks_lists_the_tasks_of_an_include_path(tiny_tasks, capsys):
    code, out, _ = run_main(["tasks", "--include_path", str(tiny_tasks)], capsys)
    assert code == 0 and listed(out)["tiny_mc"] == ["text", "multiple_choice"] and listed(out)["tiny_gen"][1] == "generate_until"


def test_tasks_show_prints_the_resolved_yaml_and_the_first_prompts(tiny_tasks, capsys):
    code, out, _ = run_main(["tasks", "--show", "tiny_mc", "--include_path", str(tiny_tasks), "--limit", "2"], capsys)
    assert code == 0
    header, rest = out.split("\n", 1)
    assert header.startswith("# tiny_mc: ") and yaml.safe_load(rest.split("\n--- ")[0])["output_type"] == "multiple_choice"
    assert out.count("\n--- tiny_mc, doc_id ") == 2
    assert "[loglikelihood] Question: What is the capital of France? Answer: Paris" in out


def test_tasks_show_of_an_unknown_task_is_one_line_and_exit_2(capsys):
    code, out, err = run_main(["tasks", "--show", "no_such_task"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no_such_task" in err


def test_predict_reads_a_comma_list_of_tasks(tmp_path, tiny_model, capsys):
    """`--data.tasks a,b` (lm-eval's spelling) is the list [a, b], not a 75-line jsonargparse dump."""
    code, out, _ = run_main(
        ["predict", "--model", "lmm_lightning.models.HFCausalLM", "--model.pretrained", str(tiny_model),
         "--data.tasks", "capitals_mc,capitals_gen", "--print_config"],
        capsys,
    )
    assert code == 0 and yaml.safe_load(out)["data"]["init_args"]["tasks"] == ["capitals_mc", "capitals_gen"]


def test_predict_help_is_lightnings(capsys):
    code, out, _ = run_main(["predict", "--help"], capsys)
    assert code == 0 and "--evaluation.output_dir" in out and "--model" in out


def test_lightnings_top_level_options_still_reach_it(tmp_path, tiny_model, capsys):
    """`lmm-lightning -c FILE predict ...`: a config file whose `predict:` section LightningCLI reads."""
    config = tmp_path / "top.yaml"
    model = {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(tiny_model)}}
    config.write_text(yaml.safe_dump({"predict": {"model": model}}))
    code, out, _ = run_main(["-c", str(config), "predict", "--print_config"], capsys)
    assert code == 0 and f"pretrained: {tiny_model}" in out


@pytest.mark.parametrize("method", ["_prepare_subcommand_kwargs", "_instantiate_trainer"])
def test_the_private_lightning_methods_we_override_are_still_there(method):
    """Written against lightning 2.6.6: a Lightning that renames them or changes their arguments fails here."""
    ours, theirs = getattr(lightning_cli.EvalCLI, method), getattr(LightningCLI, method)
    assert EvalCLI is lightning_cli.EvalCLI  # still importable from cli.py
    assert ours is not theirs
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters)
    assert callable(getattr(LightningCLI, "_get"))
