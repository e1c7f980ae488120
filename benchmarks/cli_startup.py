"""Start-up time of the command line: `lmm-lightning --help`, `tasks`, `compare`, `eval --help`, against the
same commands of the code before the lazy imports (`--before REF`, a git commit read with `git archive`, nothing in
the checkout changes) and against `lm_eval --help` / `lm_eval run --help` (lm-eval 0.4.13, installed beside us).

    python benchmarks/cli_startup.py --repeats 5 --before 29c4fa3

Each command runs as a fresh process (`python -m lmm_lightning ...`, OMP_NUM_THREADS=1), the contestants
alternating; the table shows medians in seconds. Raw numbers go to benchmarks/results/cli_startup.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS, git_commit, load_average, machine, median

LM_EVAL = [str(Path(sys.executable).with_name("lm_eval"))]


def compare_folder(root: Path) -> Path:
    """A small results folder (results.json and one samples file of 1,000 documents) to compare with itself."""
    folder = root / "run"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"results": {"t": {"alias": "t", "acc,none": 0.5}}}))
    lines = "".join(json.dumps({"doc_id": i, "acc": float(i % 2)}) + "\n" for i in range(1000))
    (folder / "samples_t.jsonl").write_text(lines)
    return folder


def checkout(ref: str, root: Path) -> Path:
    """The package as it was at `ref`, unpacked from `git archive` into `root` (read-only use of the repository)."""
    archive = root / "before.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "archive", ref, "lmm_lightning"], cwd=REPO, stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root / "before", filter="data")
    return root / "before"


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=env.get("RUN_IN", None))
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return elapsed


def contestants(folder: Path, before: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (command, environment). `before` runs from the unpacked package (first on PYTHONPATH, started in
    its folder so `-m lmm_lightning` finds it before the editable install)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ours = [sys.executable, "-m", "lmm_lightning"]
    commands = {
        "--help": ["--help"],
        "tasks": ["tasks"],
        "compare": ["compare", str(folder), str(folder), "--iters", "1000"],
        "eval --help": ["eval", "--help"],
    }
    out = {f"now: {name}": ([*ours, *args], env) for name, args in commands.items()}
    if before is not None:
        old_env = {**env, "PYTHONPATH": str(before), "RUN_IN": str(before)}
        for name, args in commands.items():
            if name != "eval --help":  # no `eval` before
                out[f"before: {name}"] = ([sys.executable, "-m", "lmm_lightning", *args], old_env)
    if Path(LM_EVAL[0]).exists():
        out["lm_eval --help"] = ([*LM_EVAL, "--help"], env)
        out["lm_eval run --help"] = ([*LM_EVAL, "run", "--help"], env)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", default=None, help="a git commit to time as 'before' (e.g. the one before the lazy imports)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cli_startup_"))
    try:
        folder = compare_folder(root)
        before = checkout(args.before, root) if args.before else None
        runs = contestants(folder, before)
        times: dict[str, list[float]] = {name: [] for name in runs}
        loads = []
        for _ in range(args.repeats):  # alternate: every contestant once per round
            loads.append(load_average())
            for name, (command, env) in runs.items():
                times[name].append(timed(command, env))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{machine()}, commit {git_commit()}, {args.repeats} repeats, load {min(loads):.2f}-{max(loads):.2f}\n")
    print("| command | median s | min s |\n|---|---|---|")
    for name, values in times.items():
        print(f"| `{name}` | {median(values):.2f} | {min(values):.2f} |")
    RESULTS.mkdir(exist_ok=True)
    record = {"machine": machine(), "commit": git_commit(), "before": args.before, "times": times, "loads": loads}
    (RESULTS / "cli_startup.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
