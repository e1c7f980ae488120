"""Benchmarks scored while the model trains: `BenchmarkEvaluation`, a callback for `Trainer.fit`.

At each evaluation point (every N optimizer steps, every N epochs, and optionally before the first step) every
rank puts the module in eval mode, answers its share of the benchmarks' requests with the same padded sampler
as a standalone evaluation (so every rank runs as many batches, and the scores do not depend on the world
size), the answers are gathered, rank 0 scores them and writes `<output_dir>/step_<N>/` (results.json and the
samples, as `lmm-lightning predict` writes them), and logs every metric with its stderr and interval bounds to
the trainer's loggers at the global step, with the paired difference from the previous point. Then training
goes on as if nothing had happened: the RNG states, each submodule's train/eval mode, the tokenizer's padding
side and the gradients are as they were. A point whose results.json exists (a run resumed from a checkpoint)
is not computed again.
"""

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lmm_lightning.data.datamodule import BenchmarkDataModule, RequestBatch, RequestDataset
from lmm_lightning.data.sampler import BatchSize, holds_auto, plan_rank
from lmm_lightning.errors import EXIT_FAILURE, EXIT_INPUT_ERROR, InputError
from lmm_lightning.evaluation.failfast import PREDICTING, FailFast, check_same_requests, describe_batch, is_communication_error
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.evaluation.loggers import metric_scalars
from lmm_lightning.evaluation.result import EvaluationResult, Settings
from lmm_lightning.evaluation.results import write_outputs
from lmm_lightning.evaluation.scoring import Answers, Benchmark, evaluate
from lmm_lightning.evaluation.trajectory import point_folder, record_change, write_trajectory, written_points
from lmm_lightning.models.base import EvalModule, check_responses
from lmm_lightning.requests import RequestType, Response

# --- who answers: the module being trained ------------------------------------------------------------------
Answerer = Callable[[RequestBatch], list[Response]]


def answerer(module: LightningModule, trainer: Trainer) -> Answerer:
    """How `module` answers a batch of requests: an `EvalModule`'s own `predict_step`; any module with
    `loglikelihood` / `generate_until` (lists of `Request` in, lists of `Response` out); or a module holding a
    Hugging Face causal LM as `model` with its `tokenizer`, answered by `HFCausalLM` around those objects."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    if isinstance(module, EvalModule):
        if isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy)):
            # A sharded root's own parameters are gathered only inside its wrapper's forward (as predict runs it).
            return lambda batch: module.through_strategy("predict_step", batch, 0)
        # Not through DDP's wrapper: its forward would broadcast buffers, a collective, at every generation step.
        return lambda batch: module.predict_step(batch, 0)
    if callable(getattr(module, "loglikelihood", None)) or callable(getattr(module, "generate_until", None)):
        return lambda batch: by_request_type(module, batch)
    model, tokenizer = getattr(module, "model", None), getattr(module, "tokenizer", None)
    if isinstance(model, torch.nn.Module) and tokenizer is not None and hasattr(model, "generate"):
        from lmm_lightning.models.hf_causal import HFCausalLM

        wrapper = HFCausalLM.around(model, tokenizer, trainer)
        return lambda batch: wrapper.predict_step(batch, 0)
    raise InputError(
        f"BenchmarkEvaluation: {type(module).__name__} cannot answer benchmark requests; make it an "
        "lmm_lightning EvalModule (e.g. subclass HFCausalLM or HFVisionLM and add a training_step), give it "
        "loglikelihood(requests) / generate_until(requests) methods, or hold a Hugging Face causal LM as "
        "`self.model` and its tokenizer as `self.tokenizer`"
    )


def by_request_type(module: Any, batch: RequestBatch) -> list[Response]:
    """A user's module: its `loglikelihood` or `generate_until`, by the batch's (single) request type."""
    name = "generate_until" if batch.request_type is RequestType.GENERATE_UNTIL else "loglikelihood"
    if batch.request_type is RequestType.LOGLIKELIHOOD_ROLLING:
        name = "loglikelihood_rolling"
    method = getattr(module, name, None)
    if not callable(method):
        task = batch.requests[0].task
        raise InputError(f"BenchmarkEvaluation: task '{task}' needs {type(module).__name__}.{name}(requests), which it does not have")
    return check_responses(module, batch.requests, method(batch.requests))


# --- what an evaluation point must leave as it found ----------------------------------------------------------
@dataclass
class TrainingState:
    """The RNG states, each submodule's mode and the tokenizers' padding side and token, taken before an
    evaluation point and put back after it, so training continues exactly as it would have without the point."""

    rng: tuple[Any, ...]
    modes: dict[str, bool]
    padding: list[tuple[Any, str, Any]]  # (tokenizer, padding side, padding token)

    @classmethod
    def of(cls, module: torch.nn.Module) -> "TrainingState":
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        rng = (torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())
        modes = {name: m.training for name, m in module.named_modules()}
        return cls(rng, modes, [(t, t.padding_side, t.pad_token) for t in tokenizers_of(module)])

    def restore(self, module: torch.nn.Module) -> None:
        cpu, cuda, numpy_state, python_state = self.rng
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        for name, m in module.named_modules():
            if name in self.modes:
                m.training = self.modes[name]
        for tokenizer, side, token in self.padding:
            tokenizer.padding_side = side
            if tokenizer.pad_token != token:
                tokenizer.pad_token = token


def tokenizers_of(module: Any) -> list[Any]:
    """The tokenizers a module holds (`tokenizer`, `processor.tokenizer`), whose padding side generation sets."""
    found = [getattr(module, "tokenizer", None), getattr(getattr(module, "processor", None), "tokenizer", None)]
    unique = {id(t): t for t in found if t is not None and hasattr(t, "padding_side")}
    return list(unique.values())


# --- the callback -----------------------------------------------------------------------------------------------
class BenchmarkEvaluation(Callback):
    """Score benchmarks on the model being trained, at chosen points of `Trainer.fit`, on every rank.

    Args:
        tasks: task names, YAML paths or folders (as `BenchmarkDataModule`).
        every_n_train_steps: evaluate after every N optimizer steps (global steps N, 2N, ...).
        every_n_epochs: evaluate at the end of every N-th training epoch.
        at_start: also evaluate before the first training step (step 0, or the step a resumed run starts at).
        output_dir: one `step_<N>` results folder per point is written here.
        limit, batch_size, include_path, num_fewshot, seed, generation_kwargs: as `BenchmarkDataModule`; the
            documents, few-shot examples and batches are the same at every point.
        bootstrap_iters: resamples for each metric's stderr and interval (0: analytic only).
        comparison_iters: resamples of the paired difference from the previous point (0: no comparison).
        log_samples: write each point's samples files (the paired comparison needs them).
        stall_timeout: seconds a rank may make no progress during a point while the others go on.
    """

    def __init__(
        self,
        tasks: list[str],
        every_n_train_steps: Optional[int] = None,
        every_n_epochs: Optional[int] = None,
        at_start: bool = False,
        output_dir: str = "benchmark_evaluation",
        limit: Union[int, float, None] = None,
        batch_size: BatchSize = 8,
        include_path: Union[str, list[str], None] = None,
        num_fewshot: Optional[int] = None,
        seed: int = 1234,
        generation_kwargs: Optional[dict[str, dict[str, Any]]] = None,
        bootstrap_iters: int = 10_000,
        comparison_iters: int = 10_000,
        log_samples: bool = True,
        stall_timeout: float = 600.0,
    ) -> None:
        for name, value in (("every_n_train_steps", every_n_train_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"BenchmarkEvaluation.{name}: expected a positive integer or None, got {value!r}")
        for name, value in (("bootstrap_iters", bootstrap_iters), ("comparison_iters", comparison_iters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"BenchmarkEvaluation.{name}: expected a non-negative integer, got {value!r}")
        if every_n_train_steps is None and every_n_epochs is None and not at_start:
            raise InputError("BenchmarkEvaluation: give every_n_train_steps, every_n_epochs or at_start=True, else it never evaluates")
        if holds_auto(batch_size):
            raise InputError("BenchmarkEvaluation.batch_size: give a number (or one per request type); 'auto' probes memory, which a training run needs")
        if comparison_iters and not log_samples:
            raise InputError("BenchmarkEvaluation.comparison_iters: the paired comparison reads the samples; set log_samples=True or comparison_iters=0")
        self.data = BenchmarkDataModule(
            list(tasks), limit=limit, batch_size=batch_size, include_path=include_path, num_fewshot=num_fewshot,
            seed=seed, generation_kwargs=generation_kwargs,
        )
        self.every_n_train_steps = every_n_train_steps
        self.every_n_epochs = every_n_epochs
        self.at_start = at_start
        self.output_dir = Path(output_dir)
        self.bootstrap_iters = bootstrap_iters
        self.comparison_iters = comparison_iters
        self.log_samples = log_samples
        self.stall_timeout = float(stall_timeout)
        self.seed = seed
        self.evaluated: set[int] = set()  # steps handled in this process (computed or found written)
        self.results: dict[int, dict[str, float]] = {}  # step -> the scalars logged (rank 0)
        self.seconds: dict[int, float] = {}  # step -> wall time of the point, on this rank
        self.failfast: Optional[FailFast] = None
        self.current_batch: Optional[RequestBatch] = None

    # --- Lightning hooks ------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Load the benchmarks once, on every rank (they agree on a bad input), before any training step."""
        if stage != "fit":
            return
        self.data.setup("predict")
        check_same_requests(self.data.requests, trainer.strategy.root_device)
        answerer(pl_module, trainer)  # a module that cannot answer fails now, not after the first steps

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_start:  # after a checkpoint is restored: the step is the one training resumes at
            self.evaluate_point(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0:
            self.evaluate_point(trainer, pl_module)  # once per step, whatever the gradient accumulation

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate_point(trainer, pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """During a point: name the rank, the batch and the cause, and stop every rank (the others wait in a gather)."""
        if self.failfast is None:
            return
        batch = self.current_batch
        where = f" on {describe_batch(batch.requests)}" if batch is not None else ""
        message = f"rank {trainer.global_rank} failed during the benchmark evaluation at step {trainer.global_step}{where}: {type(exception).__name__}: {exception}"
        if is_communication_error(exception):
            self.failfast.wait_for_cause()
        self.failfast.report(message, EXIT_INPUT_ERROR if isinstance(exception, InputError) else EXIT_FAILURE)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and written_points(self.output_dir):
            write_trajectory(self.output_dir)  # scores.csv and scores.png: every point, with its interval

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.close_failfast()

    def state_dict(self) -> dict[str, Any]:
        return {"evaluated": sorted(self.evaluated)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evaluated = set(state_dict.get("evaluated", []))

    # --- one evaluation point -----------------------------------------------------------------------------------
    def evaluate_point(self, trainer: Trainer, pl_module: LightningModule) -> Optional[EvaluationResult]:
        """Answer, gather, score, write and log the benchmarks at the current global step; rank 0 returns the result."""
        step = trainer.global_step
        folder = point_folder(self.output_dir, step)
        written = trainer.strategy.broadcast((folder / "results.json").is_file() if trainer.is_global_zero else None)
        if step in self.evaluated or written:
            self.evaluated.add(step)
            return None
        started = time.perf_counter()
        state = TrainingState.of(pl_module)
        self.start_failfast(trainer)
        try:
            pl_module.eval()
            with torch.no_grad():
                gathered = self.answer_all(trainer, pl_module)
            result = self.score(trainer, pl_module, step, folder, gathered) if trainer.is_global_zero else None
            trainer.strategy.barrier("benchmark_evaluation")  # rank 0 wrote the point before anyone trains on
        finally:
            state.restore(pl_module)
        self.close_failfast()
        self.evaluated.add(step)
        self.seconds[step] = time.perf_counter() - started
        return result

    def answer_all(self, trainer: Trainer, pl_module: LightningModule) -> Any:
        """This rank's batches of the padded plan, answered, then every rank's answers gathered (a collective)."""
        from lmm_lightning.parallel import data_parallel

        replicas, rank = data_parallel(trainer)
        dataset = RequestDataset(self.data.requests, self.data.documents)
        plan = plan_rank(self.data.requests, self.data.resolved_batch_size(), replicas, rank)
        answer = answerer(pl_module, trainer)  # made here: the module is on its device by now
        collector = ResponseCollector().to(pl_module.device)
        collector.update([], [], resumed=True)  # every rank fills every state, even with nothing
        for index in plan:
            batch = self.current_batch = dataset[index]
            if self.failfast is not None:
                self.failfast.batch_started(describe_batch(batch.requests))
            responses = answer(batch)
            collector.update(responses, list(batch.padding))
            if self.failfast is not None:
                self.failfast.batch_done()
        self.current_batch = None
        gathered = collector.compute()
        return gathered

    def score(self, trainer: Trainer, pl_module: LightningModule, step: int, folder: Path, gathered: Any) -> EvaluationResult:
        """Rank 0: score, write the point's folder, and log its metrics and the paired change from the last point."""
        settings = Settings(
            bootstrap_iters=self.bootstrap_iters, seed=self.seed, model=type(pl_module).__name__,
            model_args={**dict(getattr(pl_module, "hparams", {})), "global_step": step},
            batch_size=self.data.batch_size, limit=self.data.limit, offset=0, world_size=trainer.world_size,
        )
        result = evaluate(Benchmark.from_datamodule(self.data), Answers(gathered.pairs, gathered.resumed), settings)
        previous = [p for s, p in written_points(self.output_dir).items() if s < step]
        write_outputs(folder, result, self.log_samples)
        scalars = metric_scalars(result)
        if previous and self.comparison_iters:
            scalars.update(record_change(previous[-1], folder, self.comparison_iters, self.seed))
        write_trajectory(self.output_dir, plot=False)  # the plot is drawn once, at the end of fit
        self.results[step] = scalars
        for logger in trainer.loggers:
            logger.log_metrics({f"benchmark/{name}": value for name, value in scalars.items()}, step=step)
        return result

    # --- fail fast across ranks during a point ----------------------------------------------------------------
    def start_failfast(self, trainer: Trainer) -> None:
        if trainer.world_size < 2:
            return
        self.failfast = FailFast(trainer.global_rank, getattr(trainer.strategy.launcher, "procs", None), self.stall_timeout)
        self.failfast.start()
        self.failfast.phase(PREDICTING)

    def close_failfast(self) -> None:
        if self.failfast is not None:
            self.failfast.stop()
            self.failfast.close()
            self.failfast = None
