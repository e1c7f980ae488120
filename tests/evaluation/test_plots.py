"""results.png / results.html next to results.json and `compare --plot`: what is drawn is read back from the
matplotlib figure (dot positions, interval ends, labels, axes), and the page is checked to be self-contained."""

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmm_lightning.compare import main as compare_main
from lmm_lightning.evaluation.plots import comparison_figure, results_figure, score_rows, write_results_plots
from lmm_lightning.compare import compare_many, load_run
from tests.test_compare import write_run

DOCUMENT = {
    "results": {
        "mmlu": {"alias": "mmlu", "samples": 30, "acc,none": 0.6, "acc_stderr,none": 0.05},
        "mmlu_math": {"alias": "mmlu_math", "samples": 10, "acc,none": 0.4, "acc_stderr,none": 0.1},
        "mmlu_<law>": {"alias": "mmlu_<law>", "samples": 20, "acc,none": 0.7, "acc_stderr,none": 0.08},
        "mmvet": {"alias": "mmvet", "samples": 12, "mmvet_score,none": 41.5, "mmvet_score_stderr,none": "N/A",
                  "unscored,none": None},
        "gen": {"alias": "gen", "samples": 5, "exact_match,strict": 1.0, "exact_match_stderr,strict": 0.0},
    },
    "groups": {"mmlu": {"alias": "mmlu"}},
    "group_subtasks": {"mmlu": ["mmlu_math", "mmlu_<law>"], "mmlu_math": [], "mmlu_<law>": [], "mmvet": [], "gen": []},
    "confidence_intervals": {
        "mmlu": {"acc,none": [0.5, 0.7]}, "mmlu_math": {"acc,none": [0.2, 0.6]}, "mmlu_<law>": {"acc,none": [0.55, 0.85]},
        "mmvet": {"mmvet_score,none": [30.0, 53.0]}, "gen": {"exact_match,strict": [None, None]},
    },
    "config": {"model": "HFCausalLM"},
}


def dots(ax) -> dict[str, tuple[float, tuple]]:
    """Each y tick label -> the dot's x and the interval line's x ends drawn at its height."""
    out = {}
    for tick, y in zip(ax.get_yticklabels(), ax.get_yticks()):
        at = [line.get_xdata() for line in ax.lines if list(line.get_ydata()) in ([y], [y, y])]
        dot = [x[0] for x in at if len(x) == 1]
        bar = [tuple(x) for x in at if len(x) == 2]
        out[tick.get_text()] = (dot[0], bar[0] if bar else None)
    return out


def test_rows_are_each_group_then_its_subtasks_indented_then_the_other_tasks():
    rows = score_rows(DOCUMENT)
    assert [(r.name, r.metric, r.depth) for r in rows] == [
        ("mmlu", "acc", 0), ("mmlu_math", "acc", 1), ("mmlu_<law>", "acc", 1),
        ("mmvet", "mmvet_score", 0), ("gen", "exact_match,strict", 0),  # stderr keys and a null metric left out
    ]
    assert rows[1].label == "    mmlu_math · acc" and rows[1].stderr == 0.1 and rows[1].samples == 10
    assert rows[3].stderr is None and rows[4].ci_lower is None


def test_proportions_share_a_0_to_1_axis_and_other_metrics_get_their_own():
    fig = results_figure(score_rows(DOCUMENT))
    shared, judge = fig.axes
    assert shared.get_xlim() == pytest.approx((-0.02, 1.02))
    drawn = dots(shared)
    assert drawn["mmlu · acc"] == (0.6, (0.5, 0.7))
    assert drawn["    mmlu_math · acc"] == (0.4, (0.2, 0.6))
    assert drawn["gen · exact_match,strict"] == (1.0, None)  # no interval, no bar
    assert [t.get_text() for t in shared.get_yticklabels()][::-1] == [  # drawn top to bottom in order
        "mmlu · acc", "    mmlu_math · acc", "    mmlu_<law> · acc", "gen · exact_match,strict"][::-1]
    assert dots(judge) == {"mmvet · mmvet_score": (41.5, (30.0, 53.0))}
    assert judge.get_xlim()[1] > 53.0 and "mmvet_score" in judge.get_xlabel()


def test_the_png_and_a_self_contained_page_are_written_next_to_results_json(tmp_path):
    png, page = write_results_plots(tmp_path, DOCUMENT)
    assert (png.name, page.name) == ("results.png", "results.html") and png.parent == tmp_path
    image = Image.open(png)
    assert image.format == "PNG" and image.width > 600 and image.height > 300
    text = page.read_text()
    (inlined,) = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert base64.b64decode(inlined) == png.read_bytes()  # the same picture, inside the page
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing fetched: it opens offline
    assert "mmlu_&lt;law&gt;" in text and "mmlu_<law>" not in text  # names escaped
    assert "<td>0.7000</td><td>[0.5500, 0.8500]</td><td>0.0800</td><td>20</td>" in text


def test_the_callback_draws_the_plots_and_a_rerun_replaces_them(tmp_path, tiny_model, tiny_tasks):
    from tests.evaluation.test_loggers import evaluate
    from lmm_lightning.models import HFCausalLM

    out = tmp_path / "out"
    evaluate(HFCausalLM(str(tiny_model)), [str(tiny_tasks / "tiny_mc.yaml")], out, [])
    document = json.loads((out / "results.json").read_text())
    page = (out / "results.html").read_text()
    assert f"<td>{document['results']['tiny_mc']['acc,none']:.4f}</td>" in page
    assert Image.open(out / "results.png").format == "PNG"
    evaluate(HFCausalLM(str(tiny_model)), [str(tiny_tasks / "tiny_mc.yaml")], out, [], plots=False)
    assert not (out / "results.png").exists() and not (out / "results.html").exists()  # not an earlier run's picture


def test_compare_plots_paired_differences_coloured_where_they_hold_after_holm(tmp_path, capsys):
    rng = np.random.default_rng(4)
    base = list((rng.random(300) < 0.5).astype(float))
    better = [1.0 if rng.random() < 0.3 else x for x in base]
    same = [x if rng.random() < 0.9 else 1 - x for x in base]
    a, b, c = write_run(tmp_path / "a", {"t": base}), write_run(tmp_path / "b", {"t": better}), write_run(tmp_path / "c", {"t": same})
    assert compare_main([str(a), str(b), str(c), "--iters", "2000", "--plot", str(tmp_path / "diff")]) == 0
    assert "plot:" in capsys.readouterr().err
    assert Image.open(tmp_path / "diff.png").format == "PNG" and "data:image/png;base64," in (tmp_path / "diff.html").read_text()

    rows, _ = compare_many(load_run(a), [load_run(b), load_run(c)], 2000, 1234, 0.95, None)
    (ax,) = comparison_figure(rows).axes
    drawn = dots(ax)
    for row in rows:
        label = f"{row.candidate} · t · acc"
        assert drawn[label] == (pytest.approx(row.difference), (pytest.approx(row.ci_lower), pytest.approx(row.ci_upper)))
    colours = {t.get_text(): [l.get_color() for l in ax.lines if len(l.get_xdata()) == 1 and l.get_ydata()[0] == y][0]
               for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert colours[f"{b} · t · acc"] == "#2a9d50" and colours[f"{c} · t · acc"] == "#888888"
    assert any(list(l.get_xdata()) == [0.0, 0.0] for l in ax.lines)  # the line at zero
