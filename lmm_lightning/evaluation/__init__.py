"""The evaluation callback and what it produces. Its names load on first use (PEP 562), so `compare` and the
results readers (`evaluation.results`) import without Lightning or torch."""

import importlib
from typing import Any

_NAMES = {
    "EvaluationCallback": "lmm_lightning.evaluation.callback",
    "EvaluationResult": "lmm_lightning.evaluation.result",
    "MetricKey": "lmm_lightning.evaluation.result",
    "evaluate": "lmm_lightning.evaluation.scoring",
}

__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
