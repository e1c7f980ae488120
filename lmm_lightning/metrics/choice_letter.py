"""The option letter a generated answer gives, shared by the lettered multiple-choice benchmarks.

ScienceQA-IMG, AI2D and SEED-Bench ask for "the option's letter from the given choices directly".
Their published evaluations each accept a different handful of spellings (LLaVA: "B", "B. text",
"The answer is B"; lmms-eval's AI2D: anything that is the letter once case and punctuation are
dropped; lmms-eval's SEED-Bench: the first character). One parser accepts the union of what models
ordinarily write, and never reads a letter out of a word:

1. the whole answer is one letter, in either case, wrapped in ASCII punctuation or whitespace:
   "B", "b", "(B)", "B)", "B.", "B:", "**B**", "'B'";
2. the answer starts with a capital letter and a delimiter, then more text: "B. larva",
   "B) larva", "B: larva", "(B) larva", "**B** larva", "B\\nlarva";
3. otherwise the first "answer is X" / "answer: X" ("answer" and "is" in any case, the letter a
   capital standing alone, optionally in "(...)", "[...]" or "**...**"): "The answer is B.",
   "Answer: (B)".

Anything else gives None: "A cat is on the mat" (an article, not an answer), "DNA", "A or B",
"A, B", fullwidth "Ｂ" (no source accepts it), "" and rambling text without one of the forms.
"""

import re
import string

ASCII_CAPITALS = string.ascii_uppercase

_WRAP = f"[\\s{re.escape(string.punctuation)}]*"
_LONE = re.compile(f"{_WRAP}([A-Za-z]){_WRAP}")
_LEADING = re.compile(r"\s*[*_(\[]*([A-Z])(?:[.):\]]|\*\*|[ \t]*\n)")
_PHRASE = re.compile(r"(?i:\banswer)\s*(?:(?i:is)\b|:)[\s:*(\[]*([A-Z])(?![A-Za-z0-9])")


def parse_choice_letter(response: str, letters: str = ASCII_CAPITALS) -> str | None:
    """The capital option letter `response` gives, or None when it gives none of `letters`.

    `letters` are the options' letters, e.g. "ABCD"; a letter outside them is no answer.

    >>> [parse_choice_letter(r) for r in ("b", "(B)", "**B**", "B. larva", "The answer is B.", "Answer: (B)")]
    ['B', 'B', 'B', 'B', 'B', 'B']
    >>> [parse_choice_letter(r) for r in ("A cat is on the mat", "DNA", "A or B", "", "Ｂ")]
    [None, None, None, None, None]
    >>> parse_choice_letter("E", letters="ABCD") is None
    True
    """
    letter = _first_form(response)
    return letter if letter is not None and letter in letters else None


def _first_form(response: str) -> str | None:
    """The letter of the first of the three forms (lone, leading, phrase) the response has."""
    lone = _LONE.fullmatch(response)
    if lone:
        return lone.group(1).upper()
    leading = _LEADING.match(response)
    if leading:
        return leading.group(1)
    phrase = _PHRASE.search(response)
    return phrase.group(1) if phrase else None


def option_letters(count: int) -> str:
    """The letters of `count` options: "A", "B", ...

    >>> option_letters(3)
    'ABC'
    """
    return ASCII_CAPITALS[:count]
