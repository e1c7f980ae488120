"""Everything a user sees of an evaluation, as one canonical JSON document, to compare before and after a change.

For each scenario (every shipped benchmark's fixture with scripted answers, and the tiny model on the tiny
tasks) it records results.json, every samples file, the printed table, and what the loggers received (a
TensorBoard logger whose writer is recorded, a CSV logger's files). Run-dependent values are normalised:
`date` and `git_hash` are dropped, temporary folders become "<TMP>", image arrays become digests.

    python tests/snapshot.py tests/snapshot.json      # write the snapshot of the current code
    python -m pytest tests/test_snapshot.py           # compare the current code with it
"""

import contextlib
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import build_tiny_model, write_tiny_tasks  # noqa: E402
from fixtures_benchmarks import GQA_IMAGES, write_text_benchmarks, write_vision_benchmarks  # noqa: E402
from lmm_lightning.data import BenchmarkDataModule  # noqa: E402
from lmm_lightning.evaluation import EvaluationCallback  # noqa: E402
from lmm_lightning.models import EvalModule, HFCausalLM  # noqa: E402
from lmm_lightning.requests import Response  # noqa: E402

del GQA_IMAGES  # imported to make sure the fixture module is the one the tests use


def _digest(text: str) -> float:
    """A deterministic log-probability in (-20, 0] from a request's text."""
    return -int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF * 20.0


class Scripted(EvalModule):
    """Answers from the request's own text only: a generation that varies (noise, letters, numbers,
    a reasoning block) and a log-probability digest, so every scoring path is exercised."""

    ANSWERS = ["Yes", "No.", " (B)\n", "<think>hmm</think>A", "2", "1,234", "The answer is C.", "stop", "no idea"]

    def generate_until(self, requests: list) -> list[Response]:
        pick = lambda r: int(hashlib.sha256(f"{r.task}:{r.doc_id}:{r.repeat}".encode()).hexdigest(), 16)
        return [Response(uid=r.uid, text=self.ANSWERS[pick(r) % len(self.ANSWERS)]) for r in requests]

    def loglikelihood(self, requests: list) -> list[Response]:
        return [Response(uid=r.uid, logprob=_digest(r.context + "|" + r.continuation), is_greedy=_digest(r.continuation) > -10)
                for r in requests]


class Recorder:
    """Stands in for a TensorBoard SummaryWriter and records every call (images as digests)."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> "Recorder":
            self.calls.append([name, [_plain(a) for a in args], {k: _plain(v) for k, v in sorted(kwargs.items())}])
            return self  # `_get_file_writer().add_summary(...)` is recorded too

        return record


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"array_sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(), "shape": list(value.shape)}
    if hasattr(value, "numpy"):
        return _plain(value.detach().cpu().numpy())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return type(value).__name__


class RecordedTensorBoard(TensorBoardLogger):
    """A TensorBoard logger whose writer is a `Recorder`: what TensorBoard would get, without event files."""

    def __init__(self, root: str) -> None:
        super().__init__(root, name="tb", version=0)
        self.recorder = Recorder()

    @property
    def experiment(self) -> Recorder:
        return self.recorder


def _canonical(value: Any, tmp: str) -> Any:
    if isinstance(value, str):
        return value.replace(tmp, "<TMP>")
    if isinstance(value, dict):
        return {k: _canonical(v, tmp) for k, v in value.items() if k not in ("date", "git_hash")}
    if isinstance(value, list):
        return [_canonical(v, tmp) for v in value]
    return value


def run(name: str, model: EvalModule, tasks: list[str], root: Path, **data_args: Any) -> dict[str, Any]:
    """One in-process evaluation; what the user sees of it."""
    out = root / name
    tensorboard, csv = RecordedTensorBoard(str(out / "logs")), CSVLogger(str(out / "logs"), name="csv", version=0)
    callback = EvaluationCallback(output_dir=str(out), bootstrap_iters=200, print_table=True, log_samples=True)
    trainer = Trainer(accelerator="cpu", devices=1, logger=[tensorboard, csv], enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, callbacks=[callback])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        trainer.predict(model, BenchmarkDataModule(tasks, batch_size=4, **data_args), return_predictions=False)
    samples = {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(out.glob("samples_*.jsonl"))}
    csv_files = {str(p.relative_to(out)): p.read_text() for p in sorted((out / "logs" / "csv").rglob("*")) if p.is_file()}
    doc = {
        "results": json.loads((out / "results.json").read_text()),
        "samples": samples,
        "table": printed.getvalue(),
        "tensorboard": tensorboard.recorder.calls,
        "csv": csv_files,
    }
    return _canonical(doc, str(root))


@contextlib.contextmanager
def one_thread_and_gqa_images(images: Path):
    """One math thread (the recorded log-probs were computed so) and the fixture's GQA images, then as before."""
    threads, previous = torch.get_num_threads(), os.environ.get("LMM_LIGHTNING_GQA_IMAGES")
    torch.set_num_threads(1)
    os.environ["LMM_LIGHTNING_GQA_IMAGES"] = str(images)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop("LMM_LIGHTNING_GQA_IMAGES")
        else:
            os.environ["LMM_LIGHTNING_GQA_IMAGES"] = previous


def snapshot(root: Path) -> dict[str, Any]:
    """Every scenario's canonical outputs."""
    root.mkdir(parents=True, exist_ok=True)
    vision, gqa_images = write_vision_benchmarks(root / "vision")
    text = write_text_benchmarks(root / "text")
    tiny_tasks = write_tiny_tasks(root / "tiny_tasks")
    tiny_model = build_tiny_model(root / "tiny_model")
    with one_thread_and_gqa_images(gqa_images):
        return {
            "vision": run("vision", Scripted(), [str(p) for p in vision.values()], root),
            "text": run("text", Scripted(), [str(p) for p in text.values()], root),
            "text_fewshot": run("text_fewshot", Scripted(), [str(text["arc_easy"]), str(text["hellaswag"])], root, num_fewshot=1),
            "tiny_model": run("tiny_model", HFCausalLM(str(tiny_model)), [str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], root),
        }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=True) + "\n"


if __name__ == "__main__":
    import tempfile

    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "snapshot.json")
    with tempfile.TemporaryDirectory() as tmp:
        target.write_text(dumps(snapshot(Path(tmp))))
    print(f"wrote {target}")
