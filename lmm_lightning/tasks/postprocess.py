"""What every generation goes through before filters and metrics: reasoning removed, whitespace stripped.

lmms-eval and most official scorers strip a generation before reading it, so a trailing "\\n" must
never change a score; reasoning models wrap their thinking in tags (`<think>...</think>`) that no
benchmark's scorer expects. The raw text stays in the samples file (`resps`).
"""

from collections.abc import Sequence


def remove_reasoning(text: str, tags: Sequence[Sequence[str]]) -> str:
    """Remove each `open ... close` block; text before a lone closing tag (the opening tag was in the
    prompt) and after an opening tag never closed (generation cut off while thinking) goes too.

    >>> remove_reasoning("<think>2+2 is 4</think> 4", [("<think>", "</think>")])
    ' 4'
    >>> remove_reasoning("so it is 4</think>4", [("<think>", "</think>")])
    '4'
    >>> remove_reasoning("B <think>hmm, maybe", [("<think>", "</think>")])
    'B '
    """
    for opening, closing in tags:
        out, rest = [], text
        while True:
            start, end = rest.find(opening), rest.find(closing)
            if end != -1 and (start == -1 or end < start):  # a closing tag whose opening is not in the text
                rest = rest[end + len(closing) :]
                out = []
                continue
            if start == -1:
                out.append(rest)
                break
            out.append(rest[:start])
            end = rest.find(closing, start + len(opening))
            if end == -1:  # never closed: the rest is reasoning
                break
            rest = rest[end + len(closing) :]
        text = "".join(out)
    return text


def postprocess_generation(text: str, strip: bool, tags: Sequence[Sequence[str]]) -> str:
    """The text filters and metrics see: reasoning blocks removed, then surrounding whitespace.

    >>> postprocess_generation("<think>\\nParis, surely\\n</think>\\n\\nParis\\n", True, [("<think>", "</think>")])
    'Paris'
    """
    text = remove_reasoning(text, tags) if tags else text
    return text.strip() if strip else text
