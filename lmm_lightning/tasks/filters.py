"""Post-processing of generated text before scoring, written like lm-evaluation-harness filters.

A task's `filter_list` holds named pipelines:

    filter_list:
      - name: strict-match
        filter:
          - function: regex
            regex_pattern: "#### (\\-?[0-9\\.\\,]+)"
          - function: take_first

Each step maps the list of responses to one request (its `repeats`) to a new list; the
pipeline's result is the first element of the final list. Function names and arguments match
lm-evaluation-harness, so its YAML filter lists work unchanged.
"""

import inspect
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmm_lightning.errors import InputError
from lmm_lightning.metrics.choice_letter import parse_choice_letter

Step = Callable[[list[str]], list[str]]

DEFAULT_FALLBACK = "[invalid]"


class FilterSpecError(InputError):
    """A filter pipeline is malformed; the message says where and what to change."""


@dataclass(frozen=True)
class FilterStep:
    """One function of a pipeline and its arguments, as written in the task YAML."""

    function: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterSpec:
    """A named pipeline of filter steps."""

    name: str
    steps: tuple[FilterStep, ...] = ()


@dataclass(frozen=True)
class FilterPipeline:
    """A validated `FilterSpec` with each step bound to its function."""

    spec: FilterSpec
    steps: tuple[Step, ...]

    @property
    def name(self) -> str:
        return self.spec.name


# --- filter functions: each takes its YAML arguments and returns a Step -------------------------


def regex(regex_pattern: str, group_select: int = 0, fallback: str = DEFAULT_FALLBACK) -> Step:
    """Replace each response by a regex match, or `fallback` when there is none.

    As in lm-evaluation-harness, `group_select` picks among all matches (0: first, -1: last),
    not among capture groups; with several groups the first non-empty one is used. A
    `group_select` past the number of matches gives `fallback`. Matches are stripped.
    """
    if not isinstance(group_select, int):
        raise TypeError(f"group_select must be an integer, got {group_select!r}")
    pattern = re.compile(regex_pattern)

    def extract(response: str) -> str:
        matches = pattern.findall(response)
        if not -len(matches) <= group_select < len(matches):
            return fallback
        match = matches[group_select]
        if isinstance(match, tuple):
            match = next((group for group in match if group), fallback)
        return match.strip()

    return lambda responses: [extract(r) for r in responses]


def take_first() -> Step:
    """Keep only the first of the repeated responses."""
    return lambda responses: responses[:1]


def majority_vote() -> Step:
    """Keep the most common response; ties go to the one seen first (lm-evaluation-harness)."""
    return lambda responses: [Counter(responses).most_common(1)[0][0]] if responses else []


def lowercase() -> Step:
    """Lowercase every response."""
    return lambda responses: [r.lower() for r in responses]


def uppercase() -> Step:
    """Uppercase every response."""
    return lambda responses: [r.upper() for r in responses]


def strip() -> Step:
    """Remove leading and trailing whitespace."""
    return lambda responses: [r.strip() for r in responses]


def remove_whitespace() -> Step:
    """Remove leading whitespace only, exactly as lm-evaluation-harness's `remove_whitespace`."""
    return lambda responses: [r.lstrip() for r in responses]


def multi_choice_letter(fallback: str = DEFAULT_FALLBACK) -> Step:
    """Replace each response by the option letter it gives, or `fallback`.

    The letter is read by `lmm_lightning.metrics.choice_letter.parse_choice_letter`: a lone
    letter in either case ("b", "(B)", "**B**"), a leading capital and delimiter ("B. Paris",
    "C) Rome"), or the first "answer is B" / "Answer: (B)"; never a letter inside a word, and not
    the article in "A cat".
    """
    return lambda responses: [_letter_or(r, fallback) for r in responses]


def _letter_or(response: str, fallback: str) -> str:
    letter = parse_choice_letter(response)
    return fallback if letter is None else letter


def map_responses(mapping_dict: dict, default_value: str | None = None) -> Step:
    """Replace each response by `mapping_dict[response]`.

    Responses not in the mapping become `default_value`, or stay unchanged when it is not given
    (lm-evaluation-harness would return None, which no metric can score).
    """
    if not isinstance(mapping_dict, dict):
        raise TypeError(f"mapping_dict must be a mapping, got {mapping_dict!r}")

    def lookup(response: str) -> str:
        if response in mapping_dict:
            return mapping_dict[response]
        return response if default_value is None else default_value

    return lambda responses: [lookup(r) for r in responses]


FILTERS: dict[str, Callable[..., Step]] = {
    "regex": regex,
    "take_first": take_first,
    "majority_vote": majority_vote,
    "lowercase": lowercase,
    "uppercase": uppercase,
    "strip": strip,
    "remove_whitespace": remove_whitespace,
    "multi_choice_letter": multi_choice_letter,
    "map": map_responses,
}


# --- parsing and running ---------------------------------------------------------------------


def parse_filter_spec(spec: Any, where: str) -> FilterSpec:
    """Validate a `filter_list` entry {"name": ..., "filter": [{"function": ..., ...}, ...]}."""
    if not isinstance(spec, dict):
        raise FilterSpecError(f"{where}: expected a mapping with 'name' and 'filter', got {spec!r}")
    unknown = sorted(set(spec) - {"name", "filter"})
    if unknown:
        raise FilterSpecError(f"{where}: unknown key(s) {unknown}; a filter pipeline has 'name' and 'filter'")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise FilterSpecError(f"{where}.name: expected a non-empty string naming the pipeline, got {name!r}")
    raw_steps = spec.get("filter", [])
    if not isinstance(raw_steps, list):
        raise FilterSpecError(f"{where}.filter: expected a list of steps, got {raw_steps!r}")
    steps = []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict) or not isinstance(raw.get("function"), str):
            raise FilterSpecError(
                f"{where}.filter[{i}]: expected a mapping with a 'function' key "
                f"(one of {sorted(FILTERS)}), got {raw!r}"
            )
        args = {k: v for k, v in raw.items() if k != "function"}
        steps.append(FilterStep(raw["function"], args))
    return FilterSpec(name, tuple(steps))


def _bind(step: FilterStep, where: str) -> Step:
    if step.function not in FILTERS:
        raise FilterSpecError(f"{where}: unknown filter function {step.function!r}; known: {sorted(FILTERS)}")
    factory = FILTERS[step.function]
    parameters = inspect.signature(factory).parameters
    unexpected = sorted(set(step.args) - set(parameters))
    if unexpected:
        raise FilterSpecError(
            f"{where}: {step.function} got unexpected argument(s) {unexpected}; it accepts {sorted(parameters)}"
        )
    missing = [p for p, param in parameters.items() if param.default is param.empty and p not in step.args]
    if missing:
        raise FilterSpecError(f"{where}: {step.function} is missing required argument(s) {missing}")
    try:
        return factory(**step.args)
    except (TypeError, ValueError, re.error) as error:
        raise FilterSpecError(f"{where}: {step.function}: {error}") from error


def build_pipeline(spec: dict | FilterSpec, where: str) -> FilterPipeline:
    """Validate a filter pipeline and bind its functions.

    `where` locates the spec in error messages, e.g. "tasks/gsm8k.yaml: filter_list[0]"; step
    errors append ".filter[i]".
    """
    parsed = spec if isinstance(spec, FilterSpec) else parse_filter_spec(spec, where)
    steps = tuple(_bind(step, f"{where}.filter[{i}]") for i, step in enumerate(parsed.steps))
    return FilterPipeline(parsed, steps)


def default_pipeline() -> FilterPipeline:
    """The pipeline named "none" used when a task has no filter_list: the first response as is."""
    return build_pipeline({"name": "none", "filter": [{"function": "take_first"}]}, "default filter")


def apply_pipeline(pipeline: FilterPipeline, responses: list[str]) -> str:
    """Run `pipeline` on the repeated responses to one request and return the single result."""
    if len(responses) == 0:
        raise ValueError(f"filter {pipeline.name!r} got no responses")
    for step in pipeline.steps:
        responses = step(responses)
    if len(responses) == 0:
        raise ValueError(f"filter {pipeline.name!r} produced no response")
    return responses[0]
