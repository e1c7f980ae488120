"""MMMU (Yue et al., 2024) validation: college-level questions over 1 to 7 images, 30 subjects.

Prompts and image order follow lmms-eval's `mmmu_val`. Scoring follows the official MMMU evaluation
code (MMMU-Benchmark/MMMU, mmmu/utils/eval_utils.py and mmmu/main_eval_only.py at commit
bb0b95a945998d91dfef37e969e07d49d1139438): `parse_multi_choice_response`, `parse_open_response`,
`eval_multi_choice` and `eval_open`, with the list-valued golds of its answer_dict_val.json.
The one departure is the multiple-choice fallback: where nothing parses, MMMU picks a random
option; here that answer is wrong and counted in `mmmu_unparsed` (`process_results_random_fallback`
draws a letter seeded by the document id instead, for comparison with published numbers).
"""

import ast
import random
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
    """MMMU's `check_is_number`: anything Python's float() reads once commas are removed
    (so also "1e-3", " 5 ", "nan", "inf" and fullwidth digits such as "１２３")."""
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list[Any]:
    """MMMU's `normalize_str`: a number becomes a float rounded to 2 decimals; text is lowercased,
    and a single character is padded with a space on one side to avoid trivial substring matches.

    >>> normalize_str(" 1,234.567 "), normalize_str("Pupa"), normalize_str("C")
    ([1234.57], ['pupa'], [' c', 'c '])
    """
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    """MMMU's `extract_numbers`: numbers with thousands commas, then scientific notation, then
    plain numbers. A plain integer must end at a word boundary, so "5kg" gives nothing while
    "5 kg" and "5.5kg" do.

    >>> extract_numbers("5kg, 5 kg, 5.5kg"), extract_numbers("1,234 or -.5")
    (['5', '5.5'], ['1,234', '234', '-.5'])
    """
    with_commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
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
    """MMMU's `parse_open_response`: key phrases and the numbers in them, normalised, deduplicated.

    >>> sorted(parse_open_response("The mass is 5 kg."), key=str)
    ['5 kg', 5.0]
    """
    keys = _key_subresponses(response)
    candidates = keys + [number for key in keys for number in extract_numbers(key)]
    normalized = [value for candidate in candidates for value in normalize_str(candidate)]
    return list(dict.fromkeys(normalized))


def answers(doc: dict[str, Any]) -> list[str]:
    """Gold answers: a few open questions list several ("['24/7', '3.429']"), as lists in the
    official answer_dict_val.json, so each listed answer counts (lmms-eval compares the whole
    string "['24/7', '3.429']" instead, which no answer contains)."""
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
    """MMMU's `eval_open`: a text candidate is right if a normalised text answer is a substring of
    it; a number candidate must equal a normalised numeric answer (after rounding to 2 decimals).

    >>> eval_open(["4"], parse_open_response("3.999")), eval_open(["4"], parse_open_response("4kg"))
    (True, False)
    """
    normalized = [value for gold in golds for value in normalize_str(gold)]
    for prediction in predictions:
        if isinstance(prediction, str):
            if any(isinstance(gold, str) and gold in prediction for gold in normalized):
                return True
        elif prediction in normalized:
            return True
    return False


# --- multiple choice and the per-document scores -------------------------------------------------


def letters(doc: dict[str, Any]) -> list[str]:
    """The option letters, A, B, C, ... as MMMU's `get_multi_choice_info`."""
    return [chr(ord("A") + i) for i in range(len(options(doc)))]


def parse_choice(doc: dict[str, Any], response: str) -> str | None:
    """The letter a multiple-choice response picks (official rules), or None when none parses."""
    index = parse_multiple_choice(response, options(doc))
    return letters(doc)[index] if index >= 0 else None


def _scores(doc: dict[str, Any], response: str, fallback: str | None = None) -> dict[str, float]:
    """mmmu_acc (exact letter match for multiple choice, `eval_open` otherwise) and mmmu_unparsed
    (1.0 when a multiple-choice response names no option; then `fallback` is scored instead)."""
    if doc["question_type"] != "multiple-choice":
        return {"mmmu_acc": float(eval_open(answers(doc), parse_open_response(response))), "mmmu_unparsed": 0.0}
    letter = parse_choice(doc, response)
    predicted = fallback if letter is None else letter
    return {"mmmu_acc": float(predicted is not None and predicted in answers(doc)), "mmmu_unparsed": float(letter is None)}


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Official MMMU scoring, except that an unparseable multiple-choice answer is wrong
    (deterministic); the mean of mmmu_acc is MMMU's overall (instance-level) accuracy."""
    return _scores(doc, results[0])


def process_results_random_fallback(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """As MMMU and lmms-eval: an unparseable multiple-choice answer becomes a random option, drawn
    from a generator seeded by the document id, so scores never depend on global state or on how
    documents are spread over processes."""
    rng = random.Random(f"mmmu:{doc['id']}")
    fallback = rng.choice(letters(doc)) if letters(doc) else None
    return _scores(doc, results[0], fallback)
