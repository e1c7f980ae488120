"""`lmm-lightning predict`: LightningCLI with the evaluation callback built in, parse errors as one line.

Imported only by the subcommands that build a model (`predict`, `eval`): Lightning and torch load here,
so `lmm-lightning --help`, `tasks` and `compare` start without them.
"""

import contextlib
import difflib
import importlib
import inspect
import logging
import os
import re
import sys
import warnings
from datetime import timedelta
from typing import Any, Iterator, Optional, Sequence

import torch
from jsonargparse import ArgumentError
from lightning.fabric.plugins.environments import KubeflowEnvironment, SLURMEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import Accelerator, AcceleratorRegistry
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy, Strategy, StrategyRegistry

from lmm_lightning.cluster import SlurmRequeue, cluster_environment, cluster_plugins
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.datamodule import AgreedInputError
from lmm_lightning.errors import EXIT_INPUT_ERROR, InputError
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.evaluation.progress import EvalProgressBar
from lmm_lightning.models import EvalModule
from lmm_lightning.models.sharding import CPUFSDPStrategy, NoSplitModulesPolicy

DEFAULT_TIMEOUT_S = 60_000
TRAINER_DEFAULTS = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}


# --- the process-group timeout, on every strategy that makes a process group ---------------------------------
MODEL_PARALLEL = "model_parallel"  # Lightning's ModelParallelStrategy, which has no registered name


def takes_timeout(cls: type) -> bool:
    """Whether a strategy class makes a process group with a timeout (DDP, FSDP, ModelParallel, DeepSpeed)."""
    return "timeout" in inspect.signature(cls).parameters


def strategy_class(path: str) -> type:
    """The Strategy class a dotted path names (`lightning.pytorch.strategies.DDPStrategy`)."""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise InputError(
            f"trainer.strategy: {path!r} is not a strategy class; expected a registered name or the class path of a "
            "Lightning Strategy (e.g. lightning.pytorch.strategies.DDPStrategy)"
        )
    return cls


def device_count(accelerator: Any, devices: Any) -> int:
    """How many devices per node Lightning will use: a count, a list or "0,1" of indices, or all ("auto", -1)."""
    if isinstance(devices, str) and re.fullmatch(r"\s*-?\d+\s*", devices):
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices != "auto":
        return len([d for d in devices.split(",") if d.strip()])
    if devices in ("auto", -1, None):
        return chosen_accelerator(accelerator).auto_device_count()
    return devices if isinstance(devices, int) else 1


def chosen_accelerator(accelerator: Any) -> Any:
    """The accelerator class "auto" and "gpu" resolve to here, as Lightning picks it (TPU, MPS, CUDA, else CPU)."""
    if isinstance(accelerator, Accelerator):
        return type(accelerator)
    if isinstance(accelerator, str) and accelerator not in ("auto", "gpu") and accelerator in AcceleratorRegistry:
        return AcceleratorRegistry[accelerator]["accelerator"]
    names = ("mps", "cuda") if accelerator == "gpu" else ("tpu", "mps", "cuda", "cpu")
    for name in names:
        if AcceleratorRegistry[name]["accelerator"].is_available():
            return AcceleratorRegistry[name]["accelerator"]
    return AcceleratorRegistry["cpu"]["accelerator"]


def auto_strategy(accelerator: Any, devices: Any, num_nodes: Any) -> str:
    """The strategy Lightning's "auto" becomes (`_AcceleratorConnector._choose_strategy`, lightning 2.6.6): DDP on
    several nodes or devices ("ddp_fork" in an interactive session), else one device ("auto" stays)."""
    if chosen_accelerator(accelerator) is AcceleratorRegistry["tpu"]["accelerator"]:
        return "auto"  # XLA strategies: no process-group timeout
    interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive)
    if isinstance(num_nodes, int) and num_nodes > 1:
        return "ddp"
    if device_count(accelerator, devices) > 1:
        return "ddp_fork" if interactive else "ddp"
    return "auto"


def built_strategy(cls: type, params: dict[str, Any], timeout: timedelta) -> Strategy:
    """`cls(**params)` with our timeout; FSDP shards per block the model declares unsplittable unless a policy is given."""
    if issubclass(cls, FSDPStrategy):
        params = {"auto_wrap_policy": NoSplitModulesPolicy(), **params}
    return cls(**params, timeout=timeout)


def named_strategy(name: str, timeout: timedelta, on_cpu: bool = False) -> Any:
    """A registered name built as Lightning's registry builds it (its own start method, find_unused_parameters,
    cpu_offload, ...) plus our timeout; a name whose strategy makes no process group stays a name."""
    if name == MODEL_PARALLEL:
        return ModelParallelStrategy(timeout=timeout)
    if "." in name:
        cls = strategy_class(name)
        return built_strategy(cls, {}, timeout) if takes_timeout(cls) else cls()
    if name not in StrategyRegistry:
        return name
    cls, params = StrategyRegistry[name]["strategy"], dict(StrategyRegistry[name]["init_params"])
    if not takes_timeout(cls):
        return name
    if params.get("start_method") == "fork" and "fork" not in torch.multiprocessing.get_all_start_methods():
        return name  # Lightning's own message says to use ddp_spawn here
    if on_cpu and cls is FSDPStrategy and not params.get("cpu_offload"):
        cls = CPUFSDPStrategy  # FSDP over gloo on CPU processes, which Lightning's FSDPStrategy refuses
    return built_strategy(cls, params, timeout)


def instance_with_timeout(strategy: Strategy, timeout: timedelta) -> Strategy:
    """A strategy built from a class path: a timeout the user gave stays; Lightning's default (what jsonargparse fills
    in when none is given) becomes ours. FSDP without a wrap policy gets ours. Lightning has no public setter for
    the timeout: `_timeout` is what its DDP, FSDP, ModelParallel and DeepSpeed strategies (2.6.6) hand the group."""
    cls = type(strategy)
    if not takes_timeout(cls) or not hasattr(strategy, "_timeout"):
        return strategy
    if strategy._timeout == inspect.signature(cls).parameters["timeout"].default:
        strategy._timeout = timeout
    if isinstance(strategy, FSDPStrategy):
        strategy.kwargs.setdefault("auto_wrap_policy", NoSplitModulesPolicy())
    return strategy


def strategy_with_timeout(strategy: Any, timeout_s: int, *, accelerator: Any = "auto", devices: Any = 1, num_nodes: Any = 1) -> Any:
    """Every strategy that makes a process group gets one whose timeout is long enough for big evaluations
    (`--process_group_timeout`): registered names, "model_parallel", class paths, instances, and "auto" where
    Lightning picks DDP (several devices or nodes). Single-device and XLA strategies come back as given."""
    timeout = timedelta(seconds=timeout_s)
    if strategy in (None, "auto"):
        strategy = auto_strategy(accelerator, devices, num_nodes)
        if strategy == "auto":
            return strategy
    if isinstance(strategy, str):
        on_cpu = chosen_accelerator(accelerator) is AcceleratorRegistry["cpu"]["accelerator"]
        return named_strategy(strategy, timeout, on_cpu)
    if isinstance(strategy, Strategy):
        return instance_with_timeout(strategy, timeout)
    return strategy


def with_progress_bar(config: dict[str, Any], callbacks: list) -> list:
    """Add the per-task world progress bar unless progress bars are off or the user chose one."""
    given = config.get("callbacks") or []
    given = given if isinstance(given, list) else [given]
    if config.get("enable_progress_bar") is False or any(isinstance(c, ProgressBar) for c in [*given, *callbacks]):
        return callbacks
    return [*callbacks, EvalProgressBar()]


def one_line(text: str) -> str:
    """A message as a single line (library messages often span several)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def launched_by_torchrun() -> bool:
    return "LOCAL_WORLD_SIZE" in os.environ and "GROUP_RANK" in os.environ


def match_kubeflow(config: dict[str, Any]) -> None:
    """A Kubeflow PyTorchJob runs one process per pod: one device per node, WORLD_SIZE nodes, DDP unless told."""
    if config.get("devices") in ("auto", 1, "1", None):
        config["devices"] = 1
    if config.get("num_nodes") in (1, None):
        config["num_nodes"] = int(os.environ["WORLD_SIZE"])
    if config.get("strategy") in ("auto", None):
        config["strategy"] = "ddp"


# --- trainer options, checked right after parsing (before anything is built or loaded) ---------------
def check_accelerator(accelerator: Any) -> None:
    """A named accelerator must exist and be usable here: `gpu` on a machine without one fails now."""
    if not isinstance(accelerator, str) or accelerator == "auto":
        return
    known = sorted(AcceleratorRegistry.available_accelerators())
    if accelerator == "gpu":
        usable = any(AcceleratorRegistry[name]["accelerator"].is_available() for name in ("cuda", "mps"))
    elif accelerator in known:
        usable = AcceleratorRegistry[accelerator]["accelerator"].is_available()
    else:
        raise InputError(f"trainer.accelerator: unknown accelerator {accelerator!r}; expected 'auto', 'gpu' or one of {known}")
    if not usable:
        available = [name for name in known if AcceleratorRegistry[name]["accelerator"].is_available()]
        raise InputError(
            f"trainer.accelerator: {accelerator!r} is not available on this machine; expected 'auto' or one of {available}"
        )


def check_strategy(strategy: Any) -> None:
    if not isinstance(strategy, str) or strategy in ("auto", MODEL_PARALLEL):
        return
    if "." in strategy:
        strategy_class(strategy)
        return
    known = [*StrategyRegistry.available_strategies(), MODEL_PARALLEL]
    if strategy not in known:
        hint = difflib.get_close_matches(strategy, known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise InputError(f"trainer.strategy: unknown strategy {strategy!r}{suggestion} (expected 'auto' or one of {known})")


def check_trainer_count(option: str, value: Any, allow_all: bool) -> None:
    """`devices` / `num_nodes` given as a number must be at least 1 (`devices` also takes -1 for all)."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return  # 'auto', a list of device indices or "0,1": Lightning checks those against the accelerator
    if value < 1 and not (allow_all and value == -1):
        expected = "a positive number of devices, -1 for all, 'auto' or a list of device indices" if allow_all else "a positive integer"
        raise InputError(f"trainer.{option}: expected {expected}, got {value}")


def check_trainer_options(trainer: Any, process_group_timeout: Any) -> None:
    trainer = trainer or {}
    check_accelerator(trainer.get("accelerator"))
    check_strategy(trainer.get("strategy"))
    check_trainer_count("devices", trainer.get("devices"), allow_all=True)
    check_trainer_count("num_nodes", trainer.get("num_nodes"), allow_all=False)
    if not isinstance(process_group_timeout, int) or process_group_timeout < 1:
        raise InputError(f"process_group_timeout: expected a positive number of seconds, got {process_group_timeout!r}")


# --- jsonargparse's errors (often a multi-line dump of union subtypes) as one line naming the option ---
def option_names(parser: Any) -> list[str]:
    """Every dotted option the parser and its subcommand parsers know (for 'did you mean'), read from
    argparse's private `_actions` and jsonargparse's `_subcommands_action` (jsonargparse 4.53)."""
    names = [s.lstrip("-") for action in parser._actions for s in action.option_strings if s.startswith("--")]
    subcommands = getattr(parser, "_subcommands_action", None)
    for sub in (subcommands._name_parser_map.values() if subcommands else []):
        names += option_names(sub)
    return names


def class_options(message: str) -> list[str]:
    """The init arguments of the class named in the message (`model.<arg>`), for suggestions."""
    match = re.search(r"Problem with given class_path '([\w.]+)'", message)
    keys = re.findall(r'Parser key "([^"]+)"', message)
    if not match or not keys:
        return []
    module, _, name = match[1].rpartition(".")
    try:
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except Exception:  # noqa: BLE001 - a suggestion only; the error is reported anyway
        return []
    return [f"{keys[0]}.{p}" for p in params if p not in ("self", "args", "kwargs")]


def unknown_option(option: str, known: Sequence[str]) -> str:
    hint = difflib.get_close_matches(option, known, n=1, cutoff=0.75)
    suggestion = f"did you mean --{hint[0]}?" if hint else "run `lmm-lightning predict --help` for the options"
    return f"--{option}: unknown option; {suggestion}"


def describe_problem(text: str) -> str:
    """The innermost complaint of a jsonargparse message: what was expected and what was given."""
    if match := re.search(r"Expected a <class '([\w.]+)'>\. Got value: (.*)", text):
        return f"expected {match[1]}, got {match[2]!r}"
    if match := re.search(r"Problem with given class_path '([\w.]+)':\s*(.+)", text):
        return f"class_path {match[1]!r}: {match[2].strip()}"
    subtypes, given = re.search(r"Subtypes: \[(.*)\]", text), re.search(r"Given value: (.*)", text)
    if subtypes and given:
        types = re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", subtypes[1]).replace("NoneType", "None")
        return f"expected one of [{types}], got {given[1]!r}"
    return " ".join(text.split())


def input_error_in(err: Optional[BaseException]) -> Optional[InputError]:
    """The InputError an exception was raised from, if any (following its causes)."""
    while err is not None and not isinstance(err, InputError):
        err = err.__cause__ or err.__context__
    return err


def describe_parse_error(message: str, known: Sequence[str]) -> str:
    if match := re.match(r"unrecognized arguments: (\S+)", message):
        return unknown_option(match[1].split("=")[0].lstrip("-"), known)
    if match := re.match(r"Group '([\w.]+)' does not accept option '([\w.]+)'", message):
        return unknown_option(f"{match[1]}.{match[2]}", known)
    if match := re.match(r"Subcommand '[\w.]+' does not accept option '([\w.]+)'", message):
        return unknown_option(match[1], known)
    keys = re.findall(r'Parser key "([^"]+)"', message)
    innermost = re.split(r'Parser key "[^"]+":?', message)[-1]
    if match := re.search(r"Option '([\w.]+)' is not accepted", innermost):
        return unknown_option(".".join([*keys, match[1]]), [*known, *class_options(message)])
    return f"{'.'.join(keys) or 'command line'}: {describe_problem(innermost)}"


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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse errors and bad trainer options become one line, before anything is built or loaded."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise InputError(describe_parse_error(str(err), option_names(parser))) from None
        section = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        check_trainer_options(section.get("trainer"), section.get("process_group_timeout"))

    def instantiate_classes(self) -> None:
        """jsonargparse wraps what a class's `__init__` raises in a dump of union subtypes: unwrap input errors."""
        try:
            super().instantiate_classes()
        except Exception as err:
            cause = input_error_in(err)
            if cause is None:
                raise
            raise cause from None

    # --- Overrides of private LightningCLI methods, written against lightning 2.6.6 --------------------------
    # Lightning has no public hook for these; a release may rename them or change their signatures, and
    # tests/test_cli.py fails when the installed Lightning's differ from the ones below. `self._get` is private too.
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
        try:
            config["plugins"] = cluster_plugins(config.get("plugins")) or None
            environment = cluster_environment(config["plugins"] or [])
            if isinstance(environment, KubeflowEnvironment):
                match_kubeflow(config)
            if isinstance(environment, SLURMEnvironment):
                callbacks = [*callbacks, SlurmRequeue(environment.requeue_signal)]
            config["strategy"] = strategy_with_timeout(
                config.get("strategy"), timeout_s,
                accelerator=config.get("accelerator"), devices=config.get("devices"), num_nodes=config.get("num_nodes"),
            )
            return super()._instantiate_trainer(config, with_progress_bar(config, callbacks))
        except (MisconfigurationException, ValueError, TypeError) as err:
            raise InputError(f"trainer: {one_line(str(err))}") from None
    # --- end of the private overrides -----------------------------------------------------------------------


# --- a quiet start: nothing between the command and the progress bar but what the user must read -------------
# Lightning's info lines ("GPU available: False, used: False", "💡 Tip: ... litlogger", "Seed set to 0") go
# through these loggers; its warnings below are about its own calls on this torch, not about the user's input.
QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "lightning.fabric.utilities.distributed",  # "Initializing distributed: GLOBAL_RANK: ..." once per rank
)
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # lightning 2.6.6's _pytree on torch >= 2.10
    r"You have overridden `transfer_batch_to_device`",  # our requests are text: each model moves its own tensors
    r"The '\w+_dataloader' does not have many workers",  # documents are in memory; workers rarely help here
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's banner lines and its warnings about itself silenced for one run, then restored."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


@contextlib.contextmanager
def command_line(args: list[str]) -> Iterator[None]:
    """`sys.argv` as LightningCLI should read it: given `args`, Lightning warns (echoing the command line) whenever
    the process also has arguments of its own, which a console script always has."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "lmm-lightning", *args]
    try:
        yield
    finally:
        sys.argv = saved


# Options whose value is a list of task names: a bare "a,b" (as lm-eval spells it) is read as [a, b].
TASK_LIST_OPTIONS = ("--data.tasks", "--data.init_args.tasks")


def task_lists(args: list[str]) -> list[str]:
    """`--data.tasks a,b` (or one bare name) as the list jsonargparse expects, `[a, b]`.

    >>> task_lists(["--data.tasks", "a,b", "--data.tasks=[c]", "--data.tasks=d"])
    ['--data.tasks', '[a, b]', '--data.tasks=[c]', '--data.tasks=[d]']
    """
    out, after_option = [], False
    for arg in args:
        option, eq, value = arg.partition("=")
        if after_option or (eq and option in TASK_LIST_OPTIONS):
            value = arg if after_option else value
            listed = value if value.lstrip().startswith("[") else "[" + ", ".join(v.strip() for v in value.split(",") if v.strip()) + "]"
            arg = listed if after_option else f"{option}={listed}"
        after_option = arg in TASK_LIST_OPTIONS
        out.append(arg)
    return out


def predict(args: list[str]) -> Optional[int]:
    """`lmm-lightning predict --config cfg.yaml [--section.key value ...]`."""
    return lightning_cli(["predict", *task_lists(args)])


def lightning_cli(args: list[str]) -> Optional[int]:
    """Run EvalCLI on the whole command line; None once it has run (an in-process caller carries on), 2 on bad input."""
    no_exit = {"exit_on_error": False}  # parse errors come back as exceptions, shown as one line below
    try:
        with command_line(args), quiet_lightning():
            EvalCLI(
                EvalModule,
                BenchmarkDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=None,
                trainer_defaults=TRAINER_DEFAULTS,
                seed_everything_default=0,  # what `True` picks, without its "No seed found" warning
                parser_kwargs={**no_exit, "predict": no_exit},
                args=None,
            )
    except InputError as err:
        if not isinstance(err, AgreedInputError) or err.rank == 0:  # an error every rank holds: rank 0 says it
            print(f"lmm-lightning: error: {one_line(str(err))}", file=sys.stderr, flush=True)
        return EXIT_INPUT_ERROR
    return None
