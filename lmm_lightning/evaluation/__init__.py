from lmm_lightning.evaluation.callback import EvaluationCallback
from lmm_lightning.evaluation.result import EvaluationResult, MetricKey
from lmm_lightning.evaluation.scoring import evaluate

__all__ = ["EvaluationCallback", "EvaluationResult", "MetricKey", "evaluate"]
