"""Tensor parallelism on CPU with gloo: TP=2 and DP=2 x TP=2 give one process's samples and metrics.

The model is split by its own plan (transformers' `tp_plan`) over the tensor dimension of Lightning's
`ModelParallelStrategy` mesh; batches are dealt by data-parallel rank, and one rank per tensor-parallel group
stores, gathers and counts. Runs are subprocesses with a timeout, so a hang fails instead of blocking.
"""

import json
import math
import sys
from pathlib import Path

import pytest

from tests.integration.test_end_to_end import cli, run, write_config

STRATEGY = "lightning.pytorch.strategies.ModelParallelStrategy"


def load_samples(out: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(out.glob("samples_*.jsonl"))}


def assert_close(got, want, where: str = "") -> None:
    """Equal JSON values, floats within 1e-4 (fp32 sums split over ranks differ in the last bits)."""
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        assert math.isclose(got, want, abs_tol=1e-4), f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model, tiny_tasks):
    folder = tmp_path_factory.mktemp("tp_single")
    config = write_config(folder, tiny_model, tiny_tasks)
    run(cli(config, folder / "out"), folder)
    return config, folder / "out"


def tensor_parallel(tmp_path: Path, config: Path, dp: int, tp: int) -> Path:
    out = tmp_path / f"out_dp{dp}_tp{tp}"
    run(
        cli(
            config, out, "--trainer.devices", str(dp * tp), "--trainer.strategy", STRATEGY,
            "--trainer.strategy.data_parallel_size", str(dp), "--trainer.strategy.tensor_parallel_size", str(tp),
        ),
        tmp_path,
    )
    return out


@pytest.mark.parametrize("dp,tp", [(1, 2), (2, 2)])
def test_tensor_parallel_gives_the_samples_and_metrics_of_one_process(tmp_path, single, dp, tp):
    config, reference = single
    out = tensor_parallel(tmp_path, config, dp, tp)
    want, got = json.loads((reference / "results.json").read_text()), json.loads((out / "results.json").read_text())
    assert_close(got["results"], want["results"], "results")
    assert got["n-samples"] == want["n-samples"]
    assert got["integrity"] == want["integrity"]
    assert_close(load_samples(out), load_samples(reference), "samples")
    # One replica per tensor-parallel group stores: the store holds each request once.
    stored = [json.loads(line) for path in (out / "store").glob("responses-rank*.jsonl") for line in path.read_text().splitlines()]
    keys = [record["key"] for record in stored if "key" in record]
    assert len(keys) == len(set(keys)) == sum(counts["requests_expected"] for counts in want["integrity"].values())


def test_tensor_parallel_resumes_from_its_store(tmp_path, single):
    """A rerun on the same folder reuses every stored answer (no request is computed twice) and scores the same."""
    config, reference = single
    out = tensor_parallel(tmp_path, config, 1, 2)
    first = json.loads((out / "results.json").read_text())
    again = run(
        cli(config, out, "--trainer.devices", "2", "--trainer.strategy", STRATEGY, "--trainer.strategy.tensor_parallel_size", "2"),
        tmp_path,
    )
    assert "resumed: reused 52 of 52 requests" in again.stdout
    assert_close(json.loads((out / "results.json").read_text())["results"], first["results"], "results")


def test_a_model_whose_heads_do_not_split_is_one_line(tmp_path, single):
    """3 ranks cannot split 4 attention heads: one line naming the option, exit code 2, before any answer."""
    import subprocess

    config, _ = single
    command = cli(
        config, tmp_path / "out", "--trainer.devices", "3", "--trainer.strategy", STRATEGY,
        "--trainer.strategy.data_parallel_size", "1", "--trainer.strategy.tensor_parallel_size", "3",
    )
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "tensor_parallel_size 3 does not divide the model's num_attention_heads (4)" in result.stderr
    assert not (tmp_path / "out" / "results.json").exists()
