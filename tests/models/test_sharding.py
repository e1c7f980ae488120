"""The FSDP paths that do not need CUDA: the sharding plan, synced generation, equal forward counts."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from lmm_lightning.cli import strategy_with_timeout
from lmm_lightning.data.sampler import plan_rank
from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.sharding import NoSplitModulesPolicy, shard_plan

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
    assert any("language_model.layers.0" in name for name in plan)
    assert any("vision_tower" in name for name in plan)  # the vision blocks are their own shard units


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
