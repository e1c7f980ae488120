"""Turning a document into text, a target or choices: a column name, a Jinja2 template or a literal."""

import ast
from functools import lru_cache
from typing import Any, Union

import jinja2

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@lru_cache(maxsize=256)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render(template: Union[str, int, list], doc: dict[str, Any]) -> Any:
    """A column name returns the column's value; any other string is rendered as Jinja2."""
    if not isinstance(template, str):
        return template
    if template in doc:
        return doc[template]
    return _compile(template).render(**doc)


def render_choices(template: Union[str, list], doc: dict[str, Any]) -> list[str]:
    """Choices may be a literal list, a list-valued column, or a template rendering a list literal."""
    value = render(template, doc)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"doc_to_choice rendered {value!r}, which is not a list literal") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"doc_to_choice must give a non-empty list of strings, got {value!r}")
    return [str(choice) for choice in value]
