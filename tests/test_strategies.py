"""`--process_group_timeout` reaches every strategy that makes a process group: each registered DDP name with its
own start method and DDP arguments, "auto" where Lightning picks DDP, `model_parallel`, FSDP names and class
paths (a user's wrap policy and a user's timeout kept), read on the trainer the real CLI builds. One real
2-process `ddp_spawn` run reads the timeout off the live gloo group."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.strategies import (
    DDPStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy, StrategyRegistry,
)
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.errors import InputError
from lmm_lightning.lightning_cli import TRAINER_DEFAULTS, EvalCLI, command_line, lightning_cli, strategy_with_timeout
from lmm_lightning.models import EvalModule
from lmm_lightning.models.sharding import CPUFSDPStrategy, NoSplitModulesPolicy

OURS = timedelta(seconds=4321)
LIGHTNING_DEFAULT = timedelta(minutes=30)
REPO = Path(__file__).resolve().parents[1]
# Registered names whose strategy makes a process group, buildable on this CPU machine (FSDP needs a GPU
# accelerator in Lightning, DeepSpeed its package): each must come out as the registry builds it, plus our timeout.
DDP_NAMES = [n for n in StrategyRegistry.available_strategies() if StrategyRegistry[n]["strategy"] is DDPStrategy]


def build_trainer(tiny_model: Path, tiny_tasks: Path, *trainer_args: str) -> Trainer:
    """The trainer `lmm-lightning predict` builds from these options (parsed and instantiated, not run)."""
    args = [
        "--model", "lmm_lightning.models.HFCausalLM", "--model.pretrained", str(tiny_model),
        "--data", "lmm_lightning.data.BenchmarkDataModule", "--data.tasks", f"[{tiny_tasks / 'tiny_mc.yaml'}]",
        "--trainer.accelerator", "cpu", "--process_group_timeout", str(int(OURS.total_seconds())), *trainer_args,
    ]
    with command_line(args):  # as `lmm-lightning predict` hands them over (no warning about pytest's own arguments)
        cli = EvalCLI(EvalModule, BenchmarkDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      save_config_callback=None, trainer_defaults=TRAINER_DEFAULTS, run=False)
    return cli.trainer


def test_the_ddp_names_include_the_ones_the_issue_lists():
    assert {"ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
            "ddp_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true"} <= set(DDP_NAMES)


@pytest.mark.parametrize("name", DDP_NAMES)
def test_every_registered_ddp_name_keeps_its_own_arguments_and_gets_the_timeout(name, tiny_model, tiny_tasks):
    strategy = build_trainer(tiny_model, tiny_tasks, "--trainer.strategy", name, "--trainer.devices", "2").strategy
    plain = StrategyRegistry.get(name)  # what Lightning builds for the name
    assert type(strategy) is DDPStrategy and strategy._timeout == OURS
    assert strategy._start_method == plain._start_method and strategy._ddp_kwargs == plain._ddp_kwargs
    assert plain._timeout == LIGHTNING_DEFAULT  # the case is not vacuous


@pytest.mark.parametrize("trainer_args", [("--trainer.devices", "2"), ("--trainer.strategy", "auto", "--trainer.devices", "2"),
                                          ("--trainer.num_nodes", "2"), ("--trainer.devices", "3", "--trainer.num_nodes", "2")])
def test_no_strategy_on_several_devices_or_nodes_is_what_lightning_picks_with_the_timeout(trainer_args, tiny_model, tiny_tasks):
    trainer = build_trainer(tiny_model, tiny_tasks, *trainer_args)
    devices = int(dict(zip(trainer_args[::2], trainer_args[1::2])).get("--trainer.devices", 1))
    nodes = int(dict(zip(trainer_args[::2], trainer_args[1::2])).get("--trainer.num_nodes", 1))
    lightning = Trainer(accelerator="cpu", devices=devices, num_nodes=nodes, logger=False).strategy
    assert type(trainer.strategy) is type(lightning) is DDPStrategy
    assert trainer.strategy._start_method == lightning._start_method
    assert trainer.strategy._timeout == OURS and lightning._timeout == LIGHTNING_DEFAULT


def test_one_device_keeps_lightnings_single_device_strategy(tiny_model, tiny_tasks):
    assert isinstance(build_trainer(tiny_model, tiny_tasks).strategy, SingleDeviceStrategy)
    assert isinstance(build_trainer(tiny_model, tiny_tasks, "--trainer.strategy", "single_device").strategy, SingleDeviceStrategy)


@pytest.mark.parametrize("strategy", ["model_parallel", "lightning.pytorch.strategies.ModelParallelStrategy"])
def test_model_parallel_gets_the_timeout(strategy, tiny_model, tiny_tasks):
    built = build_trainer(tiny_model, tiny_tasks, "--trainer.strategy", strategy, "--trainer.devices", "2").strategy
    assert type(built) is ModelParallelStrategy and built._timeout == OURS


def test_model_parallel_by_class_path_keeps_its_sizes(tiny_model, tiny_tasks):
    built = build_trainer(
        tiny_model, tiny_tasks, "--trainer.devices", "2", "--trainer.strategy", "lightning.pytorch.strategies.ModelParallelStrategy",
        "--trainer.strategy.tensor_parallel_size", "2", "--trainer.strategy.data_parallel_size", "1",
    ).strategy
    assert built._timeout == OURS and (built._tensor_parallel_size, built._data_parallel_size) == (2, 1)


@pytest.mark.parametrize(
    "extra, timeout, start_method",
    [
        ((), OURS, "popen"),  # a bare class path (jsonargparse reads it as a string)
        (("--trainer.strategy.start_method", "spawn"), OURS, "spawn"),  # init_args: jsonargparse builds it
        (("--trainer.strategy.timeout", "0:10:00"), timedelta(minutes=10), "popen"),  # the user's timeout stays
        (("--trainer.strategy.init_args.timeout", "2:00:00", "--trainer.strategy.init_args.start_method", "spawn"),
         timedelta(hours=2), "spawn"),
    ],
)
def test_ddp_by_class_path_gets_the_timeout_unless_it_has_its_own(extra, timeout, start_method, tiny_model, tiny_tasks):
    built = build_trainer(
        tiny_model, tiny_tasks, "--trainer.devices", "2", "--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy", *extra,
    ).strategy
    assert type(built) is DDPStrategy and built._timeout == timeout and built._start_method == start_method


def test_ddp_given_as_a_whole_class_path_object(tiny_model, tiny_tasks):
    given = json.dumps({"class_path": "lightning.pytorch.strategies.DDPStrategy", "init_args": {"find_unused_parameters": True}})
    built = build_trainer(tiny_model, tiny_tasks, "--trainer.devices", "2", "--trainer.strategy", given).strategy
    assert built._timeout == OURS and built._ddp_kwargs["find_unused_parameters"] is True


def test_fsdp_by_class_path_keeps_its_wrap_policy_and_gets_the_timeout(tiny_model, tiny_tasks):
    policy = json.dumps({"class_path": "torch.distributed.fsdp.wrap.ModuleWrapPolicy", "init_args": {"module_classes": ["torch.nn.Linear"]}})
    built = build_trainer(
        tiny_model, tiny_tasks, "--trainer.devices", "2", "--trainer.strategy", "lmm_lightning.models.sharding.CPUFSDPStrategy",
        "--trainer.strategy.auto_wrap_policy", policy,
    ).strategy
    assert type(built) is CPUFSDPStrategy and built._timeout == OURS
    assert isinstance(built.kwargs["auto_wrap_policy"], ModuleWrapPolicy)


def test_fsdp_by_class_path_without_a_policy_shards_per_block_and_keeps_its_timeout(tiny_model, tiny_tasks):
    built = build_trainer(
        tiny_model, tiny_tasks, "--trainer.devices", "2", "--trainer.strategy", "lmm_lightning.models.sharding.CPUFSDPStrategy",
        "--trainer.strategy.timeout", "1:00:00",
    ).strategy
    assert built._timeout == timedelta(hours=1) and isinstance(built.kwargs["auto_wrap_policy"], NoSplitModulesPolicy)


@pytest.mark.parametrize("name", [n for n in StrategyRegistry.available_strategies() if StrategyRegistry[n]["strategy"] is FSDPStrategy])
def test_fsdp_names_keep_their_arguments_and_our_policy(name):
    """Lightning refuses the FSDP names on a CPU accelerator, so these are checked on the strategy built."""
    built, plain = strategy_with_timeout(name, 4321), StrategyRegistry.get(name)
    assert isinstance(built, FSDPStrategy) and built._timeout == OURS
    assert isinstance(built.kwargs["auto_wrap_policy"], NoSplitModulesPolicy)
    assert built.cpu_offload == plain.cpu_offload and built.sharding_strategy == plain.sharding_strategy


def test_fsdp_name_on_cpu_still_gets_lightnings_own_message(tiny_model, tiny_tasks, capsys):
    args = ["--model", "lmm_lightning.models.HFCausalLM", "--model.pretrained", str(tiny_model), "--data.tasks",
            f"[{tiny_tasks / 'tiny_mc.yaml'}]", "--trainer.accelerator", "cpu", "--trainer.strategy", "fsdp_cpu_offload"]
    assert lightning_cli(["predict", *args]) == 2
    assert "trainer: The strategy `fsdp` requires a GPU accelerator" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["lightning.pytorch.strategies.NoSuchStrategy", "lightning.pytorch.Trainer", "os.path"])
def test_a_class_path_that_is_not_a_strategy_is_one_line(strategy, tiny_model, tiny_tasks, capsys):
    args = ["--model", "lmm_lightning.models.HFCausalLM", "--model.pretrained", str(tiny_model), "--data.tasks",
            f"[{tiny_tasks / 'tiny_mc.yaml'}]", "--trainer.accelerator", "cpu", "--trainer.strategy", strategy]
    assert lightning_cli(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"trainer.strategy: {strategy!r} is not a strategy class" in err


def test_model_parallel_is_a_known_name_for_the_unknown_name_message():
    with pytest.raises(InputError, match="did you mean 'model_parallel'"):
        from lmm_lightning.lightning_cli import check_strategy

        check_strategy("model_paralel")


class RecordTimeout(Callback):
    """Writes, per rank, the timeout of the process group the run really made (its store's and gloo's)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        group = dist.distributed_c10d._get_default_group()
        backend = group._get_backend(trainer.strategy.root_device)
        record = {
            "strategy": trainer.strategy._timeout.total_seconds(),
            "store": dist.distributed_c10d._get_default_store().timeout.total_seconds(),
            "gloo": backend.options._timeout.total_seconds(),
            "start_method": trainer.strategy._start_method,
            "pid": os.getpid(),
        }
        Path(self.folder, f"timeout-rank{trainer.global_rank}.json").write_text(json.dumps(record))


def test_a_2_process_ddp_spawn_run_uses_the_timeout(tmp_path, tiny_model, tiny_tasks):
    callback = {"class_path": "tests.test_strategies.RecordTimeout", "init_args": {"folder": str(tmp_path)}}
    command = [
        sys.executable, "-m", "lmm_lightning", "predict", "--model", "lmm_lightning.models.HFCausalLM",
        "--model.pretrained", str(tiny_model), "--data", "lmm_lightning.data.BenchmarkDataModule",
        "--data.tasks", f"[{tiny_tasks / 'tiny_mc.yaml'}]", "--data.batch_size", "4", "--evaluation.bootstrap_iters", "0",
        "--evaluation.output_dir", str(tmp_path / "out"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp_spawn", "--trainer.callbacks", json.dumps([callback]), "--process_group_timeout", "77",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / f"timeout-rank{r}.json").read_text()) for r in range(2)]
    assert all(r["strategy"] == r["store"] == r["gloo"] == 77 and r["start_method"] == "spawn" for r in records), records
    assert records[0]["pid"] != records[1]["pid"] and (tmp_path / "out" / "results.json").exists()


def test_fsdp_by_name_on_cpu_is_the_gloo_fsdp_strategy():
    """`--trainer.strategy fsdp --trainer.accelerator cpu` runs (Lightning's FSDPStrategy refuses CPU processes)."""
    from lmm_lightning.lightning_cli import strategy_with_timeout
    from lmm_lightning.models.sharding import CPUFSDPStrategy

    strategy = strategy_with_timeout("fsdp", 123, accelerator="cpu")
    assert type(strategy) is CPUFSDPStrategy and strategy._timeout.total_seconds() == 123
