"""A video benchmark end to end through the CLI with the tiny Qwen2-VL taking videos (`videos=`): frames decoded in
two data loader workers, 1 process and 2 DDP processes give identical samples and scores, a rerun resumes every answer
and other frames recompute them all; `lmm-lightning eval --model vlm` runs it with a model that takes frames.

Subprocesses with a timeout, so a hang fails instead of blocking CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.video_files import write_video_task
from tests.fixtures.vision import build_tiny_llava, build_tiny_qwen2_vl

TIMEOUT_S = 300
ROOT = Path(__file__).resolve().parents[2]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}  # tests.fixtures
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def predict(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(config), "--evaluation.output_dir", str(out), *extra]


def outputs(out: Path) -> dict:
    doc = json.loads((out / "results.json").read_text())
    samples = {p.name: p.read_text() for p in sorted(out.glob("samples_*.jsonl"))}
    return {"results": doc["results"], "samples": samples, "doc": doc}


@pytest.fixture(scope="module")
def video_config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video_e2e")
    task = write_video_task(folder / "task", n_videos=3, questions_per_video=2, frames=20)
    config = {
        "model": {"class_path": "tests.fixtures.vision.TinyQwen2VLWithVideos", "init_args": {"pretrained": str(build_tiny_qwen2_vl(folder / "qwen"))}},
        "data": {
            "class_path": "lmm_lightning.data.BenchmarkDataModule",
            "init_args": {"tasks": [str(task)], "batch_size": 2, "num_workers": 2, "video_frames": 4},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "evaluation": {"bootstrap_iters": 100},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, video_config) -> dict:
    out = tmp_path_factory.mktemp("single") / "out"
    run(predict(video_config, out), out.parent)
    return outputs(out) | {"out": out}


def test_one_process_answers_every_question_with_its_frames(single):
    doc = single["doc"]
    assert doc["n-samples"]["tiny_video"]["effective"] == 6
    assert doc["configs"]["tiny_video"]["frame_sampling"] == {"count": 4, "fps": None, "max_frames": None}
    lines = [json.loads(line) for line in single["samples"]["samples_tiny_video.jsonl"].splitlines()]
    assert [line["doc_id"] for line in lines] == list(range(6)) and all(isinstance(line["resps"][0][0], str) for line in lines)


def test_two_processes_match_one(tmp_path, single, video_config):
    run(predict(video_config, tmp_path / "out", "--trainer.devices", "2", "--trainer.strategy", "ddp"), tmp_path)
    got = outputs(tmp_path / "out")
    assert got["samples"] == single["samples"] and got["results"] == single["results"]
    assert got["doc"]["world_size"] == 2


def test_a_rerun_resumes_and_other_frames_recompute(tmp_path, single, video_config):
    out = tmp_path / "out"
    run(predict(video_config, out), tmp_path)
    again = run(predict(video_config, out, "--evaluation.resume", "true"), tmp_path)
    assert "reused 6 of 6" in again.stdout
    assert outputs(out)["samples"] == single["samples"]
    other = run(predict(video_config, out, "--evaluation.resume", "true", "--data.init_args.video_frames", "6"), tmp_path)
    assert "reused" not in other.stdout
    assert json.loads((out / "results.json").read_text())["configs"]["tiny_video"]["frame_sampling"]["count"] == 6


def test_eval_command_with_a_model_taking_frames(tmp_path, video_config):
    task = yaml.safe_load(video_config.read_text())["data"]["init_args"]["tasks"][0]
    llava = build_tiny_llava(tmp_path / "llava")
    command = [sys.executable, "-m", "lmm_lightning", "eval", "--model", "vlm", "--model_args", f"pretrained={llava}", "--tasks", task]
    command += ["--output_path", str(tmp_path / "out"), "--device", "cpu", "--data.video_frames", "3"]
    run(command, tmp_path)
    (results,) = (tmp_path / "out").rglob("results*.json")
    doc = json.loads(results.read_text())
    assert doc["n-samples"]["tiny_video"]["effective"] == 6 and doc["configs"]["tiny_video"]["frame_sampling"]["count"] == 3


# --- the shipped video benchmarks on local copies: Video-MME (+ subtitles), MVBench, ActivityNet-QA judged by a server
def test_shipped_video_benchmarks_on_local_copies_1_and_2_processes(tmp_path):
    from lmm_lightning.assets import smollm2_folder
    from tests.fixtures.openai_server import ServerProcess
    from tests.fixtures.videos import write_video_benchmarks

    written = write_video_benchmarks(tmp_path / "data")
    tasks = "videomme,videomme_w_subtitle,mvbench_fixture,activitynetqa"
    qwen = build_tiny_qwen2_vl(tmp_path / "qwen")
    with ServerProcess(smollm2_folder(), tmp_path / "server", "--served-name", "judge") as server:
        judge = f"base_url={server.base_url},model=judge,backoff=0.05,max_concurrency=4"

        def evaluate(out: Path, *extra: str) -> dict:
            command = [sys.executable, "-m", "lmm_lightning", "eval", "--model", "tests.fixtures.vision.TinyQwen2VLWithVideos"]
            command += ["--model_args", f"pretrained={qwen}", "--tasks", tasks, "--include_path", str(tmp_path / "data")]
            command += ["--judge_model", "openai", "--judge_model_args", judge, "--output_path", str(out), "--log_samples"]
            command += ["--batch_size", "2", "--device", "cpu", "--data.num_workers", "2", "--data.video_frames", "4", *extra]
            run(command, tmp_path)
            (results,) = out.rglob("results*.json")
            samples = {p.name.split("_20")[0]: [{k: v for k, v in json.loads(line).items() if k != "judge"} for line in p.read_text().splitlines()]
                       for p in out.rglob("samples_*.jsonl")}
            return {"doc": json.loads(results.read_text()), "samples": samples}

        one = evaluate(tmp_path / "one")
        two = evaluate(tmp_path / "two", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    doc = one["doc"]
    videomme = doc["results"]["videomme"]
    assert {"videomme_acc,none", "videomme_short,none", "videomme_answered,none"} <= set(videomme)
    assert doc["n-samples"]["videomme"]["effective"] == 3 and "mvbench_fixture" in doc["groups"]
    judged = doc["judge"]["activitynetqa"]  # every answer went to the served judge; a verdict it could not write is unparsed
    assert judged["documents"] == judged["asked"] == doc["n-samples"]["activitynetqa"]["effective"] == 3, judged
    scored = {"activitynetqa_accuracy,none", "activitynetqa_score,none"} <= set(doc["results"]["activitynetqa"])
    assert scored == (judged["unparsed"] < judged["documents"]), (judged, doc["results"]["activitynetqa"])
    assert doc["configs"]["videomme"]["frame_sampling"]["count"] == 4
    # identical samples on 2 processes (the judge's latency fields aside), identical scores
    assert one["samples"] == two["samples"] and set(one["samples"]) >= {"samples_videomme", "samples_activitynetqa"}
    assert doc["results"] == two["doc"]["results"]
    assert written["videomme"].exists()
