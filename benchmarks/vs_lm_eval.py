"""lmm_lightning vs lm-evaluation-harness on capitals_mc: same model folder, task, batch size and threads.

Creates `benchmarks/.venv-lmeval` once (`pip install torch==2.13.0` first, so pip takes the local
CPU wheel, then `lm-eval[hf]==0.4.13`), writes an lm-eval task YAML with the same prompt, choices,
target and delimiter pointing at our capitals.jsonl, then runs both command lines alternately
`--repeats` times:

    lm_eval --model hf --model_args pretrained=<folder>,dtype=float32 --tasks capitals_mc_lmeval \
        --include_path <dir> --batch_size B --device cpu
    lmm-lightning predict --config configs/demo.yaml --data.init_args.tasks '[capitals_mc]' ...

Each command runs through a thin driver that times its evaluation phase (lm-eval: the
`HFLM.loglikelihood` call over all requests; lmm_lightning: `timed_cli.py`, from the callback's
`on_predict_start` to the gathered responses), both including tokenisation and every forward. The
total wall time (process start to exit: imports, model load, data, scoring, writing) is measured
around the subprocess. Accuracies must be identical; per-document log-likelihoods are compared too.
A third contestant runs lmm_lightning with `--model.init_args.reuse_context cache` (the context's
keys/values serve every choice: two forwards) instead of the default packed scoring (one forward).
Before each run the script waits for other processes to go quiet and records how many cores
they used during the run.

    python benchmarks/vs_lm_eval.py --batch-size 16 --repeats 3
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from common import (
    REPO, RESULTS, Contention, add_load_arguments, git_commit, idle_waiter, machine, median, no_wait, wait_for_quiet,
)

LMEVAL_VENV = Path(__file__).resolve().parent / ".venv-lmeval"
LMEVAL_VERSION = "0.4.13"
TASK_NAME = "capitals_mc_lmeval"
CAPITALS = REPO / "lmm_lightning" / "tasks" / "builtin" / "capitals" / "capitals.jsonl"
OUR_PYTHON = sys.executable

TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files: {data_files}
test_split: train
output_type: multiple_choice
doc_to_text: "Question: What is the capital of {{{{country}}}}?\\nAnswer: The capital of {{{{country}}}} is"
doc_to_choice: choices
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

# Runs inside the lm-eval venv: time HFLM.loglikelihood (the evaluation phase), then run the CLI.
LMEVAL_DRIVER = """
import atexit, json, sys, time
import torch
from lm_eval.models.huggingface import HFLM
timing = {}
original = HFLM.loglikelihood
def timed(self, requests, *args, **kwargs):
    start = time.perf_counter()
    out = original(self, requests, *args, **kwargs)
    timing["phase_s"] = timing.get("phase_s", 0.0) + time.perf_counter() - start
    timing["requests"] = timing.get("requests", 0) + len(requests)
    timing["threads"] = torch.get_num_threads()
    return out
HFLM.loglikelihood = timed
atexit.register(lambda: print("BENCHMARK " + json.dumps(timing), flush=True))
sys.argv = ["lm_eval"] + sys.argv[1:]
from lm_eval.__main__ import cli_evaluate
cli_evaluate()
"""

TIMED_CLI = Path(__file__).resolve().parent / "timed_cli.py"  # our CLI with the predict loop timed


def lmeval_python(venv: Path = LMEVAL_VENV) -> Path:
    return venv / "bin" / "python"


def ensure_lmeval_venv(venv: Path = LMEVAL_VENV, version: str = LMEVAL_VERSION) -> Path:
    """Create the lm-eval venv once: CPU torch first (never a CUDA build), then lm-eval[hf]."""
    python = lmeval_python(venv)
    if python.exists() and subprocess.run([python, "-c", "import lm_eval"], capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", f"lm-eval[hf]=={version}"], check=True)
    return python


def write_lmeval_task(folder: Path, data_files: Path = CAPITALS, name: str = TASK_NAME) -> Path:
    """An lm-eval task YAML identical in prompt, choices, target and delimiter to capitals_mc."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data_files=json.dumps(str(data_files))))
    return folder


def environment(threads: int) -> dict[str, str]:
    """Same thread count for both, offline (the model and the data are local)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
    )
    return env


def _run(command: list[str], threads: int, log: Path) -> tuple[float, dict[str, Any]]:
    """Run a driver; returns its wall time and the timings it printed."""
    start = time.perf_counter()
    proc = subprocess.run(command, env=environment(threads), capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({proc.returncode}); see {log}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("BENCHMARK ")][-1]
    return wall, json.loads(line[len("BENCHMARK "):])


def run_lmeval(
    python: Path, pretrained: str, task_dir: Path, batch_size: int, threads: int, output: Path, limit: Optional[int] = None
) -> dict[str, Any]:
    """One lm-eval run: wall time, phase timing, accuracy and per-document results."""
    args = [
        "--model", "hf", "--model_args", f"pretrained={pretrained},dtype=float32", "--tasks", TASK_NAME,
        "--include_path", str(task_dir), "--batch_size", str(batch_size), "--device", "cpu",
        "--output_path", str(output), "--log_samples",
    ] + (["--limit", str(limit)] if limit else [])
    wall, timing = _run([str(python), "-c", LMEVAL_DRIVER, *args], threads, output.with_suffix(".log"))
    results = json.loads(Path(sorted(glob.glob(str(output / "**" / "results_*.json"), recursive=True))[-1]).read_text())
    samples_file = sorted(glob.glob(str(output / "**" / f"samples_{TASK_NAME}_*.jsonl"), recursive=True))[-1]
    samples = [json.loads(l) for l in Path(samples_file).read_text().splitlines()]
    per_doc = {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in samples}
    metrics = results["results"][TASK_NAME]
    return {"wall_s": wall, **timing, "acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"], "logprobs": per_doc}


def run_ours(
    pretrained: str, batch_size: int, threads: int, output: Path, limit: Optional[int] = None, reuse_context: Optional[str] = None
) -> dict[str, Any]:
    """One lmm_lightning run (the demo config, capitals_mc only): wall time, phase timing, accuracy."""
    args = [
        "predict", "--config", str(REPO / "configs" / "demo.yaml"), "--model.init_args.pretrained", pretrained,
        "--data.init_args.tasks", "[capitals_mc]", "--data.init_args.batch_size", str(batch_size),
        "--evaluation.output_dir", str(output), "--trainer.enable_progress_bar", "false",
    ] + (["--data.init_args.limit", str(limit)] if limit else []) + (
        ["--model.init_args.reuse_context", reuse_context] if reuse_context else []
    )
    wall, timing = _run([OUR_PYTHON, str(TIMED_CLI), *args], threads, output.with_suffix(".log"))
    metrics = json.loads((output / "results.json").read_text())["results"]["capitals_mc"]
    samples = [json.loads(l) for l in (output / "samples_capitals_mc.jsonl").read_text().splitlines()]
    per_doc = {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in samples}
    return {"wall_s": wall, **timing, "acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"], "logprobs": per_doc}


def _agreement(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    diffs = [abs(a - b) for d in ours["logprobs"] for a, b in zip(ours["logprobs"][d], theirs["logprobs"][d])]
    return {
        "identical_accuracy": ours["acc"] == theirs["acc"] and ours["acc_norm"] == theirs["acc_norm"],
        "same_documents": sorted(ours["logprobs"]) == sorted(theirs["logprobs"]),
        "max_abs_logprob_diff": max(diffs),
    }


def compare(
    pretrained: str, batch_size: int, threads: int, repeats: int, workdir: Path, limit: Optional[int] = None,
    cache_variant: bool = True, wait: Callable[[], float] = no_wait,
) -> dict[str, Any]:
    """Alternate lm-eval, lmm_lightning (and lmm_lightning with cached contexts) runs; medians, throughput ratios, agreement.

    `wait` is called before each run; the cores used by other processes during each run are recorded."""
    python = ensure_lmeval_venv()
    task_dir = write_lmeval_task(workdir / "lmeval_task")
    contestants: dict[str, Callable[[Path], dict[str, Any]]] = {
        "lm_eval": lambda out: run_lmeval(python, pretrained, task_dir, batch_size, threads, out, limit),
        "lmm_lightning": lambda out: run_ours(pretrained, batch_size, threads, out, limit),
    }
    if cache_variant:
        contestants["lmm_lightning_cache"] = lambda out: run_ours(pretrained, batch_size, threads, out, limit, "cache")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contestants}
    for i in range(repeats):
        for name, run in contestants.items():
            wait()
            with Contention() as seen:
                row = run(workdir / f"{name}_{i}")
            runs[name].append({**row, **seen.as_dict()})
    summary: dict[str, Any] = {"batch_size": batch_size, "threads": threads}
    for name, rows in runs.items():
        summary[name] = {
            "requests": rows[0]["requests"],
            "threads_seen": rows[0]["threads"],
            "phase_s": [r["phase_s"] for r in rows],
            "wall_s": [r["wall_s"] for r in rows],
            "median_phase_s": median([r["phase_s"] for r in rows]),
            "median_wall_s": median([r["wall_s"] for r in rows]),
            "requests_per_s": rows[0]["requests"] / median([r["phase_s"] for r in rows]),
            "acc": rows[0]["acc"],
            "acc_norm": rows[0]["acc_norm"],
            "load_1min": [r["load_1min"] for r in rows],
            "others_cores": [r["others_cores"] for r in rows],
        }
        if name != "lm_eval":
            summary[name]["vs_lm_eval"] = {
                **_agreement(rows[0], runs["lm_eval"][0]),
                "throughput_ratio": summary[name]["requests_per_s"] / summary["lm_eval"]["requests_per_s"],
                "wall_ratio": summary["lm_eval"]["median_wall_s"] / summary[name]["median_wall_s"],
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=None, help="model folder (default: the converted SmolLM2 folder)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--target", type=float, default=1.5)
    parser.add_argument("--no-cache-variant", action="store_true", help="skip the run with reuse_context=cache")
    add_load_arguments(parser)
    args = parser.parse_args()
    if args.pretrained is None:
        from lmm_lightning.assets import smollm2_folder

        args.pretrained = str(smollm2_folder())
    ensure_lmeval_venv()
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        summary = compare(
            args.pretrained, args.batch_size, args.threads, args.repeats, Path(workdir), args.limit, not args.no_cache_variant,
            idle_waiter(args),
        )
    for name in [n for n in ("lm_eval", "lmm_lightning", "lmm_lightning_cache") if n in summary]:
        s = summary[name]
        line = (
            f"{name:>20}: acc {s['acc']:.4f} acc_norm {s['acc_norm']:.4f} | {s['requests']} requests, {s['threads_seen']} threads | "
            f"phase {s['median_phase_s']:.2f} s ({s['requests_per_s']:.1f} req/s) | wall {s['median_wall_s']:.2f} s | "
            f"load {min(s['load_1min']):.2f}-{max(s['load_1min']):.2f}, other processes <= {max(s['others_cores']):.2f} cores"
        )
        if "vs_lm_eval" in s:
            v = s["vs_lm_eval"]
            ok = v["throughput_ratio"] >= args.target and v["identical_accuracy"]
            line += (
                f"\n{'':>22}identical accuracy: {v['identical_accuracy']} (max |logprob diff| {v['max_abs_logprob_diff']:.2e}) | "
                f"throughput x{v['throughput_ratio']:.2f} (target >= {args.target}: {'PASS' if ok else 'FAIL'}) | wall x{v['wall_ratio']:.2f}"
            )
        print(line, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"vs_lm_eval_b{args.batch_size}.json").write_text(
        json.dumps({"machine": machine(), "commit": git_commit(), "lm_eval_version": LMEVAL_VERSION, **summary}, indent=2)
    )


if __name__ == "__main__":
    main()
