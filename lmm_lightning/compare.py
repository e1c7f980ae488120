"""`lmm-lightning compare RUN_A RUN_B`: is B better than A on the same documents, or is it noise?

Both runs' per-document scores (samples_<task>.jsonl) are paired by `doc_id`, and for every
shared task and metric with a numeric value per document the comparison reports:

- the difference of means B - A over the paired documents;
- a paired bootstrap confidence interval of that difference: documents are resampled with
  replacement *jointly* (the same documents for A and B), so the interval reflects how much the
  two models disagree, not the spread of each score alone;
- a two-sided p-value from a paired randomization (sign-flip) test: under "A and B are
  interchangeable" each document's difference is as likely to be +d as -d, so
  p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + iters) over random signs s. For 0/1 metrics
  this is the exact two-sided sign test on the documents where the runs disagree, estimated by
  Monte Carlo; it never reports 0.

Everything is vectorised with numpy and seeded (`--seed`): same inputs, same numbers.
"""

import argparse
import json
import math
import sys
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from lmm_lightning.errors import EXIT_INPUT_ERROR, InputError
from lmm_lightning.evaluation.result import MetricKey
from lmm_lightning.evaluation.results import Run, key_text, load_run, record_value, short_name
from lmm_lightning.metrics.aggregation import is_number
from lmm_lightning.metrics.bootstrap import (
    CHUNK_BYTES, bootstrap_cluster_counts_statistics, bootstrap_mean_statistics, chunks, cluster_index, mean_of_counts,
    percentile_ci,
)

@dataclass(frozen=True)
class Comparison:
    """One task and metric: means over the paired documents, B - A, its interval and p-value."""

    task: str
    key: MetricKey
    n: int
    a: float
    b: float
    difference: float
    ci_lower: float
    ci_upper: float
    p_value: float
    candidate: str = ""  # B's folder, when a baseline is compared with several runs
    p_holm: float = float("nan")  # p_value corrected across every row compared together (Holm)
    clusters: Optional[int] = None  # the clusters resampled and flipped (the task's cluster_key), None: documents


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order): the k-th smallest times (m - k + 1), kept monotone
    and at most 1. A difference "holds" at level alpha when its adjusted p-value is below alpha; the chance
    that any true null among the m is rejected stays at most alpha.

    >>> holm([0.01, 0.04, 0.03, 0.005])
    [0.03, 0.06, 0.06, 0.02]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = round(running, 12)
    return adjusted


def record_cluster(record: dict[str, Any], cluster_key: str) -> Any:
    """A sample record's cluster: the label the run wrote (`cluster`), else its document's `cluster_key` field."""
    label = record.get("cluster")
    if label is None and isinstance(record.get("doc"), dict):
        label = record["doc"].get(cluster_key)
    return tuple(label) if isinstance(label, list) else label


def document_clusters(run: Run, task: str) -> Optional[dict[int, Any]]:
    """doc_id -> cluster of a task that names a `cluster_key` (its config in results.json), else None."""
    cluster_key = (run.configs.get(task) or {}).get("cluster_key")
    if not cluster_key or task not in run.samples:
        return None
    return {int(r["doc_id"]): record_cluster(r, cluster_key) for r in run.samples[task]}


def per_document(records: list[dict[str, Any]], key: MetricKey) -> Optional[dict[int, float]]:
    """doc_id -> the record's value of `key`, or None when some document has no number for it."""
    values = [record_value(r, key) for r in records]
    if records and all(is_number(v) and not (isinstance(v, float) and math.isnan(v)) for v in values):
        return {int(r["doc_id"]): float(v) for r, v in zip(records, values)}
    return None


def paired_bootstrap_ci(
    differences: np.ndarray, iters: int, seed: int, confidence: float
) -> tuple[float, float]:
    """Percentile interval of the mean difference when documents are resampled jointly."""
    if differences.size < 2:
        return float("nan"), float("nan")
    return percentile_ci(bootstrap_mean_statistics(differences, iters, seed), confidence)


def cluster_sign_flip_p_value(differences: np.ndarray, clusters: list[Any], iters: int, seed: int,
                              chunk_bytes: int = CHUNK_BYTES) -> float:
    """The paired randomization test with clusters: the documents of one cluster flip sign together (under no
    difference a cluster's two runs are exchangeable as a whole), so the test is not fooled by alike questions."""
    d = np.asarray(differences, dtype=np.float64)
    index, g = cluster_index(clusters)
    sums = np.bincount(index, weights=d, minlength=g)
    observed = abs(d.mean()) if d.size else 0.0
    if d.size == 0 or not np.any(sums):
        return 1.0
    rng = np.random.default_rng(seed)
    tolerance = 1e-12 * max(1.0, observed)
    extreme = 0
    for rows in chunks(iters, 8 * g, chunk_bytes):
        signs = rng.integers(0, 2, size=(rows, g)) * 2.0 - 1.0
        extreme += int(np.count_nonzero(np.abs(signs @ sums / d.size) >= observed - tolerance))
    return (1 + extreme) / (1 + iters)


def sign_flip_p_value(differences: np.ndarray, iters: int, seed: int, chunk_bytes: int = CHUNK_BYTES) -> float:
    """Two-sided p-value of the paired randomization test (see the module docstring).

    Flipping signs at random only changes how many of the documents sharing an absolute difference
    come out positive, which is Binomial(count, 1/2): drawing those counts gives exactly the
    distribution of per-document sign flips at cost O(iters * distinct |d|).
    """
    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    observed = abs(d.mean()) if n else 0.0
    magnitudes, counts = np.unique(np.abs(d[d != 0]), return_counts=True)
    if n == 0 or magnitudes.size == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    tolerance = 1e-12 * max(1.0, observed)
    extreme = 0
    for rows in chunks(iters, 8 * magnitudes.size, chunk_bytes):
        positive = rng.binomial(counts, 0.5, size=(rows, counts.size))
        stats = (2 * positive - counts) @ magnitudes / n
        extreme += int(np.count_nonzero(np.abs(stats) >= observed - tolerance))
    return (1 + extreme) / (1 + iters)


def compare_metric(
    task: str, key: MetricKey, a: dict[int, float], b: dict[int, float], iters: int, seed: int, confidence: float,
    clusters: Optional[dict[int, Any]] = None,
) -> Optional[Comparison]:
    """Compare one metric over the documents both runs scored; None if they share none. With `clusters` (doc_id ->
    cluster, every shared document labelled) whole clusters are resampled and flipped, not documents."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    va = np.array([a[i] for i in shared])
    vb = np.array([b[i] for i in shared])
    d = vb - va
    labels = [clusters.get(i) for i in shared] if clusters else None
    if labels is not None and all(label is not None for label in labels) and cluster_index(labels)[1] >= 2:
        stats = bootstrap_cluster_counts_statistics(mean_of_counts, d, labels, iters, seed)
        low, high = percentile_ci(stats, confidence)
        p = cluster_sign_flip_p_value(d, labels, iters, seed)
        n_clusters: Optional[int] = cluster_index(labels)[1]
    else:
        low, high = paired_bootstrap_ci(d, iters, seed, confidence)
        p = sign_flip_p_value(d, iters, seed)
        n_clusters = None
    return Comparison(task, key, len(shared), float(va.mean()), float(vb.mean()), float(d.mean()), low, high, p,
                      clusters=n_clusters)


def compare_runs(
    run_a: Run, run_b: Run, iters: int = 10_000, seed: int = 1234, confidence: float = 0.95,
    tasks: Optional[list[str]] = None,
) -> tuple[list[Comparison], list[str]]:
    """Every shared (task, metric) with per-document numbers; also notes on what was left out and why."""
    if iters < 2:
        raise InputError(f"--iters must be at least 2, got {iters}")
    if not 0 < confidence < 1:
        raise InputError(f"--confidence must be in (0, 1), got {confidence}")
    names_a, names_b = list(run_a.metrics), set(run_b.metrics)
    shared = [t for t in names_a if t in names_b and (tasks is None or t in tasks)]
    if not shared:
        raise InputError(
            f"the runs share no task{' among ' + ', '.join(tasks) if tasks else ''}: {run_a.folder} has "
            f"{', '.join(names_a) or 'none'}; {run_b.folder} has {', '.join(sorted(names_b)) or 'none'}"
        )
    rows, notes = [], []
    for task in shared:
        if task not in run_a.samples or task not in run_b.samples:
            missing = run_a.folder if task not in run_a.samples else run_b.folder
            if task not in run_a.groups:
                notes.append(f"{task}: no samples_{task}.jsonl in {missing} (run with --evaluation.log_samples true)")
            continue
        for key in (k for k in run_a.metrics[task] if k in run_b.metrics[task]):
            row, note = compare_task_metric(run_a, run_b, task, key, iters, seed, confidence)
            rows += [row] if row is not None else []
            notes += [note] if note is not None else []
    if not rows:
        raise InputError(
            f"nothing to compare between {run_a.folder} and {run_b.folder}: " + ("; ".join(notes) or "no shared metric")
        )
    return rows, notes


def compare_task_metric(
    run_a: Run, run_b: Run, task: str, key: MetricKey, iters: int, seed: int, confidence: float
) -> tuple[Optional[Comparison], Optional[str]]:
    """One metric of a task both runs have samples of: its comparison, or a note saying why there is none."""
    a, b = per_document(run_a.samples[task], key), per_document(run_b.samples[task], key)
    if a is None or b is None:
        return None, f"{task} {key_text(key)}: no number per document (a corpus-level or repeat metric)"
    row = compare_metric(task, key, a, b, iters, seed, confidence, document_clusters(run_a, task))
    return (row, None) if row is not None else (None, f"{task} {key_text(key)}: the runs share no doc_id")


def compare_many(
    baseline: Run, candidates: list[Run], iters: int = 10_000, seed: int = 1234, confidence: float = 0.95,
    tasks: Optional[list[str]] = None,
) -> tuple[list[Comparison], list[str]]:
    """Each candidate against the baseline (`compare_runs`), every p-value then corrected across all the tasks,
    metrics and candidates compared (`holm`)."""
    rows, notes = [], []
    for run in candidates:
        more, said = compare_runs(baseline, run, iters, seed, confidence, tasks)
        rows += [replace(r, candidate=str(run.folder)) for r in more]
        notes += [f"{run.folder}: {note}" for note in said] if len(candidates) > 1 else said
    adjusted = holm([r.p_value for r in rows])
    return [replace(r, p_holm=p) for r, p in zip(rows, adjusted)], notes


def format_comparison(rows: list[Comparison], confidence: float = 0.95) -> str:
    """A markdown table: paired means, B - A, its interval and p-value; with Holm-corrected p-values, whether
    the difference holds at 1 - confidence once every comparison made is accounted for."""
    pct = f"{100 * confidence:g}%"
    several = len({r.candidate for r in rows}) > 1
    holm_columns = any(not math.isnan(r.p_holm) for r in rows)
    head = (["B"] if several else []) + ["Task", "Metric", "n", "A", "B" if not several else "mean", "B-A", f"{pct} CI", "p"]
    head += ["Holm p", "holds"] if holm_columns else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "N/A" if v is None or math.isnan(v) else f"{v:.4f}"
    p_text = lambda p: f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"
    last = None
    for r in rows:
        cells = ([r.candidate] if several else []) + [
            r.task if (r.candidate, r.task) != last else "",
            short_name(r.key),
            str(r.n),
            fmt(r.a),
            fmt(r.b),
            f"{r.difference:+.4f}",
            f"[{fmt(r.ci_lower)}, {fmt(r.ci_upper)}]",
            p_text(r.p_value),
        ]
        if holm_columns:
            cells += [p_text(r.p_holm), "yes" if r.p_holm < 1 - confidence else "no"]
        lines.append("| " + " | ".join(cells) + " |")
        last = (r.candidate, r.task)
    return "\n".join(lines)


def comparison_json(rows: list[Comparison]) -> str:
    """The rows as a JSON list, the metric named as results.json names it and nan as null."""
    clean = lambda v: None if math.isnan(v) else v
    return json.dumps(
        [
            {"task": r.task, "metric": key_text(r.key), "n": r.n, "a": clean(r.a), "b": clean(r.b),
             "difference": clean(r.difference), "ci_lower": clean(r.ci_lower), "ci_upper": clean(r.ci_upper),
             "p_value": clean(r.p_value), "p_holm": clean(r.p_holm), "candidate": r.candidate, "clusters": r.clusters}
            for r in rows
        ],
        indent=2,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmm-lightning compare",
        description="Paired comparison of two results folders on the documents they share: B - A, a paired "
        "bootstrap confidence interval and a two-sided sign-flip (randomization) test p-value.",
    )
    p.add_argument("run_a", help="results folder A (the baseline)")
    p.add_argument("run_b", nargs="+", help="results folder B, or several candidates (p-values Holm-corrected across all)")
    p.add_argument("--tasks", nargs="+", help="only these tasks")
    p.add_argument("--iters", type=int, default=10_000, help="bootstrap resamples and random sign flips (default 10000)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--plot", metavar="PATH", help="also draw the paired differences with their intervals: PATH.png and PATH.html")
    return p


def main(args: list[str]) -> int:
    options = parser().parse_args(args)
    try:
        run_a, candidates = load_run(options.run_a), [load_run(b) for b in options.run_b]
        rows, notes = compare_many(run_a, candidates, options.iters, options.seed, options.confidence, options.tasks)
    except InputError as err:
        print(f"lmm-lightning compare: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if options.json:
        print(comparison_json(rows))
    else:
        print(f"A = {run_a.folder}\nB = {', '.join(str(c.folder) for c in candidates)}\n")
        print(format_comparison(rows, options.confidence))
    if options.plot and rows:
        from lmm_lightning.evaluation.plots import write_comparison_plots

        png, page = write_comparison_plots(Path(options.plot), rows, options.confidence)
        print(f"plot: {png} and {page}", file=sys.stderr)
    for note in notes:
        print(f"skipped: {note}", file=sys.stderr)
    return 0
