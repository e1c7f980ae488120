"""examples/ray_train.py: 2 Ray Train workers on CPU (RayDDPStrategy, RayLightningEnvironment) give one process's
samples and scores. `ray[train]` is in the test extra."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_end_to_end import cli, run, write_config

REPO = Path(__file__).resolve().parents[2]


def test_two_ray_workers_match_one_process(tmp_path, tiny_model, tiny_tasks):
    config = write_config(tmp_path, tiny_model, tiny_tasks)
    run(cli(config, tmp_path / "one", "--data.init_args.tasks", f"[{tiny_tasks / 'tiny_mc.yaml'}]",
            "--data.init_args.batch_size", "8", "--evaluation.bootstrap_iters", "0"), tmp_path)
    command = [sys.executable, str(REPO / "examples" / "ray_train.py"), "--pretrained", str(tiny_model),
               "--tasks", str(tiny_tasks / "tiny_mc.yaml"), "--limit", "-1", "--batch_size", "8", "--bootstrap_iters", "0",
               "--output_dir", str(tmp_path / "ray"), "--num_workers", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    one, ray = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "ray"))
    assert ray["results"] == one["results"] and ray["world_size"] == 2 and one["world_size"] == 1
    assert (tmp_path / "ray" / "samples_tiny_mc.jsonl").read_text() == (tmp_path / "one" / "samples_tiny_mc.jsonl").read_text()
