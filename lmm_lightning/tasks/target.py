"""The gold answer of one document, in the one shape every metric reads."""

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Target:
    """Always a sequence of reference texts (one or several); for multiple choice also the gold index.

    A metric reads `texts` (every reference) or `text` (the first, e.g. for a few-shot example), so
    none has to ask whether a document holds one answer or a list of them.

    >>> Target.of(["dog", "puppy"]).text, Target.of("Paris").texts, Target(("Paris",), index=1).index
    ('dog', ('Paris',), 1)
    """

    texts: tuple[str, ...]
    index: Optional[int] = None

    @property
    def text(self) -> str:
        return self.texts[0]

    @classmethod
    def of(cls, value: Any) -> "Target":
        """The references a rendered `doc_to_target` holds: each item of a list, else the value as text."""
        return cls(tuple(str(v) for v in value) if isinstance(value, list) else (str(value),))
