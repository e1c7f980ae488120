"""MME (Fu et al., 2023): yes/no questions, two per image, scored as MME's official calculation.py.

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
    """"yes", "no" or "other", as MME's official `eval_tool/calculation.py` reads a response.

    The official tool reads responses from a one-line-per-question file (its readme says to delete
    newlines), lowercased and nothing else. A response is "yes"/"no" if it is exactly that, else by
    whether "yes" (first) or "no" appears in its first four characters; "other" is always wrong.
    So "Yes, there is" and "Nope" read as yes and no, "There is no dog" and a lone "y" as other.

    >>> [parse_pred_ans(r) for r in ("Yes", "No.", "Nope", "There is no dog", "y", "  yes")]
    ['yes', 'no', 'no', 'other', 'other', 'other']
    """
    text = prediction.replace("\n", "").lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    return "no" if "no" in head else "other"


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Per question: (category, image id, correct) for both MME sums (each keeps its own
    categories), and the plain 0/1 accuracy over all questions."""
    gold = doc["answer"].lower()
    if gold not in ("yes", "no"):
        raise ValueError(f"MME answer must be yes or no, got {doc['answer']!r} (question {doc['question_id']!r})")
    category = doc["category"]
    if category not in MME_PERCEPTION + MME_COGNITION:
        raise ValueError(f"unknown MME category {category!r} for question {doc['question_id']!r}")
    correct = float(parse_pred_ans(results[0]) == gold)
    # question_id is the image's path (e.g. "code_reasoning/0020.png"): it pairs the two questions.
    value = (category, doc["question_id"], correct)
    return {"mme_perception_score": value, "mme_cognition_score": value, "acc": correct}
