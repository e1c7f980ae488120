"""Peak memory of rank 0 while gathering, scoring and writing N sample records (2 CPU processes, gloo).

A generation task with N synthetic documents (one request each) is built by `BenchmarkDataModule`
on both ranks; each rank answers its half (uid % 2) with synthetic texts in a `ResponseCollector`
(batches of 16, as `on_predict_batch_end` does), then both call `compute()` (the gather) and rank 0
does what `EvaluationCallback.on_predict_end` does: `evaluate` (exactly-once check, per-document
records, exact_match with a 100,000-iteration bootstrap) and `write_outputs` (samples + results).

Rank 0's peak RSS of each phase is read from /proc/self/status (VmHWM, reset through
/proc/self/clear_refs before the phase) and reported above the RSS before gathering; tracemalloc
gives the Python-object peak of the same phases. Runs several N to show the cost is linear.

    python benchmarks/gather_memory.py --records 25000 50000 100000 200000
"""

import argparse
import json
import os
import socket
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

from common import RESULTS, add_load_arguments, git_commit, load_average, machine, wait_for_quiet

TASK_YAML = """\
task: synthetic_gen
dataset_path: json
data_files: docs.jsonl
test_split: train
output_type: generate_until
doc_to_text: "Question: What is the capital of {{country}}?\\nAnswer: The capital of {{country}} is"
doc_to_target: capital
generation_kwargs:
  until: ["\\n", "."]
  max_new_tokens: 8
metric_list:
  - metric: exact_match
    ignore_case: true
    ignore_punctuation: true
"""


def write_task(folder: Path, n: int) -> Path:
    """A generation task over `n` synthetic countries; returns the YAML path."""
    with open(folder / "docs.jsonl", "w") as handle:
        for i in range(n):
            handle.write(json.dumps({"country": f"Country {i}", "capital": f"Capital City {i}"}) + "\n")
    (folder / "synthetic_gen.yaml").write_text(TASK_YAML)
    return folder / "synthetic_gen.yaml"


def rss_mib(field: str) -> float:
    """VmRSS or VmHWM (peak) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


class Phases:
    """Peak RSS and tracemalloc peak of consecutive phases of rank 0."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def start(self) -> None:
        reset_peak()
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        self.t0 = time.perf_counter()

    def stop(self, name: str) -> None:
        self.rows[name] = {
            "peak_rss_mib": rss_mib("VmHWM"),
            "rss_after_mib": rss_mib("VmRSS"),
            "python_peak_mib": tracemalloc.get_traced_memory()[1] / 2**20 if tracemalloc.is_tracing() else None,
            "seconds": time.perf_counter() - self.t0,
        }


def worker(
    rank: int, world_size: int, port: int, yaml: str, output_dir: str, bootstrap_iters: int, trace: bool, queue: Any
) -> None:
    """One rank: build the task, fill a collector with this rank's responses, gather; rank 0 scores and writes."""
    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation import EvaluationCallback
    from lmm_lightning.evaluation.gather import ResponseCollector
    from lmm_lightning.evaluation.results import write_outputs
    from lmm_lightning.evaluation.scoring import Answers, Benchmark, evaluate
    from lmm_lightning.models.base import EvalModule
    from lmm_lightning.requests import Response

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    datamodule = BenchmarkDataModule([yaml], batch_size=16)
    datamodule.setup("predict")
    mine = [r for r in datamodule.requests if r.uid % world_size == rank]
    collector = ResponseCollector()
    for start in range(0, len(mine), 16):
        batch = mine[start : start + 16]
        responses = [
            Response(uid=r.uid, text=f" Capital City {r.doc_id if r.doc_id % 3 else r.doc_id + 1}") for r in batch
        ]
        collector.update(responses, [False] * len(batch))
    dist.barrier()  # both ranks ready: the gather phase measures the gather, not waiting for the other rank
    if trace:
        tracemalloc.start()
    phases = Phases()
    before = rss_mib("VmRSS")
    phases.start()
    gathered = collector.compute().pairs
    phases.stop("gather")
    if rank == 0:
        callback = EvaluationCallback(output_dir=output_dir, bootstrap_iters=bootstrap_iters, print_table=False)
        phases.start()
        result = evaluate(Benchmark.from_datamodule(datamodule), Answers(gathered), callback.settings(datamodule, EvalModule(), world_size))
        phases.stop("score")
        phases.start()
        results = write_outputs(Path(output_dir), result, log_samples=True)
        phases.stop("write")
        exact = results["results"]["synthetic_gen"]["exact_match,none"]
        queue.put({"records": len(datamodule.requests), "gathered": len(gathered), "rss_before_mib": before, "phases": phases.rows, "exact_match": exact})
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(
    records: int, bootstrap_iters: int = 100_000, trace: bool = True, world_size: int = 2
) -> dict[str, Any]:
    """Run the 2-process gather + scoring for `records` documents; rank 0's memory per phase."""
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        yaml = write_task(Path(folder), records)
        queue = context.Queue()
        port = free_port()
        procs = [
            context.Process(target=worker, args=(rank, world_size, port, str(yaml), str(Path(folder) / "out"), bootstrap_iters, trace, queue))
            for rank in range(world_size)
        ]
        for p in procs:
            p.start()
        result = queue.get(timeout=1800)
        for p in procs:
            p.join()
        samples_bytes = (Path(folder) / "out" / "samples_synthetic_gen.jsonl").stat().st_size
    peak = max(p["peak_rss_mib"] for p in result["phases"].values())
    result["peak_rss_mib"] = peak
    result["peak_above_before_mib"] = peak - result["rss_before_mib"]
    result["bytes_per_record"] = result["peak_above_before_mib"] * 2**20 / records
    result["samples_file_bytes_per_record"] = samples_bytes / records
    return result


def _python_peak(phase: dict[str, Any]) -> str:
    peak = phase["python_peak_mib"]
    return "" if peak is None else f", python peak {peak:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--bootstrap-iters", type=int, default=100_000)
    parser.add_argument("--no-tracemalloc", action="store_true", help="time the phases without tracemalloc's slowdown")
    add_load_arguments(parser)
    args = parser.parse_args()
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    rows = []
    for n in args.records:
        row = measure(n, args.bootstrap_iters, not args.no_tracemalloc)
        rows.append(row)
        ph = row["phases"]
        print(
            f"{n} records (2 ranks): RSS before gather {row['rss_before_mib']:.0f} MiB | peak above it: "
            + ", ".join(f"{k} {v['peak_rss_mib'] - row['rss_before_mib']:.1f} MiB ({v['seconds']:.2f} s{_python_peak(v)})" for k, v in ph.items())
            + f" | max {row['peak_above_before_mib']:.1f} MiB = {row['bytes_per_record']:.0f} B/record "
            f"(samples file {row['samples_file_bytes_per_record']:.0f} B/record) | load {load_average():.2f}",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"gather_memory{'_notrace' if args.no_tracemalloc else ''}.json").write_text(json.dumps({"machine": machine(), "commit": git_commit(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
