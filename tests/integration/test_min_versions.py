"""The dependency floors in pyproject.toml are true: a fresh environment with exactly the declared minimum
of every core dependency (on torch 2.13) installs and runs an evaluation.

Needs the package registries (as CI has them); about 3 minutes, most of it pip."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"  # the README's torch; its own floor is not what this test checks


def declared_floors() -> dict[str, str]:
    """`name: floor` of each core dependency, read from pyproject.toml's `dependencies` list (a regex, not
    tomllib: Python 3.10 has none)."""
    block = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), flags=re.S | re.M).group(1)
    floors = dict(re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([^",;]+)"', block))
    assert len(floors) == block.count('"') // 2, "every core dependency declares a floor with >="
    return floors


def run(command: list[str], timeout: int, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def test_floors_are_real_releases_of_each_dependency():
    floors = declared_floors()
    assert {"transformers", "datasets", "huggingface-hub", "lightning", "torch"} <= set(floors)
    assert "gguf" not in floors and "easy-vqa" not in floors  # the demo's, in the [demo] extra


@pytest.mark.timeout(900)
def test_the_declared_minimum_versions_install_and_evaluate(tmp_path):
    floors = {name: version for name, version in declared_floors().items() if name != "torch"}
    constraints = tmp_path / "floors.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in floors.items()))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python, pip = str(venv / "bin" / "python"), [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1"}
    env.pop("VIRTUAL_ENV", None)
    run([*pip, TORCH], timeout=300, env=env)
    run([*pip, "-e", str(ROOT), "--constraint", str(constraints)], timeout=400, env=env)

    # pip kept every floor (a dependency needing a newer release would have failed the install instead)
    check = "import json, sys; from importlib.metadata import version; print(json.dumps({n: version(n) for n in sys.argv[1:]}))"
    installed = json.loads(run([python, "-c", check, *floors], timeout=60, env=env).stdout)
    assert {n: Version(v) for n, v in installed.items()} == {n: Version(v) for n, v in floors.items()}

    # the oldest transformers honours `dtype=` (the reason for its floor), then a whole CLI run
    model, out = tmp_path / "model", tmp_path / "out"
    build = (
        "import sys, torch; from transformers import AutoModelForCausalLM; from tests.fixtures import build_tiny_model;"
        " build_tiny_model(sys.argv[1]);"
        " assert AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16).dtype == torch.bfloat16"
    )
    run([python, "-c", build, str(model)], timeout=120, env=env, cwd=ROOT)
    command = [str(venv / "bin" / "lmm-lightning"), "predict", "--model.class_path", "lmm_lightning.models.HFCausalLM"]
    command += ["--model.init_args.pretrained", str(model), "--model.init_args.dtype", "bfloat16"]
    command += ["--data.class_path", "lmm_lightning.data.BenchmarkDataModule", "--data.init_args.tasks", "[capitals_mc, capitals_gen]"]
    command += ["--data.init_args.limit", "4", "--trainer.accelerator", "cpu", "--trainer.devices", "1"]
    command += ["--evaluation.output_dir", str(out), "--evaluation.bootstrap_iters", "10"]
    run(command, timeout=300, env=env, cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"capitals_mc", "capitals_gen"}
    assert results["n-samples"]["capitals_mc"]["effective"] == 4
