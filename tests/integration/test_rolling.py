"""Perplexity end to end (`loglikelihood_rolling`): the tiny Llama with a 16-token context on wikitext-like pages
that span up to many windows. Per-document log-likelihoods equal lm-evaluation-harness 0.4.13's HFLM on the same
model folder, the corpus scores equal its aggregations, and 2 processes and a resumed run give the same values.

Runs are CLI subprocesses with a timeout; lm-eval's HFLM is built in this process from the saved folder.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
from lm_eval.api.task import Task as LmEvalTask
from transformers import AutoTokenizer

from tests.fixtures.pages import MAX_LENGTH, PAGES, write_pages_tasks

TIMEOUT_S = 300
TASKS = ("wikitext_local", "pages_plain")
METRICS = {"word_perplexity": weighted_perplexity, "byte_perplexity": weighted_perplexity, "bits_per_byte": bits_per_byte}


def write_config(folder: Path, tiny_model: Path, pages: Path, batch_size: int = 3) -> Path:
    config = {
        "model": {
            "class_path": "lmm_lightning.models.HFCausalLM",
            "init_args": {"pretrained": str(tiny_model), "max_length": MAX_LENGTH},
        },
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": [str(pages / f"{task}.yaml") for task in TASKS], "batch_size": batch_size},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 200},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def predict(config: Path, out: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(config), "--evaluation.output_dir", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=config.parent, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def read(out: Path) -> dict:
    """results.json and each task's samples records."""
    results = json.loads((out / "results.json").read_text())
    samples = {task: [json.loads(line) for line in (out / f"samples_{task}.jsonl").read_text().splitlines()] for task in TASKS}
    return {"doc": results, "samples": samples}


def loglikelihoods(outputs: dict, task: str) -> list[float]:
    return [record["resps"][0][0] for record in outputs["samples"][task]]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    return write_pages_tasks(tmp_path_factory.mktemp("pages"))


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model, pages) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("single")
    config = write_config(folder, tiny_model, pages)
    predict(config, folder / "out")
    return config, read(folder / "out")


@pytest.fixture(scope="module")
def lm_eval_reference(tiny_model, single) -> dict[str, list[float]]:
    """lm-eval's HFLM.loglikelihood_rolling on the texts our run scored (the detokenized pages for wikitext)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_model), max_length=MAX_LENGTH, dtype="float32", batch_size=4, device="cpu")
    _, outputs = single
    reference = {}
    for task in TASKS:
        texts = [record["arguments"][0][0] for record in outputs["samples"][task]]
        instances = [Instance("loglikelihood_rolling", doc={}, arguments=(text,), idx=0) for text in texts]
        reference[task] = [float(x) for x in lm.loglikelihood_rolling(instances, disable_tqdm=True)]
    return reference


def test_the_pages_are_shorter_than_as_long_as_and_many_times_the_context(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [len(tokenizer(page, add_special_tokens=False).input_ids) for page in PAGES]
    assert 0 in lengths and MAX_LENGTH in lengths and MAX_LENGTH + 2 in lengths and max(lengths) > 5 * MAX_LENGTH
    assert any(0 < n < MAX_LENGTH for n in lengths)


def test_per_document_loglikelihoods_equal_lm_evals_hflm(single, lm_eval_reference):
    _, outputs = single
    for task in TASKS:
        records = outputs["samples"][task]
        assert [r["doc"]["page"] for r in records] == PAGES
        assert loglikelihoods(outputs, task) == pytest.approx(lm_eval_reference[task], abs=1e-4), task


def test_corpus_scores_equal_lm_evals_aggregations(single, lm_eval_reference):
    """lm-eval's per-document pairs: wikitext's process_results counts the raw page; otherwise its
    count_words / count_bytes of the target. Then its own weighted_perplexity and bits_per_byte."""
    _, outputs = single
    for task in TASKS:
        pairs = {
            "word_perplexity": [(ll, LmEvalTask.count_words(page)) for ll, page in zip(lm_eval_reference[task], PAGES)],
            "byte_perplexity": [(ll, LmEvalTask.count_bytes(page)) for ll, page in zip(lm_eval_reference[task], PAGES)],
        }
        pairs["bits_per_byte"] = pairs["byte_perplexity"]
        if task == "pages_plain":  # its target is the page itself: the same units
            records = outputs["samples"][task]
            assert [r["word_perplexity"][1] for r in records] == [words for _, words in pairs["word_perplexity"]]
            assert [r["bits_per_byte"][1] for r in records] == [n for _, n in pairs["bits_per_byte"]]
        results = outputs["doc"]["results"][task]
        for metric, aggregation in METRICS.items():
            assert results[f"{metric},none"] == pytest.approx(aggregation(pairs[metric]), rel=1e-6), (task, metric)
            assert results[f"{metric}_stderr,none"] > 0  # a bootstrap over documents, not N/A
        assert outputs["doc"]["integrity"][task]["requests_answered"] == len(PAGES)
        assert outputs["doc"]["higher_is_better"][task] == dict.fromkeys(METRICS, False)


def test_two_processes_give_identical_values(tmp_path, single):
    config, expected = single
    predict(config, tmp_path / "out", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    got = read(tmp_path / "out")
    assert got["samples"] == expected["samples"]
    assert got["doc"]["results"] == expected["doc"]["results"]
    assert got["doc"]["world_size"] == 2


def test_a_resumed_run_gives_the_same_values(tmp_path, tiny_model, pages, single):
    """A first run stopped after 3 pages (a smaller limit) leaves its answers in the store; the full run
    on the same folder, with another batch size, reuses those and computes the rest."""
    _, expected = single
    config = write_config(tmp_path, tiny_model, pages, batch_size=2)
    predict(config, tmp_path / "out", "--data.limit", "3")
    predict(config, tmp_path / "out")
    got = read(tmp_path / "out")
    for task in TASKS:
        assert got["doc"]["integrity"][task]["resumed"] == 3
        assert loglikelihoods(got, task) == pytest.approx(loglikelihoods(expected, task), rel=1e-6, abs=1e-5)  # float32 sums of up to 90 nats: batches differ
    for task in TASKS:
        for metric in METRICS:
            key = f"{metric},none"
            assert got["doc"]["results"][task][key] == pytest.approx(expected["doc"]["results"][task][key], rel=1e-6)
