"""The served model's pure parts: the adaptive in-flight limit, the back-off, stop strings, the continuation's
log-prob read from echoed offsets, chat turns with images, and what the model's identity holds (never the key).
Its HTTP behaviour is tested against a real server in tests/integration/test_served_model.py."""

import base64
import io
import random

import pytest
from PIL import Image

from lmm_lightning.errors import InputError
from lmm_lightning.models import OpenAIModel
from lmm_lightning.models.openai_api import (
    AdaptiveLimit, UnreadableAnswer, backoff_delay, chat_messages, continuation_score, image_data_url, parse_retry_after,
    send_stops,
)
from lmm_lightning.requests import ChatMessage, Request, RequestType


# --- the adaptive limit ----------------------------------------------------------------------------------------
def test_the_limit_halves_on_overload_down_to_one_and_grows_back_one_per_window():
    limit = AdaptiveLimit(16)
    assert limit.current == 16
    for expected in (8, 4, 2, 1, 1):
        limit.overloaded()
        assert limit.current == expected
    grown = []
    for _ in range(1 + 2 + 3 + 4):
        limit.succeeded()
        grown.append(limit.current)
    assert grown == [2, 2, 3, 3, 3, 4, 4, 4, 4, 5]  # a window of `current` successes per step
    limit.succeeded(), limit.overloaded()
    assert limit.current == 2 and limit.streak == 0  # an overload also restarts the window


def test_the_limit_never_passes_its_ceiling_and_a_zero_ceiling_is_one():
    limit = AdaptiveLimit(3)
    for _ in range(50):
        limit.succeeded()
    assert limit.current == 3
    assert AdaptiveLimit(0).current == 1


# --- back-off --------------------------------------------------------------------------------------------------
def test_backoff_doubles_with_jitter_in_its_upper_half_and_is_capped():
    rng = random.Random(1)
    for retry in range(1, 12):
        nominal = min(60.0, 0.5 * 2 ** (retry - 1))
        delays = [backoff_delay(retry, 0.5, rng=rng) for _ in range(200)]
        assert nominal / 2 <= min(delays) and max(delays) <= nominal
        assert len(set(delays)) > 150  # jittered: requests that failed together do not return together


def test_retry_after_is_a_floor_in_seconds_or_an_http_date():
    rng = random.Random(0)
    assert backoff_delay(1, 0.1, retry_after=3.0, rng=rng) == 3.0
    assert backoff_delay(8, 1.0, retry_after=0.5, rng=rng) >= 64.0 / 2 - 1e-9  # a short Retry-After does not shorten it
    assert parse_retry_after("7") == 7.0 and parse_retry_after("-3") == 0.0 and parse_retry_after("") is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=40.0) == 0.0  # in the past: at once


# --- stop strings ----------------------------------------------------------------------------------------------
def test_at_most_four_stops_are_sent_and_the_text_is_cut_at_the_first_of_all():
    from lmm_lightning.models.generation import cut_at_stops

    sent, every = send_stops(["\n\n", "Question:", "", "</s>", "Q:", "###"])
    assert sent == ["\n\n", "Question:", "</s>", "Q:"] and every[-1] == "###"
    assert cut_at_stops("Paris ### and more Q: x", every) == "Paris "  # "###" was not sent, yet it cuts
    assert cut_at_stops("Paris", every) == "Paris"


# --- log-probs from echoed offsets ------------------------------------------------------------------------------
def echoed(tokens, scores, tops):
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": scores, "top_logprobs": tops}


def test_the_continuation_is_the_prompts_last_tokens_and_a_generated_token_is_ignored():
    lp = echoed(["Answer", ":", " New", " Delhi", "\n"], [None, -1.0, -2.0, -0.5, -3.0],
                [None, {":": -1.0}, {" New": -2.0, " Paris": -1.0}, {" Delhi": -0.5}, {"\n": -3.0}])
    score = continuation_score(lp, n_prompt=4, continuation=" New Delhi")
    assert score.logprob == -2.5 and score.n_tokens == 2 and score.is_greedy is False  # " New" was not the argmax
    assert continuation_score(lp, 4, " Delhi").is_greedy is True


def test_offsets_that_drift_in_the_context_do_not_move_the_continuation():
    # "é" split over two byte tokens, each decoded as "\ufffd": offsets run one character ahead after it
    lp = echoed(["Caf", "\ufffd", "\ufffd", " is", " open"], [None, -1.0, -1.0, -0.7, -0.2],
                [None, {"a": -0.5}, {"b": -0.5}, {" is": -0.7}, {" open": -0.2}])
    assert continuation_score(lp, 5, " open").logprob == -0.2
    assert continuation_score(lp, 5, " is open").logprob == pytest.approx(-0.9)


def test_a_continuation_without_a_scored_token_is_unreadable():
    lp = echoed(["Hi"], [None], [None])
    with pytest.raises(UnreadableAnswer, match="no scored token"):
        continuation_score(lp, 1, "Hi")
    with pytest.raises(UnreadableAnswer, match="lists of"):
        continuation_score({**lp, "token_logprobs": []}, 1, "Hi")


# --- chat turns and images ---------------------------------------------------------------------------------------
def test_images_go_as_data_urls_before_the_text_of_the_last_user_turn():
    image = Image.new("RGB", (5, 3), (200, 10, 30))
    url = image_data_url(image, "PNG")
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (5, 3) and decoded.getpixel((0, 0)) == (200, 10, 30)
    assert image_data_url(Image.new("RGBA", (2, 2)), "JPEG").startswith("data:image/jpeg;base64,")

    request = Request(
        uid=0, task="t", doc_id=0, request_type=RequestType.GENERATE_UNTIL, context="ignored: messages win",
        messages=(ChatMessage("system", "Answer briefly."), ChatMessage("user", "1+1?"), ChatMessage("assistant", "2"),
                  ChatMessage("user", "What is shown?")),
    )
    turns = chat_messages(request, "Be exact.", [url, url])
    assert turns[0] == {"role": "system", "content": "Be exact.\n\nAnswer briefly."}
    assert turns[1] == {"role": "user", "content": "1+1?"} and turns[2] == {"role": "assistant", "content": "2"}
    assert [part["type"] for part in turns[3]["content"]] == ["image_url", "image_url", "text"]
    assert turns[3]["content"][2]["text"] == "What is shown?"


def test_a_batch_item_that_is_not_an_image_is_an_input_error():
    with pytest.raises(InputError, match="expected PIL images"):
        image_data_url(b"\x89PNG", "PNG")


# --- the model's arguments and identity ---------------------------------------------------------------------------
def test_identity_holds_what_changes_answers_and_never_the_key(monkeypatch):
    monkeypatch.setenv("MY_SERVED_KEY", "sk-secret-value")
    model = OpenAIModel("http://127.0.0.1:9/v1/", "served-name", api_key_env="MY_SERVED_KEY", timeout=5, max_concurrency=2)
    other = OpenAIModel("http://127.0.0.1:9/v1", "served-name", api_key_env="OTHER", timeout=60, max_concurrency=32, max_retries=0)
    assert model.identity() == other.identity() == {
        "class": "OpenAIModel", "base_url": "http://127.0.0.1:9/v1", "model": "served-name", "chat": True,
        "system_prompt": None, "image_format": "PNG",
    }
    assert OpenAIModel("http://127.0.0.1:9/v1", "served-name", chat=False).identity() != model.identity()
    model.configure_model()
    try:
        assert model.client.headers["authorization"] == "Bearer sk-secret-value"
        assert "sk-secret-value" not in repr(dict(model.hparams)) + repr(model.identity())
    finally:
        model.release()
    monkeypatch.delenv("MY_SERVED_KEY")
    model.configure_model()
    assert "authorization" not in model.client.headers  # no key set: none sent (local servers)
    model.release()


@pytest.mark.parametrize(
    "kwargs, field",
    [({"base_url": "127.0.0.1:8000/v1"}, "base_url"), ({"timeout": 0}, "timeout"), ({"max_concurrency": 0}, "max_concurrency"),
     ({"max_retries": -1}, "max_retries"), ({"backoff": -1}, "backoff")],
)
def test_bad_arguments_are_one_line_errors_naming_the_field(kwargs, field):
    with pytest.raises(InputError, match=f"model.{field}"):
        OpenAIModel(**{"base_url": "http://127.0.0.1:8000/v1", "model": "m", **kwargs})


def test_rolling_loglikelihood_is_a_clear_not_implemented():
    request = Request(uid=0, task="wikitext", doc_id=3, request_type=RequestType.LOGLIKELIHOOD_ROLLING, context="", continuation="text")
    with pytest.raises(NotImplementedError, match="task 'wikitext', doc_id 3.*HFCausalLM"):
        OpenAIModel("http://127.0.0.1:9/v1", "m").loglikelihood_rolling([request])
