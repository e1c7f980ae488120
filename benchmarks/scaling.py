"""Data-parallel scaling on CPU: 2 DDP processes vs 1 process, one thread each, on the same work.

Both runs are the real command line (through `timed_cli.py`), with `OMP_NUM_THREADS=1`:

    lmm-lightning predict --config configs/demo.yaml --data.init_args.tasks '[capitals_mc]' ...
    lmm-lightning predict ... --trainer.devices 2 --trainer.strategy ddp

Reported: the evaluation phase on rank 0 (predict loop + gather, see `timed_cli.py`) and the
whole wall time (process start to exit, including the second process's start-up and model load),
as medians over `--repeats` alternated runs; throughput ratio = phase(1 process) / phase(2).
Before each run the script waits for other processes to go quiet and records how many cores
they used during the run.
The samples files and metrics of the two runs must be identical. Each run is followed by the same
batches in plain processes (no Lightning, no gather, 1 thread each, started together), whose
ratio is the ceiling that the machine itself allows (shared memory bandwidth and caches).

    python benchmarks/scaling.py --tasks capitals_mc capitals_gen --repeats 3
"""

import argparse
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

TIMED_CLI = Path(__file__).resolve().parent / "timed_cli.py"


def run_cli(
    output: Path, devices: int, tasks: list[str], batch_size: int, limit: Optional[int] = None,
    pretrained: str = "smollm2-135m-instruct", include_path: Optional[str] = None, model_class: Optional[str] = None,
) -> dict[str, Any]:
    """One evaluation with `devices` processes and one thread each: wall time and rank 0's phase timing.

    `model_class` replaces the model's class_path (e.g. a subclass of HFCausalLM on the path)."""
    args = [
        sys.executable, str(TIMED_CLI), "predict", "--config", str(REPO / "configs" / "demo.yaml"),
        "--model.init_args.pretrained", pretrained, "--data.init_args.tasks", json.dumps(tasks),
        "--data.init_args.batch_size", str(batch_size), "--evaluation.output_dir", str(output),
        "--trainer.enable_progress_bar", "false", "--trainer.devices", str(devices),
    ]
    args += ["--trainer.strategy", "ddp"] if devices > 1 else []
    args += ["--data.init_args.limit", str(limit)] if limit else []
    args += ["--data.init_args.include_path", include_path] if include_path else []
    args += ["--model.class_path", model_class] if model_class else []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    output.with_suffix(".log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{devices}-process run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    timings = [json.loads(l[len("BENCHMARK "):]) for l in proc.stdout.splitlines() if l.startswith("BENCHMARK ")]
    rank0 = next(t for t in timings if t["rank"] == 0)
    return {
        "wall_s": wall, **rank0, "requests_all_ranks": sum(t.get("requests", 0) for t in timings),
        # rank 0 starts the other ranks and does not reap them, so their CPU is not in our children's rusage
        "other_ranks_cpu_s": sum(t["cpu_s"] for t in timings if t["rank"] != 0),
        # per rank: the share of its phase spent in the model (the rest is the framework and waiting for the others)
        "model_share": {t["rank"]: t.get("model_s", 0.0) / t["phase_s"] for t in timings},
    }


def _direct_rank(rank: int, devices: int, tasks: list[str], batch_size: int, limit: Optional[int], pretrained: str,
                 include_path: Optional[str], model_class: Optional[str], barrier: Any, queue: Any) -> None:
    """One process of `direct_data_parallel`: this rank's planned batches (padding included), 1 thread."""
    import importlib

    import torch

    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.data.sampler import plan_rank
    from lmm_lightning.requests import RequestType

    torch.set_num_threads(1)
    module, name = (model_class or "lmm_lightning.models.HFCausalLM").rsplit(".", 1)
    model = getattr(importlib.import_module(module), name)(pretrained)
    model.configure_model()
    datamodule = BenchmarkDataModule(tasks, limit=limit, batch_size=batch_size, include_path=include_path)
    datamodule.setup("predict")
    plan = plan_rank(datamodule.requests, batch_size, devices, rank)
    batches = [[datamodule.requests[uid] for uid in index.uids] for index in plan]
    barrier.wait()
    start = time.perf_counter()
    for batch in batches:
        if batch[0].request_type is RequestType.LOGLIKELIHOOD:
            model.loglikelihood(batch)
        else:
            model.generate_until(batch)
    queue.put((rank, time.perf_counter() - start))


def direct_data_parallel(
    devices: int, tasks: list[str], batch_size: int, limit: Optional[int] = None, pretrained: str = "smollm2-135m-instruct",
    include_path: Optional[str] = None, model_class: Optional[str] = None,
) -> float:
    """The hardware ceiling: seconds until the slowest of `devices` plain processes (no Lightning, no
    gather; 1 thread each, started together) has run its share of the same batches, dealt as DDP deals them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(devices), context.Queue()
    args = (devices, tasks, batch_size, limit, pretrained, include_path, model_class, barrier, queue)
    procs = [context.Process(target=_direct_rank, args=(rank, *args)) for rank in range(devices)]
    for p in procs:
        p.start()
    times = [queue.get(timeout=1800)[1] for _ in procs]
    for p in procs:
        p.join()
    return max(times)


def outputs_identical(a: Path, b: Path) -> dict[str, Any]:
    """Compare samples files line by line and the metrics in results.json of two runs."""
    differing = []
    for path in sorted(a.glob("samples_*.jsonl")):
        if path.read_bytes() != (b / path.name).read_bytes():
            differing.append(path.name)
    metrics = lambda p: {t: {k: v for k, v in r.items() if "," in k} for t, r in json.loads((p / "results.json").read_text())["results"].items()}
    return {
        "samples_files": len(list(a.glob("samples_*.jsonl"))),
        "samples_differing": differing,
        "metrics_identical": metrics(a) == metrics(b),
        "metrics": metrics(a),
    }


def direct_summary(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    direct = {d: median([r["direct_s"] for r in rows]) for d, rows in runs.items()}
    return {
        "direct_s": {d: [r["direct_s"] for r in rows] for d, rows in runs.items()},
        "median_direct_s": direct,
        "direct_ratio": direct[1] / direct[2],
        "direct_others_cores": {d: [r["direct_others_cores"] for r in rows] for d, rows in runs.items()},
    }


def measure(
    tasks: list[str], batch_size: int, repeats: int, workdir: Path, limit: Optional[int] = None,
    pretrained: str = "smollm2-135m-instruct", include_path: Optional[str] = None, wait: Callable[[], float] = no_wait,
    model_class: Optional[str] = None, direct: bool = True,
) -> dict[str, Any]:
    """Alternate 1-process and 2-process runs; medians, ratios and the identity check.

    With `direct`, each run is followed by the same work in plain processes (`direct_data_parallel`),
    whose ratio is the ceiling that this machine allows for 2 processes.

    `wait` is called before each run; the cores used by other processes during each run are recorded."""
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for i in range(repeats):
        for devices in (1, 2):
            wait()
            with Contention() as seen:
                row = run_cli(workdir / f"d{devices}_{i}", devices, tasks, batch_size, limit, pretrained, include_path, model_class)
            seen.others_cores = max(0.0, seen.others_cores - row["other_ranks_cpu_s"] / seen.wall_s)
            runs[devices].append({**row, **seen.as_dict()})
            if direct:
                wait()
                with Contention() as seen:
                    runs[devices][-1]["direct_s"] = direct_data_parallel(devices, tasks, batch_size, limit, pretrained, include_path, model_class)
                runs[devices][-1]["direct_others_cores"] = seen.others_cores
    phase = {d: median([r["phase_s"] for r in rows]) for d, rows in runs.items()}
    wall = {d: median([r["wall_s"] for r in rows]) for d, rows in runs.items()}
    return {
        "tasks": tasks,
        "model_class": model_class or "lmm_lightning.models.HFCausalLM",
        "batch_size": batch_size,
        "requests": runs[1][0]["requests"],
        "requests_all_ranks_2proc": runs[2][0]["requests_all_ranks"],
        "threads_per_process": {d: rows[0]["threads"] for d, rows in runs.items()},
        "phase_s": {d: [r["phase_s"] for r in rows] for d, rows in runs.items()},
        "wall_s": {d: [r["wall_s"] for r in rows] for d, rows in runs.items()},
        "median_phase_s": phase,
        "median_wall_s": wall,
        "throughput_ratio": phase[1] / phase[2],
        "model_share": {d: [r["model_share"] for r in rows] for d, rows in runs.items()},
        "min_model_share": {d: min(min(r["model_share"].values()) for r in rows) for d, rows in runs.items()},
        "wall_ratio": wall[1] / wall[2],
        **(direct_summary(runs) if direct else {}),
        "identity": outputs_identical(workdir / "d1_0", workdir / "d2_0"),
        "load_1min": {d: [r["load_1min"] for r in rows] for d, rows in runs.items()},
        "others_cores": {d: [r["others_cores"] for r in rows] for d, rows in runs.items()},
        "max_others_cores": max(r["others_cores"] for rows in runs.values() for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["capitals_mc"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--target", type=float, default=1.8)
    parser.add_argument("--model-class", default=None, help="a model class_path other than HFCausalLM")
    add_load_arguments(parser)
    args = parser.parse_args()
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        row = measure(
            args.tasks, args.batch_size, args.repeats, Path(workdir), args.limit, wait=idle_waiter(args), model_class=args.model_class
        )
    p, w, ident = row["median_phase_s"], row["median_wall_s"], row["identity"]
    same = not ident["samples_differing"] and ident["metrics_identical"]
    verdict = "PASS" if row["throughput_ratio"] >= args.target and same else "FAIL"
    print(
        f"{row['model_class']}, {'+'.join(args.tasks)}: {row['requests']} requests, batch {row['batch_size']}, threads/process {row['threads_per_process']} | "
        f"phase 1 proc {p[1]:.2f} s, 2 procs {p[2]:.2f} s -> x{row['throughput_ratio']:.2f} (target >= {args.target}: {verdict}) | "
        f"plain processes (no framework) 1: {row['median_direct_s'][1]:.2f} s, 2: {row['median_direct_s'][2]:.2f} s -> "
        f"x{row['direct_ratio']:.2f} (the machine's ceiling) | "
        f"share of each rank's phase in the model >= {row['min_model_share'][1]:.1%} (1 proc), {row['min_model_share'][2]:.1%} (2 procs) | "
        f"wall 1 proc {w[1]:.2f} s, 2 procs {w[2]:.2f} s -> x{row['wall_ratio']:.2f} | identical samples: "
        f"{not ident['samples_differing']} ({ident['samples_files']} files), metrics: {ident['metrics_identical']} | "
        f"load {min(min(v) for v in row['load_1min'].values()):.2f}-{max(max(v) for v in row['load_1min'].values()):.2f}, "
        f"other processes <= {row['max_others_cores']:.2f} cores",
        flush=True,
    )
    RESULTS.mkdir(exist_ok=True)
    suffix = f"_{args.model_class.split('.')[-1]}" if args.model_class else ""
    path = RESULTS / f"scaling_b{args.batch_size}{suffix}.json"
    path.write_text(json.dumps({"machine": machine(), "commit": git_commit(), **row}, indent=2, default=str))


if __name__ == "__main__":
    main()
