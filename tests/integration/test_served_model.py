"""`--model openai` against a real OpenAI-compatible server on 127.0.0.1 (tests/fixtures/openai_server.py: LitServe
serving the demo model), no mock of the HTTP layer: the generations and log-probs equal the local model's, a killed
server fails the run at once and the rerun sends only what is missing, 429s, torn JSON and a hung request are
retried, spent retries name the request, and the API key travels only in the Authorization header."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmm_lightning.assets import smollm2_folder
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.models import HFCausalLM, OpenAIModel
from lmm_lightning.models.openai_api import LogprobsUnsupported, ServedModelError
from lmm_lightning.requests import GenerationSpec, Request, RequestType
from tests.fixtures.openai_server import ServerProcess

KEY_ENV, KEY = "LMM_TEST_SERVED_KEY", "sk-test-7f3a9c2e5b1d4f60"
NAME = "smol"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", KEY_ENV: KEY}


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return smollm2_folder()


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    """One server for the module (it needs the key); faults are armed per test and disarmed after."""
    with ServerProcess(smollm2, tmp_path_factory.mktemp("server"), "--served-name", NAME, "--api-key-env", KEY_ENV,
                       env={KEY_ENV: KEY}) as running:
        yield running


@pytest.fixture
def faults(server):
    yield server
    for kind in ("429", "malformed", "hang", "no_logprobs"):
        server.arm(kind, 0)


def served_args(base_url: str, output: Path, tasks: str, limit: int, **model_args) -> list[str]:
    options = {"base_url": base_url, "model": NAME, "api_key_env": KEY_ENV, "max_concurrency": 4, "backoff": 0.05, **model_args}
    return [
        "eval", "--model", "openai", "--model_args", ",".join(f"{k}={v}" for k, v in options.items()),
        "--tasks", tasks, "--limit", str(limit), "--batch_size", "8", "--output_path", str(output), "--log_samples",
        "--evaluation.bootstrap_iters", "10",
    ]


def run_cli(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmm_lightning", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def samples(output: Path, task: str) -> dict[int, dict]:
    path = sorted(output.glob(f"*/samples_{task}_*.jsonl"))[-1]  # the latest run's
    return {line["doc_id"]: line for line in map(json.loads, path.read_text().splitlines())}


def stored(output: Path) -> list[dict]:
    return [json.loads(line) for path in output.glob("*/store/responses-rank*.jsonl") for line in path.read_text().splitlines() if line]


def results(output: Path) -> dict:
    path = sorted(output.glob("*/results_*.json"))[-1]  # the latest run's
    return json.loads(path.read_text())


def task_requests(task: str, limit: int) -> list[Request]:
    data = BenchmarkDataModule([task], limit=limit)
    data.setup("predict")
    return data.requests


# --- the same answers as the local model ------------------------------------------------------------------------
def test_generations_and_logprobs_through_the_server_equal_the_local_models(server, smollm2, tmp_path):
    limit = 10
    before = len(server.requests())
    done = run_cli(served_args(server.base_url, tmp_path / "out", "capitals_gen,capitals_mc", limit))
    assert done.returncode == 0, done.stderr[-3000:]
    received = server.requests()[before:]
    assert len(received) == limit + 4 * limit and all(r["authorised"] for r in received)

    # generate_until: chat turns through /v1/chat/completions, as HFCausalLM with the chat template, greedy
    local = HFCausalLM(str(smollm2), use_chat_template=True)
    local.configure_model()
    requests = task_requests("capitals_gen", limit)
    expected = {r.doc_id: response.text for r, response in zip(requests, local.generate_until(requests))}
    served = {doc: line["resps"][0][0] for doc, line in samples(tmp_path / "out", "capitals_gen").items()}
    assert served == expected
    assert sum(1 for text in served.values() if text.strip()) == limit  # real answers, not empty strings

    # loglikelihood: the raw prompt through /v1/completions with echo + logprobs, as HFCausalLM without a template
    local = HFCausalLM(str(smollm2), use_chat_template=False)
    local.configure_model()
    requests = task_requests("capitals_mc", limit)
    local_scores = {(r.doc_id, r.choice_index): (resp.logprob, resp.is_greedy) for r, resp in zip(requests, local.loglikelihood(requests))}
    served_mc = samples(tmp_path / "out", "capitals_mc")
    for doc, line in served_mc.items():
        for choice, ((logprob, greedy),) in enumerate(line["resps"]):
            assert logprob == pytest.approx(local_scores[doc, choice][0], abs=1e-4)
            assert greedy == local_scores[doc, choice][1]
    local_acc = sum(
        max(range(4), key=lambda c: local_scores[doc, c][0]) == int(line["target"]) for doc, line in served_mc.items()
    ) / limit
    assert results(tmp_path / "out")["results"]["capitals_mc"]["acc,none"] == pytest.approx(local_acc)

    # what it cost, per task; and the key is in no file of the output folder
    usage = results(tmp_path / "out")["usage"]
    assert usage["capitals_gen"]["requests"] == limit and usage["capitals_mc"]["requests"] == 4 * limit
    assert usage["capitals_gen"]["prompt_tokens"] > 0 and usage["capitals_gen"]["completion_tokens"] > 0
    assert usage["capitals_gen"]["retries"] == 0
    for path in (tmp_path / "out").rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path


# --- faults: a killed server, 429, torn JSON, a hung request, spent retries -------------------------------------------
def test_a_killed_server_fails_the_run_fast_and_the_rerun_sends_only_what_is_missing(smollm2, tmp_path):
    limit, output = 12, tmp_path / "out"
    args = served_args("http://127.0.0.1:{port}/v1", output, "capitals_gen", limit, max_concurrency=2, max_retries=1)
    first = ServerProcess(smollm2, tmp_path / "first", "--served-name", NAME).start()
    try:
        run = subprocess.Popen([sys.executable, "-m", "lmm_lightning", *[a.format(port=first.port) for a in args]],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        deadline = time.monotonic() + 180
        while len(first.requests()) < 3 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        first.kill()
        killed_at = time.monotonic()
        _, err = run.communicate(timeout=60)
    finally:
        first.stop()
    assert run.returncode != 0
    assert time.monotonic() - killed_at < 30  # failed fast, not after a timeout
    assert "OpenAIModel: request uid" in err and "task 'capitals_gen', doc_id" in err and f"127.0.0.1:{first.port}/v1/chat/completions" in err
    kept = stored(output)
    assert 0 < len(kept) < limit and len({line["key"] for line in kept}) == len(kept)

    # restarted at the same address: the base URL is part of the model's identity in the store
    with ServerProcess(smollm2, tmp_path / "second", "--served-name", NAME, port=first.port) as second:
        done = run_cli([a.format(port=second.port) for a in args])
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(second.requests()) == limit - len(kept)  # nothing paid twice
    assert f"reused {len(kept)} of {limit} requests" in done.stdout + done.stderr
    assert len(samples(output, "capitals_gen")) == limit
    assert len({line["key"] for line in stored(output)}) == len(stored(output)) == limit


def test_429_and_torn_json_are_retried_and_recorded_with_no_duplicate_answers(faults, tmp_path):
    faults.arm("429", 2)
    faults.arm("malformed", 2)
    before = len(faults.requests())
    done = run_cli(served_args(faults.base_url, tmp_path / "out", "capitals_gen", 6))
    assert done.returncode == 0, done.stderr[-3000:]
    received = faults.requests()[before:]
    assert [r["fault"] for r in received].count("429") == 2 and [r["fault"] for r in received].count("malformed") == 2
    assert len(received) == 6 + 4
    lines = stored(tmp_path / "out")
    assert len(lines) == len({line["key"] for line in lines}) == 6
    assert sum(line["usage"]["retries"] for line in lines) == 4
    assert results(tmp_path / "out")["usage"]["capitals_gen"]["retries"] == 4
    rate_limited = [line for line in lines if line["usage"]["retries"]]
    assert min(line["usage"]["latency_s"] for line in rate_limited) >= 0.05  # the back-off is in the latency


def served_model(server: ServerProcess, **options) -> OpenAIModel:
    model = OpenAIModel(server.base_url, NAME, api_key_env=KEY_ENV, **{"backoff": 0.05, **options})
    model.configure_model()
    return model


def gen_request(uid: int, doc_id: int) -> Request:
    return Request(uid=uid, task="capitals_gen", doc_id=doc_id, request_type=RequestType.GENERATE_UNTIL,
                   context="Question: What is the capital of France?\nAnswer:", generation=GenerationSpec(until=("\n",), max_new_tokens=4))


def test_a_hung_request_times_out_and_its_retry_answers(faults, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    faults.arm("hang", 1)
    model = served_model(faults, timeout=2.0)
    started = time.monotonic()
    (response,) = model.generate_until([gen_request(5, 3)])
    assert 2.0 <= time.monotonic() - started < 15
    assert response.text and response.usage.retries == 1 and response.usage.latency_s >= 2.0
    assert model.limit.current < model.limit.ceiling  # a timeout counts as overload


def test_spent_retries_fail_naming_the_request_and_the_cause(faults, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    faults.arm("malformed", 10)
    with pytest.raises(ServedModelError) as caught:
        served_model(faults, max_retries=2).generate_until([gen_request(7, 42)])
    message = str(caught.value)
    assert "request uid 7 (task 'capitals_gen', doc_id 42)" in message and "/v1/chat/completions" in message
    assert "after 3 attempts: malformed JSON" in message and "retried" in message


def test_a_server_without_prompt_logprobs_is_one_clear_error(faults, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    faults.arm("no_logprobs", 1)
    request = Request(uid=0, task="capitals_mc", doc_id=1, request_type=RequestType.LOGLIKELIHOOD,
                      context="The capital of France is", continuation=" Paris")
    with pytest.raises(LogprobsUnsupported, match=f"server at {faults.base_url} returned no logprobs from /completions"):
        served_model(faults).loglikelihood([request])


def test_the_key_comes_from_its_variable_and_a_wrong_one_is_refused(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ServedModelError, match=rf"HTTP 401.*check the API key in \${KEY_ENV}") as caught:
        served_model(server).generate_until([gen_request(0, 0)])
    assert KEY not in str(caught.value)
    monkeypatch.setenv(KEY_ENV, KEY)
    model = served_model(server)
    assert KEY not in json.dumps(dict(model.hparams)) + json.dumps(model.identity())
    assert model.generate_until([gen_request(0, 0)])[0].text


def test_padding_is_answered_locally_and_never_sent(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    requests = [gen_request(0, 0), gen_request(1, 1), gen_request(1, 1)]
    before = len(server.requests())
    model = served_model(server)
    streamed = []
    model.answer_sink = lambda index, response: streamed.append(index)
    responses = model.answer(RequestBatch(requests, [False, False, True]))
    assert len(server.requests()) - before == 2
    assert sorted(streamed) == [0, 1] and responses[2].text == "" and responses[2].usage is None
    assert responses[0].text == responses[1].text != ""


# --- the command: a served model and a served judge, capitals_gen and the judged benchmarks ----------------
def test_served_model_and_judge_score_capitals_gen_mmvet_and_mathvista_on_2_processes_and_resume_for_free(server, tmp_path):
    from tests.fixtures.benchmarks import write_judged_benchmarks

    write_judged_benchmarks(tmp_path / "data")
    output = tmp_path / "out"
    judge = f"base_url={server.base_url},model={NAME},api_key_env={KEY_ENV},backoff=0.05,max_concurrency=4"
    args = served_args(server.base_url, output, "capitals_gen,mmvet,mathvista_testmini", 3) + [
        "--include_path", str(tmp_path / "data"), "--judge_model", "openai", "--judge_model_args", judge,
    ]
    before = len(server.requests())
    first = run_cli([*args, "--devices", "2"], timeout=420)
    assert first.returncode == 0, first.stderr[-3000:]
    sent = server.requests()[before:]
    assert all(r["authorised"] and r["fault"] is None for r in sent)
    assert sum(1 for r in sent if r["images"]) == 6  # every mmvet and mathvista question went with its image

    report = results(output)
    mmvet, mathvista = report["results"]["mmvet"], report["results"]["mathvista_testmini"]
    judged = report["judge"]
    assert judged["mmvet"]["documents"] == judged["mathvista_testmini"]["documents"] == 3
    assert judged["mmvet"]["asked"] + judged["mmvet"]["by_rule"] == 3
    # the score is the mean of the judge's parsed grades; an unreadable grade is counted, never scored 0
    grades = {doc: line["judge"]["parsed"] for doc, line in samples(output, "mmvet").items()}
    unreadable = sorted(doc for doc, grade in grades.items() if grade is None)
    assert judged["mmvet"]["unparsed"] == len(unreadable) and judged["mmvet"]["unparsed_doc_ids"] == unreadable
    readable = [float(g) for g in grades.values() if g is not None]
    assert readable and mmvet["mmvet_score,none"] == pytest.approx(sum(readable) / len(readable))
    assert (mmvet["mmvet_score_stderr,none"] == "N/A") == (len(readable) < 2)
    # MathVista: the quick rules read some answers, the judge extracts the rest; scored with its interval
    extracted = samples(output, "mathvista_testmini")
    assert {line["judge"]["source"] for line in extracted.values()} <= {"judge", "rule"}
    assert sum(line["judge"]["source"] == "rule" for line in extracted.values()) == judged["mathvista_testmini"]["by_rule"]
    assert isinstance(mathvista["mathvista_accuracy_stderr,none"], float)
    judge_calls = sum(judged[t]["asked"] for t in ("mmvet", "mathvista_testmini"))
    assert len(sent) == 3 + 3 + 3 + judge_calls  # each question once, each judge prompt once, across both ranks

    # the same run on 1 process: everything answered is reused, nothing is paid twice, the scores are the same
    before = len(server.requests())
    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert server.requests()[before:] == []
    assert results(output)["results"] == report["results"]
