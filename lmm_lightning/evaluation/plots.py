"""A run's scores at a glance: `results.png` and a self-contained `results.html` next to results.json, and the
paired differences of a comparison (`lmm-lightning compare --plot`), drawn with matplotlib (Agg, no display).

Each metric is a dot with its 95 % interval as a bar; a group comes first with its subtasks indented under it.
Proportions (every value and bound within [0, 1]) share one axis from 0 to 1, so tasks compare by eye; any other
metric (a judge's 0-100 score, a perplexity) gets its own panel and scale. A comparison draws B - A with its paired
interval around a line at zero, the differences that hold after Holm's correction in colour.

    >>> rows = score_rows({"results": {"mc": {"acc,none": 0.5, "acc_stderr,none": 0.1}},
    ...                    "confidence_intervals": {"mc": {"acc,none": [0.3, 0.7]}}})
    >>> rows[0].label, rows[0].value, rows[0].ci_lower
    ('mc · acc', 0.5, 0.3)
"""

import base64
import html
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from lmm_lightning.evaluation.results import PLOT_FILES, parse_key, short_name, write_atomic

RESULTS_PNG, RESULTS_HTML = PLOT_FILES
RIGHT, WRONG, NEUTRAL = "#2a9d50", "#c0392b", "#4c72b0"


@dataclass(frozen=True)
class ScoreRow:
    """One metric of one task or group as the plot draws it."""

    name: str  # the task or group
    metric: str  # as the loggers name it ("acc", "exact_match,strict-match")
    value: float
    ci_lower: Optional[float]
    ci_upper: Optional[float]
    stderr: Optional[float]
    samples: Optional[int]
    depth: int = 0  # 1 for a subtask drawn under its group

    @property
    def label(self) -> str:
        return "    " * self.depth + f"{self.name} · {self.metric}"

    @property
    def proportion(self) -> bool:
        bounds = [b for b in (self.value, self.ci_lower, self.ci_upper) if b is not None]
        return all(0.0 <= b <= 1.0 for b in bounds)


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _order(document: dict[str, Any]) -> list[tuple[str, int]]:
    """Tasks and groups in drawing order: each group, then its subtasks indented; tasks in no group after."""
    results = document.get("results", {})
    groups = [name for name, entry in document.get("groups", {}).items() if entry is not None and name in results]
    subtasks = document.get("group_subtasks", {})
    order: list[tuple[str, int]] = []
    placed: set[str] = set()
    for group in groups:
        order.append((group, 0))
        placed.add(group)
        for sub in subtasks.get(group, []):
            if sub in results and sub not in groups:
                order.append((sub, 1))
                placed.add(sub)
    return order + [(name, 0) for name in results if name not in placed]


def score_rows(document: dict[str, Any]) -> list[ScoreRow]:
    """Every finite metric of a results.json document, with its interval and stderr, in drawing order."""
    rows = []
    intervals = document.get("confidence_intervals", {})
    for name, depth in _order(document):
        entry = document["results"][name]
        for text, raw in entry.items():
            key = parse_key(text)
            value = _number(raw)
            if key is None or value is None:
                continue
            lower, upper = (list(intervals.get(name, {}).get(text) or []) + [None, None])[:2]
            stderr = _number(entry.get(f"{key.metric}_stderr,{key.filter}"))
            rows.append(ScoreRow(name, short_name(key), value, _number(lower), _number(upper), stderr,
                                 _number(entry.get("samples")) and int(entry["samples"]), depth))
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _panels(rows: list[ScoreRow]) -> list[tuple[str, list[ScoreRow]]]:
    """Proportions on one panel; every other metric name on its own."""
    shared = [r for r in rows if r.proportion]
    others: dict[str, list[ScoreRow]] = {}
    for row in rows:
        if not row.proportion:
            others.setdefault(row.metric, []).append(row)
    return ([("score (95 % interval)", shared)] if shared else []) + [(f"{m} (95 % interval)", rs) for m, rs in others.items()]


def _draw_rows(ax: Any, rows: Sequence[Any], values: list[float], lowers: list[Optional[float]],
               uppers: list[Optional[float]], colours: list[str], labels: list[str]) -> None:
    """Dots with horizontal interval bars, first row at the top."""
    ys = list(range(len(rows)))[::-1]
    for y, value, lower, upper, colour in zip(ys, values, lowers, uppers, colours):
        if lower is not None and upper is not None:
            ax.plot([lower, upper], [y, y], color=colour, linewidth=2.2, alpha=0.55, solid_capstyle="butt")
        ax.plot([value], [y], "o", color=colour, markersize=6)
        ax.annotate(f"{value:.3f}", (value, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="x", alpha=0.3)


def results_figure(rows: list[ScoreRow], title: str = "") -> Any:
    """A matplotlib figure of every row: proportions on a shared 0-1 axis, other metrics on their own."""
    plt = _pyplot()
    panels = _panels(rows) or [("score", [])]
    heights = [max(1, len(r)) for _, r in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 0.9 + 0.34 * sum(heights) + 0.5 * len(panels)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (xlabel, mine) in zip(axes[:, 0], panels):
        colours = [NEUTRAL if r.depth == 0 else "#7f8fa6" for r in mine]
        _draw_rows(ax, mine, [r.value for r in mine], [r.ci_lower for r in mine], [r.ci_upper for r in mine],
                   colours, [r.label for r in mine])
        if mine and all(r.proportion for r in mine):
            ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(xlabel, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def comparison_figure(rows: list[Any], confidence: float = 0.95) -> Any:
    """B - A of each compared task and metric with its paired interval, a line at zero; in colour where the
    difference holds (Holm-corrected p below 1 - confidence, or the raw p without a correction)."""
    plt = _pyplot()
    several = len({r.candidate for r in rows}) > 1
    labels = [(f"{r.candidate} · " if several else "") + f"{r.task} · {short_name(r.key)}" for r in rows]
    held = [(r.p_holm if not math.isnan(r.p_holm) else r.p_value) < 1 - confidence for r in rows]
    colours = [(RIGHT if r.difference > 0 else WRONG) if h else "#888888" for r, h in zip(rows, held)]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.36 * max(1, len(rows))))
    _draw_rows(ax, rows, [r.difference for r in rows], [_number(r.ci_lower) for r in rows],
               [_number(r.ci_upper) for r in rows], colours, labels)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"B - A, paired {100 * confidence:g} % interval (coloured: holds after Holm)", fontsize=9)
    fig.tight_layout()
    return fig


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, closed afterwards."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _pyplot().close(fig)
    return buffer.getvalue()


def _cell(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"


def html_page(title: str, png: bytes, head: list[str], table: list[list[str]]) -> str:
    """One HTML file with the picture inlined (a data URL) and its numbers as a table: it opens anywhere, offline."""
    image = base64.b64encode(png).decode("ascii")
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)
    body = "\n".join(f"<tr>{cells(row, 'td')}</tr>" for row in table)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:14px}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<img alt="{html.escape(title)}" src="data:image/png;base64,{image}">
<table><thead><tr>{cells(head, 'th')}</tr></thead><tbody>
{body}
</tbody></table></body></html>
"""


def write_results_plots(folder: Path, document: dict[str, Any]) -> tuple[Path, Path]:
    """`results.png` and `results.html` of a results document in `folder` (each written atomically)."""
    rows = score_rows(document)
    config = document.get("config") or {}
    model = (config.get("model_args") or {}).get("pretrained") or config.get("model") or "results"
    title = f"{model}: {folder.name}"
    png = figure_png(results_figure(rows, title))
    table = [[r.label.strip(), r.metric, _cell(r.value), f"[{_cell(r.ci_lower)}, {_cell(r.ci_upper)}]",
              _cell(r.stderr), "" if r.samples is None else str(r.samples)] for r in rows]
    page = html_page(title, png, ["task", "metric", "value", "95 % interval", "stderr", "n"], table)
    write_atomic(folder / RESULTS_PNG, png)
    write_atomic(folder / RESULTS_HTML, page)
    return folder / RESULTS_PNG, folder / RESULTS_HTML


def write_comparison_plots(path: Path, rows: list[Any], confidence: float = 0.95) -> tuple[Path, Path]:
    """The comparison's picture at `path` (.png) and its page beside it (.html)."""
    path = Path(path).with_suffix(".png")
    png = figure_png(comparison_figure(rows, confidence))
    table = [[r.candidate, r.task, short_name(r.key), str(r.n), f"{r.difference:+.4f}",
              f"[{_cell(_number(r.ci_lower))}, {_cell(_number(r.ci_upper))}]", f"{r.p_value:.4g}",
              "" if math.isnan(r.p_holm) else f"{r.p_holm:.4g}"] for r in rows]
    page = html_page("paired differences", png, ["B", "task", "metric", "n", "B-A", "interval", "p", "Holm p"], table)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, png)
    write_atomic(path.with_suffix(".html"), page)
    return path, path.with_suffix(".html")


def draw_plots(folder: Path, document: dict[str, Any]) -> Optional[tuple[Path, Path]]:
    """`write_results_plots`, where a picture that cannot be drawn is a warning: results.json is already written."""
    try:
        return write_results_plots(Path(folder), document)
    except Exception as err:  # noqa: BLE001 - a plot never fails a finished evaluation
        warnings.warn(f"{folder}: results.png / results.html not drawn: {type(err).__name__}: {err}", stacklevel=2)
        return None
