from pathlib import Path

import pytest

from tests.fixtures import build_tiny_model, write_tiny_tasks


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> Path:
    return write_tiny_tasks(tmp_path_factory.mktemp("tiny_tasks"))


@pytest.fixture(autouse=True)
def restore_rank_zero():
    """A test that builds a Trainer in a simulated cluster (RANK=1, SLURM_PROCID=1) leaves Lightning's process-wide
    `rank_zero_only.rank` at that rank, which silences rank-zero warnings and loggers in every later test."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    rank = getattr(rank_zero_only, "rank", 0)
    yield
    rank_zero_only.rank = rank
