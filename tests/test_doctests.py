"""Every `>>>` example in the package runs and prints what its docstring says.

The examples are the quickest documentation of the pure functions (metrics, parsers, post-processing,
planning); a module that gains one is picked up here without a list to keep.
"""

import doctest
import importlib
from pathlib import Path

import pytest

import lmm_lightning

PACKAGE = Path(lmm_lightning.__file__).parent
WITH_EXAMPLES = sorted(
    ".".join(("lmm_lightning", *path.relative_to(PACKAGE).with_suffix("").parts))
    for path in PACKAGE.rglob("*.py")
    if ">>>" in path.read_text(encoding="utf-8")
)


def test_the_metrics_have_examples():
    assert {"lmm_lightning.metrics.sample", "lmm_lightning.metrics.aggregation", "lmm_lightning.metrics.bootstrap"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name):
    results = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0, f"{name}: {results.failed} of {results.attempted} examples failed"
