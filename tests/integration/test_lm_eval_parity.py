"""Per-sample parity with lm-evaluation-harness 0.4.13, run here on 13 of its own task YAMLs.

lm-eval itself (`lm_eval run --model hf`) and `lmm-lightning predict` (BenchmarkDataModule with lm-eval's
tasks folder as `include_path`, HFCausalLM) evaluate the same tiny fp32 model on the same small local
copies of the hub datasets (tests/fixtures/lm_eval_data, the working directory of both runs), and every
task must give the same requests (context and continuation), log-probabilities within 1e-4 with the same
is_greedy, the same generations, the same per-document metric values, the same aggregate and, for means,
the same stderr (lm-eval reports the closed-form CLT stderr; so do we for a mean, beside the bootstrap interval).

Each task runs with its YAML's own num_fewshot (gsm8k: 5), and three variants that include the YAML and
change only the task name and num_fewshot (arc_easy 3-shot, mmlu 2-shot, gsm8k 0-shot). One subprocess
per harness runs every task.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.lm_eval import (
    LM_EVAL_DATA, LM_EVAL_TASKS, SHADOWED, TASKS, VARIANTS, build_parity_model, write_variants,
)

TIMEOUT_S = 300
ALL_TASKS = TASKS + [name for name, _, _ in VARIANTS]
LOGPROB_TOLERANCE = 1e-4
SAMPLES_FILE = re.compile(r"samples_(?P<task>.+)_\d{4}-\d{2}-\d{2}T[\d.\-]+\.jsonl")
RESULTS_FILE = re.compile(r"results_\d{4}-\d{2}-\d{2}T[\d.\-]+\.json")


def offline_env(home: Path) -> dict[str, str]:
    """No hub, a private cache, one thread: `load_dataset` reads the fixture folders in the working directory."""
    return {
        **os.environ,
        "HF_HOME": str(home),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def run(command: list[str], home: Path) -> None:
    result = subprocess.run(command, cwd=LM_EVAL_DATA, env=offline_env(home), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def read_run(output_path: Path) -> tuple[dict[str, Any], dict[str, dict[tuple[int, str], dict]]]:
    """An lm-eval layout folder (`<output_path>/<model>/`): the results document and each task's sample
    lines keyed by (doc_id, filter)."""
    (folder,) = [p for p in output_path.iterdir() if p.is_dir()]
    (results,) = [p for p in folder.iterdir() if RESULTS_FILE.fullmatch(p.name)]
    samples = {}
    for path in folder.iterdir():
        match = SAMPLES_FILE.fullmatch(path.name)
        if match:
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            samples[match["task"]] = {(line["doc_id"], line["filter"]): line for line in lines}
    return json.loads(results.read_text()), samples


@pytest.fixture(scope="session")
def parity_model(tmp_path_factory) -> Path:
    return build_parity_model(tmp_path_factory.mktemp("parity_model"))


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Path:
    return write_variants(tmp_path_factory.mktemp("variants"))


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory, parity_model, variants):
    """lm-eval 0.4.13 on every task, as a user runs it."""
    folder = tmp_path_factory.mktemp("lm_eval_run")
    command = [
        str(Path(sys.executable).parent / "lm_eval"), "run", "--model", "hf",
        "--model_args", f"pretrained={parity_model},dtype=float32", "--device", "cpu", "--batch_size", "1",
        "--tasks", ",".join(ALL_TASKS), "--include_path", str(variants),
        "--log_samples", "--output_path", str(folder / "out"),
    ]
    run(command, folder / "hf_home")
    return read_run(folder / "out")


@pytest.fixture(scope="module")
def our_run(tmp_path_factory, parity_model, variants):
    """lmm-lightning on the same tasks: lm-eval's tasks folder as include_path, its few-shot selection.
    The tasks lmm_lightning also ships (SHADOWED) are named by the path of lm-eval's YAML."""
    folder = tmp_path_factory.mktemp("our_run")
    tasks = [str(LM_EVAL_TASKS / SHADOWED[t]) if t in SHADOWED else t for t in TASKS]
    tasks += [str(variants / f"{name}.yaml") for name, _, _ in VARIANTS]
    config = {
        "model": {"class_path": "lmm_lightning.models.HFCausalLM", "init_args": {"pretrained": str(parity_model), "dtype": "float32"}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": tasks, "include_path": [str(LM_EVAL_TASKS)], "batch_size": 8, "fewshot_selection": "lm_eval"},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        # with the bootstrap on, a mean's stderr is still the closed-form one lm-eval reports
        "evaluation": {"bootstrap_iters": 2000, "log_samples": True, "layout": "lm_eval"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(path), "--evaluation.output_dir", str(folder / "out")]
    run(command, folder / "hf_home")
    return read_run(folder / "out")


# --- reading one sample line the same way from both harnesses ---------------------------------------
def generation_settings(kwargs: dict) -> tuple:
    """What decides a greedy generation, with lm-eval 0.4.13's defaults (HFLM: `max_gen_toks` 256; sampling
    only with `do_sample`): lm-eval writes the YAML's dict, we write the settings we ran with."""
    until = kwargs.get("until", [])
    budget = kwargs.get("max_new_tokens", kwargs.get("max_gen_toks", 256))
    return tuple([until] if isinstance(until, str) else until), int(budget), bool(kwargs.get("do_sample", False))


def requests_of(line: dict) -> list[tuple[str, Any]]:
    """(context, continuation or generation settings) of each request of a document."""
    out = []
    for args in line["arguments"].values():
        second = args["arg_1"]
        out.append((args["arg_0"], generation_settings(second) if isinstance(second, dict) else second))
    return out


def loglikelihoods(line: dict) -> list[tuple[float, bool]]:
    """lm-eval writes [[["-21.2", "False"]], ...] (strings); ours [[[-21.2, false]], ...]."""
    out = []
    for (value, greedy), in line["resps"]:
        out.append((float(value), greedy if isinstance(greedy, bool) else greedy == "True"))
    return out


def metric_values(line: dict) -> dict[str, float]:
    return {name: float(line[name]) for name in line["metrics"]}


def close(ours: float, theirs: float, tolerance: float = LOGPROB_TOLERANCE) -> bool:
    if math.isnan(ours) or math.isnan(theirs):
        return math.isnan(ours) and math.isnan(theirs)
    return math.isclose(ours, theirs, rel_tol=tolerance, abs_tol=tolerance)


def lines_of(task: str, lm_eval_run, our_run) -> tuple[dict, dict]:
    theirs, ours = lm_eval_run[1].get(task), our_run[1].get(task)
    assert theirs, f"lm-eval wrote no samples for {task}"
    assert ours, f"lmm-lightning wrote no samples for {task}"
    assert sorted(ours) == sorted(theirs), f"{task}: (doc_id, filter) lines differ"
    return theirs, ours


# --- the fixture data are what lm-eval reads ---------------------------------------------------------
@pytest.mark.parametrize("task", ALL_TASKS)
def test_lm_eval_reads_every_fixture_document(task, lm_eval_run):
    results, samples = lm_eval_run
    n_docs = len({doc_id for doc_id, _ in samples[task]})
    assert n_docs >= 6 and results["n-samples"][task] == {"original": n_docs, "effective": n_docs}
    assert results["n-shot"][task] == dict(arc_easy_3shot=3, mmlu_abstract_algebra_2shot=2, gsm8k=5).get(task, 0)


# --- per sample ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_requests(task, lm_eval_run, our_run):
    """Contexts (few-shot examples included), continuations or generation settings, and targets."""
    theirs, ours = lines_of(task, lm_eval_run, our_run)
    for key, line in theirs.items():
        assert requests_of(ours[key]) == requests_of(line), f"{task} doc {key}: requests differ"
        assert str(ours[key]["target"]) == str(line["target"]), f"{task} doc {key}: target differs"


@pytest.mark.parametrize("task", [t for t in ALL_TASKS if not t.startswith("gsm8k")])
def test_same_loglikelihoods(task, lm_eval_run, our_run):
    theirs, ours = lines_of(task, lm_eval_run, our_run)
    for key, line in theirs.items():
        got, expected = loglikelihoods(ours[key]), loglikelihoods(line)
        assert len(got) == len(expected), f"{task} doc {key}: {len(got)} responses, lm-eval {len(expected)}"
        for i, ((ll, greedy), (ll_ref, greedy_ref)) in enumerate(zip(got, expected)):
            assert abs(ll - ll_ref) <= LOGPROB_TOLERANCE, f"{task} doc {key} request {i}: log-prob {ll} vs lm-eval {ll_ref}"
            assert greedy == greedy_ref, f"{task} doc {key} request {i}: is_greedy {greedy} vs lm-eval {greedy_ref}"


@pytest.mark.parametrize("task", ["gsm8k", "gsm8k_0shot"])
def test_same_generations(task, lm_eval_run, our_run):
    """Greedy generations, cut at the same stop strings, and the same filtered answers."""
    theirs, ours = lines_of(task, lm_eval_run, our_run)
    for key, line in theirs.items():
        assert ours[key]["resps"] == line["resps"], f"{task} doc {key}: generation differs"
        assert ours[key]["filtered_resps"] == line["filtered_resps"], f"{task} doc {key}: filtered answer differs"


@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_document_metrics(task, lm_eval_run, our_run):
    theirs, ours = lines_of(task, lm_eval_run, our_run)
    for key, line in theirs.items():
        expected, got = metric_values(line), metric_values(ours[key])
        assert sorted(got) == sorted(expected), f"{task} doc {key}: metrics {sorted(got)} vs lm-eval {sorted(expected)}"
        for name, value in expected.items():
            assert close(got[name], value), f"{task} doc {key}: {name} {got[name]} vs lm-eval {value}"


# --- aggregates -----------------------------------------------------------------------------------------
def scores(entry: dict) -> dict[str, float]:
    """`"<metric>,<filter>"` values of one task's results entry (stderrs included)."""
    return {k: v for k, v in entry.items() if "," in k}


def mean_metrics(config: dict) -> set[str]:
    """The task's metrics lm-eval aggregates by the mean (no aggregation given: the mean)."""
    listed = config.get("metric_list") or [{"metric": "acc"}]
    return {m["metric"] for m in listed if m.get("aggregation", "mean") == "mean"}


@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_aggregate(task, lm_eval_run, our_run):
    theirs, ours = lm_eval_run[0], our_run[0]
    expected = {k: v for k, v in scores(theirs["results"][task]).items() if "_stderr," not in k}
    got = scores(ours["results"][task])
    for name, value in expected.items():
        assert name in got, f"{task}: no {name} in our results (we have {sorted(got)})"
        assert close(got[name], value), f"{task}: {name} {got[name]} vs lm-eval {value}"
    assert ours["n-shot"][task] == theirs["n-shot"][task]
    assert ours["n-samples"][task] == theirs["n-samples"][task]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_stderr_of_means(task, lm_eval_run, our_run):
    theirs, ours = lm_eval_run[0], our_run[0]
    means = mean_metrics(theirs["configs"][task])
    expected = {k: v for k, v in scores(theirs["results"][task]).items() if k.split("_stderr,")[0] in means and "_stderr," in k}
    assert expected, f"{task}: lm-eval reports no stderr of a mean"
    got = scores(ours["results"][task])
    for name, value in expected.items():
        assert name in got and close(float(got[name]), float(value)), f"{task}: {name} {got.get(name)} vs lm-eval {value}"
