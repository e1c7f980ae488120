"""The embedded demo on the real SmolLM2 model scores well above chance, with an interval."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_is_well_above_chance(tmp_path):
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(ROOT / "configs" / "demo.yaml")]
    command += ["--data.init_args.limit", "40", "--evaluation.output_dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    mc = results["results"]["capitals_mc"]
    assert mc["acc,none"] > 0.6  # chance is 0.25
    low, high = results["confidence_intervals"]["capitals_mc"]["acc,none"]
    assert 0.25 < low <= mc["acc,none"] <= high
    assert results["results"]["capitals_gen"]["exact_match,none"] > 0.2
    assert "capitals_mc" in result.stdout and "95% CI" in result.stdout
