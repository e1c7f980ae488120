"""models/loading.py: the `from_pretrained` options of the text and the vision model, checked before any weights load."""

import doctest
from types import SimpleNamespace

import pytest
import torch

import lmm_lightning.models.loading as loading
from lmm_lightning.errors import InputError
from lmm_lightning.models.loading import pretrained_options, torch_dtype


def test_docstring_examples_run():
    results = doctest.testmod(loading)
    assert results.attempted > 0 and results.failed == 0


def test_options_name_the_dtype_and_only_a_chosen_attention(tiny_model):
    hparams = SimpleNamespace(pretrained=str(tiny_model), dtype="float16", trust_remote_code=False, attn_implementation=None)
    assert pretrained_options(hparams) == (str(tiny_model), {"dtype": torch.float16, "trust_remote_code": False})
    hparams.attn_implementation = "eager"
    assert pretrained_options(hparams)[1]["attn_implementation"] == "eager"
    with pytest.raises(InputError, match=r"model.dtype: expected one of \['bfloat16', 'float16', 'float32'\], got 'float8'"):
        torch_dtype("float8")


# --- models as users name them: hub ids from the cache, revisions, PEFT adapters, device_map ----------------
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import torch.nn.functional as F
from huggingface_hub import scan_cache_dir
from transformers import AutoModelForCausalLM

from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.loading import check_device_map, resolve_source
from lmm_lightning.requests import Request, RequestType
from tests.fixtures import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
REPO = "tiny-org/tiny-llama"
PAIRS = [("Question: What is the capital of France? Answer:", " Paris"), ("one two three", " four five six")]


def add_commit(cache: Path, repo_id: str, folder: Path, branch: str) -> str:
    """Put `folder` into a hub cache as one commit of `repo_id` on `branch`, in huggingface_hub's documented
    layout: models--org--name/{blobs/<digest>, refs/<branch>, snapshots/<commit>/<file> -> blob}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in folder.iterdir() if p.is_file())
    commit = hashlib.sha1(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
    for path in files:
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = repo / "snapshots" / commit / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tiny_model):
    """A hub cache holding REPO at two commits: `main` (the tiny model) and `dev` (other weights)."""
    cache = tmp_path_factory.mktemp("hub")
    other = build_tiny_model(tmp_path_factory.mktemp("other"), seed=1)
    commits = {"main": add_commit(cache, REPO, tiny_model, "main"), "dev": add_commit(cache, REPO, other, "dev")}
    return cache, commits


@pytest.fixture
def offline(monkeypatch, hub_cache):
    """HF_HUB_CACHE and HF_HUB_OFFLINE=1 as huggingface_hub reads them (its constants are set at import)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache[0]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return hub_cache


def logprobs(module: HFCausalLM) -> list[float]:
    module.configure_model()
    requests = [Request(i, "t", i, RequestType.LOGLIKELIHOOD, c, k) for i, (c, k) in enumerate(PAIRS)]
    return [r.logprob for r in module.loglikelihood(requests)]


def test_the_fixture_cache_is_one_huggingface_hub_reads(offline):
    cache, commits = offline
    (repo,) = scan_cache_dir(cache).repos
    assert repo.repo_id == REPO and {r.commit_hash for r in repo.revisions} == set(commits.values())
    assert {ref for r in repo.revisions for ref in r.refs} == {"main", "dev"}


def test_a_hub_id_loads_offline_from_the_cache(offline, tiny_model):
    cache, commits = offline
    module = HFCausalLM(pretrained=REPO)
    assert module.source.path == str(cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / commits["main"])
    assert module.source.commit == commits["main"] and module.source.repo_id == REPO
    assert logprobs(module) == logprobs(HFCausalLM(pretrained=str(tiny_model)))


@pytest.mark.parametrize("revision", ["dev", "commit"])
def test_a_revision_selects_a_branch_or_a_commit(offline, revision):
    cache, commits = offline
    wanted = commits["dev"] if revision == "dev" else commits["main"]
    source = resolve_source(REPO, revision if revision == "dev" else commits["main"])
    assert source.commit == wanted and Path(source.path).name == wanted
    assert logprobs(HFCausalLM(pretrained=REPO, revision="dev")) != logprobs(HFCausalLM(pretrained=REPO))


def test_a_missing_id_or_revision_says_where_it_looked(offline):
    cache, _ = offline
    with pytest.raises(InputError) as error:
        HFCausalLM(pretrained="tiny-org/absent")
    message = str(error.value)
    assert "\n" not in message and str(cache) in message and "'tiny-org/absent'" in message
    assert "revision 'main'" in message and "HF_HUB_OFFLINE is set" in message
    with pytest.raises(InputError, match=r"has no 'tiny-org/tiny-llama' at revision 'v9'; HF_HUB_OFFLINE is set"):
        HFCausalLM(pretrained=REPO, revision="v9")


def test_a_revision_of_a_local_folder_is_refused(tiny_model):
    with pytest.raises(InputError, match=r"model.revision: 'dev' selects a version of a Hugging Face hub id"):
        HFCausalLM(pretrained=str(tiny_model), revision="dev")


def test_two_revisions_have_two_identities(offline):
    main, dev = HFCausalLM(pretrained=REPO), HFCausalLM(pretrained=REPO, revision="dev")
    assert main.identity() == HFCausalLM(pretrained=REPO).identity()
    assert main.identity()["source"]["commit"] != dev.identity()["source"]["commit"]
    assert main.identity()["source"]["files"] != dev.identity()["source"]["files"]


def test_a_run_resumed_on_another_revision_recomputes(hub_cache, tmp_path):
    """Real environment variables, read by huggingface_hub at import, in a CLI run."""
    cache, _ = hub_cache
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"

    def run(revision: str) -> dict:
        command = [sys.executable, "-m", "lmm_lightning", "predict", "--model.class_path", "lmm_lightning.models.HFCausalLM"]
        command += ["--model.init_args.pretrained", REPO, "--model.init_args.revision", revision]
        command += ["--data.class_path", "lmm_lightning.data.BenchmarkDataModule", "--data.init_args.tasks", "[capitals_mc]"]
        command += ["--data.init_args.limit", "3", "--trainer.accelerator", "cpu", "--trainer.devices", "1"]
        command += ["--evaluation.output_dir", str(out), "--evaluation.bootstrap_iters", "10"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        results = json.loads((out / "results.json").read_text())
        source = results["model_source"]
        return {"resumed": results["integrity"]["capitals_mc"]["resumed"], "acc": results["results"]["capitals_mc"]["acc_norm,none"],
                "commit": source["commit"], "repo": source["repo_id"], "digest": source["files_digest"]}

    first = run("main")
    assert first["resumed"] == 0 and first["repo"] == REPO and len(first["commit"]) == 40
    dev = run("dev")
    assert dev["resumed"] == 0  # another commit: nothing served from the main run
    assert dev["commit"] != first["commit"] and dev["digest"] != first["digest"]  # results.json says which files ran
    assert run("main") == {**first, "resumed": 12}  # 3 questions x 4 choices, all reused


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model):
    """A LoRA adapter built with peft on the tiny model, with non-zero weights (so it changes the scores)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder


def test_a_peft_adapter_scores_as_peft_merged_model(tiny_model, adapter):
    from peft import PeftModel

    module = HFCausalLM(pretrained=str(tiny_model), peft=str(adapter))
    got = logprobs(module)
    assert got != logprobs(HFCausalLM(pretrained=str(tiny_model)))
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(adapter)).merge_and_unload()
    reference = HFCausalLM(pretrained=str(tiny_model))
    reference.model = merged.eval()
    assert got == pytest.approx(logprobs(reference), abs=1e-5)
    identity = module.identity()["source"]["peft"]
    assert identity["path"] == str(adapter) and "adapter_model.safetensors" in [f[0] for f in identity["files"]]


def test_an_adapter_folder_without_its_config_or_peft_is_refused(tiny_model, tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"model.peft: .* has no adapter_config.json"):
        HFCausalLM(pretrained=str(tiny_model), peft=str(tmp_path))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else find_spec(name, *a))
    with pytest.raises(InputError, match=r"model.peft: loading an adapter needs the `peft` package: pip install peft"):
        HFCausalLM(pretrained=str(tiny_model), peft=str(tmp_path))


def test_a_device_map_model_stays_where_accelerate_placed_it(tiny_model):
    module = HFCausalLM(pretrained=str(tiny_model), device_map="cpu")
    module.configure_model()
    assert "model" not in dict(module.named_children())
    module.to(torch.float64)  # what a strategy's move does to the module tree
    assert module.model.dtype == torch.float32
    assert logprobs(module) == logprobs(HFCausalLM(pretrained=str(tiny_model)))


def test_device_map_with_several_processes_is_refused():
    check_device_map("auto", 1)
    with pytest.raises(InputError, match=r"model.device_map: 'auto' spreads one copy .* but the run has 2 processes"):
        check_device_map("auto", 2)
