"""cli.py: one table of subcommands, each listed by `lmm-lightning --help`, and the private Lightning methods it overrides."""

import doctest
import inspect
import subprocess
import sys

import pytest
import yaml
from lightning.pytorch.cli import LightningCLI

import lmm_lightning.cli as cli
from lmm_lightning.cli import SUBCOMMANDS, EvalCLI, main


def run_main(args: list[str], capsys) -> tuple[object, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_docstring_examples_run():
    results = doctest.testmod(cli)
    assert results.attempted > 0 and results.failed == 0


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_subcommand_with_its_help(flag, capsys):
    code, out, _ = run_main([flag], capsys)
    assert code == 0
    assert {"predict", "tasks", "compare"} <= set(SUBCOMMANDS)
    for name, (_, summary) in SUBCOMMANDS.items():
        assert f"  {name}  " in out and summary in out


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
        ([], "expected a subcommand, one of {predict,tasks,compare}"),
        (["bogus"], "unknown subcommand 'bogus' (expected one of {predict,tasks,compare})"),
        (["predcit"], "did you mean 'predict'?"),
    ],
)
def test_a_missing_or_unknown_subcommand_is_one_line_and_exit_2(args, expected, capsys):
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lmm-lightning: error: command line: ") and expected in err


def test_tasks_lists_the_builtin_tasks(capsys):
    code, out, _ = run_main(["tasks"], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["name", "kind", "file"] and "\ncapitals_mc " in out


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
    ours, theirs = getattr(EvalCLI, method), getattr(LightningCLI, method)
    assert ours is not theirs
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters)
    assert callable(getattr(LightningCLI, "_get"))
