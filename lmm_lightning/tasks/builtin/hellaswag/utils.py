"""HellaSwag (Zellers et al., 2019): pick the ending of an activity description.

Documents are preprocessed exactly as lm-evaluation-harness's `hellaswag` (`process_docs`):
WikiHow's "[title]"-style markers are removed from the context and from each ending.
"""

import re
from typing import Any


def preprocess(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")  # WikiHow artifacts
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def doc_to_text(doc: dict[str, Any]) -> str:
    """"<activity>: <ctx_a> <Ctx_b>", cleaned."""
    return preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    return [preprocess(ending) for ending in doc["endings"]]
