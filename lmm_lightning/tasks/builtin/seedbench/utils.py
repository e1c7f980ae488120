"""SEED-Bench (Li et al., 2023): 4-option questions over images (9 dimensions) and video frames
(3 dimensions), prompt and scoring as lmms-eval's `seedbench`: the first character of the
response is the answer letter."""

from typing import Any

POST_PROMPT = "Answer with the option's letter from the given choices directly."


def doc_to_text(doc: dict[str, Any]) -> str:
    options = "\n".join(f"{letter}. {doc['choice_' + letter.lower()]}" for letter in "ABCD")
    return f"{doc['question']}\n{options}\n{POST_PROMPT}"


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """seed_all for every question, and seed_image or seed_video by the question's data_type."""
    prediction = results[0].strip()[:1]
    correct = float(prediction == doc["answer"].strip())
    return {f"seed_{doc['data_type']}": correct, "seed_all": correct}
