from lmm_lightning.evaluation.callback import EvaluationCallback

__all__ = ["EvaluationCallback"]
