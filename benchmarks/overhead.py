"""Framework overhead: a full `Trainer.predict` evaluation vs the same model forwards called directly.

For each task, three timings are interleaved `--repeats` times (the median is reported):

- direct: `global_batches(requests, batch_size)` then `model.loglikelihood(batch)` /
  `model.generate_until(batch)` in a loop: the same batches the evaluation runs, nothing else.
- full: `BenchmarkDataModule` (documents loaded, requests built) + `Trainer.predict` with an
  `EvaluationCallback` (response store, gather, scoring with `--bootstrap-iters`, results written)
  and the CLI's progress bar, as `lmm-lightning predict` runs it.
- full, no statistics: the same with `bootstrap_iters=0` (analytic standard errors).
- model time in full: the seconds the full run spends inside `loglikelihood` / `generate_until`,
  so full / (model time in the same run) is an overhead ratio immune to run-to-run noise.

The model is loaded once and shared by all three (loading time is excluded from every timing).

    python benchmarks/overhead.py --tasks capitals_mc capitals_gen --batch-size 16 --repeats 5
"""

import argparse
import json
import tempfile
import time
from typing import Any, Callable, Optional

import torch
from lightning.pytorch import Trainer

from common import (
    RESULTS, Contention, add_load_arguments, git_commit, idle_waiter, load_average, machine, median, no_wait, wait_for_quiet,
)
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.sampler import global_batches
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.evaluation.progress import EvalProgressBar
from lmm_lightning.models import HFCausalLM
from lmm_lightning.requests import Request, RequestType


def load_model(pretrained: str) -> HFCausalLM:
    """The model, loaded once (the callback is told not to release it)."""
    model = HFCausalLM(pretrained, dtype="float32")
    model.configure_model()
    return model


def build_requests(task: str, limit: Optional[int], include_path: Optional[str]) -> list[Request]:
    """The requests the evaluation will run (built outside the timed region)."""
    datamodule = BenchmarkDataModule([task], limit=limit, include_path=include_path)
    datamodule.setup("predict")
    return datamodule.requests


def run_direct(model: HFCausalLM, requests: list[Request], batch_size: int) -> float:
    """Seconds to answer every request with direct model calls on the evaluation's batches."""
    batches = global_batches(requests, batch_size)
    start = time.perf_counter()
    for batch in batches:
        if batch[0].request_type is RequestType.LOGLIKELIHOOD:
            model.loglikelihood(batch)
        else:
            model.generate_until(batch)
    return time.perf_counter() - start


class ModelTimer:
    """Accumulates the seconds spent inside the model's request methods during a full run."""

    def __init__(self, model: HFCausalLM) -> None:
        self.model, self.seconds = model, 0.0

    def _wrap(self, method: Callable) -> Callable:
        def timed(requests: list[Request]) -> Any:
            start = time.perf_counter()
            try:
                return method(requests)
            finally:
                self.seconds += time.perf_counter() - start

        return timed

    def __enter__(self) -> "ModelTimer":
        self.model.loglikelihood = self._wrap(type(self.model).loglikelihood.__get__(self.model))
        self.model.generate_until = self._wrap(type(self.model).generate_until.__get__(self.model))
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.model.loglikelihood, self.model.generate_until


def run_full(
    model: HFCausalLM, task: str, batch_size: int, bootstrap_iters: int, limit: Optional[int], include_path: Optional[str]
) -> tuple[float, float, dict[str, Any]]:
    """Seconds of a whole evaluation (data set-up, predict loop, gather, scoring, writing), the seconds
    spent inside the model's request methods during it, and its results."""
    with tempfile.TemporaryDirectory() as output_dir, ModelTimer(model) as timer:
        start = time.perf_counter()
        datamodule = BenchmarkDataModule([task], limit=limit, batch_size=batch_size, include_path=include_path)
        evaluation = EvaluationCallback(
            output_dir=output_dir, bootstrap_iters=bootstrap_iters, print_table=False, free_model_memory=False
        )
        trainer = Trainer(
            accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
            callbacks=[evaluation, EvalProgressBar()],
        )
        trainer.predict(model, datamodule, return_predictions=False)
        elapsed = time.perf_counter() - start
    return elapsed, timer.seconds, evaluation.results["results"][task]


def clean_ratios(times: dict[str, list[float]], contention: list[dict[str, Any]], max_others: float = 0.2) -> dict[str, Any]:
    """Medians and ratio over the runs during which other processes used fewer than `max_others` cores.

    With 2 threads on 2 cores, one busy core elsewhere can make a run several times slower."""
    clean: dict[str, list[float]] = {}
    for kind in ("direct", "full", "full_no_stats"):
        seen = [c["others_cores"] for c in contention if c["run"] == kind]
        clean[kind] = [t for t, o in zip(times[kind], seen) if o < max_others] or times[kind]
    medians = {k: median(v) for k, v in clean.items()}
    return {
        "clean_runs": {k: len(v) for k, v in clean.items()},
        "clean_median_s": medians,
        "clean_ratio_full": medians["full"] / medians["direct"],
        "clean_ratio_full_no_stats": medians["full_no_stats"] / medians["direct"],
    }


def measure(
    pretrained: str, task: str, batch_size: int, repeats: int, bootstrap_iters: int,
    limit: Optional[int] = None, include_path: Optional[str] = None, model: Optional[HFCausalLM] = None,
    wait: Callable[[], float] = no_wait,
) -> dict[str, Any]:
    """Interleaved direct / full / full-without-statistics timings for one task, with medians and ratios.

    `wait` is called before each timed run (to let other processes on the machine go quiet); how many
    cores other processes used during each run is recorded."""
    model = model or load_model(pretrained)
    requests = build_requests(task, limit, include_path)
    run_direct(model, requests, batch_size)  # warm-up (first forwards allocate)
    times: dict[str, list[float]] = {"direct": [], "full": [], "full_no_stats": [], "model_in_full": []}
    contention: list[dict[str, Any]] = []
    results = None
    for _ in range(repeats):
        for kind in ("direct", "full", "full_no_stats"):
            wait()
            with Contention() as seen:
                if kind == "direct":
                    times["direct"].append(run_direct(model, requests, batch_size))
                elif kind == "full":
                    elapsed, inside, results = run_full(model, task, batch_size, bootstrap_iters, limit, include_path)
                    times["full"].append(elapsed)
                    times["model_in_full"].append(inside)
                else:
                    times["full_no_stats"].append(run_full(model, task, batch_size, 0, limit, include_path)[0])
            contention.append({"run": kind, **seen.as_dict()})
    medians = {k: median(v) for k, v in times.items()}
    minima = {k: min(v) for k, v in times.items()}
    return {
        "task": task,
        "requests": len(requests),
        "batch_size": batch_size,
        "bootstrap_iters": bootstrap_iters,
        "threads": torch.get_num_threads(),
        "times_s": times,
        "median_s": medians,
        "ratio_full": medians["full"] / medians["direct"],
        "ratio_full_no_stats": medians["full_no_stats"] / medians["direct"],
        "min_s": minima,
        "ratio_full_of_minima": minima["full"] / minima["direct"],
        # robust to run-to-run noise: each full run against the model time inside that same run
        "ratio_full_in_run": median([f / m for f, m in zip(times["full"], times["model_in_full"])]),
        "contention": contention,
        **clean_ratios(times, contention),
        "load_1min": [c["load_1min"] for c in contention],
        "max_others_cores": max(c["others_cores"] for c in contention),
        "metrics": {k: v for k, v in results.items() if "," in k},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", nargs="+", default=["capitals_mc", "capitals_gen"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bootstrap-iters", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--target", type=float, default=1.10)
    add_load_arguments(parser)
    args = parser.parse_args()
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    model = load_model(args.pretrained)
    report = []
    for task in args.tasks:
        row = measure(args.pretrained, task, args.batch_size, args.repeats, args.bootstrap_iters, args.limit, model=model, wait=idle_waiter(args))
        report.append(row)
        m = row["median_s"]
        print(
            f"{task}: {row['requests']} requests, batch {row['batch_size']}, {row['threads']} threads | direct {m['direct']:.2f} s | "
            f"full {m['full']:.2f} s (x{row['ratio_full']:.3f}) | full without statistics {m['full_no_stats']:.2f} s "
            f"(x{row['ratio_full_no_stats']:.3f}) | in-run full / model time x{row['ratio_full_in_run']:.3f} | "
            f"runs with other processes < 0.2 cores: x{row['clean_ratio_full']:.3f} (without statistics x{row['clean_ratio_full_no_stats']:.3f}) | "
            f"minima: direct {row['min_s']['direct']:.2f} s, full {row['min_s']['full']:.2f} s (x{row['ratio_full_of_minima']:.3f}) | "
            f"target <= {args.target}: "
            f"{'PASS' if row['ratio_full'] <= args.target else 'FAIL'} | load {min(row['load_1min']):.2f}-{max(row['load_1min']):.2f}, "
            f"other processes <= {row['max_others_cores']:.2f} cores",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps({"machine": machine(), "commit": git_commit(), "rows": report}, indent=2))


if __name__ == "__main__":
    main()
