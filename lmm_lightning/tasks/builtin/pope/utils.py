"""POPE (Li et al., 2023): "Is there a <object> in the image?" over COCO, object hallucination.

Responses are read as yes/no by POPE's official evaluate.py rule (`yes_no`), "yes" being the
positive class; precision, recall, F1 and the yes-ratio are corpus statistics over
(pred_is_yes, gold_is_yes) pairs (the pope_* aggregations).
"""

from typing import Any

from lmm_lightning.metrics import yes_no


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Accuracy per question, and the (pred_is_yes, gold_is_yes) pair for the corpus statistics."""
    gold = doc["answer"].strip().lower()
    if gold not in ("yes", "no"):
        raise ValueError(f"POPE answer must be yes or no, got {doc['answer']!r} (question {doc['question_id']})")
    pred = yes_no(results[0])
    pair = (int(pred == "yes"), int(gold == "yes"))
    return {
        "pope_accuracy": float(pred == gold),
        "pope_precision": pair,
        "pope_recall": pair,
        "pope_f1_score": pair,
        "pope_yes_ratio": pair,
    }
