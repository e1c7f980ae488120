"""MMMU (Yue et al., 2024) validation: college-level questions over 1 to 7 images, 30 subjects.

Prompts, image order and answer parsing follow lmms-eval's `mmmu_val`, which follows the official
MMMU evaluation code; the one deviation is the multiple-choice fallback: an answer with no
recognisable option is wrong (MMMU picks a random option, so scores would depend on a seed).
"""

import ast
import re
from typing import Any

from lmm_lightning.metrics import parse_multiple_choice

MULTI_CHOICE_PROMPT = "Answer with the option's letter from the given choices directly."
OPEN_ENDED_PROMPT = "Answer the question using a single word or phrase."
IMAGE_TOKEN = re.compile(r"<image (\d+)>")


def options(doc: dict[str, Any]) -> list[str]:
    """The options column is a Python list literal in a string ("['1', '2']")."""
    value = doc["options"]
    return [str(o) for o in (ast.literal_eval(value) if isinstance(value, str) else value or [])]


def doc_to_text(doc: dict[str, Any]) -> str:
    """Question, lettered options and the instruction; "<image k>" markers stay in the text."""
    if doc["question_type"] == "multiple-choice":
        lettered = "\n".join(f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(options(doc)))
        return f"{doc['question']}\n{lettered}\n\n{MULTI_CHOICE_PROMPT}"
    return f"{doc['question']}\n\n{OPEN_ENDED_PROMPT}"


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    """The images the prompt mentions, each once, in order of their number (as lmms-eval)."""
    numbers = sorted({int(n) for n in IMAGE_TOKEN.findall(doc_to_text(doc))})
    return [doc[f"image_{n}"] for n in numbers if doc.get(f"image_{n}") is not None]


# --- open questions: the official MMMU parsing --------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list[Any]:
    """A number becomes a float rounded to 2 decimals; text is lowercased, and a single character
    is padded with a space on one side to avoid trivial substring matches."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    """Numbers with thousands commas, in scientific notation, and plain ones."""
    with_commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?![,\d])", text)
    return with_commas + scientific + simple


def _key_subresponses(response: str) -> list[str]:
    """The tail after the last answer indicator ("is ", "therefore ", "=" in the last sentence, ...)
    of each sentence; the whole response when none has one."""
    response = response.strip().strip(".").lower()
    # Splitting on ". X" after lowercasing never fires; kept to match the official code.
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys = []
    for index, sentence in enumerate(sentences):
        if index == len(sentences) - 1:
            indicators.append("=")
        shortest = ""
        for indicator in indicators:
            if indicator in sentence:
                tail = sentence.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):  # an empty tail is replaced, as officially
                    shortest = tail
        if shortest and shortest not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response]


def parse_open_response(response: str) -> list[Any]:
    """Candidate answers of an open response: key phrases and the numbers in them, normalised."""
    keys = _key_subresponses(response)
    candidates = keys + [number for key in keys for number in extract_numbers(key)]
    normalized = [value for candidate in candidates for value in normalize_str(candidate)]
    return list(dict.fromkeys(normalized))


def answers(doc: dict[str, Any]) -> list[str]:
    """Gold answers: a few open questions list several ("['24/7', '3.429']")."""
    answer = doc["answer"]
    if isinstance(answer, str) and answer.startswith("["):
        try:
            value = ast.literal_eval(answer)
            if isinstance(value, list):
                return [str(a) for a in value]
        except (ValueError, SyntaxError):
            pass
    return [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]


def eval_open(golds: list[str], predictions: list[Any]) -> bool:
    """A text candidate is right if it contains a normalised answer; a number must equal one."""
    normalized = [value for gold in golds for value in normalize_str(gold)]
    for prediction in predictions:
        if isinstance(prediction, str):
            if any(isinstance(gold, str) and gold in prediction for gold in normalized):
                return True
        elif prediction in normalized:
            return True
    return False


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """mmmu_acc: 1.0 if the parsed answer is right (the official overall accuracy is its mean)."""
    response = results[0]
    if doc["question_type"] == "multiple-choice":
        choices = options(doc)
        index = parse_multiple_choice(response, choices)
        predicted = chr(ord("A") + index) if index >= 0 else ""
        correct = predicted in answers(doc)
    else:
        correct = eval_open(answers(doc), parse_open_response(response))
    return {"mmmu_acc": float(correct)}
