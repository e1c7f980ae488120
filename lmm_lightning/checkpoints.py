"""`lmm-lightning eval-checkpoints DIR --tasks a,b`: every checkpoint of a training run, evaluated in step order.

DIR holds Lightning checkpoints (`*.ckpt`, e.g. `epoch=3-step=800.ckpt`; loaded with `--model CLASS`'s
`load_from_checkpoint`) and/or Hugging Face checkpoint folders (`checkpoint-800/` with a `config.json`, as
`transformers.Trainer` saves them; loaded as `HFCausalLM`, or `HFVisionLM` with `--model vlm`). Each is evaluated
into `<output>/step_<N>/` (results.json and samples, as `lmm-lightning predict` writes them) next to a
`checkpoint.json` naming the files evaluated; a step whose folder is finished for the same files is not evaluated
again, so an interrupted sweep resumes where it stopped. Consecutive steps are compared per document
(`change.json`), and `<output>/scores.csv` and `scores.png` hold every metric against the step with its interval.
"""

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lmm_lightning.errors import EXIT_INPUT_ERROR, InputError

STEP_IN_CKPT = re.compile(r"step=(\d+)")
STEP_IN_FOLDER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of the run: the training step it holds, its file or folder, and its kind."""

    step: int
    path: Path
    kind: str  # "lightning" (a .ckpt file) or "hf" (a from_pretrained folder)


def lightning_step(path: Path) -> Optional[int]:
    """The step of a Lightning checkpoint: from its name (`epoch=3-step=800.ckpt`), else its `global_step`.

    >>> lightning_step(Path("epoch=3-step=800.ckpt"))
    800
    """
    match = STEP_IN_CKPT.search(path.stem)
    if match:
        return int(match.group(1))
    import torch

    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return int(step) if isinstance(step, int) else None


def hf_step(folder: Path) -> Optional[int]:
    """The step of a Hugging Face checkpoint folder: its name's trailing number (`checkpoint-800`), else the
    `global_step` of its `trainer_state.json`.

    >>> hf_step(Path("runs/checkpoint-800"))
    800
    """
    match = STEP_IN_FOLDER.search(folder.name)
    if match:
        return int(match.group(1))
    state = folder / "trainer_state.json"
    if state.is_file():
        step = json.loads(state.read_text()).get("global_step")
        return int(step) if isinstance(step, int) else None
    return None


def find_checkpoints(folder: Path) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints in `folder` (and its subfolders for .ckpt files), one per step in step order, and a note
    for each one skipped (no step to be found, or a second checkpoint of a step already found)."""
    found: list[Checkpoint] = []
    notes: list[str] = []
    for path in sorted(folder.rglob("*.ckpt")):
        step = lightning_step(path)
        found.append(Checkpoint(step, path, "lightning")) if step is not None else notes.append(f"{path}: no step in its name or contents")
    for path in sorted([folder, *(p for p in folder.iterdir() if p.is_dir())]):
        if (path / "config.json").is_file():
            step = hf_step(path)
            found.append(Checkpoint(step, path, "hf")) if step is not None else notes.append(f"{path}: no step in its name or trainer_state.json")
    by_step: dict[int, Checkpoint] = {}
    for checkpoint in sorted(found, key=lambda c: (c.step, c.path.name == "last.ckpt", str(c.path))):
        if checkpoint.step in by_step:
            notes.append(f"{checkpoint.path}: step {checkpoint.step} is {by_step[checkpoint.step].path} already")
            continue
        by_step[checkpoint.step] = checkpoint
    return [by_step[s] for s in sorted(by_step)], notes


def fingerprint(checkpoint: Checkpoint) -> list[list[Any]]:
    """Name, size, modification time and sampled digest of the checkpoint's files: new weights, new fingerprint."""
    from lmm_lightning.models.base import _sampled_digest, folder_fingerprint

    if checkpoint.kind == "hf":
        return folder_fingerprint(str(checkpoint.path))
    stat = checkpoint.path.stat()
    return [[checkpoint.path.name, stat.st_size, stat.st_mtime_ns, _sampled_digest(checkpoint.path, stat.st_size)]]


def same_files(checkpoint: Checkpoint, folder: Path) -> bool:
    """The step's folder was (or is being) evaluated from these very files (its `checkpoint.json`)."""
    record = folder / "checkpoint.json"
    return record.is_file() and json.loads(record.read_text()).get("files") == json.loads(json.dumps(fingerprint(checkpoint)))


def is_done(checkpoint: Checkpoint, folder: Path) -> bool:
    """The step's folder is finished (results.json) and was evaluated from these very files."""
    return (folder / "results.json").is_file() and same_files(checkpoint, folder)


def prepare_folder(checkpoint: Checkpoint, folder: Path) -> None:
    """Name the files about to be evaluated in `checkpoint.json`. Answers stored from other files under the same
    step (a checkpoint written over) are removed first: the model's identity cannot tell the two apart."""
    import shutil

    from lmm_lightning.evaluation.results import write_atomic
    from lmm_lightning.evaluation.store import STORE_DIR

    if not same_files(checkpoint, folder):
        shutil.rmtree(folder / STORE_DIR, ignore_errors=True)
        (folder / "results.json").unlink(missing_ok=True)
    record = {"step": checkpoint.step, "path": str(checkpoint.path), "kind": checkpoint.kind, "files": fingerprint(checkpoint)}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "checkpoint.json", json.dumps(record, indent=2))


# --- loading and evaluating one checkpoint -------------------------------------------------------------------
def load_module(checkpoint: Checkpoint, model: Optional[str], model_args: dict[str, Any]) -> Any:
    """The module to evaluate: `--model CLASS`'s `load_from_checkpoint` for a .ckpt, `HFCausalLM` (or the vision
    model, or CLASS) from the folder for a Hugging Face checkpoint."""
    from lmm_lightning.eval_cli import import_class, model_class

    if checkpoint.kind == "lightning":
        if model is None:
            raise InputError(f"--model: {checkpoint.path} is a Lightning checkpoint; name its LightningModule class (--model my_pkg.MyModule)")
        return import_class(model_class(model)).load_from_checkpoint(str(checkpoint.path), map_location="cpu", **model_args)
    return import_class(model_class(model or "hf"))(pretrained=str(checkpoint.path), **model_args)


def evaluate_checkpoint(checkpoint: Checkpoint, options: argparse.Namespace, model_args: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Trainer.predict of the benchmarks on one checkpoint into `folder`; its results.json document."""
    from lightning.pytorch import Trainer

    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation import EvaluationCallback

    module = load_module(checkpoint, options.model, model_args)
    prepare_folder(checkpoint, folder)  # an interrupted evaluation of the same files resumes from its store
    data = BenchmarkDataModule(options.tasks, limit=options.limit, batch_size=options.batch_size,
                               include_path=options.include_path or None, num_fewshot=options.num_fewshot)
    evaluation = EvaluationCallback(output_dir=str(folder), bootstrap_iters=options.bootstrap_iters, print_table=False)
    trainer = Trainer(accelerator=options.accelerator, devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[evaluation])
    trainer.predict(module, data, return_predictions=False)
    return evaluation.results or {}


# --- the command ------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmm-lightning eval-checkpoints", description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a folder of Lightning .ckpt files and/or Hugging Face checkpoint folders")
    p.add_argument("--tasks", required=True, help="comma-separated task names, YAML paths or folders")
    p.add_argument("--model", default=None, help="the LightningModule class of .ckpt files; hf (default) or vlm for folders")
    p.add_argument("--model_args", default="", help="k=v,... passed to the model (or to load_from_checkpoint)")
    p.add_argument("--output_path", type=Path, default=None, help="where step_<N>/ folders go (default: <folder>/benchmarks)")
    p.add_argument("--limit", type=float, default=None, help="documents per task (an int, or a fraction <= 1)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_fewshot", type=int, default=None)
    p.add_argument("--include_path", action="append", default=[], help="a folder of task YAMLs (repeatable)")
    p.add_argument("--bootstrap_iters", type=int, default=10_000)
    p.add_argument("--comparison_iters", type=int, default=10_000, help="resamples of each step's paired change from the previous")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (one device; each checkpoint in turn)")
    return p


def summary_table(output: Path) -> str:
    """Every task's metrics at every step, with the 95 % interval, as a markdown table."""
    from lmm_lightning.evaluation.trajectory import trajectory

    lines = ["| step | task | metric | value | 95% CI | change from previous |", "|---|---|---|---|---|---|"]
    for row in trajectory(output):
        if row.value is None:
            continue
        interval = f"[{row.ci_lower:.4f}, {row.ci_upper:.4f}]" if row.ci_lower is not None and row.ci_upper is not None else ""
        change = f"{row.delta:+.4f}" if row.delta is not None else ""
        if change and row.delta_ci_lower is not None and row.delta_ci_upper is not None:
            change += f" [{row.delta_ci_lower:+.4f}, {row.delta_ci_upper:+.4f}]"
        lines.append(f"| {row.step} | {row.task} | {row.metric.removesuffix(',none')} | {row.value:.4f} | {interval} | {change} |")
    return "\n".join(lines)


def main(args: list[str]) -> int:
    import sys

    from lmm_lightning.eval_cli import parse_pairs
    from lmm_lightning.evaluation.trajectory import CHANGE_FILE, point_folder, record_change, write_trajectory

    options = parser().parse_args(args)
    try:
        if not options.folder.is_dir():
            raise InputError(f"eval-checkpoints: {options.folder} is not a folder of checkpoints")
        options.tasks = [t.strip() for t in options.tasks.split(",") if t.strip()]
        if options.limit is not None and options.limit > 1:
            options.limit = int(options.limit)
        model_args = parse_pairs("--model_args", options.model_args)
        checkpoints, notes = find_checkpoints(options.folder)
        if not checkpoints:
            raise InputError(f"eval-checkpoints: no checkpoint in {options.folder} (expected *.ckpt files or folders with a config.json)")
        output = options.output_path or options.folder / "benchmarks"
        for note in notes:
            print(f"skipped {note}", file=sys.stderr)
        previous: Optional[Path] = None
        fresh: set[Path] = set()  # evaluated now: their comparisons (to and from them) are made again
        for checkpoint in checkpoints:
            folder = point_folder(output, checkpoint.step)
            if is_done(checkpoint, folder):
                print(f"step {checkpoint.step}: done already ({folder})", flush=True)
            else:
                print(f"step {checkpoint.step}: evaluating {checkpoint.path}", flush=True)
                evaluate_checkpoint(checkpoint, options, model_args, folder)
                fresh.add(folder)
            compared = (folder / CHANGE_FILE).is_file() and not {folder, previous} & fresh
            if previous is not None and options.comparison_iters and not compared:
                record_change(previous, folder, options.comparison_iters, 1234)
            previous = folder
        table, plot = write_trajectory(output)
    except InputError as err:
        print(f"lmm-lightning: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(summary_table(output))
    print(f"wrote {table} and {plot}")
    return 0
