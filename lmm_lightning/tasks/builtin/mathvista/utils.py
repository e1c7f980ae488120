"""MathVista (Lu et al., 2024): 1,000 testmini math questions over images (charts, geometry, puzzles, ...),
scored as lupantech/MathVista `evaluation/`: the answer is extracted from the model's response (by rule where
one applies, else by a judge model given the official few-shot extraction prompt), normalised to the question's
answer type and compared for equality with the gold answer.
"""

import re
from typing import Any, Optional

# evaluation/prompts/ext_ans.py `demo_prompt`, stripped as create_test_prompt strips it: five worked extractions.
DEMO_PROMPT = """Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?
Choices:
(A) 3/11
(B) 8/11
(C) 6/11
(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B"""

# metadata.task and metadata.skills as the MathVista leaderboard abbreviates them (FQA, GPS, ..., STA).
TASKS = {
    "figure question answering": "fqa",
    "geometry problem solving": "gps",
    "math word problem": "mwp",
    "textbook question answering": "tqa",
    "visual question answering": "vqa",
}
SKILLS = {
    "algebraic reasoning": "alg",
    "arithmetic reasoning": "ari",
    "geometry reasoning": "geo",
    "logical reasoning": "log",
    "numeric commonsense": "num",
    "scientific reasoning": "sci",
    "statistical reasoning": "sta",
}
QUESTION_TYPES = ("multi_choice", "free_form")
# extract_answer.py's optional --quick_extract rule: a response saying `The answer is "..."`.
ANSWER_IS = re.compile(r'The answer is "(.*)"\.')


def judge_prompt(doc: dict[str, Any], response: str) -> str:
    """The extraction prompt (create_test_prompt): the worked examples, the question's query and the response.

    >>> judge_prompt({"query": "Question: 1 + 1?"}, "It is 2.").endswith("Question: 1 + 1?\\n\\nIt is 2.\\n\\nExtracted answer: ")
    True
    """
    return f"{DEMO_PROMPT}\n\n{doc['query']}\n\n{response}\n\nExtracted answer: "


def quick_answer(doc: dict[str, Any], response: str) -> Optional[str]:
    """The answer extract_answer takes without asking the judge, else None: "" for an empty response, the
    response itself when it is one of the choices, `int(response)` for an integer answer and `float(response)`
    for a float answer (as strings, Python's parsing: "1_000" is 1000, "1,000" is not a number).

    >>> doc = {"question_type": "free_form", "answer_type": "integer", "choices": None}
    >>> quick_answer(doc, "12"), quick_answer(doc, "12.0"), quick_answer(doc, "The answer is 12.")
    ('12', None, None)
    """
    if response == "":
        return ""
    if doc["question_type"] == "multi_choice" and response in doc["choices"]:
        return response
    parse = {"integer": int, "float": float}.get(doc["answer_type"])
    if parse is not None:
        try:
            return str(parse(response))
        except ValueError:
            pass
    return None


def quick_extract(doc: dict[str, Any], response: str) -> Optional[str]:
    """`quick_answer`, then extract_answer's --quick_extract rule (off by default there and in the shipped YAML):
    the text in `The answer is "...".` (greedy, on one line).

    >>> quick_extract({"question_type": "free_form", "answer_type": "list", "choices": None}, 'The answer is "[1, 2]".')
    '[1, 2]'
    """
    answer = quick_answer(doc, response)
    if answer is not None:
        return answer
    match = ANSWER_IS.search(response)
    return match.group(1) if match else None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, each insertion, deletion or substitution costing 1 (python-Levenshtein's `distance`).

    >>> edit_distance("kitten", "sitting"), edit_distance("", "abc"), edit_distance("B.", "97")
    (3, 3, 2)
    """
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def closest_choice(extraction: str, choices: list[str]) -> str:
    """The choice an extraction names: the letter in "(B)" (any case), or a bare letter "A".."Z" within range,
    else the choice nearest by edit distance (the first on ties), as calculate_score's normalisation picks it.

    >>> choices = ["97", "102", "107", "122"]
    >>> [closest_choice(extraction, choices) for extraction in ("(b) 107", "C", "c", "B.")]
    ['102', '107', '97', '97']
    """
    letters = re.findall(r"\(([a-zA-Z])\)", extraction)
    if letters:
        extraction = letters[0].upper()
    sequence = [chr(ord("A") + i) for i in range(len(choices))]
    if extraction in sequence:
        return choices[sequence.index(extraction)]
    return min(choices, key=lambda choice: edit_distance(extraction, choice))


def normalize_extracted_answer(
    extraction: Any, choices: Optional[list[str]], question_type: str, answer_type: str, precision: Optional[float]
) -> Optional[str]:
    """The extraction as calculate_score compares it: a choice for multiple choice (the extraction stripped), else
    `str(int(float(x)))` for integers (truncated: "3.7" is "3"), `str(round(float(x), precision))` for floats
    ("3.50" is "3.5"), the text for lists; None when it is no number.

    >>> [normalize_extracted_answer(x, None, "free_form", "integer", None) for x in ("3.7", "1,000")]
    ['3', None]
    >>> normalize_extracted_answer(" 2.345 ", None, "free_form", "float", 2.0)
    '2.35'
    """
    if question_type == "multi_choice":
        return closest_choice(extraction.strip() if isinstance(extraction, str) else str(extraction), choices)
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision)))
    except (ValueError, TypeError, OverflowError):
        return None
    if answer_type == "list":
        return str(extraction)
    raise ValueError(f"MathVista: a free_form question's answer_type must be integer, float or list, got {answer_type!r}")


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """1.0 when the normalised extraction equals the gold answer (safe_equal: plain string equality), as overall
    accuracy and as the accuracy of the question's type, task and each of its skills."""
    prediction = normalize_extracted_answer(
        results[0], doc["choices"], doc["question_type"], doc["answer_type"], doc["precision"]
    )
    correct = float(prediction == doc["answer"])
    metadata = doc["metadata"]
    if doc["question_type"] not in QUESTION_TYPES or metadata["task"] not in TASKS or not set(metadata["skills"]) <= set(SKILLS):
        raise ValueError(
            f"MathVista problem {doc.get('pid')!r}: unknown question_type {doc['question_type']!r}, task "
            f"{metadata['task']!r} or skills {metadata['skills']!r}; expected {QUESTION_TYPES}, {list(TASKS)}, {list(SKILLS)}"
        )
    names = ["accuracy", doc["question_type"], TASKS[metadata["task"]], *(SKILLS[skill] for skill in metadata["skills"])]
    return {f"mathvista_{name}": correct for name in names}
