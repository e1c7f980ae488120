"""Bad input gets one `lmm-lightning: error:` line naming what, where and what was expected, exit code 2,
no results, and is caught before the model loads: on one process or two, and when only one rank sees it.

Most cases run `lmm_lightning.cli.main` in-process with the weights loader replaced by one that records
the call (fast); the multi-process cases run real `python -m lmm_lightning predict` processes.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from lmm_lightning.cli import main

REPO = Path(__file__).resolve().parents[3]  # on PYTHONPATH: the tests package and its fixtures
MC = (
    "task: {name}\ndataset_path: json\ndata_files: {docs}\noutput_type: multiple_choice\n"
    "doc_to_text: 'Q: {{country}}?'\ndoc_to_choice: choices\ndoc_to_target: answer\n"
)
GEN = (
    "task: {name}\ndataset_path: json\ndata_files: {docs}\noutput_type: generate_until\n"
    "doc_to_text: 'Capital of {{country}}:'\ndoc_to_target: capital\n"
)
ERROR = "lmm-lightning: error:"


@dataclass
class Case:
    """A bad input: the files it writes, its config edits and CLI arguments, and the words its line must hold."""

    expect: tuple[str, ...]
    args: tuple[str, ...] = ()
    config: dict | None = None  # dotted key -> value
    files: dict | None = None  # name (under tmp) -> text or bytes
    model: Callable[[Path], None] | None = None  # breaks a copy of the tiny model folder at tmp/model


class Env:
    """Names a case's strings may hold: {tmp}, {docs} (the tiny documents), {tasks} (the tiny task folder)."""

    def __init__(self, tmp: Path, tiny_tasks: Path) -> None:
        self.values = {"{tmp}": str(tmp), "{docs}": str(tiny_tasks / "docs.jsonl"), "{tasks}": str(tiny_tasks)}

    def fill(self, value, **more: str):
        if isinstance(value, str):
            for key, text in {**self.values, **{f"{{{k}}}": v for k, v in more.items()}}.items():
                value = value.replace(key, text)
            return value
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value


def write_case(tmp: Path, tiny_model: Path, tiny_tasks: Path, case: Case) -> list[str]:
    env = Env(tmp, tiny_tasks)
    for name, text in (case.files or {}).items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(env.fill(text, name=path.stem))
    pretrained = tiny_model
    if case.model is not None:
        pretrained = tmp / "model"
        shutil.copytree(tiny_model, pretrained)
        case.model(pretrained)
    config = {
        "model": {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(pretrained)}},
        "data": {"class_path": "lmm_lightning.data.BenchmarkDataModule", "init_args": {"tasks": [str(tiny_tasks / "tiny_mc.yaml")], "batch_size": 4}},
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 10},
    }
    for dotted, value in (case.config or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = env.fill(value)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    return ["predict", "--config", str(tmp / "config.yaml"), "--evaluation.output_dir", str(tmp / "out"), *env.fill(list(case.args))]


def task_yaml(text: str, **more) -> dict:
    """A case whose only task is tmp/bad.yaml."""
    return {"files": {"bad.yaml": text, **more.pop("files", {})}, "config": {"data.init_args.tasks": ["{tmp}/bad.yaml"], **more}}


def gen_kwargs(value: dict) -> dict:
    return {"config": {"data.init_args.tasks": ["{tasks}/tiny_gen.yaml"], "data.init_args.generation_kwargs": value}}


def docs_file(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# --- broken copies of the tiny model folder ---------------------------------------------------------
def no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def truncated_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def bad_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 32,')


def unknown_model_type(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "no_such_architecture"}')


def no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()


def missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


CASES: dict[str, Case] = {
    # the trainer and the process group
    "accelerator gpu without a GPU": Case(("trainer.accelerator", "'gpu'", "not available", "cpu"), args=("--trainer.accelerator", "gpu")),
    "accelerator unknown": Case(("trainer.accelerator", "'tpuu'", "expected"), args=("--trainer.accelerator", "tpuu")),
    "strategy unknown": Case(("trainer.strategy", "'dpp'", "did you mean 'ddp'"), args=("--trainer.strategy", "dpp")),
    "devices 0": Case(("trainer.devices", "got 0", "positive"), args=("--trainer.devices", "0")),
    "devices not a number": Case(("trainer", "devices", "int > 0"), args=("--trainer.devices", "two")),
    "num_nodes 0": Case(("trainer.num_nodes", "got 0"), args=("--trainer.num_nodes", "0")),
    "process_group_timeout 0": Case(("process_group_timeout", "positive", "got 0"), args=("--process_group_timeout", "0")),
    "process_group_timeout negative": Case(("process_group_timeout", "got -5"), args=("--process_group_timeout=-5",)),
    # the command line: jsonargparse's multi-line dumps become one line naming the option
    "option misspelled": Case(("--evaluation.bootstrap_itres", "did you mean --evaluation.bootstrap_iters?"), args=("--evaluation.bootstrap_itres", "3")),
    "option misspelled in the config file": Case(("--evaluation.bootstrap_itres", "--evaluation.bootstrap_iters"), config={"evaluation.bootstrap_itres": 3}),
    "model option misspelled": Case(("--model.max_lenght", "did you mean --model.max_length?"), args=("--model.init_args.max_lenght", "5")),
    "option of the wrong type": Case(("evaluation.bootstrap_iters", "expected int", "'many'"), args=("--evaluation.bootstrap_iters", "many")),
    "data option of the wrong type": Case(("data.num_workers", "expected int", "'some'"), args=("--data.init_args.num_workers", "some")),
    "limit not a number": Case(("data.limit", "int, float, None", "'half'"), args=("--data.init_args.limit", "half")),
    # the output folder and the evaluation options
    "output_dir is a file": Case(("evaluation.output_dir", "occupied is a file"), files={"occupied": "x"}, args=("--evaluation.output_dir", "{tmp}/occupied")),
    "output_dir below a file": Case(("evaluation.output_dir", "which is a file"), files={"occupied": "x"}, args=("--evaluation.output_dir", "{tmp}/occupied/out")),
    "output_dir not writable": Case(("evaluation.output_dir", "cannot write in /sys"), args=("--evaluation.output_dir", "/sys/lmm-lightning-out")),
    "bootstrap_iters negative": Case(("evaluation.bootstrap_iters", "non-negative", "-5"), args=("--evaluation.bootstrap_iters=-5",)),
    # generation settings given on the command line or in a task
    "generation_kwargs for an unknown task": Case(("data.generation_kwargs", "'tiny_gne'", "tiny_gen"), **gen_kwargs({"tiny_gne": {"max_new_tokens": 4}})),
    "generation_kwargs unknown key": Case(("data.generation_kwargs['tiny_gen']", "'max_new_token'", "max_new_tokens"), **gen_kwargs({"tiny_gen": {"max_new_token": 4}})),
    "until not a string": Case(("'until'", "a string or a list of strings", "got 5"), **gen_kwargs({"*": {"until": 5}})),
    "until a list holding a number": Case(("'until'", "a string or a list of strings"), **gen_kwargs({"tiny_gen": {"until": ["\n", 3]}})),
    "max_new_tokens 0": Case(("'max_new_tokens'", "at least 1", "got 0"), **gen_kwargs({"tiny_gen": {"max_new_tokens": 0}})),
    "temperature not a number": Case(("'temperature'", "number", "'hot'"), **gen_kwargs({"tiny_gen": {"temperature": "hot", "do_sample": True}})),
    "temperature not a number in a task": Case(
        ("bad.yaml", "generation_kwargs", "'temperature'", "'warm'"),
        **task_yaml(GEN + "generation_kwargs: {temperature: warm, do_sample: true}\n"),
    ),
    # task files
    "aggregation unknown": Case(("bad.yaml", "metric_list[0].aggregation", "'avg'", "mean"), **task_yaml(MC + "metric_list: [{metric: acc, aggregation: avg}]\n")),
    "task name empty": Case(("bad.yaml", "field 'task'", "non-empty name"), **task_yaml(MC.replace("task: {name}", "task: ''"))),
    "task name a path": Case(("bad.yaml", "field 'task'", "'../../escape'"), **task_yaml(MC.replace("task: {name}", "task: ../../escape"))),
    "task name with a backslash": Case(("bad.yaml", "field 'task'", "without '/'"), **task_yaml(MC.replace("task: {name}", "task: 'a\\b'"))),
    "task name dot-dot": Case(("bad.yaml", "field 'task'", "'..'"), **task_yaml(MC.replace("task: {name}", "task: '..'"))),
    "two YAMLs define one task name": Case(
        ("two.yaml", "task 'dup' is also defined by", "one.yaml"),
        files={"one.yaml": MC.replace("{name}", "dup"), "two.yaml": MC.replace("{name}", "dup")},
        config={"data.init_args.tasks": ["{tmp}/one.yaml", "{tmp}/two.yaml"]},
    ),
    "two YAMLs in the include folder define one name": Case(
        ("task 'dup' is defined by several YAMLs", "one.yaml", "two.yaml"),
        files={"lib/one.yaml": MC.replace("{name}", "dup"), "lib/two.yaml": MC.replace("{name}", "dup")},
        config={"data.init_args.tasks": ["dup"], "data.init_args.include_path": "{tmp}/lib"},
    ),
    "task folder missing": Case(("no_such_folder", "no such task file or folder"), config={"data.init_args.tasks": ["{tmp}/no_such_folder/"]}),
    "include_path missing": Case(("data.include_path", "no_such_folder", "not a folder"), config={"data.init_args.include_path": "{tmp}/no_such_folder"}),
    # documents
    "data file not UTF-8": Case(
        ("bad.yaml", "latin1.jsonl", "not valid UTF-8"),
        **task_yaml(MC.replace("{docs}", "{tmp}/latin1.jsonl"), files={"latin1.jsonl": b'{"country": "Fran\xe7a", "choices": ["Paris", "Rome"], "answer": 0}\n'}),
    ),
    "choice empty": Case(
        ("bad.yaml", "document 1", "choice(s) [1]", "empty"),
        **task_yaml(MC.replace("{docs}", "{tmp}/docs.jsonl"), files={"docs.jsonl": docs_file([
            {"country": "France", "choices": ["Paris", "Rome"], "answer": 0},
            {"country": "Peru", "choices": ["Lima", ""], "answer": 0},
        ])}),
    ),
    "image column holds a path to a non-image": Case(
        ("bad.yaml", "document 0", "column 'image'", "notes.txt", "not an image"),
        **task_yaml(MC.replace("{docs}", "{tmp}/docs.jsonl") + "doc_to_visual: image\n", files={
            "notes.txt": "not a picture",
            "docs.jsonl": docs_file([{"country": "France", "choices": ["Paris", "Rome"], "answer": 0, "image": "{tmp}/notes.txt"}]),
        }),
    ),
    "image column holds a missing path": Case(
        ("bad.yaml", "column 'image'", "gone.png", "no such file"),
        **task_yaml(MC.replace("{docs}", "{tmp}/docs.jsonl") + "doc_to_visual: image\n", files={
            "docs.jsonl": docs_file([{"country": "France", "choices": ["Paris", "Rome"], "answer": 0, "image": "{tmp}/gone.png"}]),
        }),
    ),
    "limit 1.5": Case(("limit 1.5", "neither a whole number"), config={"data.init_args.limit": 1.5}),
    # the model folder and its options
    "model folder without weights": Case(("model.pretrained", "no weights", "model.safetensors"), model=no_weights),
    "model weights truncated": Case(("model.pretrained", "model.safetensors is truncated"), model=truncated_weights),
    "model shard missing": Case(("model.pretrained", "model.safetensors.index.json", "model-00002-of-00002.safetensors"), model=missing_shard),
    "model config.json not JSON": Case(("model.pretrained", "config.json is not a valid model config", "JSONDecodeError"), model=bad_config),
    "model config.json unknown model_type": Case(("model.pretrained", "config.json", "no_such_architecture"), model=unknown_model_type),
    "model folder without a tokenizer": Case(("model.pretrained", "no usable tokenizer"), model=no_tokenizer),
    "vision model folder without weights": Case(
        ("model.pretrained", "no weights"), model=no_weights, config={"model.class_path": "lmm_lightning.models.HFVisionLM"}
    ),
    "vision model folder without a tokenizer": Case(
        ("model.pretrained", "has no tokenizer"), model=no_tokenizer, config={"model.class_path": "lmm_lightning.models.HFVisionLM"}
    ),
    "attn_implementation unknown": Case(("model.attn_implementation", "'flash'", "sdpa"), config={"model.init_args.attn_implementation": "flash"}),
    "use_chat_template without a template": Case(("model.use_chat_template", "no chat template"), config={"model.init_args.use_chat_template": True}),
    "max_length 0": Case(("model.max_length", "got 0"), config={"model.init_args.max_length": 0}),
    "vision max_length 0": Case(("model.max_length", "got 0"), config={"model.class_path": "lmm_lightning.models.HFVisionLM", "model.init_args.max_length": 0}),
    # the data module's options
    "num_workers negative": Case(("data.num_workers", "at least 0", "-1"), config={"data.init_args.num_workers": -1}),
    "batch size for a misspelled request type": Case(
        ("data.batch_size", "'loglikelihod'", "loglikelihood"), config={"data.init_args.batch_size": {"loglikelihod": 4}}
    ),
    "batch size in a mapping not positive": Case(("data.batch_size['generate_until']", "got 0"), config={"data.init_args.batch_size": {"generate_until": 0}}),
}
SKIP = {
    "accelerator gpu without a GPU": torch.cuda.is_available(),
    "output_dir not writable": os.access("/sys", os.W_OK) and not os.path.ismount("/sys"),
}


@pytest.fixture(autouse=True)
def tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))


@pytest.fixture
def weights_loaded(monkeypatch) -> list[str]:
    """Records every attempt to load a model's weights (and refuses it)."""
    import transformers

    calls: list[str] = []

    def refuse(path, *args, **kwargs):
        calls.append(str(path))
        raise RuntimeError("the model's weights were loaded")

    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForImageTextToText):
        monkeypatch.setattr(auto, "from_pretrained", refuse)
    return calls


def run_main(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(ERROR)]


@pytest.mark.parametrize("name", list(CASES))
def test_one_line_exit_2_before_the_model_loads(name, tmp_path, tiny_model, tiny_tasks, capsys, weights_loaded):
    if SKIP.get(name):
        pytest.skip("this machine cannot show the case")
    case = CASES[name]
    code, err = run_main(write_case(tmp_path, tiny_model, tiny_tasks, case), capsys)
    lines = error_lines(err)
    assert code == 2, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    for word in case.expect:
        assert word in lines[0], lines[0]
    assert "Traceback" not in err and "usage:" not in err
    assert weights_loaded == []
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_task_name_never_writes_outside_the_output_folder(tmp_path, tiny_model, tiny_tasks, capsys):
    """A full run (the model really loads): `samples_<task>.jsonl` with task `x/../../escape` would land in tmp/."""
    case = Case((), **task_yaml(MC.replace("task: {name}", "task: x/../../escape")))
    args = write_case(tmp_path, tiny_model, tiny_tasks, case)
    (tmp_path / "out" / "samples_x").mkdir(parents=True)  # a folder of that name is all the escape needs
    code, err = run_main(args, capsys)
    assert code == 2 and "field 'task'" in error_lines(err)[0]
    assert not list(tmp_path.glob("escape*")) and not (tmp_path / "out" / "results.json").exists()


def test_the_weights_detector_sees_a_load(tmp_path, tiny_model, tiny_tasks, capsys, weights_loaded):
    """A good configuration does reach the weights: the cases above are not passing by accident."""
    args = write_case(tmp_path, tiny_model, tiny_tasks, Case(()))
    with pytest.raises(RuntimeError, match="weights were loaded"):
        main(args)
    assert weights_loaded == [str(tiny_model)]


# --- real processes ---------------------------------------------------------------------------------
def launch(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lmm_lightning", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("name", ["option misspelled", "accelerator gpu without a GPU"])
def test_the_error_is_the_only_line_a_real_process_prints(name, tmp_path, tiny_model, tiny_tasks):
    """Options are checked right after parsing: nothing (no usage dump, no seed or trainer banner) comes first."""
    if SKIP.get(name):
        pytest.skip("this machine cannot show the case")
    result = launch(write_case(tmp_path, tiny_model, tiny_tasks, CASES[name]))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(ERROR), result.stderr[-3000:]
    assert all(word in lines[0] for word in CASES[name].expect)


def test_two_processes_print_the_line_once(tmp_path, tiny_model, tiny_tasks):
    args = write_case(tmp_path, tiny_model, tiny_tasks, CASES["choice empty"])
    result = launch([*args, "--trainer.devices", "2", "--trainer.strategy", "ddp"])
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "document 1" in lines[0] and "empty" in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "rror" in line] == lines
    assert not (tmp_path / "out" / "results.json").exists()


ONE_RANK_LOADER = '''
import datasets
import torch.distributed as dist
from lmm_lightning.errors import InputError

def load(split):
    if dist.is_initialized() and dist.get_rank() == 1:
        raise InputError("only_rank_one.yaml: rank 1 cannot read its copy of the documents")
    return datasets.Dataset.from_list([{"country": "France", "choices": ["Paris", "Rome"], "answer": 0}])
'''


def test_an_error_on_one_rank_only_ends_both_with_one_line(tmp_path, tiny_model, tiny_tasks):
    """The other rank neither hangs nor prints a gloo traceback: the ranks agree after setup."""
    files = {"one_rank.py": ONE_RANK_LOADER,
             "only_rank_one.yaml": MC.replace("dataset_path: json\ndata_files: {docs}\n", "dataset_path: one_rank:load\ntest_split: test\n").replace("{name}", "only_rank_one")}
    case = Case((), files=files, config={"data.init_args.tasks": ["{tmp}/only_rank_one.yaml"]})
    args = write_case(tmp_path, tiny_model, tiny_tasks, case)
    result = launch([*args, "--trainer.devices", "2", "--trainer.strategy", "ddp"], timeout=180)
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-3000:]
    assert lines == [f"{ERROR} rank 1: only_rank_one.yaml: rank 1 cannot read its copy of the documents"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ProcessGroupGloo" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "rror" in line] == lines  # nothing else complains
    assert not (tmp_path / "out" / "results.json").exists()
