"""Vision-language models: batching never changes an answer, images reach the model, and easy-VQA runs
end to end with the same outputs on 1 and 2 processes.

Models are a tiny random LLaVA and a tiny random Qwen2-VL built offline (tests/fixtures/vision.py).
"""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import lmm_lightning.models.hf_vision as hf_vision
from tests.fixtures.vision import build_tiny_llava, build_tiny_qwen2_vl, qwen2_vl_processor
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.datamodule import RequestBatch, RequestDataset
from lmm_lightning.data.sampler import PaddedDistributedSampler
from lmm_lightning.errors import InputError
from lmm_lightning.models import HFVisionLM
from lmm_lightning.requests import GenerationSpec, Request, RequestType

TIMEOUT_S = 300
QUESTIONS = [
    "what is the color of the shape?",
    "does the image contain a circle?",
    "what shape is in the image? Answer:",
    "is there a triangle in the image? ",
]
ANSWERS = [" red", " yes", " circle", "no", " blue triangle"]


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory) -> Path:
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny_qwen2_vl"))


class _Qwen2VLProcessorLoader:
    """Stands in for `AutoProcessor`, which cannot load a Qwen2-VL processor without torchvision."""

    @staticmethod
    def from_pretrained(path: str, **kwargs) -> object:
        return qwen2_vl_processor(path)


def load(path: Path, monkeypatch: pytest.MonkeyPatch = None, **kwargs) -> HFVisionLM:
    if monkeypatch is not None:
        monkeypatch.setattr(hf_vision, "AutoProcessor", _Qwen2VLProcessorLoader)
    model = HFVisionLM(str(path), **kwargs)
    model.configure_model()
    return model


@pytest.fixture(scope="module", params=["llava", "qwen2_vl", "llava_plain"])
def model(request, tiny_llava, tiny_qwen2_vl) -> HFVisionLM:
    """Each tiny model with its chat template, and LLaVA without one (image tokens before the text)."""
    if request.param == "qwen2_vl":
        with pytest.MonkeyPatch.context() as monkeypatch:
            return load(tiny_qwen2_vl, monkeypatch)
    return load(tiny_llava, use_chat_template=request.param == "llava")


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")) for _ in range(n)]


def loglikelihood_requests(n: int) -> list[Request]:
    kind = RequestType.LOGLIKELIHOOD
    return [
        Request(uid=i, task="t", doc_id=i, request_type=kind, context=QUESTIONS[i % 4], continuation=ANSWERS[i % 5])
        for i in range(n)
    ]


def generation_requests(n: int, **spec) -> list[Request]:
    generation = GenerationSpec(**{"until": ("\n",), "max_new_tokens": 6, **spec})
    kind = RequestType.GENERATE_UNTIL
    return [
        Request(uid=i, task="t", doc_id=i, request_type=kind, context=QUESTIONS[i % 4], generation=generation)
        for i in range(n)
    ]


def visuals(n: int) -> list[list[Image.Image]]:
    """Different images per request: one, two, or none (a text-only request in an image batch)."""
    pool = images(5)
    return [[] if i % 4 == 3 else [pool[i % 5]] if i % 2 else [pool[i % 5], pool[(i + 2) % 5]] for i in range(n)]


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_batched_loglikelihood_equals_unbatched(model, batch_size):
    requests, pictures = loglikelihood_requests(8), visuals(8)
    one = [model.loglikelihood([r], [v])[0] for r, v in zip(requests, pictures)]
    batched = []
    for start in range(0, len(requests), batch_size):
        batched += model.loglikelihood(requests[start : start + batch_size], pictures[start : start + batch_size])
    assert [r.uid for r in batched] == [r.uid for r in requests]
    for a, b in zip(one, batched):
        assert math.isfinite(a.logprob) and a.logprob < 0
        assert abs(a.logprob - b.logprob) < 1e-4 and a.is_greedy == b.is_greedy


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_batched_generation_equals_unbatched(model, batch_size):
    requests, pictures = generation_requests(8), visuals(8)
    one = [model.generate_until([r], [v])[0].text for r, v in zip(requests, pictures)]
    batched = []
    for start in range(0, len(requests), batch_size):
        chunk = slice(start, start + batch_size)
        batched += [r.text for r in model.generate_until(requests[chunk], pictures[chunk])]
    assert batched == one
    assert all("\n" not in text for text in one)


def test_images_reach_the_model(model):
    request = loglikelihood_requests(1)
    first, second = images(2, seed=1)
    with_first = model.loglikelihood(request, [[first]])[0].logprob
    with_second = model.loglikelihood(request, [[second]])[0].logprob
    with_both = model.loglikelihood(request, [[first, second]])[0].logprob
    without = model.loglikelihood(request, [[]])[0].logprob
    assert len({with_first, with_second, with_both, without}) == 4


def test_prompt_places_one_image_entry_per_image(tiny_llava):
    chat = load(tiny_llava, system_prompt="Be brief.")
    assert chat.prompt("what?", 2) == "SYSTEM: Be brief.\nUSER: <image>\n<image>\nwhat?\nASSISTANT:"
    plain = load(tiny_llava, use_chat_template=False)
    assert plain.prompt("what?", 2) == "<image>\n<image>\nwhat?"
    assert plain.prompt("what?", 0) == "what?"


def test_sampling_is_seeded_per_request(tiny_llava):
    """By (seed, task, doc_id, repeat): not by the uid (which shifts with the other tasks) nor the batch."""
    model = load(tiny_llava)
    requests, pictures = generation_requests(4, do_sample=True, temperature=1.5, max_new_tokens=8, until=()), visuals(4)
    first = [r.text for r in model.generate_until(requests, pictures)]
    assert [r.text for r in model.generate_until(requests, pictures)] == first
    shifted = [replace(r, uid=r.uid + 100) for r in requests]
    assert [r.text for r in model.generate_until(shifted, pictures)] == first
    assert model.generate_until(requests[2:3], pictures[2:3])[0].text == first[2]
    repeated = [replace(r, repeat=1) for r in requests]
    assert [r.text for r in model.generate_until(repeated, pictures)] != first


def test_bfloat16_and_long_prompts(tiny_llava):
    model = load(tiny_llava, dtype="bfloat16", max_length=40)
    (response,) = model.loglikelihood(loglikelihood_requests(1), [images(1)])
    assert math.isfinite(response.logprob)
    long = [replace(loglikelihood_requests(1)[0], context="red " * 60)]
    assert math.isfinite(model.loglikelihood(long, [[]])[0].logprob)  # text only: truncated on the left
    with pytest.raises(InputError, match="max_length"):
        model.loglikelihood(long, [images(1)])
    with pytest.raises(InputError, match="model.dtype"):
        HFVisionLM(str(tiny_llava), dtype="float64").configure_model()


# --- the easy-VQA benchmark ---------------------------------------------------------------------
def test_easy_vqa_tasks_load_with_lazy_images():
    data = BenchmarkDataModule(["easy_vqa_mc", "easy_vqa_gen"], limit=8, batch_size=4)
    data.setup()
    mc, gen = data.documents["easy_vqa_mc"], data.documents["easy_vqa_gen"]
    assert mc.n_original == gen.n_original == 9673
    assert len(mc.docs) == 8 and "image" not in mc.docs[0]  # images are not in the text view
    assert mc.docs[0]["choices"][mc.docs[0]["answer_index"]] == mc.docs[0]["answer"]
    assert len(mc.docs[0]["choices"]) == 13
    assert len(data.requests) == 8 * 13 + 8
    dataset = RequestDataset(data.requests, data.documents)
    batches = [dataset[index] for index in PaddedDistributedSampler(dataset, data.requests, 4, 1, 0)]
    for batch in batches:
        assert len(batch.visuals) == len(batch.requests)
        assert all(len(v) == 1 and isinstance(v[0], Image.Image) and v[0].size == (64, 64) for v in batch.visuals)


def test_easy_vqa_train_split_and_errors():
    from lmm_lightning.tasks.builtin.easy_vqa import loader

    train = loader.load("train")
    assert len(train) == 38575
    assert set(train.column_names) == {"question", "answer", "image", "image_id", "choices", "answer_index"}
    with pytest.raises(InputError, match="test_split"):
        loader.load("validation")


# --- end to end through the CLI -----------------------------------------------------------------
def run_cli(folder: Path, config: Path, *extra: str) -> dict:
    out = folder / "out"
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(config), "--evaluation.output_dir", str(out)]
    command += extra
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    samples = {p.name: p.read_text() for p in sorted(out.glob("samples_*.jsonl"))}
    return {"results": doc["results"], "samples": samples, "doc": doc}


@pytest.fixture(scope="module")
def vlm_config(tmp_path_factory, tiny_llava) -> Path:
    config = {
        "model": {"class_path": "lmm_lightning.models.HFVisionLM", "init_args": {"pretrained": str(tiny_llava)}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": ["easy_vqa_mc", "easy_vqa_gen"], "batch_size": 4, "limit": 8},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 100},
    }
    path = tmp_path_factory.mktemp("vlm_config") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def single_vlm(tmp_path_factory, vlm_config) -> dict:
    return run_cli(tmp_path_factory.mktemp("single_vlm"), vlm_config)


def test_easy_vqa_single_process(single_vlm):
    results = single_vlm["results"]
    assert {"acc,none", "acc_stderr,none"} <= set(results["easy_vqa_mc"])
    assert "exact_match,none" in results["easy_vqa_gen"]
    assert single_vlm["doc"]["n-samples"]["easy_vqa_mc"] == {"original": 9673, "effective": 8}
    lines = [json.loads(line) for line in single_vlm["samples"]["samples_easy_vqa_mc.jsonl"].splitlines()]
    assert [line["doc_id"] for line in lines] == list(range(8))
    assert all(len(line["filtered_resps"]) == 13 and "image" not in line["doc"] for line in lines)


def test_easy_vqa_two_processes_match_one(tmp_path, vlm_config, single_vlm):
    got = run_cli(tmp_path, vlm_config, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert got["samples"] == single_vlm["samples"]
    assert got["results"] == single_vlm["results"]
    assert got["doc"]["world_size"] == 2


def test_demo_config_runs(tmp_path, tiny_llava):
    """configs/demo_vlm.yaml as shipped (images decoded in 2 loader workers), on the tiny LLaVA and 4 documents."""
    config = Path(__file__).resolve().parents[2] / "configs" / "demo_vlm.yaml"
    got = run_cli(tmp_path, config, "--model.init_args.pretrained", str(tiny_llava), "--data.init_args.limit", "4")
    assert got["doc"]["n-samples"]["easy_vqa_gen"] == {"original": 9673, "effective": 4}


@pytest.mark.parametrize("chat", [True, False])
def test_shared_context_reuse_matches_separate_forwards(tiny_llava, chat):
    """Multiple choice with images: the prompt and its images run once for all choices, same log-probs."""
    pool = images(3, seed=4)
    choices = [" circle", " blue square", " a red triangle shape", " no"]
    requests, visual = [], []
    for doc in range(3):
        for j, choice in enumerate(choices):
            requests.append(Request(len(requests), "t", doc, RequestType.LOGLIKELIHOOD, f"What shape is shown, number {doc}?", choice, j))
            visual.append([pool[doc]])
    shared = load(tiny_llava, use_chat_template=chat, reuse_context=True)
    separate = load(tiny_llava, use_chat_template=chat, reuse_context=False)
    a, b = shared.loglikelihood(requests, visual), separate.loglikelihood(requests, visual)
    for x, y in zip(a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4) and x.is_greedy == y.is_greedy


@pytest.mark.parametrize("reuse_context", [True, False])
def test_shared_prompt_and_images_are_encoded_once(tiny_llava, monkeypatch, reuse_context):
    """Two questions with three choices each: the processor sees each prompt (with its images) alone
    once and each prompt+choice once: 2 + 6 calls, not 2 per choice."""
    pool = images(2, seed=5)
    requests = [
        Request(3 * doc + j, "t", doc, RequestType.LOGLIKELIHOOD, f"Which colour, number {doc}?", choice, j)
        for doc in range(2)
        for j, choice in enumerate([" red", " deep blue", " green or not"])
    ]
    visual = [[pool[r.doc_id]] for r in requests]
    model = load(tiny_llava, reuse_context=reuse_context)
    expected = [model.loglikelihood([r], [v])[0].logprob for r, v in zip(requests, visual)]
    calls = []
    encode = HFVisionLM.encode
    monkeypatch.setattr(HFVisionLM, "encode", lambda self, text, imgs, videos=None: calls.append(text) or encode(self, text, imgs, videos))
    got = model.loglikelihood(requests, visual)
    assert len(calls) == 8 and len(set(calls)) == 8
    assert [r.logprob for r in got] == pytest.approx(expected, abs=1e-4)


def test_a_rolling_request_is_refused_with_the_model_to_use(tiny_llava):
    model = HFVisionLM(str(tiny_llava))  # refused before any weights are needed
    request = Request(uid=0, task="wiki", doc_id=3, request_type=RequestType.LOGLIKELIHOOD_ROLLING, context="", continuation="text")
    with pytest.raises(InputError, match="HFVisionLM on task 'wiki', doc_id 3: loglikelihood_rolling .*models.HFCausalLM"):
        model.answer(RequestBatch([request], [False]))


def test_the_vision_model_takes_one_turn_and_refuses_examples_as_chat_turns():
    from lmm_lightning.errors import InputError
    from lmm_lightning.models import HFVisionLM
    from lmm_lightning.requests import ChatMessage, Request, RequestType

    described = Request(0, "t", 3, RequestType.GENERATE_UNTIL, "Intro. Q?", messages=(ChatMessage("system", "Intro. "), ChatMessage("user", "Q?")))
    assert HFVisionLM.single_turn(described) == "Intro. Q?"  # the description stays in the one user turn
    shots = (ChatMessage("user", "Q1"), ChatMessage("assistant", "A1"), ChatMessage("user", "Q?"))
    with pytest.raises(InputError, match=r"task 't', doc_id 3: data.fewshot_as_multiturn is supported by HFCausalLM"):
        HFVisionLM.single_turn(Request(0, "t", 3, RequestType.GENERATE_UNTIL, "Q1 A1\n\nQ?", messages=shots))
