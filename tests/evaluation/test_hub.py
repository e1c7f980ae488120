"""`--evaluation.push_to_hub`: the Hub client is mocked at its HTTP boundary (huggingface_hub's client
factory gets an httpx2 MockTransport that records every request); no server, no network."""

import base64
import json

import pytest

import httpx2
from huggingface_hub.utils import _http  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402

from lmm_lightning.data import BenchmarkDataModule  # noqa: E402
from lmm_lightning.errors import InputError  # noqa: E402
from lmm_lightning.evaluation import EvaluationCallback  # noqa: E402
from lmm_lightning.evaluation.hub import push_results, split_target  # noqa: E402
from lmm_lightning.models import HFCausalLM  # noqa: E402


class FakeHub:
    """Answers the three calls an upload makes (create repo, preupload, commit) and records them."""

    def __init__(self, fail_status: int = 0) -> None:
        self.requests: list[httpx2.Request] = []
        self.fail_status = fail_status

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        if self.fail_status:
            return httpx2.Response(self.fail_status, json={"error": "Invalid credentials in Authorization header"})
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://huggingface.co/datasets/me/evals", "name": "me/evals"})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if "/commit/" in path:
            url = "https://huggingface.co/datasets/me/evals/commit/" + "a" * 40
            return httpx2.Response(200, json={"commitUrl": url, "commitOid": "a" * 40, "success": True})
        return httpx2.Response(404, json={"error": "not mocked"})

    def find(self, fragment: str) -> list[httpx2.Request]:
        return [r for r in self.requests if r.method == "POST" and fragment in r.url.path]

    def committed(self) -> dict[str, str]:
        """path in repo -> file content of the commit."""
        (commit,) = self.find("/commit/")
        lines = [json.loads(line) for line in commit.content.decode().splitlines()]
        return {l["value"]["path"]: base64.b64decode(l["value"]["content"]).decode() for l in lines if l["key"] == "file"}


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
    _http.close_session()
    yield fake
    _http.set_client_factory(_http.default_client_factory)
    _http.close_session()


def test_split_target():
    assert split_target("me/evals") == ("me/evals", None)
    assert split_target("me/evals/smollm2/run-1/") == ("me/evals", "smollm2/run-1")
    with pytest.raises(InputError, match="org/name|my-org/my-evals"):
        split_target("evals")


def test_evaluation_pushes_results_and_this_runs_samples(tmp_path, hub, tiny_model, tiny_tasks):
    out = tmp_path / "out"
    out.mkdir()
    (out / "samples_old_task.jsonl").write_text("{}\n")  # an earlier run's file stays local
    evaluation = EvaluationCallback(output_dir=str(out), bootstrap_iters=100, print_table=False, resume=False,
                                    push_to_hub="me/evals/tiny")
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[evaluation], enable_progress_bar=False)
    data = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], batch_size=4)
    trainer.predict(HFCausalLM(str(tiny_model)), data, return_predictions=False)

    (create,) = hub.find("/api/repos/create")
    assert json.loads(create.content) == {"name": "evals", "organization": "me", "visibility": "private", "type": "dataset"}
    assert create.headers["authorization"] == "Bearer hf_test_token"
    assert hub.find("/api/datasets/me/evals/preupload/main")
    files = hub.committed()
    assert sorted(files) == ["tiny/results.json", "tiny/samples_tiny_gen.jsonl", "tiny/samples_tiny_mc.jsonl"]
    assert json.loads(files["tiny/results.json"]) == json.loads((out / "results.json").read_text())
    assert files["tiny/samples_tiny_mc.jsonl"] == (out / "samples_tiny_mc.jsonl").read_text()


def test_a_refused_push_says_what_to_do(tmp_path, hub):
    hub.fail_status = 401
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(InputError) as error:
        push_results(tmp_path, "me/evals", ["results.json"])
    message = str(error.value)
    assert "me/evals" in message and str(tmp_path) in message and "hf auth login" in message and "hf upload" in message


def test_a_malformed_repo_id_fails_before_the_evaluation():
    with pytest.raises(InputError, match="push_to_hub"):
        EvaluationCallback(push_to_hub="not-a-repo-id")
