"""TextVQA (Singh et al., 2019): accuracy as the official evaluation server computes it."""

from typing import Any

from lmm_lightning.metrics import textvqa_accuracy


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """vqa_accuracy: the prediction against the 10 annotator answers, both normalised by EvalAI's
    answer processor (mmf `TextVQAAccuracyEvaluator`; lmms-eval's `textvqa_process_results`)."""
    return {"vqa_accuracy": textvqa_accuracy(results[0], doc["answers"])}
