"""Bootstrap standard errors: lmm_lightning vs lm-evaluation-harness's `bootstrap_stderr`.

10,000 synthetic documents, 100,000 resamples, for a mean (binary accuracy) and for a corpus
metric (F1 of (prediction, gold) pairs):

- ours: `lmm_lightning.metrics.aggregation.aggregate("mean" | "f1", values, iters, seed)`
  (median of `--repeats` runs);
- lm-eval: `lm_eval.api.metrics.bootstrap_stderr(mean | f1_score, items, iters)` run in the
  lm-eval venv (`vs_lm_eval.py` creates it); it uses a `multiprocessing.Pool` of all cores and
  chunks of 1,000 resamples. With `--lmeval-iters` below 100,000 its time is extrapolated
  linearly (its cost is exactly iters / 1,000 equal chunks);
- ours, indices: the same F1 through the general index-resampling `bootstrap` (what the library
  did before statistics of counts), to show what the counts path buys.

Both standard errors are compared (target: within 2%) and with the analytic one for the mean.

    python benchmarks/bootstrap.py --n 10000 --iters 100000 --lmeval-iters-mean 100000 --lmeval-iters-f1 2000
"""

import argparse
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common import (
    RESULTS, Contention, add_load_arguments, git_commit, idle_waiter, load_average, machine, median, no_wait, wait_for_quiet,
)
from lmm_lightning.metrics.aggregation import aggregate
from lmm_lightning.metrics.bootstrap import bootstrap

TARGETED = ("mean", "f1")  # f1_indices is the general index path, shown for comparison only

LMEVAL_SCRIPT = """
import json, sys, time
from lm_eval.api.metrics import bootstrap_stderr, f1_score, mean
data = json.load(open(sys.argv[1]))
out = {}
for name, metric, items, iters in (
    ("mean", mean, data["acc"], data["iters_mean"]),
    ("f1", f1_score, [tuple(p) for p in data["gold_pred"]], data["iters_f1"]),
):
    if iters <= 0:
        continue
    start = time.perf_counter()
    stderr = bootstrap_stderr(metric, items, iters)
    out[name] = {"stderr": stderr, "seconds": time.perf_counter() - start, "iters": iters}
print("BENCHMARK " + json.dumps(out), flush=True)
"""


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary accuracies (p = 0.7) and (pred, gold) pairs (gold p = 0.4, pred agrees with gold 80% of the time)."""
    rng = np.random.default_rng(seed)
    acc = (rng.random(n) < 0.7).astype(np.float64)
    gold = (rng.random(n) < 0.4).astype(np.float64)
    pred = np.where(rng.random(n) < 0.8, gold, 1.0 - gold)
    return acc, np.stack([pred, gold], axis=1)


def f1_of_samples(samples: np.ndarray) -> np.ndarray:
    """F1 of resamples given as rows (batch, n, 2) of (pred, gold): the index-resampling form."""
    pred, gold = samples[..., 0], samples[..., 1]
    tp, fp, fn = (pred * gold).sum(axis=1), (pred * (1 - gold)).sum(axis=1), ((1 - pred) * gold).sum(axis=1)
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def time_ours(acc: np.ndarray, pairs: np.ndarray, iters: int, repeats: int) -> dict[str, Any]:
    """Median seconds and the estimates of our mean and F1 bootstraps (and F1 through index resampling)."""
    cases = {
        "mean": lambda: aggregate("mean", list(acc), iters, 1234),
        "f1": lambda: aggregate("f1", [tuple(p) for p in pairs], iters, 1234),
        "f1_indices": lambda: bootstrap(f1_of_samples, pairs, iters, 1234),
    }
    out = {}
    for name, run in cases.items():
        seconds, estimate = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            estimate = run()
            seconds.append(time.perf_counter() - start)
        out[name] = {"seconds": seconds, "median_s": median(seconds), "value": estimate.value, "stderr": estimate.stderr}
    return out


def time_lmeval(python: Path, acc: np.ndarray, pairs: np.ndarray, iters_mean: int, iters_f1: int) -> dict[str, Any]:
    """lm-eval's bootstrap_stderr in its own venv; seconds extrapolated to `iters` are added by the caller."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.json"
        gold_pred = [[int(g), int(p)] for p, g in pairs]  # lm-eval's f1_score takes (gold, pred)
        data.write_text(json.dumps({"acc": acc.astype(int).tolist(), "gold_pred": gold_pred, "iters_mean": iters_mean, "iters_f1": iters_f1}))
        proc = subprocess.run([str(python), "-c", LMEVAL_SCRIPT, str(data)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"lm-eval bootstrap failed: {proc.stderr[-2000:]}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("BENCHMARK ")][-1]
    return json.loads(line[len("BENCHMARK "):])


def compare(
    n: int, iters: int, iters_mean: int, iters_f1: int, repeats: int, python: Path, wait: Callable[[], float] = no_wait
) -> dict[str, Any]:
    """Ours vs lm-eval for the mean and F1: seconds (lm-eval's scaled to `iters`), speed-up, stderr agreement."""
    acc, pairs = synthetic(n)
    wait()
    with Contention() as ours_seen:
        ours = time_ours(acc, pairs, iters, repeats)
    wait()
    with Contention() as theirs_seen:
        theirs = time_lmeval(python, acc, pairs, iters_mean, iters_f1)
    analytic = float(acc.std(ddof=1) / math.sqrt(n))
    rows = {}
    for name, key in (("mean", "mean"), ("f1", "f1"), ("f1_indices", "f1")):
        t = theirs[key]
        lmeval_s = t["seconds"] * iters / t["iters"]
        rows[name] = {
            "ours_s": ours[name]["median_s"],
            "ours_runs_s": ours[name]["seconds"],
            "lm_eval_s_measured": t["seconds"],
            "lm_eval_iters": t["iters"],
            "lm_eval_s_at_iters": lmeval_s,
            "speedup": lmeval_s / ours[name]["median_s"],
            "ours_value": ours[name]["value"],
            "ours_stderr": ours[name]["stderr"],
            "lm_eval_stderr": t["stderr"],
            "stderr_rel_diff": abs(ours[name]["stderr"] - t["stderr"]) / t["stderr"],
        }
    rows["mean"]["analytic_stderr"] = analytic
    return {"n": n, "iters": iters, "rows": rows, "contention": {"ours": ours_seen.as_dict(), "lm_eval": theirs_seen.as_dict()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--iters", type=int, default=100_000)
    parser.add_argument("--lmeval-iters-mean", type=int, default=100_000)
    parser.add_argument("--lmeval-iters-f1", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--speedup-target", type=float, default=100.0)
    parser.add_argument("--stderr-tolerance", type=float, default=0.02)
    add_load_arguments(parser)
    args = parser.parse_args()
    from vs_lm_eval import ensure_lmeval_venv

    python = ensure_lmeval_venv()
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    result = compare(args.n, args.iters, args.lmeval_iters_mean, args.lmeval_iters_f1, args.repeats, python, idle_waiter(args))
    result["load_1min_end"] = load_average()
    for name, r in result["rows"].items():
        ok = r["speedup"] >= args.speedup_target and r["stderr_rel_diff"] <= args.stderr_tolerance
        extrapolated = "" if r["lm_eval_iters"] == args.iters else f" (measured {r['lm_eval_s_measured']:.1f} s for {r['lm_eval_iters']} iters, x{args.iters // r['lm_eval_iters']})"
        print(
            f"{name}: ours {r['ours_s']:.3f} s | lm-eval {r['lm_eval_s_at_iters']:.1f} s{extrapolated} | x{r['speedup']:.0f} "
            f"(target >= {args.speedup_target:.0f}) | stderr ours {r['ours_stderr']:.6f} lm-eval {r['lm_eval_stderr']:.6f} "
            f"({100 * r['stderr_rel_diff']:.2f}%){' analytic %.6f' % r['analytic_stderr'] if 'analytic_stderr' in r else ''} | "
            f"{('PASS' if ok else 'FAIL') if name in TARGETED else 'reference, not what the library runs'}",
            flush=True,
        )
    c = result["contention"]
    print(
        f"load at start {load:.2f}, at end {result['load_1min_end']:.2f}; other processes during ours "
        f"{c['ours']['others_cores']:.2f} cores, during lm-eval {c['lm_eval']['others_cores']:.2f} cores "
        f"(lm-eval itself used {c['lm_eval']['own_cores']:.2f} cores)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bootstrap.json").write_text(json.dumps({"machine": machine(), "commit": git_commit(), "load_start": load, **result}, indent=2))


if __name__ == "__main__":
    main()
