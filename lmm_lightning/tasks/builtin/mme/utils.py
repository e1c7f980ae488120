"""MME (Fu et al., 2023): yes/no questions, two per image, scored as lmms-eval does.

Each category scores 100 * (acc + acc_plus), acc_plus being the share of images with both
questions right; perception sums 10 categories (max 2000), cognition 4 (max 800). The sums are
the `mme_perception` / `mme_cognition` aggregations; this module gives their per-question values.
"""

from typing import Any

from lmm_lightning.metrics import MME_COGNITION, MME_PERCEPTION

# MME's questions end with this; lmms-eval replaces it by its own short-answer instruction.
REPLACE_PROMPT = " Please answer yes or no."
POST_PROMPT = "\nAnswer the question using a single word or phrase."


def doc_to_text(doc: dict[str, Any]) -> str:
    """The lmms-eval prompt: the question without MME's suffix, then the short-answer instruction."""
    return doc["question"].strip().replace(REPLACE_PROMPT, "") + POST_PROMPT


def parse_pred_ans(prediction: str) -> str:
    """"yes", "no" or "other", as lmms-eval reads a response (MME's `eval_tool/calculation.py`
    plus a lone "y"/"n").

    Lowercased, periods removed; otherwise "yes" or "no" must appear in the first four
    characters ("Yes, there is" -> yes, "There is no" -> other, which is always wrong).
    """
    text = prediction.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Per question: (category, image id, correct) for both MME sums (each keeps its own
    categories), and the plain 0/1 accuracy over all questions."""
    gold = doc["answer"].lower().strip().replace(".", "")
    correct = float(parse_pred_ans(results[0]) == gold)
    category = doc["category"]
    if category not in MME_PERCEPTION + MME_COGNITION:
        raise ValueError(f"unknown MME category {category!r} for question {doc['question_id']!r}")
    # question_id is the image's path (e.g. "code_reasoning/0020.png"): it pairs the two questions.
    value = (category, doc["question_id"], correct)
    return {"mme_perception_score": value, "mme_cognition_score": value, "acc": correct}
