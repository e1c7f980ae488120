"""Smoke tests of the benchmark scripts' core functions on tiny inputs (no timing is checked)."""

import sys
from pathlib import Path

import pytest
import yaml

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bootstrap as bench_bootstrap  # noqa: E402
import gather_memory  # noqa: E402
import overhead  # noqa: E402
import scaling  # noqa: E402
import shared_image  # noqa: E402
import shared_prefix  # noqa: E402
import tokenisation  # noqa: E402
import vs_lm_eval  # noqa: E402

from lmm_lightning.metrics.aggregation import aggregate  # noqa: E402
from lmm_lightning.tasks.registry import BUILTIN_DIR  # noqa: E402


@pytest.mark.parametrize("task", ["tiny_mc", "tiny_gen"])
def test_overhead_measure(tiny_model: Path, tiny_tasks: Path, task: str) -> None:
    row = overhead.measure(str(tiny_model), task, batch_size=4, repeats=1, bootstrap_iters=10, limit=4, include_path=str(tiny_tasks))
    assert row["requests"] == (12 if task == "tiny_mc" else 4)
    assert set(row["median_s"]) == {"direct", "full", "full_no_stats", "model_in_full"}
    assert 0 < row["median_s"]["model_in_full"] < row["median_s"]["full"]
    assert all(v > 0 for v in row["median_s"].values())
    assert row["metrics"]


def test_lmeval_task_matches_ours(tmp_path: Path) -> None:
    folder = vs_lm_eval.write_lmeval_task(tmp_path)
    theirs = yaml.safe_load((folder / f"{vs_lm_eval.TASK_NAME}.yaml").read_text())
    ours = yaml.safe_load((BUILTIN_DIR / "capitals" / "capitals_mc.yaml").read_text())
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "output_type", "test_split"):
        assert theirs[key] == ours[key]
    assert theirs["target_delimiter"] == " "
    assert Path(theirs["dataset_kwargs"]["data_files"]).is_file()
    assert [m["metric"] for m in theirs["metric_list"]] == ["acc", "acc_norm"]


def test_vs_lm_eval_runs_ours(tiny_model: Path, tmp_path: Path) -> None:
    run = vs_lm_eval.run_ours(str(tiny_model), batch_size=4, threads=1, output=tmp_path / "ours", limit=3)
    cached = vs_lm_eval.run_ours(str(tiny_model), 4, 1, tmp_path / "cached", limit=3, reuse_context="cache")
    assert (cached["acc"], cached["acc_norm"]) == (run["acc"], run["acc_norm"])
    assert run["requests"] == 12 and run["phase_s"] > 0 and run["wall_s"] > run["phase_s"]
    assert 0.0 <= run["acc"] <= 1.0 and sorted(run["logprobs"]) == [0, 1, 2]


def test_scaling_measure(tiny_model: Path, tmp_path: Path) -> None:
    row = scaling.measure(["capitals_mc"], batch_size=4, repeats=1, workdir=tmp_path, limit=5, pretrained=str(tiny_model))
    assert row["requests"] == 20 and row["requests_all_ranks_2proc"] == 20
    assert row["threads_per_process"] == {1: 1, 2: 1}
    assert row["identity"]["samples_files"] == 1 and row["identity"]["samples_differing"] == []
    assert row["identity"]["metrics_identical"]
    assert row["median_direct_s"][1] > 0 and row["median_direct_s"][2] > 0 and row["direct_ratio"] > 0
    assert set(row["model_share"][2][0]) == {0, 1}  # both ranks timed their model steps
    assert all(0 < share <= 1 for shares in row["min_model_share"].values() for share in [shares])


def test_bootstrap_ours() -> None:
    acc, pairs = bench_bootstrap.synthetic(300)
    out = bench_bootstrap.time_ours(acc, pairs, iters=4000, repeats=1)
    assert set(out) == {"mean", "f1", "f1_indices"}
    assert out["f1"]["value"] == pytest.approx(out["f1_indices"]["value"])
    assert out["f1"]["value"] == pytest.approx(aggregate("f1", [tuple(p) for p in pairs], 0, 0).value)
    # counts and index resampling: the same distribution (stderr equal up to Monte Carlo error)
    assert out["f1"]["stderr"] == pytest.approx(out["f1_indices"]["stderr"], rel=0.08)


def test_gather_memory_measure() -> None:
    row = gather_memory.measure(200, bootstrap_iters=10)
    assert row["records"] == 200 and row["gathered"] == 200
    assert set(row["phases"]) == {"gather", "score", "write"}
    assert row["exact_match"] == pytest.approx(1 - 67 / 200)  # doc_ids divisible by 3 answer the wrong capital
    assert row["peak_rss_mib"] >= row["rss_before_mib"]
    assert all(p["python_peak_mib"] is not None for p in row["phases"].values())


def test_tokenisation_measure(tiny_model: Path, tiny_tasks: Path) -> None:
    row = tokenisation.measure(str(tiny_model), ["tiny_mc"], batch_size=4, repeats=1, limit=4, include_path=str(tiny_tasks))
    assert row["requests"] == 12 and row["batches"] == 3 and row["identical_tokens"]
    assert row["median_s"]["per_batch"] > 0 and row["median_s"]["per_request"] > 0 and row["model_s"] > 0


@pytest.mark.parametrize("workload", ["mmlu5", "gsm5"])
def test_shared_prefix_tasks_run_and_share_their_examples(tiny_model: Path, tmp_path: Path, workload: str) -> None:
    tasks = shared_prefix.write_tasks(tmp_path / "tasks", workload, subjects=2, questions=3, max_gen_toks=4)
    generation = workload == "gsm5"
    row = shared_prefix.run_ours(str(tiny_model), tasks, tmp_path / "tasks", 8, 1, tmp_path / "out", generation, True)
    unshared = shared_prefix.run_ours(str(tiny_model), tasks, tmp_path / "tasks", 8, 1, tmp_path / "out2", generation, False)
    assert row["requests"] == (3 if generation else 2 * 3 * 4)
    agreement = shared_prefix.agreement(row, unshared, generation)
    if generation:
        assert agreement["identical_generations"] == agreement["outputs"] == 3
    else:
        assert agreement["outputs"] == 24 and agreement["max_abs_logprob_diff"] < 1e-4
    samples = (tmp_path / "out" / f"samples_{tasks[0]}.jsonl").read_text()
    assert samples.count("Question:" if generation else "Answer:") > 3 * 5  # five examples before each question


def test_shared_image_task_runs(tmp_path: Path) -> None:
    from tests.fixtures.vision import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    task = shared_image.write_task(tmp_path / "task", images=2, max_new_tokens=2)
    shared = shared_image.run_ours(model, task, 18, True, 1, tmp_path / "shared")
    alone = shared_image.run_ours(model, task, 1, False, 1, tmp_path / "alone")
    assert len(shared["texts"]) == 36 and shared["texts"] == alone["texts"]
