import pytest

from lmm_lightning.tasks.filters import (
    FILTERS,
    FilterSpec,
    FilterSpecError,
    FilterStep,
    apply_pipeline,
    build_pipeline,
    default_pipeline,
    parse_filter_spec,
)

GSM8K = r"#### (\-?[0-9\.\,]+)"


def run(steps: list[dict], responses: list[str]) -> str:
    return apply_pipeline(build_pipeline({"name": "test", "filter": steps}, "test.yaml: filter_list[0]"), responses)


# --- functions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "response", "expected"),
    [
        ({"regex_pattern": GSM8K}, "so 6 * 7 = 42\n#### 42", "42"),
        ({"regex_pattern": GSM8K}, "I think it is 42", "[invalid]"),
        ({"regex_pattern": GSM8K, "fallback": "none"}, "no number", "none"),
        ({"regex_pattern": GSM8K}, "#### 1 then #### 2", "1"),  # group_select picks a match: first
        ({"regex_pattern": GSM8K, "group_select": -1}, "#### 1 then #### 2", "2"),  # last
        ({"regex_pattern": GSM8K, "group_select": 2}, "#### 1 then #### 2", "[invalid]"),  # no third
        # Several groups: the first non-empty one.
        ({"regex_pattern": r"answer is (\d+)|#### (\d+)"}, "#### 7", "7"),
        ({"regex_pattern": r"answer:(.*)"}, "answer:  Paris  ", "Paris"),  # matches are stripped
        ({"regex_pattern": r"\d+"}, "a 12 b 34", "12"),  # no group: the whole match
    ],
)
def test_regex(args: dict, response: str, expected: str) -> None:
    assert run([{"function": "regex", **args}], [response]) == expected


@pytest.mark.parametrize(
    ("function", "response", "expected"),
    [
        ("lowercase", " Paris ", " paris "),
        ("uppercase", "Paris", "PARIS"),
        ("strip", "  Paris \n", "Paris"),
        ("remove_whitespace", "  Paris \n", "Paris \n"),  # lm-evaluation-harness: leading only
    ],
)
def test_text_functions(function: str, response: str, expected: str) -> None:
    assert run([{"function": function}], [response]) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("(B)", "B"),
        ("B. Paris", "B"),
        ("C) Rome", "C"),
        ("D", "D"),
        ("  A  ", "A"),
        ("Answer: C", "C"),
        ("The answer is (D).", "D"),
        ("the ANSWER IS b", "[invalid]"),  # letters must be capitals
        ("The answer is B, not (A)", "B"),  # the "answer" rule outranks "(A)"
        ("I think (A) or maybe (C)", "[invalid]"),  # a letter in passing is no answer
        ("b", "B"),  # a lone letter in either case
        ("**B**", "B"),
        ("DNA", "[invalid]"),  # no letter out of a word
        ("A cat is on the mat", "[invalid]"),  # the article is not an answer
        ("Paris", "[invalid]"),
    ],
)
def test_multi_choice_letter(response: str, expected: str) -> None:
    assert run([{"function": "multi_choice_letter"}], [response]) == expected


def test_multi_choice_letter_fallback() -> None:
    assert run([{"function": "multi_choice_letter", "fallback": "Z"}], ["no idea"]) == "Z"


def test_map() -> None:
    mapping = {"yes": "1", "no": "0"}
    assert run([{"function": "map", "mapping_dict": mapping}], ["yes"]) == "1"
    assert run([{"function": "map", "mapping_dict": mapping}], ["maybe"]) == "maybe"  # unmapped: unchanged
    assert run([{"function": "map", "mapping_dict": mapping, "default_value": "-1"}], ["maybe"]) == "-1"


def test_take_first_and_majority_vote() -> None:
    assert run([{"function": "take_first"}], ["a", "b", "b"]) == "a"
    assert run([{"function": "majority_vote"}], ["a", "b", "b"]) == "b"
    assert run([{"function": "majority_vote"}], ["a", "b"]) == "a"  # tie: first seen


# --- pipelines ------------------------------------------------------------------------------------


def test_pipeline_chains_steps_over_repeats() -> None:
    steps = [
        {"function": "regex", "regex_pattern": r"answer is (\w+)"},
        {"function": "lowercase"},
        {"function": "majority_vote"},
        {"function": "take_first"},
    ]
    responses = ["The answer is Paris", "the answer is PARIS.", "The answer is Rome"]
    assert run(steps, responses) == "paris"


def test_without_take_first_the_first_is_taken() -> None:
    assert run([{"function": "uppercase"}], ["a", "b"]) == "A"
    assert run([], ["x", "y"]) == "x"


def test_default_pipeline_is_identity_then_first() -> None:
    pipeline = default_pipeline()
    assert pipeline.name == "none"
    assert apply_pipeline(pipeline, ["  Raw Text\n", "other"]) == "  Raw Text\n"


def test_parse_filter_spec() -> None:
    spec = parse_filter_spec(
        {"name": "strict", "filter": [{"function": "regex", "regex_pattern": GSM8K}, {"function": "take_first"}]},
        "x",
    )
    assert spec == FilterSpec("strict", (FilterStep("regex", {"regex_pattern": GSM8K}), FilterStep("take_first")))
    assert build_pipeline(spec, "x").name == "strict"


def test_apply_pipeline_needs_responses() -> None:
    with pytest.raises(ValueError, match="no responses"):
        apply_pipeline(default_pipeline(), [])


def test_filters_table_names() -> None:
    assert {"regex", "take_first", "lowercase", "uppercase", "strip", "remove_whitespace",
            "multi_choice_letter", "map"} <= set(FILTERS)  # fmt: skip


# --- errors name where and what ---------------------------------------------------------------------

WHERE = "tasks/gsm8k.yaml: filter_list[0]"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("strict", r"tasks/gsm8k.yaml: filter_list\[0\]: expected a mapping"),
        ({"filter": []}, r"filter_list\[0\]\.name: expected a non-empty string"),
        ({"name": "x", "filters": []}, r"unknown key\(s\) \['filters'\]"),
        ({"name": "x", "filter": "take_first"}, r"filter_list\[0\]\.filter: expected a list"),
        ({"name": "x", "filter": ["take_first"]}, r"filter_list\[0\]\.filter\[0\]: expected a mapping with a 'function'"),
        (
            {"name": "x", "filter": [{"function": "take_first"}, {"function": "regexp"}]},
            r"filter_list\[0\]\.filter\[1\]: unknown filter function 'regexp'; known: \[",
        ),
        (
            {"name": "x", "filter": [{"function": "regex"}]},
            r"filter_list\[0\]\.filter\[0\]: regex is missing required argument\(s\) \['regex_pattern'\]",
        ),
        (
            {"name": "x", "filter": [{"function": "regex", "regex_pattern": "a", "group": 1}]},
            r"filter\[0\]: regex got unexpected argument\(s\) \['group'\]; it accepts",
        ),
        (
            {"name": "x", "filter": [{"function": "regex", "regex_pattern": "(unclosed"}]},
            r"filter\[0\]: regex: missing \)",
        ),
        (
            {"name": "x", "filter": [{"function": "regex", "regex_pattern": "a", "group_select": "0"}]},
            r"filter\[0\]: regex: group_select must be an integer",
        ),
        ({"name": "x", "filter": [{"function": "map", "mapping_dict": ["a"]}]}, r"filter\[0\]: map: mapping_dict"),
    ],
)
def test_build_pipeline_errors(spec: object, message: str) -> None:
    with pytest.raises(FilterSpecError, match=message):
        build_pipeline(spec, WHERE)
