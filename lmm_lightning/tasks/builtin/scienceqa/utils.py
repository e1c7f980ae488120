"""ScienceQA (Lu et al., 2022), the questions with an image: lettered options, letter answer.

Prompt and scoring follow lmms-eval's `scienceqa_img`, which reproduces LLaVA's evaluation.
"""

from typing import Any

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def doc_to_text(doc: dict[str, Any]) -> str:
    """"Context: <hint>" when there is one, the question, then "A. ..." options, one per line."""
    context = f"Context: {doc['hint']}\n" if doc.get("hint") else ""
    choices = "\n".join(f"{_letter(i)}. {choice}" for i, choice in enumerate(doc["choices"]))
    return f"{context}{doc['question']}\n{choices}{POST_PROMPT}"


def doc_to_target(doc: dict[str, Any]) -> str:
    """The answer's letter (the column holds the option's index)."""
    return _letter(int(doc["answer"]))


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """LLaVA's rule: right if the response is the letter, or starts with "<letter>."."""
    target, prediction = doc_to_target(doc), results[0]
    if prediction == target:
        return {"exact_match": 1.0}
    if len(prediction) >= 2 and prediction[0].isupper() and prediction[1] == ".":
        return {"exact_match": float(prediction[0] == target)}
    return {"exact_match": 0.0}
