"""The FSDP paths that do not need CUDA: the sharding plan, synced generation, equal forward counts."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from lmm_lightning.cli import strategy_with_timeout
from lmm_lightning.data.sampler import plan_rank
from lmm_lightning.models import EvalModule, HFCausalLM
from lmm_lightning.models.sharding import NoSplitModulesPolicy, no_split_module_names, release_shards, shard_plan

from tests.data.test_sampler import make_requests


def test_sharding_plan_wraps_each_decoder_layer(tiny_model):
    model = HFCausalLM(pretrained=str(tiny_model))
    model.configure_model()
    plan = shard_plan(model, NoSplitModulesPolicy())
    assert plan == ["model.model.layers.0", "model.model.layers.1"]


def test_sharding_plan_of_a_vision_language_model(tmp_path):
    from tests.fixtures.vision import build_tiny_llava
    from transformers import AutoModelForImageTextToText

    folder = build_tiny_llava(tmp_path / "llava")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    plan = shard_plan(model, NoSplitModulesPolicy())
    assert plan == ["model.language_model.layers.0", "model.language_model.layers.1"]
    # The vision tower runs only for batches with images: its blocks stay in the root unit, gathered on every
    # forward of every rank, never by some ranks only.
    assert "CLIPEncoderLayer" in no_split_module_names(model)


def test_sharding_plan_of_qwen2_vl_leaves_its_vision_blocks_in_the_root(tmp_path):
    from tests.fixtures.vision import build_tiny_qwen2_vl
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(build_tiny_qwen2_vl(tmp_path / "qwen2vl"))
    assert shard_plan(model, NoSplitModulesPolicy()) == ["model.language_model.layers.0", "model.language_model.layers.1"]


def test_cli_fsdp_strategy_uses_the_policy_and_the_long_timeout():
    strategy = strategy_with_timeout("fsdp", 60000)
    assert isinstance(strategy, FSDPStrategy)
    assert isinstance(strategy.kwargs["auto_wrap_policy"], NoSplitModulesPolicy)
    assert strategy._timeout.total_seconds() == 60000


@pytest.mark.parametrize("strategy,world_size,expected", [(FSDPStrategy(), 2, True), (DDPStrategy(), 2, False), (FSDPStrategy(), 1, False)])
def test_generation_is_synced_only_when_sharded(tiny_model, strategy, world_size, expected):
    model = HFCausalLM(pretrained=str(tiny_model))
    model._trainer = SimpleNamespace(strategy=strategy, world_size=world_size)
    assert model.synced_generation is expected


@pytest.mark.parametrize("world_size", [2, 3, 4, 8])
def test_every_rank_runs_the_same_forwards_of_each_kind(world_size):
    requests = make_requests(37, 11)
    plans = [plan_rank(requests, 4, world_size, rank) for rank in range(world_size)]
    kinds = [[requests[b.uids[0]].request_type for b in plan] for plan in plans]
    assert all(k == kinds[0] for k in kinds)  # same kinds in the same order: collectives line up


def _largest_count(rank: int, port: int, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = EvalModule()  # `synced_count` needs only the trainer's strategy and world size
    model._trainer = SimpleNamespace(strategy=FSDPStrategy(), world_size=2)
    queue.put((rank, model.synced_count(3 + 4 * rank)))
    torch.distributed.destroy_process_group()


def test_sharded_ranks_agree_on_the_largest_forward_count():
    """Under FSDP a rank with fewer rolling windows runs as many forwards as the rank with the most."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_largest_count, args=(rank, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert results == {0: 7, 1: 7}
    plain = EvalModule()
    plain._trainer = SimpleNamespace(strategy=DDPStrategy(), world_size=2)
    assert plain.synced_count(3) == 3  # ranks that run alone keep their own count


def test_release_frees_nothing_without_fsdp(tiny_model):
    model = HFCausalLM(pretrained=str(tiny_model))
    model.configure_model()
    assert release_shards(model) == 0 and model.release() == 0
    assert model.model is None


def test_cpu_fsdp_strategy_is_accepted_with_the_cpu_accelerator():
    """Lightning refuses FSDPStrategy itself with accelerator="cpu"; the CPU variant runs under gloo."""
    from lightning.pytorch import Trainer

    from lmm_lightning.models.sharding import CPUFSDPStrategy

    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        Trainer(accelerator="cpu", devices=1, strategy=FSDPStrategy(), logger=False)
    trainer = Trainer(accelerator="cpu", devices=1, strategy=CPUFSDPStrategy(), logger=False)
    assert isinstance(trainer.strategy, FSDPStrategy) and trainer.strategy.root_device.type == "cpu"
