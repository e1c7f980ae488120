"""`lmm-lightning predict --config cfg.yaml`: LightningCLI with the evaluation callback built in."""

import os
import sys
from datetime import timedelta
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.errors import EXIT_INPUT_ERROR, InputError
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.evaluation.progress import EvalProgressBar
from lmm_lightning.models import EvalModule
from lmm_lightning.models.sharding import NoSplitModulesPolicy

DEFAULT_TIMEOUT_S = 60_000
TRAINER_DEFAULTS = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}


def strategy_with_timeout(strategy: Any, timeout_s: int) -> Any:
    """Give the named ddp/fsdp strategies a process-group timeout long enough for big evaluations."""
    timeout = timedelta(seconds=timeout_s)
    if strategy == "ddp":
        return DDPStrategy(timeout=timeout)
    if strategy == "fsdp":
        return FSDPStrategy(timeout=timeout, auto_wrap_policy=NoSplitModulesPolicy())
    return strategy


def with_progress_bar(config: dict[str, Any], callbacks: list) -> list:
    """Add the per-task world progress bar unless progress bars are off or the user chose one."""
    given = config.get("callbacks") or []
    given = given if isinstance(given, list) else [given]
    if config.get("enable_progress_bar") is False or any(isinstance(c, ProgressBar) for c in [*given, *callbacks]):
        return callbacks
    return [*callbacks, EvalProgressBar()]


def launched_by_torchrun() -> bool:
    return "LOCAL_WORLD_SIZE" in os.environ and "GROUP_RANK" in os.environ


class EvalCLI(LightningCLI):
    """Only `predict`; the callback's options live under `--evaluation.*`."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EvaluationCallback, "evaluation")
        parser.add_argument(
            "--process_group_timeout", type=int, default=DEFAULT_TIMEOUT_S, help="seconds before a collective times out"
        )

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("return_predictions") is None:
            kwargs["return_predictions"] = False  # the callback keeps the responses; no second copy
        return kwargs

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        timeout_s = self._get(self.config, "process_group_timeout")
        if launched_by_torchrun() and config.get("devices") in ("auto", 1, "1", None):
            # torchrun / accelerate launch started the processes: match them instead of failing.
            config["devices"] = int(os.environ["LOCAL_WORLD_SIZE"])
            config["num_nodes"] = int(os.environ["WORLD_SIZE"]) // int(os.environ["LOCAL_WORLD_SIZE"])
            if config.get("strategy") in ("auto", None):
                config["strategy"] = "ddp"
        config["strategy"] = strategy_with_timeout(config.get("strategy"), timeout_s)
        return super()._instantiate_trainer(config, with_progress_bar(config, callbacks))


def list_tasks(args: list[str]) -> int:
    """`lmm-lightning tasks [FOLDER ...]`: every task and group found, with its kind and file."""
    from pathlib import Path

    from lmm_lightning.tasks import load_spec
    from lmm_lightning.tasks.registry import BUILTIN_DIR, available_tasks

    found = available_tasks([BUILTIN_DIR] + [Path(a) for a in args])
    width = max((len(name) for name in found), default=4)
    print(f"{'name':<{width}}  {'kind':<16}  file")
    for name, path in sorted(found.items()):
        try:
            spec = load_spec(path)
            kind = "group" if hasattr(spec, "group") else spec.output_type
        except ValueError as err:
            kind = f"invalid ({err})"
        print(f"{name:<{width}}  {kind:<16}  {path}")
    return 0


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else args
    if args and args[0] == "tasks":
        sys.exit(list_tasks(args[1:]))
    if args and args[0] == "compare":
        from lmm_lightning.compare import main as compare

        sys.exit(compare(args[1:]))
    try:
        EvalCLI(
            EvalModule,
            BenchmarkDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
        )
    except InputError as err:
        print(f"lmm-lightning: error: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INPUT_ERROR)


if __name__ == "__main__":
    main(sys.argv[1:])
