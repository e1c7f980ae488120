"""HellaSwag (Zellers et al., 2019): pick the ending of an activity description.

Documents are cleaned exactly as lm-evaluation-harness 0.4.x's `hellaswag` (`process_docs`):
WikiHow's "[title]"-style markers are removed from the context and from each ending. The ending
lengths acc_norm divides by are those of the cleaned endings.
"""

import re
from typing import Any

_MARKER = re.compile(r"\[.*?\]")  # "[header]", "[step]", ...: shortest bracketed run, on one line


def preprocess(text: str) -> str:
    """Strip, turn " [title]" into ". ", drop every other bracketed marker, then halve double spaces once.

    >>> preprocess("[header] How to clean a pan [title] Fill the pan.")
    ' How to clean a pan. Fill the pan.'
    >>> preprocess("a   b")  # one pass of "  " -> " ", as lm-evaluation-harness
    'a  b'
    """
    text = text.strip().replace(" [title]", ". ")
    return _MARKER.sub("", text).replace("  ", " ")


def doc_to_text(doc: dict[str, Any]) -> str:
    """"<activity>: <ctx_a> <Ctx_b>", cleaned."""
    return preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """The four endings, cleaned."""
    return [preprocess(ending) for ending in doc["endings"]]
