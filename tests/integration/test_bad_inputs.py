"""Bad input never gives a raw traceback: one clear message, exit code 2, and no results.json.

The table runs `lmm_lightning.cli.main` in-process (fast); two cases also run as real processes.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmm_lightning.cli import main

REPO = Path(__file__).resolve().parents[2]  # on PYTHONPATH: the tests package and its fixtures
GOOD_MC = (
    "task: {name}\ndataset_path: json\ndata_files: {docs}\noutput_type: multiple_choice\n"
    "doc_to_text: 'Q: {{{{country}}}}?'\ndoc_to_choice: choices\ndoc_to_target: answer\n"
)


def setup_case(tmp: Path, tiny_model: Path, tiny_tasks: Path, case: dict) -> list[str]:
    """Write the files a case needs and return its CLI arguments."""
    docs = tiny_tasks / "docs.jsonl"
    for name, text in case.get("files", {}).items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text.format(docs=docs, tmp=tmp, name=Path(name).stem))
    model = {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(tiny_model)}}
    data = {"class_path": "lmm_lightning.data.BenchmarkDataModule", "init_args": {"tasks": [str(tiny_tasks / "tiny_mc.yaml")], "batch_size": 4}}
    config = {"model": model, "data": data, "trainer": {"accelerator": "cpu", "devices": 1}, "evaluation": {"bootstrap_iters": 10}}
    for dotted, value in case.get("set", {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        fill = lambda v: v.format(tmp=tmp) if isinstance(v, str) else v
        node[leaf] = [fill(v) for v in value] if isinstance(value, list) else fill(value)
    config_path = tmp / "config.yaml"
    config_path.write_text(case["raw_config"] if "raw_config" in case else yaml.safe_dump(config))
    return ["predict", "--config", str(config_path), "--evaluation.output_dir", str(tmp / "out"), *case.get("args", [])]


def task_file(text: str) -> dict:
    return {"files": {"bad.yaml": text}, "set": {"data.init_args.tasks": ["{tmp}/bad.yaml"]}}


CASES = {
    "config file missing": ({"args": ["--config", "/nonexistent/config.yaml"]}, "/nonexistent/config.yaml"),
    "config not YAML": ({"raw_config": "model: [unclosed\n"}, "config"),
    "config unknown section": ({"set": {"modle": {"x": 1}}}, "modle"),
    "model class unknown": ({"set": {"model.class_path": "lmm_lightning.models.NoSuchModel"}}, "NoSuchModel"),
    "model folder missing": ({"set": {"model.init_args.pretrained": "{tmp}/no-model"}}, "model.pretrained: cannot resolve"),
    "model folder without config.json": (
        {"files": {"empty-model/README": "x"}, "set": {"model.init_args.pretrained": "{tmp}/empty-model"}},
        "has no config.json",
    ),
    "model dtype unknown": ({"set": {"model.init_args.dtype": "float8"}}, "model.dtype: expected one of"),
    "tasks empty": ({"set": {"data.init_args.tasks": []}}, "data.tasks is empty"),
    "task unknown": ({"set": {"data.init_args.tasks": ["no_such_task"]}}, "unknown task 'no_such_task'"),
    "task file missing": ({"set": {"data.init_args.tasks": ["{tmp}/missing.yaml"]}}, "missing.yaml: task file not found"),
    "task YAML invalid": (task_file("task: [\n"), "bad.yaml: not valid YAML"),
    "task field missing": (task_file("task: t\noutput_type: generate_until\ndoc_to_text: q\ntest_split: test\n"), "field 'doc_to_target' is required"),
    "task output_type wrong": (task_file(GOOD_MC.replace("multiple_choice", "ranking")), "field 'output_type': expected one of"),
    "task field unknown": (task_file(GOOD_MC + "doc_to_txt: x\n"), "unknown field(s) ['doc_to_txt']"),
    "metric unknown": (task_file(GOOD_MC + "metric_list: [{{metric: bleu}}]\n"), "unknown metric 'bleu'"),
    "filter unknown": (
        task_file(GOOD_MC.replace("multiple_choice", "generate_until").replace("doc_to_choice: choices\n", "").replace("answer", "capital")
                  + "filter_list: [{{name: f, filter: [{{function: regexp}}]}}]\n"),
        "unknown filter function 'regexp'",
    ),
    "data file missing": (task_file(GOOD_MC.replace("{docs}", "{tmp}/nowhere.jsonl")), "bad.yaml: cannot load split"),
    "dataset empty": ({**task_file(GOOD_MC.replace("{docs}", "{tmp}/empty.jsonl")), "files": {"bad.yaml": GOOD_MC.replace("{docs}", "{tmp}/empty.jsonl"), "empty.jsonl": ""}}, "bad.yaml"),
    "dataset column missing": (task_file(GOOD_MC.replace("{{{{country}}}}", "{{{{nation}}}}")), "'nation' is undefined"),
    "choice column missing": (task_file(GOOD_MC.replace("doc_to_choice: choices", "doc_to_choice: options")), "document 0"),
    "target not a choice": (task_file(GOOD_MC.replace("doc_to_target: answer", "doc_to_target: country")), "is neither an index"),
    "limit not positive": ({"set": {"data.init_args.limit": -3}}, "data.limit/data.offset: limit -3 must be positive"),
    "offset out of range": ({"set": {"data.init_args.offset": 500}}, "offset 500 is out of range for 13 documents"),
    "batch size zero": ({"set": {"data.init_args.batch_size": 0}}, "data.batch_size"),
    "few-shot pool too small": (task_file(GOOD_MC + "num_fewshot: 50\n"), "field 'num_fewshot' is 50 but only"),
    "repeats not positive": (task_file(GOOD_MC + "repeats: 0\n"), "field 'repeats': expected a positive integer"),
    "include missing": (task_file("include: base.yaml\ntask: t\n"), "base.yaml: task file not found (included from"),
    "function module missing": (task_file(GOOD_MC.replace("'Q: {{{{country}}}}?'", "nomodule:fn")), "cannot import module 'nomodule'"),
    "function missing": (
        {**task_file(GOOD_MC.replace("'Q: {{{{country}}}}?'", "helpers:nofn")), "files": {"bad.yaml": GOOD_MC.replace("'Q: {{{{country}}}}?'", "helpers:nofn"), "helpers.py": "x = 1\n"}},
        "module 'helpers' has no function 'nofn'",
    ),
    "image missing": (
        {
            "files": {
                "bad.yaml": GOOD_MC + "doc_to_visual: imgs:load\n",
                "imgs.py": "from PIL import Image\ndef load(doc):\n    return [Image.open('{tmp}/missing.png').convert('RGB')]\n",
            },
            "set": {"data.init_args.tasks": ["{tmp}/bad.yaml"]},
        },
        "cannot load its image",
    ),
    "image corrupt": (
        {
            "files": {
                "bad.yaml": GOOD_MC + "doc_to_visual: imgs:load\n",
                "imgs.py": "from PIL import Image\ndef load(doc):\n    return [Image.open('{tmp}/corrupt.png').convert('RGB')]\n",
                "corrupt.png": b"\x89PNG not really an image",
            },
            "set": {"data.init_args.tasks": ["{tmp}/bad.yaml"]},
        },
        "cannot load its image",
    ),
    "video missing": (
        {
            "files": {"bad.yaml": GOOD_MC + "doc_to_visual: vids:load\n", "vids.py": "def load(doc):\n    return ['{tmp}/missing.mp4']\n"},
            "set": {"data.init_args.tasks": ["{tmp}/bad.yaml"]},
        },
        "missing.mp4: no such video file",
    ),
    "video corrupt": (
        {
            "files": {
                "bad.yaml": GOOD_MC + "doc_to_visual: vids:load\n",
                "vids.py": "def load(doc):\n    return ['{tmp}/corrupt.mp4']\n",
                "corrupt.mp4": b"\x00\x00\x00\x18ftypmp42 not really a video",
            },
            "set": {"data.init_args.tasks": ["{tmp}/bad.yaml"]},
        },
        "corrupt.mp4: cannot read video",
    ),
    "generation not a string": (
        {
            "set": {
                "model.class_path": "tests.fixtures.faulty.FaultyLM",
                "model.init_args.mode": "none_text",
                "model.init_args.fail_rank": 0,
                "data.init_args.tasks": [],
            },
            "args": [],
        },
        "generation must be a string, got NoneType",
    ),
}


@pytest.fixture(autouse=True)
def tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_clear_message_and_exit_code_2(name, tmp_path, tiny_model, tiny_tasks, capsys):
    case, expected = CASES[name]
    if name == "generation not a string":
        case["set"]["data.init_args.tasks"] = [str(tiny_tasks / "tiny_gen.yaml")]
    args = setup_case(tmp_path, tiny_model, tiny_tasks, case)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    assert expected in err, err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_table_has_at_least_25_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", ["task unknown", "model folder missing"])
def test_bad_input_as_a_real_process(name, tmp_path, tiny_model, tiny_tasks):
    case, expected = CASES[name]
    args = setup_case(tmp_path, tiny_model, tiny_tasks, case)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "lmm_lightning", *args], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("lmm-lightning: error:")
