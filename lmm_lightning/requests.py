"""Typed requests sent to a model and the responses it returns."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Optional


class RequestType(str, Enum):
    """What a request asks: a continuation's log-probability, a generation, or the log-probability of a
    whole text scored in windows of the model's context (`loglikelihood_rolling`, for perplexity)."""

    LOGLIKELIHOOD = "loglikelihood"
    GENERATE_UNTIL = "generate_until"
    LOGLIKELIHOOD_ROLLING = "loglikelihood_rolling"

    @property
    def scores_logprob(self) -> bool:
        """Whether the answer is a log-probability (`Response.logprob`) rather than a text."""
        return self is not RequestType.GENERATE_UNTIL


@dataclass(frozen=True)
class GenerationSpec:
    """How to generate: stop strings, a token budget and sampling settings (greedy by default)."""

    until: tuple[str, ...] = ()
    max_new_tokens: int = 256  # lm-evaluation-harness's default `max_gen_toks`
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 1234  # a sampled request draws from (seed, task, doc_id, repeat); the data module's seed


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a prompt given as a conversation (lm-eval's `--fewshot_as_multiturn`)."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Request:
    """One unit of model work, identified by (task, doc_id, choice_index, repeat).

    `uid` is the request's position in the benchmark's global request list; it is the
    same on every rank and for every world size. A rolling request scores its whole text, held in
    `continuation`, with an empty `context` (lm-evaluation-harness: no prompt, no few-shot).
    """

    uid: int
    task: str
    doc_id: int
    request_type: RequestType
    context: str
    continuation: str = ""
    choice_index: int = 0
    repeat: int = 0
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    # The context as a conversation (description as system, each few-shot example a user and an assistant
    # turn, then the question) for a chat model; empty: a chat template wraps `context` as one user turn.
    messages: tuple[ChatMessage, ...] = ()
    # What the request's prompt starts with besides text, for batching (not its identity): a digest of its
    # document's images, so the questions on one image share batches and its encoding (`data.sampler`).
    shares: str = ""
    # The start of `context` that every request of its task and type shares (its description and few-shot
    # examples), found by the data module over the whole task: a model may compute it once for all of them. The
    # same for a request whatever its batch, rank or world size (`models.prefix`). Not part of its identity.
    shared_prefix: str = ""

    @property
    def length(self) -> int:
        """A cheap length proxy used to sort requests (longest first)."""
        return len(self.context) + len(self.continuation)


@dataclass(frozen=True)
class Usage:
    """What answering one request cost a served model: tokens billed, seconds waited, attempts repeated."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # from the first attempt sent to the answer read, retries and back-off included
    retries: int = 0  # attempts after the first (HTTP 429/5xx, timeouts, unreadable answers)


@dataclass
class Response:
    """A model's answer to one request.

    Loglikelihood requests fill `logprob` and `is_greedy`; generation requests fill `text`. A rolling
    request's `logprob` is the sum over its text's windows, `is_greedy` whether every token was the argmax.
    A served model adds what the answer cost (`usage`); a local one leaves it None.
    """

    uid: int
    logprob: Optional[float] = None
    is_greedy: Optional[bool] = None
    text: Optional[str] = None
    usage: Optional[Usage] = None
