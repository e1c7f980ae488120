from pathlib import Path

import pytest

from tests.fixtures import build_tiny_model, write_tiny_tasks


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> Path:
    return write_tiny_tasks(tmp_path_factory.mktemp("tiny_tasks"))
