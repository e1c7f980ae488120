"""ScienceQA (Lu et al., 2022), the questions with an image: lettered options, letter answer.

The prompt is LLaVA's (llava/eval/model_vqa_science.py with --single-pred-prompt), as lmms-eval's
`scienceqa_img`. The scoring follows LLaVA's llava/eval/eval_science_qa.py, which gives LLaVA's
published ScienceQA-IMG numbers: the answer's letter read from the response, among the question's
2 to 5 options, else wrong. The letter is read by the shared `parse_choice_letter`, which accepts
LLaVA's forms ("B", "B. text", "The answer is B") and also "b", "(B)", "B.", "B)", "**B**",
"Answer: (B)"; unlike LLaVA it never reads a letter out of a word ("The answer is DNA" is not D).
"""

from typing import Any

from lmm_lightning.metrics.choice_letter import ASCII_CAPITALS, option_letters, parse_choice_letter

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def doc_to_text(doc: dict[str, Any]) -> str:
    """"Context: <hint>" when there is one, the question, then "A. ..." options, one per line."""
    letters = option_letters(len(doc["choices"]))
    context = f"Context: {doc['hint']}\n" if doc.get("hint") else ""
    choices = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, doc["choices"]))
    return f"{context}{doc['question']}\n{choices}{POST_PROMPT}"


def doc_to_target(doc: dict[str, Any]) -> str:
    """The answer's letter (the column holds the option's index)."""
    return ASCII_CAPITALS[int(doc["answer"])]


def score(response: str, choices: int, target: str) -> float:
    """1.0 if the response gives the target letter, among the first `choices` letters.

    >>> [score(r, 3, "B") for r in ("B", "B. red", "The answer is B.", "(B)", "D", "DNA")]
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    return float(parse_choice_letter(response, option_letters(choices)) == target)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """exact_match: the response's letter is the answer's."""
    return {"exact_match": score(results[0], len(doc["choices"]), doc_to_target(doc))}
