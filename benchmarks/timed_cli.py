"""`lmm-lightning` with the evaluation phase timed: `python benchmarks/timed_cli.py predict --config ...`.

The phase runs from the callback's `on_predict_start` to the moment every rank's responses are
gathered on this rank (`ResponseCollector.compute` returns), so it covers tokenisation, every
forward and the gather, but not the data set-up before it nor scoring and writing after it.
`model_s` is the part of it spent in the model's `predict_step`.
Each rank prints one line `BENCHMARK {json}` (with its CPU seconds) at exit (a script, not `python -c`, so that
Lightning's DDP launcher can start the other ranks with the same command).
"""

import atexit
import json
import os
import resource
import sys
import time

import torch

from lmm_lightning.cli import main
from lmm_lightning.evaluation.callback import EvaluationCallback
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.models.base import EvalModule

timing: dict = {"rank": int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))}
_on_start, _on_batch_end, _compute, _predict_step = (
    EvaluationCallback.on_predict_start, EvaluationCallback.on_predict_batch_end, ResponseCollector.compute,
    EvalModule.predict_step,
)


def on_predict_start(self, trainer, module) -> None:
    timing["start"] = time.perf_counter()
    timing["threads"] = torch.get_num_threads()
    timing["world_size"] = trainer.world_size
    _on_start(self, trainer, module)


def on_predict_batch_end(self, trainer, module, outputs, batch, *args, **kwargs) -> None:
    _on_batch_end(self, trainer, module, outputs, batch, *args, **kwargs)
    timing["requests"] = timing.get("requests", 0) + sum(1 for p in batch.padding if not p)


def predict_step(self, batch, batch_idx=0):
    start = time.perf_counter()
    out = _predict_step(self, batch, batch_idx)
    timing["model_s"] = timing.get("model_s", 0.0) + time.perf_counter() - start
    return out


def compute(self):
    out = _compute(self)
    timing["phase_s"] = time.perf_counter() - timing.pop("start")
    timing["gathered"] = len(out)
    return out


EvaluationCallback.on_predict_start = on_predict_start
EvaluationCallback.on_predict_batch_end = on_predict_batch_end
ResponseCollector.compute = compute
EvalModule.predict_step = predict_step
def report() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timing["cpu_s"] = usage.ru_utime + usage.ru_stime  # lets the caller count CPU of ranks it did not reap
    print("BENCHMARK " + json.dumps(timing), flush=True)


atexit.register(report)

if __name__ == "__main__":
    main(sys.argv[1:])
