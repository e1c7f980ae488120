"""The EvaluationCallback: collect responses per rank, gather to rank 0, score, write."""

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer

from lmm_lightning.data.datamodule import BenchmarkDataModule, RequestBatch
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.evaluation.hub import push_results, split_target
from lmm_lightning.evaluation.loggers import log_results
from lmm_lightning.evaluation.results import build_results, format_table, write_outputs
from lmm_lightning.errors import EXIT_FAILURE, EXIT_INPUT_ERROR, InputError
from lmm_lightning.evaluation.failfast import FailFast
from lmm_lightning.evaluation.store import ResponseStore, config_digest, request_key
from lmm_lightning.models.base import EvalModule
from lmm_lightning.evaluation.scoring import TaskResult, check_exactly_once, score_group, score_task
from lmm_lightning.requests import Response


class EvaluationCallback(Callback):
    """Turns a `Trainer.predict` run over a `BenchmarkDataModule` into scored results.

    Args:
        output_dir: where results.json and samples_<task>.jsonl are written.
        bootstrap_iters: bootstrap resamples for standard errors and intervals (0: analytic).
        log_samples: write one samples_<task>.jsonl line per document.
        seed: seed of the bootstrap.
        print_table: print the results table on rank 0.
        resume: reuse responses stored in `output_dir` by an earlier run of the same evaluation.
        free_model_memory: release the model once every response is gathered, before scoring.
        log_samples_to_logger: sample records per task sent to the trainer's loggers as a table (TensorBoard, W&B).
        log_images_to_logger: images per vision task sent to those loggers, captioned with question and answer.
        push_to_hub: a Hub dataset repo ("org/name", or "org/name/folder") to upload results.json and samples to.
    """

    def __init__(
        self,
        output_dir: str = "outputs",
        bootstrap_iters: int = 100_000,
        log_samples: bool = True,
        seed: int = 1234,
        print_table: bool = True,
        resume: bool = True,
        free_model_memory: bool = True,
        log_samples_to_logger: int = 8,
        log_images_to_logger: int = 4,
        push_to_hub: Optional[str] = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.bootstrap_iters = bootstrap_iters
        self.log_samples = log_samples
        self.seed = seed
        self.print_table = print_table
        self.resume = resume
        self.free_model_memory = free_model_memory
        self.log_samples_to_logger = log_samples_to_logger
        self.log_images_to_logger = log_images_to_logger
        self.push_to_hub = push_to_hub
        if push_to_hub:
            split_target(push_to_hub)  # a malformed repo id fails now, not after the evaluation
        self.collector: Optional[ResponseCollector] = None
        self.results: Optional[dict[str, Any]] = None
        self.store: Optional[ResponseStore] = None
        self.keys: list[str] = []
        self.resumed: dict[int, Response] = {}
        self.failfast: Optional[FailFast] = None
        self.failure_message: Optional[str] = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Key every request and skip those an earlier run already answered (the datamodule is set up)."""
        datamodule = trainer.datamodule
        if not isinstance(datamodule, BenchmarkDataModule):
            raise TypeError("EvaluationCallback needs the Trainer to run a BenchmarkDataModule")
        model = config_digest(pl_module.identity() if isinstance(pl_module, EvalModule) else type(pl_module).__name__)
        configs = {name: config_digest({**task.spec.to_dict(), "source": None}) for name, task in datamodule.tasks.items()}
        self.keys = [request_key(r, configs[r.task], model) for r in datamodule.requests]
        self.store = ResponseStore(self.output_dir, trainer.global_rank)
        stored = self.store.load() if self.resume else {}
        self.resumed = {
            uid: replace(stored[key], uid=uid) for uid, key in enumerate(self.keys) if key in stored
        }
        datamodule.done_uids = set(self.resumed)
        self.failfast = FailFast(trainer.global_rank, launched=getattr(trainer.strategy.launcher, "procs", None))
        self.failfast.start()
        if trainer.loggers:
            # The run's hparams are logged once, at the end with the metrics: TensorBoard keeps a run's first only.
            trainer.enable_autolog_hparams = False

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: RequestBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.current_batch = batch

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Name the rank, task, documents and cause, and tell the other ranks to stop."""
        where = ""
        batch = getattr(self, "current_batch", None)
        if batch is not None:
            tasks = sorted({r.task for r in batch.requests})
            docs = sorted({r.doc_id for r in batch.requests})
            where = f" on task {', '.join(tasks)}, doc_id {', '.join(map(str, docs[:8]))}{' ...' if len(docs) > 8 else ''}"
        message = f"rank {trainer.global_rank} failed{where}: {type(exception).__name__}: {exception}"
        self.failure_message = message
        if self.failfast is not None:
            self.failfast.report(message, EXIT_INPUT_ERROR if isinstance(exception, InputError) else EXIT_FAILURE)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.collector = ResponseCollector().to(pl_module.device)
        self.results = None

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: list[Response], batch: RequestBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.current_batch = None
        self.store.append((self.keys[r.uid], r) for r, padding in zip(outputs, batch.padding) if not padding)
        self.collector.update(outputs, batch.padding)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.store is not None:
            self.store.close()
        if self.failfast is not None and self.failure_message is None:
            self.failfast.stop()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        gathered = self.collector.compute().pairs  # a collective: every rank takes part
        self.failfast.stop()  # every rank got here; from now on a rank may exit early
        if self.free_model_memory and isinstance(pl_module, EvalModule):
            pl_module.release()
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        self.results = self.evaluate(datamodule, gathered, trainer.world_size, pl_module)
        write_outputs(self.output_dir, self.results, self.task_results, self.log_samples)
        if self.print_table:
            print(format_table(self.results), flush=True)
        log_results(
            trainer.loggers, self.results, self.task_results, datamodule.documents,
            self.log_samples_to_logger, self.log_images_to_logger,
        )
        if self.push_to_hub:
            files = ["results.json"] + [f"samples_{r.name}.jsonl" for r in self.task_results if self.log_samples]
            print(f"pushed results to {push_results(self.output_dir, self.push_to_hub, files)}", flush=True)

    def evaluate(
        self, datamodule: BenchmarkDataModule, gathered: list, world_size: int, pl_module: LightningModule
    ) -> dict[str, Any]:
        resumed = [(response, False) for response in self.resumed.values()]
        answers, padded = check_exactly_once(datamodule.requests, gathered + resumed)
        resumed_by_task = Counter(datamodule.requests[uid].task for uid in self.resumed)
        by_task: dict[str, list] = {name: [] for name in datamodule.documents}
        for request in datamodule.requests:
            by_task[request.task].append(request)
        self.task_results: list[TaskResult] = []
        for name, requests in by_task.items():
            result = score_task(datamodule.documents[name], requests, answers, self.bootstrap_iters, self.seed)
            result.integrity.padded = padded[name]
            result.integrity.dropped = padded[name]  # padding responses discarded before scoring
            result.integrity.resumed = resumed_by_task[name]
            self.task_results.append(result)
        config = {
            "model": type(pl_module).__name__,
            "model_args": dict(getattr(pl_module, "hparams", {})),
            "batch_size": datamodule.batch_size,
            "limit": datamodule.limit,
            "offset": datamodule.offset,
            "bootstrap_iters": self.bootstrap_iters,
            "seed": self.seed,
        }
        n_original = {name: docs.n_original for name, docs in datamodule.documents.items()}
        by_name = {r.name: r for r in self.task_results}
        groups = {}
        for group in datamodule.groups:
            members = [by_name[t] for t in datamodule.group_subtasks[group.group]]
            weights = {m.get("metric"): bool(m.get("weight_by_size", True)) for m in group.aggregate_metric_list}
            groups[group.group] = score_group(members, weights)
        return build_results(
            self.task_results, datamodule.tasks, n_original, config, world_size, groups, datamodule.group_subtasks
        )
