"""The notebooks run offline, top to bottom, with smaller parameters (nbclient; outputs in a temporary folder)."""

import json
from pathlib import Path

import pytest

import ipykernel  # noqa: F401 - the kernel the notebooks run in
import matplotlib  # noqa: F401
import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, folder: Path, overrides: str) -> dict:
    """Run a notebook in `folder`, with `overrides` as a cell right after its `parameters` cell."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    (index,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(overrides))
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute(env={"MPLBACKEND": "agg", "OMP_NUM_THREADS": "2"})
    return notebook


def text_outputs(notebook) -> str:
    return "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)


def test_quickstart(tmp_path):
    notebook = execute("quickstart.ipynb", tmp_path, "LIMIT = 16\nBOOTSTRAP_ITERS = 1000")
    out = tmp_path / "outputs" / "quickstart"
    results = json.loads((out / "plain" / "results.json").read_text())
    assert results["n-samples"]["capitals_mc"]["effective"] == 16
    assert (out / "metrics.png").stat().st_size > 10_000
    assert "| capitals_gen | exact_match | 16 |" in text_outputs(notebook)


def test_train_and_eval(tmp_path):
    notebook = execute("train_and_eval.ipynb", tmp_path, "STEPS = 40\nLIMIT = 40\nEVERY = 20")
    out = tmp_path / "outputs" / "train_and_eval" / "benchmarks"
    points = sorted(out.glob("step_*/results.json"))
    assert [p.parent.name for p in points] == ["step_0000000", "step_0000020", "step_0000040"]
    before, after = (json.loads(p.read_text())["results"]["easy_vqa_mc"]["acc,none"] for p in (points[0], points[-1]))
    assert after > before + 0.1  # forty steps already beat the random start by far
    assert (out.parent / "score_vs_step.png").stat().st_size > 10_000 and (out / "scores.png").stat().st_size > 10_000
    assert "| easy_vqa_mc | acc | 40 |" in text_outputs(notebook)
    (events,) = (out.parent / "tb").rglob("events.out.tfevents.*")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(events.parent))
    logged.Reload()
    assert [e.step for e in logged.Scalars("benchmark/easy_vqa_mc/acc")] == [0, 20, 40]
