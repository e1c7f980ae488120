"""The per-document metrics a task YAML names, in one literal table: for each metric, the function each
output type it accepts computes it with, its default aggregation and whether higher is better.

Each output type calls its metrics with one signature:

- multiple_choice: `(logprobs, unconditional, choices, gold) -> float`: the choices' log-probabilities,
  the same without the question (only with `acc_mutual_info`, else empty), the choices, the gold index;
- loglikelihood: `(logprob, is_greedy, text) -> value`: the target's log-probability, whether it is
  the greedy continuation, and the target text;
- generate_until: `(prediction, references, **options) -> float`: the filtered generation, every
  reference text (always a sequence), and the metric's options from the YAML;
- loglikelihood_rolling: `(logprob, text) -> (log-likelihood, units)`: the whole text's log-probability
  summed over its windows, and the text (`doc_to_target`), whose words or bytes are the units.

A metric a task's `process_results` returns needs no entry: it aggregates by "mean" and is higher
is better unless its `metric_list` entry says otherwise.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lmm_lightning.metrics.sample import (
    acc,
    acc_norm,
    anls,
    bits_per_byte,
    byte_perplexity,
    exact_match,
    perplexity,
    relaxed_accuracy,
    vqa_accuracy,
    word_perplexity,
)


@dataclass(frozen=True)
class Metric:
    """How one metric is computed per document (by output type) and summarised over the corpus."""

    score: Mapping[str, Callable[..., Any]]  # output type -> per-document function
    aggregation: str = "mean"
    higher_is_better: bool = True

    @property
    def output_types(self) -> tuple[str, ...]:
        return tuple(self.score)


def _mutual_info(logprobs: list[float], unconditional: list[float], choices: list[str], gold: int) -> float:
    """`acc` of log P(choice | question) - log P(choice): how much the question raises each choice."""
    return acc([a - b for a, b in zip(logprobs, unconditional)], gold)


def _vqa_accuracy(prediction: str, references: list[str], **ignored: Any) -> float:
    """`vqa_accuracy` takes no options; any the YAML gives are ignored."""
    return vqa_accuracy(prediction, references)


METRICS: dict[str, Metric] = {
    "acc": Metric(
        {
            "multiple_choice": lambda logprobs, unconditional, choices, gold: acc(logprobs, gold),
            "loglikelihood": lambda logprob, is_greedy, text: float(bool(is_greedy)),
        }
    ),
    "acc_norm": Metric(
        {"multiple_choice": lambda logprobs, unconditional, choices, gold: acc_norm(logprobs, choices, gold)}
    ),
    "acc_mutual_info": Metric({"multiple_choice": _mutual_info}),
    "logprob": Metric({"loglikelihood": lambda logprob, is_greedy, text: logprob}),
    "perplexity": Metric(
        {"loglikelihood": lambda logprob, is_greedy, text: perplexity(logprob, text)},
        aggregation="perplexity",
        higher_is_better=False,
    ),
    "word_perplexity": Metric(
        {
            "loglikelihood": lambda logprob, is_greedy, text: word_perplexity(logprob, text),
            "loglikelihood_rolling": word_perplexity,
        },
        aggregation="weighted_perplexity",
        higher_is_better=False,
    ),
    "byte_perplexity": Metric(
        {
            "loglikelihood": lambda logprob, is_greedy, text: byte_perplexity(logprob, text),
            "loglikelihood_rolling": byte_perplexity,
        },
        aggregation="weighted_perplexity",
        higher_is_better=False,
    ),
    "bits_per_byte": Metric(
        {
            "loglikelihood": lambda logprob, is_greedy, text: bits_per_byte(logprob, text),
            "loglikelihood_rolling": bits_per_byte,
        },
        aggregation="bits_per_byte",
        higher_is_better=False,
    ),
    "exact_match": Metric(
        {"generate_until": lambda prediction, references, **options: exact_match(prediction, references, **options)}
    ),
    "vqa_accuracy": Metric({"generate_until": _vqa_accuracy}),
    "anls": Metric({"generate_until": lambda prediction, references, **options: anls(prediction, references, **options)}),
    "relaxed_accuracy": Metric(
        {"generate_until": lambda prediction, references, **options: relaxed_accuracy(prediction, references, **options)}
    ),
}


def metrics_for(output_type: str) -> list[str]:
    """The metrics an output type can compute, in table order.

    >>> metrics_for("multiple_choice")
    ['acc', 'acc_norm', 'acc_mutual_info']
    """
    return [name for name, metric in METRICS.items() if output_type in metric.score]


def default_aggregation(name: str) -> str:
    """The aggregation a metric gets when its YAML entry names none ("mean" outside the table).

    >>> default_aggregation("word_perplexity"), default_aggregation("mmmu_acc")
    ('weighted_perplexity', 'mean')
    """
    return METRICS[name].aggregation if name in METRICS else "mean"


def default_higher_is_better(name: Any) -> bool:
    """Whether higher is better when the YAML does not say (perplexities: lower is better).

    >>> default_higher_is_better("perplexity"), default_higher_is_better("acc"), default_higher_is_better("mmmu_acc")
    (False, True, True)
    """
    return METRICS[name].higher_is_better if isinstance(name, str) and name in METRICS else True
