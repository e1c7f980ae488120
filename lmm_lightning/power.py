"""`lmm-lightning power RUN`: how small a difference this evaluation can detect, and how many documents a given
difference needs (Miller 2024, "Adding Error Bars to Evals", section 5).

A comparison of two models on the same n documents tests the mean per-document difference d_i = b_i - a_i. At
two-sided level alpha and power 1 - beta, the smallest true difference it detects is

    MDE = (z_{1-alpha/2} + z_{1-beta}) * sd(d) * sqrt(DE / n)

where DE is the design effect of clustered documents (questions sharing an image: the squared ratio of the
cluster-robust to the naive standard error) and sd(d) is measured: from the per-document differences with a
`--baseline` run (pairing), else sqrt(2) * sd of this run's scores (a second model of the same variance whose errors
are unrelated; pairing on correlated errors only makes the difference smaller). The documents a difference `delta`
needs: n = DE * ((z_{1-alpha/2} + z_{1-beta}) * sd(d) / delta)^2. Needs numpy only (no torch).
"""

import argparse
import math
import statistics
import sys
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from lmm_lightning.errors import EXIT_INPUT_ERROR, InputError

NORMAL = statistics.NormalDist()


def z_sum(alpha: float, power: float) -> float:
    """z_{1-alpha/2} + z_{power}: 2.8016 for alpha 0.05 and power 0.8.

    >>> round(z_sum(0.05, 0.8), 4)
    2.8016
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise InputError(f"power: expected alpha and power in (0, 1), got alpha={alpha}, power={power}")
    return NORMAL.inv_cdf(1 - alpha / 2) + NORMAL.inv_cdf(power)


def minimum_detectable_effect(sd_difference: float, n: int, alpha: float = 0.05, power: float = 0.8, design_effect: float = 1.0) -> float:
    """The smallest true mean difference detected with probability `power` at level `alpha` (two-sided).

    >>> round(minimum_detectable_effect(0.5, 1000), 4)
    0.0443
    """
    return z_sum(alpha, power) * sd_difference * math.sqrt(design_effect / n)


def documents_needed(effect: float, sd_difference: float, alpha: float = 0.05, power: float = 0.8, design_effect: float = 1.0) -> int:
    """How many documents detect a true difference `effect` with probability `power` at level `alpha`.

    >>> documents_needed(0.0443, 0.5)
    1000
    """
    if not effect > 0:
        raise InputError(f"power --effect: expected a positive difference, got {effect}")
    return math.ceil(design_effect * (z_sum(alpha, power) * sd_difference / effect) ** 2 - 1e-9)


def mde_from_stderr(stderr: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable difference against an independent run of the same standard error (which already
    holds n and the design effect): z_sum * sqrt(2) * stderr. results.json reports it for each metric."""
    return z_sum(alpha, power) * math.sqrt(2.0) * stderr


@dataclass(frozen=True)
class PowerRow:
    """One task's metric: its documents, the spread of a difference, the design effect, the MDE, the n needed."""

    task: str
    metric: str
    n: int
    sd_difference: float
    paired: bool  # sd of the differences to a baseline run (else sqrt(2) x this run's sd)
    design_effect: float
    mde: float
    needed: Optional[int]


def design_effect(values: np.ndarray, clusters: Optional[list[Any]]) -> float:
    """(cluster-robust stderr / naive stderr)^2 of the mean of `values`; 1 without clusters."""
    from lmm_lightning.metrics.bootstrap import cluster_mean_stderr, mean_stderr

    if clusters is None or len(values) < 2:
        return 1.0
    naive = mean_stderr(values)
    robust = cluster_mean_stderr(values, clusters)
    return float((robust / naive) ** 2) if naive > 0 and math.isfinite(robust) else 1.0


def power_rows(run: Any, baseline: Any = None, effect: Optional[float] = None, alpha: float = 0.05, power: float = 0.8,
               tasks: Optional[list[str]] = None) -> list[PowerRow]:
    """A row per task and per-document metric of `run` (a `load_run` folder), paired with `baseline` where given."""
    from lmm_lightning.compare import document_clusters, per_document
    from lmm_lightning.evaluation.results import key_text

    rows = []
    for task, records in run.samples.items():
        if tasks and task not in tasks:
            continue
        cluster_key = (run.configs.get(task) or {}).get("cluster_key")
        by_doc = document_clusters(run, task) or {}
        for key in run.metrics.get(task, []):
            mine = per_document(records, key)
            if mine is None or len(mine) < 2:
                continue
            docs = sorted(mine)
            paired = baseline is not None and task in baseline.samples
            if paired:
                theirs = per_document(baseline.samples[task], key) or {}
                docs = [d for d in docs if d in theirs]
                if len(docs) < 2:
                    continue
                values = np.array([mine[d] - theirs[d] for d in docs])
                sd = float(values.std(ddof=1))
            else:
                values = np.array([mine[d] for d in docs])
                sd = math.sqrt(2.0) * float(values.std(ddof=1))
            clusters = [by_doc.get(d) for d in docs] if cluster_key and all(by_doc.get(d) is not None for d in docs) else None
            effect_of_design = design_effect(values, clusters)
            mde = minimum_detectable_effect(sd, len(docs), alpha, power, effect_of_design)
            needed = documents_needed(effect, sd, alpha, power, effect_of_design) if effect is not None and sd > 0 else None
            rows.append(PowerRow(task, key_text(key), len(docs), sd, paired, effect_of_design, mde, needed))
    return rows


def format_rows(rows: list[PowerRow], alpha: float, power: float, effect: Optional[float]) -> str:
    head = f"| task | metric | n | sd of a difference | design effect | MDE (power {power:g}, alpha {alpha:g}) |"
    head += f" documents for {effect:g} |" if effect is not None else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = f"| {r.task} | {r.metric.removesuffix(',none')} | {r.n} | {r.sd_difference:.4f}{' (paired)' if r.paired else ''} | {r.design_effect:.2f} | {r.mde:.4f} |"
        if effect is not None:
            line += f" {r.needed if r.needed is not None else 'N/A'} |"
        lines.append(line)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmm-lightning power", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a results folder (results.json and its samples)")
    p.add_argument("--baseline", help="a results folder of the model to compare with (pairs the documents)")
    p.add_argument("--effect", type=float, help="a difference to detect: how many documents it needs")
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--tasks", nargs="+")
    return p


def main(args: list[str]) -> int:
    from lmm_lightning.evaluation.results import load_run

    options = parser().parse_args(args)
    try:
        run = load_run(options.run)
        baseline = load_run(options.baseline) if options.baseline else None
        rows = power_rows(run, baseline, options.effect, options.alpha, options.power, options.tasks)
        if not rows:
            raise InputError(f"power: {run.folder} has no samples with a number per document (run with log_samples)")
    except InputError as err:
        print(f"lmm-lightning power: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(format_rows(rows, options.alpha, options.power, options.effect))
    return 0
