"""OCRBench (Liu et al., 2024): 1,000 questions over 29 datasets, scored as the official
Yuliang-Liu/MultimodalOCR OCRBench/example.py (and its per-model scripts/*.py): a question is right
when one of its answers is contained in the response, both lowercased, stripped and with line
breaks made spaces; for handwritten math (HME100k) case is kept and all spaces (not tabs) are
removed. An empty answer is contained in every response, as there. The official total is the
number right out of 1000: 1000 * ocrbench_accuracy.
"""

from typing import Any

# The official score's five parts, by question_type.
CATEGORIES = {
    "Regular Text Recognition": "text_recognition",
    "Irregular Text Recognition": "text_recognition",
    "Artistic Text Recognition": "text_recognition",
    "Handwriting Recognition": "text_recognition",
    "Digit String Recognition": "text_recognition",
    "Non-Semantic Text Recognition": "text_recognition",
    "Scene Text-centric VQA": "scene_text_vqa",
    "Doc-oriented VQA": "doc_vqa",
    "Key Information Extraction": "key_information_extraction",
    "Handwritten Mathematical Expression Recognition": "handwritten_math",
}


def contains_answer(prediction: str, answers: list[str], dataset: str) -> float:
    """1.0 if an answer occurs in the prediction, normalised as OCRBench does for this dataset.

    >>> contains_answer("The word is Stop.", ["STOP"], "IIIT5K"), contains_answer("S T O P", ["STOP"], "IIIT5K")
    (1.0, 0.0)
    >>> contains_answer("$x^{2}$", ["x ^ { 2 }"], "HME100k"), contains_answer("X^{2}", ["x ^ { 2 }"], "HME100k")
    (1.0, 0.0)
    """
    for answer in answers:
        if dataset == "HME100k":
            gold = answer.strip().replace("\n", " ").replace(" ", "")
            pred = prediction.strip().replace("\n", " ").replace(" ", "")
        else:
            gold = answer.lower().strip().replace("\n", " ")
            pred = prediction.lower().strip().replace("\n", " ")
        if gold in pred:
            return 1.0
    return 0.0


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """ocrbench_accuracy for every question, and its category's accuracy."""
    answers = doc["answer"] if isinstance(doc["answer"], list) else [doc["answer"]]
    score = contains_answer(results[0], [str(a) for a in answers], doc["dataset"])
    out = {"ocrbench_accuracy": score}
    category = CATEGORIES.get(doc["question_type"])
    if category is not None:
        out[f"ocrbench_{category}"] = score
    return out
