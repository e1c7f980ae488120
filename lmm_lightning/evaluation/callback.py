"""The EvaluationCallback: collect responses per rank, gather to rank 0, score, write."""

from pathlib import Path
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer

from lmm_lightning.data.datamodule import BenchmarkDataModule, RequestBatch
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.evaluation.results import build_results, format_table, write_outputs
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
    """

    def __init__(
        self,
        output_dir: str = "outputs",
        bootstrap_iters: int = 100_000,
        log_samples: bool = True,
        seed: int = 1234,
        print_table: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.bootstrap_iters = bootstrap_iters
        self.log_samples = log_samples
        self.seed = seed
        self.print_table = print_table
        self.collector: Optional[ResponseCollector] = None
        self.results: Optional[dict[str, Any]] = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.collector = ResponseCollector().to(pl_module.device)
        self.results = None

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: list[Response], batch: RequestBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.collector.update(outputs, batch.padding)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        gathered = self.collector.compute()  # a collective: every rank takes part
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, BenchmarkDataModule):
            raise TypeError("EvaluationCallback needs the Trainer to run a BenchmarkDataModule")
        self.results = self.evaluate(datamodule, gathered, trainer.world_size, pl_module)
        write_outputs(self.output_dir, self.results, self.task_results, self.log_samples)
        if self.print_table:
            print(format_table(self.results), flush=True)

    def evaluate(
        self, datamodule: BenchmarkDataModule, gathered: list, world_size: int, pl_module: LightningModule
    ) -> dict[str, Any]:
        answers, padded = check_exactly_once(datamodule.requests, gathered)
        by_task: dict[str, list] = {name: [] for name in datamodule.documents}
        for request in datamodule.requests:
            by_task[request.task].append(request)
        self.task_results: list[TaskResult] = []
        for name, requests in by_task.items():
            result = score_task(datamodule.documents[name], requests, answers, self.bootstrap_iters, self.seed)
            result.integrity.padded = padded[name]
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
