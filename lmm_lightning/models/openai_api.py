"""A model behind an OpenAI-compatible HTTP API (vLLM, SGLang, TGI, llama.cpp's server, a commercial API).

It is an `EvalModule` like the local models, so the sampler, the response store, resume, fail-fast and the
gather apply unchanged. Within a rank, the requests of a batch are sent concurrently by a thread pool, with a
bounded, adaptive number in flight (`AdaptiveLimit`): it halves on HTTP 429/503 and on timeouts and grows
back by one after a window of successes. A failed attempt is retried after an exponential back-off with
jitter (`backoff_delay`), never sooner than the server's `Retry-After`. Each answer is handed to the run the
moment it arrives (`EvalModule.answered`), so an interrupted run has stored every request it paid for.

A served model cannot be fingerprinted: the response store trusts the model name (and base URL) given. Serve
other weights under the same name and a resumed run reuses the old answers; give the new ones a new name.
"""

import base64
import heapq
import io
import json
import os
import random
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Optional, Sequence

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.errors import InputError
from lmm_lightning.models.base import EvalModule
from lmm_lightning.models.generation import cut_at_stops, request_seed, stop_strings
from lmm_lightning.models.loglikelihood import split_context
from lmm_lightning.requests import Request, RequestType, Response, Usage

MAX_STOP_STRINGS = 4  # OpenAI's limit on `stop`; the rest are applied to the returned text here
MAX_BACKOFF_S = 60.0
OVERLOAD_STATUSES = (429, 503)  # the server says "fewer, slower": halve the requests in flight
RETRY_STATUSES = (408, 409, 425, 429)  # and every 5xx


class ServedModelError(InputError):
    """A served request failed for good (retries spent, or refused): the message names the request,
    the endpoint and the last cause, so the user can fix the server, the URL or the key and resume."""


class LogprobsUnsupported(ServedModelError):
    """The server does not return prompt log-probabilities (`echo` + `logprobs` on /completions)."""


class UnreadableAnswer(ValueError):
    """A response that is not the JSON an OpenAI-compatible server returns (a retryable failure)."""


# --- pure pieces: the controller, the back-off, the parsing ----------------------------------------------------
@dataclass
class AdaptiveLimit:
    """How many requests may be in flight: additive increase, multiplicative decrease (as TCP's window).

    >>> limit = AdaptiveLimit(8)
    >>> limit.overloaded(); limit.overloaded(); limit.current
    2
    >>> for _ in range(2): limit.succeeded()
    >>> limit.current  # one more after a window of `current` successes
    3
    >>> for _ in range(100): limit.succeeded()
    >>> limit.current  # never above the ceiling
    8
    """

    ceiling: int
    current: int = 0
    streak: int = 0  # successes since the last change

    def __post_init__(self) -> None:
        self.ceiling = max(1, self.ceiling)
        self.current = self.current or self.ceiling

    def overloaded(self) -> None:
        """A 429, a 503 or a timeout: halve (at least one stays in flight)."""
        self.current, self.streak = max(1, self.current // 2), 0

    def succeeded(self) -> None:
        self.streak += 1
        if self.streak >= self.current and self.current < self.ceiling:
            self.current, self.streak = self.current + 1, 0


def backoff_delay(retry: int, base_s: float, retry_after: Optional[float] = None, rng: Optional[random.Random] = None) -> float:
    """Seconds to wait before retry number `retry` (1, 2, ...): `base_s * 2**(retry-1)` capped at 60 s, drawn in
    its upper half (jitter, so the requests that failed together do not come back together), and never less
    than the server's `Retry-After`.

    >>> rng = random.Random(0)
    >>> [round(backoff_delay(n, 1.0, rng=rng), 2) for n in (1, 2, 3, 10)]
    [0.92, 1.76, 2.84, 37.77]
    >>> backoff_delay(1, 1.0, retry_after=5.0, rng=rng)
    5.0
    """
    rng = rng or random
    delay = min(MAX_BACKOFF_S, base_s * 2 ** (retry - 1)) * rng.uniform(0.5, 1.0)
    return max(delay, retry_after) if retry_after is not None else delay


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """`Retry-After` in seconds: a number of seconds, or an HTTP date; None when absent or unreadable.

    >>> parse_retry_after("2"), parse_retry_after("0.5"), parse_retry_after(None), parse_retry_after("soon")
    (2.0, 0.5, None, None)
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0)
    10.0
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def send_stops(stops: Sequence[str]) -> tuple[list[str], tuple[str, ...]]:
    """The stop strings sent (OpenAI takes at most 4) and all of them, which cut the returned text here.

    >>> send_stops(["\\n", "", ".", "Q:", "A:", "###"])
    (['\\n', '.', 'Q:', 'A:'], ('\\n', '.', 'Q:', 'A:', '###'))
    """
    kept = tuple(stop for stop in stops if stop)
    return list(kept[:MAX_STOP_STRINGS]), kept


@dataclass(frozen=True)
class ContinuationScore:
    """The log-probability of a continuation's tokens, whether each was the argmax, and how many there were."""

    logprob: float
    is_greedy: bool
    n_tokens: int


def continuation_score(logprobs: dict[str, Any], n_prompt: int, continuation: str) -> ContinuationScore:
    """Score the continuation from an echoed prompt's `logprobs` (`tokens`, `text_offset`, `token_logprobs`,
    `top_logprobs` as vLLM returns them): its tokens are the prompt's last ones whose offset lies within
    `len(continuation)` characters of the prompt's end (the first `n_prompt` tokens are the prompt; a generated
    token may follow). Counted from the end, as offsets add up decoded token lengths, which drift after a
    character split over two tokens: the context may hold any text, only the continuation's must line up.

    >>> lp = {"tokens": ["The", " capital", " is", " Paris", "."], "text_offset": [0, 3, 11, 14, 20],
    ...       "token_logprobs": [None, -2.0, -0.5, -0.25, -1.0],
    ...       "top_logprobs": [None, {" capital": -2.0, "-": -1.0}, {" is": -0.5}, {" Paris": -0.25}, {".": -1.0}]}
    >>> continuation_score(lp, n_prompt=4, continuation=" Paris")
    ContinuationScore(logprob=-0.25, is_greedy=True, n_tokens=1)
    >>> continuation_score(lp, n_prompt=4, continuation=" capital is Paris")
    ContinuationScore(logprob=-2.75, is_greedy=False, n_tokens=3)
    """
    tokens, offsets = logprobs["tokens"], logprobs["text_offset"]
    scores, tops = logprobs["token_logprobs"], logprobs.get("top_logprobs")
    if not (0 < n_prompt <= len(tokens) == len(offsets) == len(scores)):
        raise UnreadableAnswer(f"logprobs lists of {len(tokens)}/{len(offsets)}/{len(scores)} entries for {n_prompt} prompt tokens")
    end = offsets[n_prompt - 1] + len(tokens[n_prompt - 1])
    chosen = [i for i in range(n_prompt) if offsets[i] >= end - len(continuation)]
    if not chosen or scores[chosen[0]] is None:
        raise UnreadableAnswer(f"no scored token of the continuation {continuation!r} in the echoed prompt")
    greedy = True
    for i in chosen:
        top = tops[i] if tops else None
        greedy = greedy and bool(top) and scores[i] >= max(top.values())
    return ContinuationScore(float(sum(scores[i] for i in chosen)), greedy, len(chosen))


def image_data_url(image: Any, image_format: str) -> str:
    """An image as a base64 `data:` URL, the form every OpenAI-compatible server takes in an `image_url` part."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise InputError(f"OpenAIModel: expected PIL images in the batch, got {type(image).__name__}")
    fmt = image_format.upper()
    if fmt in ("JPEG", "JPG") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if fmt == "JPG" else fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def chat_messages(request: Request, system_prompt: Optional[str] = None, image_urls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The request as chat turns: its own (`fewshot_as_multiturn`) or one user turn holding the context; the
    system prompt first (joined to a task's own system turn by a blank line, as `HFCausalLM.prompt`); the images
    as `image_url` parts before the text of the last user turn (the question).

    >>> r = Request(uid=0, task="t", doc_id=0, request_type=RequestType.GENERATE_UNTIL, context="Q?")
    >>> chat_messages(r, "Be brief.", ["data:image/png;base64,AA=="])  # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'system', 'content': 'Be brief.'},
     {'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,AA=='}},
                                  {'type': 'text', 'text': 'Q?'}]}]
    """
    turns: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in request.messages]
    turns = turns or [{"role": "user", "content": request.context}]
    if system_prompt and turns[0]["role"] == "system":
        turns[0] = {"role": "system", "content": f"{system_prompt}\n\n{turns[0]['content']}"}
    elif system_prompt:
        turns.insert(0, {"role": "system", "content": system_prompt})
    if image_urls:
        last = max(i for i, turn in enumerate(turns) if turn["role"] == "user")
        parts = [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
        turns[last] = {"role": "user", "content": [*parts, {"type": "text", "text": turns[last]["content"]}]}
    return turns


# --- one HTTP attempt ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    """What one POST gave: the decoded JSON body, or why not and how to go on."""

    body: Optional[dict] = None
    status: Optional[int] = None
    cause: str = ""
    retryable: bool = True
    overloaded: bool = False  # 429 / 503 / a timeout: fewer requests in flight
    retry_after: Optional[float] = None
    unreadable: bool = False  # malformed JSON or missing fields


def server_message(text: str) -> str:
    """The `error.message` of an OpenAI-style error body, else the body's start (one line).

    >>> server_message('{"error": {"message": "bad stop"}}'), server_message("<html>oops</html>")
    ('bad stop', '<html>oops</html>')
    """
    try:
        body = json.loads(text)
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else (body.get("detail") if isinstance(body, dict) else None)
        if message:
            return " ".join(str(message).split())[:300]
    except (ValueError, AttributeError):
        pass
    return " ".join(text.split())[:300]


@dataclass
class Job:
    """One request's progress through its attempts."""

    index: int
    request: Request
    payload: dict[str, Any]
    retries: int = 0
    first_sent: Optional[float] = None
    last: Optional[Attempt] = None


# --- the model -----------------------------------------------------------------------------------------------
class OpenAIModel(EvalModule):
    """A model served behind an OpenAI-compatible API.

    `generate_until` posts chat turns to `/chat/completions` (images as base64 data URLs), or the context as a
    prompt to `/completions` with `chat: false`. `loglikelihood` posts context + continuation to `/completions`
    with `echo` and `logprobs` and sums the continuation's token log-probs (vLLM offers this; OpenAI's chat
    models do not: a clear error). The completions prompt is the raw context (no chat template), so log-probs
    match `HFCausalLM` with `use_chat_template: false`; chat generations match it with `use_chat_template: true`.

    Args:
        base_url: the API root, e.g. `http://127.0.0.1:8000/v1`.
        model: the served model's name (the request's `model` field). It stands for the weights in the
            response store: a served model cannot be fingerprinted.
        api_key_env: the environment variable holding the API key, sent as `Authorization: Bearer`; unset
            variable: no key sent (local servers). The key itself is never an argument, nor written anywhere.
        chat: generate through `/chat/completions` (true) or `/completions` (false, lm-eval's `*-completions`).
        system_prompt: a system turn before each conversation.
        timeout: seconds one attempt may take before it counts as failed (and is retried).
        max_concurrency: requests in flight per rank at most (the adaptive limit starts here).
        max_retries: attempts after the first before the run fails, naming the request.
        backoff: seconds before the first retry; doubled at each retry (with jitter, at most 60 s).
        image_format: how images are encoded into data URLs ("PNG", "JPEG", ...).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        chat: bool = True,
        system_prompt: Optional[str] = None,
        timeout: float = 120.0,
        max_concurrency: int = 8,
        max_retries: int = 5,
        backoff: float = 1.0,
        image_format: str = "PNG",
    ) -> None:
        super().__init__()
        if not base_url.startswith(("http://", "https://")):
            raise InputError(f"model.base_url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        for name, value in (("timeout", timeout), ("max_concurrency", max_concurrency)):
            if isinstance(value, bool) or not value > 0:
                raise InputError(f"model.{name}: expected a positive number, got {value!r}")
        if isinstance(backoff, bool) or not backoff >= 0:
            raise InputError(f"model.backoff: expected a number of seconds >= 0, got {backoff!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InputError(f"model.max_retries: expected a whole number >= 0, got {max_retries!r}")
        self.save_hyperparameters(
            {
                "base_url": base_url.rstrip("/"),
                "model": model,
                "api_key_env": api_key_env,
                "chat": chat,
                "system_prompt": system_prompt,
                "timeout": float(timeout),
                "max_concurrency": int(max_concurrency),
                "max_retries": max_retries,
                "backoff": float(backoff),
                "image_format": image_format,
            }
        )
        self.limit = AdaptiveLimit(int(max_concurrency))
        self.client: Any = None
        self.pool: Optional[ThreadPoolExecutor] = None
        self.rng = random.Random()

    # --- resources ---------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """One HTTP client (keep-alive connections, thread-safe) and one thread pool per model and rank."""
        if self.client is not None:
            return
        import httpx

        headers = {}
        key = os.environ.get(self.hparams.api_key_env) if self.hparams.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        n = self.hparams.max_concurrency
        self.client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.hparams.timeout),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        )
        self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="openai-api")

    def release(self) -> int:
        """Close the connections and the threads (attempts still in flight are abandoned, their answers dropped)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.client is not None:
            self.client.close()
        self.client, self.pool = None, None
        return 0

    def identity(self) -> dict[str, Any]:
        """What changes answers: the server, the model name, the endpoint kind and the prompt settings; not the
        timeout, concurrency or retries, and never the key. The weights cannot be checked: the name stands for them."""
        keys = ("base_url", "model", "chat", "system_prompt", "image_format")
        return {"class": type(self).__name__, **{k: self.hparams[k] for k in keys}}

    # --- requests ----------------------------------------------------------------------------------------------
    def answer(self, batch: RequestBatch) -> list[Response]:
        """The batch's requests sent concurrently; padding (copies the sampler adds) is never sent."""
        visuals = batch.visuals or [[] for _ in batch.requests]
        padding = list(batch.padding) if batch.padding else [False] * len(batch.requests)
        if batch.request_type is RequestType.LOGLIKELIHOOD:
            return self._loglikelihood(batch.requests, padding, visuals)
        if batch.request_type is RequestType.LOGLIKELIHOOD_ROLLING:
            return self.loglikelihood_rolling(batch.requests)
        return self._generate(batch.requests, padding, visuals)

    def generate_until(self, requests: list[Request]) -> list[Response]:
        return self._generate(requests, [False] * len(requests), [[] for _ in requests])

    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        return self._loglikelihood(requests, [False] * len(requests), [[] for _ in requests])

    def loglikelihood_rolling(self, requests: list[Request]) -> list[Response]:
        first = requests[0]
        raise NotImplementedError(
            f"OpenAIModel on task '{first.task}', doc_id {first.doc_id}: loglikelihood_rolling (perplexity) is not "
            "offered for served models; evaluate this task with lmm_lightning.models.HFCausalLM"
        )

    def _generate(self, requests: list[Request], padding: list[bool], visuals: list[list[Any]]) -> list[Response]:
        jobs = []
        for i, (request, images) in enumerate(zip(requests, visuals)):
            if not padding[i]:
                jobs.append(Job(i, request, self._generation_payload(request, images)))
        endpoint = "/chat/completions" if self.hparams.chat else "/completions"
        answers = self._send(endpoint, jobs, self._read_generation)
        return [answers.get(i) or Response(uid=r.uid, text="") for i, r in enumerate(requests)]

    def _generation_payload(self, request: Request, images: list[Any]) -> dict[str, Any]:
        spec = request.generation
        sent, _ = send_stops(stop_strings(spec))
        payload: dict[str, Any] = {"model": self.hparams.model, "max_tokens": spec.max_new_tokens}
        if self.hparams.chat:
            urls = [image_data_url(image, self.hparams.image_format) for image in images]
            payload["messages"] = chat_messages(request, self.hparams.system_prompt, urls)
        elif images:
            raise InputError(
                f"OpenAIModel on task '{request.task}', doc_id {request.doc_id}: images need the chat endpoint; "
                "set model chat: true"
            )
        else:
            payload["prompt"] = request.context
        payload["temperature"] = spec.temperature if spec.do_sample else 0.0
        if spec.do_sample:
            payload["top_p"] = spec.top_p
            payload["seed"] = request_seed(request) % 2**31  # the request's own draw, as the local models'
        if sent:
            payload["stop"] = sent
        return payload

    def _read_generation(self, job: Job, body: dict[str, Any]) -> Response:
        choice = first_choice(body)
        text = choice.get("message", {}).get("content") if self.hparams.chat else choice.get("text")
        if text is None and self.hparams.chat and isinstance(choice.get("message"), dict):
            text = ""  # a chat answer with no content (e.g. only a refusal): an empty generation
        if not isinstance(text, str):
            raise UnreadableAnswer("the choice has no text")
        _, stops = send_stops(stop_strings(job.request.generation))
        return Response(uid=job.request.uid, text=cut_at_stops(text, stops))

    def _loglikelihood(self, requests: list[Request], padding: list[bool], visuals: list[list[Any]]) -> list[Response]:
        jobs = []
        for i, (request, images) in enumerate(zip(requests, visuals)):
            if padding[i]:
                continue
            where = f"OpenAIModel on task '{request.task}', doc_id {request.doc_id}"
            if images:
                raise InputError(f"{where}: loglikelihood with images is not offered by the /completions endpoint")
            context, continuation = split_context(request.context, request.continuation)
            if not context:
                raise InputError(f"{where}: loglikelihood of an empty context (the server scores no first token)")
            payload = {
                "model": self.hparams.model, "prompt": context + continuation,
                "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0.0,
            }
            jobs.append(Job(i, request, payload))
        answers = self._send("/completions", jobs, self._read_loglikelihood)
        return [answers.get(i) or Response(uid=r.uid, logprob=0.0, is_greedy=False) for i, r in enumerate(requests)]

    def _read_loglikelihood(self, job: Job, body: dict[str, Any]) -> Response:
        choice = first_choice(body)
        logprobs = choice.get("logprobs")
        needed = ("tokens", "text_offset", "token_logprobs")
        absent = [k for k in needed if not isinstance(logprobs.get(k), list)] if isinstance(logprobs, dict) else ["logprobs"]
        if absent:
            missing = ", ".join(absent)
            raise LogprobsUnsupported(
                f"OpenAIModel: the server at {self.hparams.base_url} returned no {missing} from /completions with "
                f"echo and logprobs (task '{job.request.task}', doc_id {job.request.doc_id}); loglikelihood tasks need "
                "a server that returns prompt log-probabilities (vLLM does), or evaluate them with HFCausalLM"
            )
        _, continuation = split_context(job.request.context, job.request.continuation)
        usage = body.get("usage") or {}
        n_prompt = usage.get("prompt_tokens")
        if not isinstance(n_prompt, int) or not 0 < n_prompt <= len(logprobs["tokens"]):
            prompt_chars = len(job.payload["prompt"])
            n_prompt = sum(1 for offset in logprobs["text_offset"] if offset < prompt_chars)
        score = continuation_score(logprobs, n_prompt, continuation)
        return Response(uid=job.request.uid, logprob=score.logprob, is_greedy=score.is_greedy)

    # --- sending -----------------------------------------------------------------------------------------------
    def _post(self, url: str, payload: dict[str, Any]) -> Attempt:
        """One POST (in a pool thread): its decoded body, or the failure and whether it is worth a retry."""
        import httpx

        try:
            reply = self.client.post(url, json=payload)
        except httpx.TimeoutException:
            return Attempt(cause=f"no answer within the {self.hparams.timeout:g} s timeout", overloaded=True)
        except httpx.HTTPError as err:
            return Attempt(cause=f"{type(err).__name__}: {err}")
        status = reply.status_code
        if status != 200:
            retryable = status in RETRY_STATUSES or status >= 500
            return Attempt(
                status=status, cause=f"HTTP {status}: {server_message(reply.text)}", retryable=retryable,
                overloaded=status in OVERLOAD_STATUSES, retry_after=parse_retry_after(reply.headers.get("retry-after")),
            )
        try:
            body = reply.json()
        except ValueError:
            return Attempt(status=status, cause=f"malformed JSON in the answer: {reply.text[:80]!r}", unreadable=True)
        if not isinstance(body, dict):
            return Attempt(status=status, cause="the answer is not a JSON object", unreadable=True)
        return Attempt(body=body, status=status)

    def _send(self, endpoint: str, jobs: list[Job], read: Callable[[Job, dict], Response]) -> dict[int, Response]:
        """Every job's answer, keyed by its position in the batch, each handed to the run as it arrives.

        The main thread submits attempts while fewer than the adaptive limit are in flight, collects them as
        they complete, reads them, and schedules a failed one's retry after its back-off."""
        if not jobs:
            return {}
        self.configure_model()
        url = self.hparams.base_url + endpoint
        answers: dict[int, Response] = {}
        ready: deque[Job] = deque(jobs)
        later: list[tuple[float, int, Job]] = []  # (when, order, job): retries waiting out their back-off
        flying: dict[Future, Job] = {}
        while ready or later or flying:
            now = time.monotonic()
            while later and later[0][0] <= now:
                ready.append(heapq.heappop(later)[2])
            while ready and len(flying) < self.limit.current:
                job = ready.popleft()
                job.first_sent = job.first_sent if job.first_sent is not None else time.monotonic()
                flying[self.pool.submit(self._post, url, job.payload)] = job
            if not flying:
                time.sleep(max(0.0, later[0][0] - time.monotonic()))
                continue
            done, _ = wait(list(flying), timeout=max(0.0, later[0][0] - now) if later else None, return_when=FIRST_COMPLETED)
            for future in done:
                job = flying.pop(future)
                attempt = future.result()
                response = self._read(job, attempt, read) if attempt.body is not None else None
                if response is not None:
                    self.limit.succeeded()
                    answers[job.index] = response
                    self.answered(job.index, response)
                    continue
                job.last = attempt if attempt.body is None else job.last
                if job.last.overloaded:
                    self.limit.overloaded()
                if not job.last.retryable or job.retries >= self.hparams.max_retries:
                    raise self._failure(url, job)
                job.retries += 1
                delay = backoff_delay(job.retries, self.hparams.backoff, job.last.retry_after, self.rng)
                heapq.heappush(later, (time.monotonic() + delay, job.index, job))
        return answers

    def _read(self, job: Job, attempt: Attempt, read: Callable[[Job, dict], Response]) -> Optional[Response]:
        """The response a body holds, with what it cost; None (and `job.last` set) when it is unreadable."""
        try:
            response = read(job, attempt.body)
        except (UnreadableAnswer, KeyError, TypeError, AttributeError, IndexError) as err:
            job.last = Attempt(status=attempt.status, cause=f"unexpected answer: {err}", unreadable=True)
            return None
        usage = attempt.body.get("usage") if isinstance(attempt.body.get("usage"), dict) else {}
        cost = Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=round(time.monotonic() - job.first_sent, 6),
            retries=job.retries,
        )
        return replace(response, usage=cost)

    def _failure(self, url: str, job: Job) -> ServedModelError:
        r, last = job.request, job.last
        attempts = f"{job.retries + 1} attempt{'s' if job.retries else ''}"
        message = (
            f"OpenAIModel: request uid {r.uid} (task '{r.task}', doc_id {r.doc_id}) to {url} failed after {attempts}: "
            f"{last.cause}"
        )
        if last.unreadable:
            message += " (an unreadable answer counts as a failed attempt and is retried)"
        if last.status in (401, 403):
            message += f"; check the API key in ${self.hparams.api_key_env}"
        elif last.retryable:
            message += "; answers already received are stored: fix the server and rerun to send only the rest"
        return ServedModelError(message)


def first_choice(body: dict[str, Any]) -> dict[str, Any]:
    """The first of a completion's `choices` (an unreadable answer if there is none)."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UnreadableAnswer("no choices in the answer")
    return choices[0]
