"""SEED-Bench (Li et al., 2023): 4-option questions over images (9 dimensions) and video frames
(3 dimensions).

The paper ranks the options by likelihood; for answers generated as a letter, as here, the
reference is lmms-eval's `seedbench` (lmms_eval/tasks/seedbench/utils.py): its prompt, and
seed_image / seed_video / seed_all as the mean correctness by the question's data_type.
lmms-eval takes the response's first character, in either case, as the letter; we read it with
the shared `parse_choice_letter` instead, which also accepts "(B)", "**B**" and "The answer is B"
and never reads a letter out of a word ("DNA" is not D, "Because ..." is not B, "A cat" is not A).
"""

from typing import Any

from lmm_lightning.metrics.choice_letter import parse_choice_letter

LETTERS = "ABCD"
POST_PROMPT = "Answer with the option's letter from the given choices directly."


def doc_to_text(doc: dict[str, Any]) -> str:
    options = "\n".join(f"{letter}. {doc['choice_' + letter.lower()]}" for letter in LETTERS)
    return f"{doc['question']}\n{options}\n{POST_PROMPT}"


def score(response: str, answer: str) -> float:
    """1.0 if the response gives the answer's letter (one of A-D).

    >>> [score(r, "B") for r in ("B", "b", "(B) blue", "The answer is B", "Because", "A")]
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    return float(parse_choice_letter(response, LETTERS) == answer.strip().upper())


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """seed_all for every question, and seed_image or seed_video by the question's data_type."""
    correct = score(results[0], doc["answer"])
    return {f"seed_{doc['data_type']}": correct, "seed_all": correct}
