"""The cost of a benchmark point inside `Trainer.fit` (`BenchmarkEvaluation`) against the same evaluation run
standalone (`Trainer.predict` with an `EvaluationCallback`), on the same loaded model, side by side in one run.

- standalone: `Trainer.predict` over a `BenchmarkDataModule` of `--tasks` (documents loaded, requests built,
  gathered, scored with `--bootstrap-iters`, results written), the model loaded beforehand and kept.
- point: `Trainer.fit` for one optimizer step (learning rate 0) with `BenchmarkEvaluation(at_start=True)`; the
  point's own wall time (`BenchmarkEvaluation.seconds`: eval mode, the same padded batches, gather, scoring,
  results and the paired change... none at step 0, written folder, logging, state restored).

The two alternate `--repeats` times; the medians and their ratio are reported. The model is the offline demo
model (SmolLM2-135M-Instruct, float32).

    python benchmarks/training_eval_cost.py --tasks capitals_mc capitals_gen --batch-size 16 --repeats 3
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from common import RESULTS, add_load_arguments, git_commit, idle_waiter, load_average, machine, median, wait_for_quiet
from lmm_lightning.assets import smollm2_folder
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.evaluation.training import BenchmarkEvaluation
from lmm_lightning.models import HFCausalLM

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)


class StillLM(HFCausalLM):
    """The evaluated model with a training step that changes nothing (learning rate 0)."""

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch, labels=batch).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def standalone(model: StillLM, tasks: list[str], batch_size: int, iters: int, folder: Path) -> float:
    callback = EvaluationCallback(output_dir=str(folder), bootstrap_iters=iters, resume=False, free_model_memory=False, print_table=False)
    trainer = Trainer(accelerator="cpu", devices=1, callbacks=[callback], **{k: v for k, v in QUIET.items() if k != "enable_checkpointing"})
    started = time.perf_counter()
    trainer.predict(model, BenchmarkDataModule(tasks, batch_size=batch_size), return_predictions=False)
    return time.perf_counter() - started


def point(model: StillLM, tasks: list[str], batch_size: int, iters: int, folder: Path) -> float:
    evaluation = BenchmarkEvaluation(tasks, at_start=True, batch_size=batch_size, bootstrap_iters=iters, output_dir=str(folder))
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=1, callbacks=[evaluation], **QUIET)
    trainer.fit(model, DataLoader(torch.randint(0, 1000, (2, 8)), batch_size=1))
    (seconds,) = evaluation.seconds.values()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["capitals_mc", "capitals_gen"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bootstrap-iters", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    add_load_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = wait_for_quiet(args.max_load, args.max_wait)
    wait = idle_waiter(args)
    model = StillLM(str(smollm2_folder()))
    model.configure_model()
    runs: dict[str, list[float]] = {"standalone": [], "point": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, run in (("standalone", standalone), ("point", point)):
                wait()
                seconds = run(model, args.tasks, args.batch_size, args.bootstrap_iters, Path(tmp) / f"{name}{repeat}")
                runs[name].append(seconds)
                print(f"repeat {repeat}: {name} {seconds:.2f} s", flush=True)
        same = json.loads((Path(tmp) / "standalone0" / "results.json").read_text())["results"] == json.loads(
            (Path(tmp) / "point0" / "step_0000000" / "results.json").read_text())["results"]
    out = {
        "tasks": args.tasks, "batch_size": args.batch_size, "bootstrap_iters": args.bootstrap_iters, "threads": args.threads,
        "repeats": args.repeats, "runs": runs, "median_s": {k: median(v) for k, v in runs.items()},
        "ratio_point_over_standalone": median(runs["point"]) / median(runs["standalone"]), "same_results": same,
        "machine": machine(), "commit": git_commit(), "load_at_start": load_at_start, "load_at_end": load_average(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training_eval_cost.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("median_s", "ratio_point_over_standalone", "same_results")}, indent=2))


if __name__ == "__main__":
    main()
