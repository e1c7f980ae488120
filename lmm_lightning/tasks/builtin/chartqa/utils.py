"""ChartQA (Masry et al., 2022): relaxed accuracy overall and on its two test sets, as lmms-eval."""

from typing import Any

from lmm_lightning.metrics import relaxed_accuracy


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """relaxed_overall for every question; the split's own metric for human-written questions
    (type "human_test") or machine-generated ones ("augmented_test"), as lmms-eval's
    `chartqa_process_results`. Scoring is pix2struct's `relaxed_correctness` (see `relaxed_accuracy`)."""
    score = relaxed_accuracy(results[0], doc["answer"])
    split = "relaxed_human_split" if doc["type"] == "human_test" else "relaxed_augmented_split"
    return {"relaxed_overall": score, split: score}
