"""Requests/s of a generation workload through `OpenAIModel` against the local LitServe test server, at 1, 4 and
16 requests in flight (`max_concurrency`), side by side in one run (the settings alternate within each repeat).

The workload is the first `--requests` capitals_gen requests (greedy, max 8 new tokens, the model's chat
template), sent as one batch, so the in-flight limit is the only thing that changes. The server is
tests/fixtures/openai_server.py (LitServe 0.2.19, `OpenAISpec`), `--workers` worker processes per endpoint, each
holding a model copy with `--threads` torch threads, and LitServe's dynamic batching of up to `--max-batch-size`
chat requests arriving within `--batch-timeout` s (generated together, greedy, left-padded); `--max-batch-size 1`
is LitServe's default, one request at a time per worker.

    python benchmarks/served_throughput.py --requests 64 --concurrency 1 4 16 --repeats 3 --max-batch-size 16
"""

import argparse
import json
import sys
import tempfile
import time
from typing import Any

from common import REPO, RESULTS, add_load_arguments, git_commit, machine, median, wait_for_quiet

sys.path.insert(0, str(REPO))  # tests.fixtures.openai_server

from lmm_lightning.assets import smollm2_folder  # noqa: E402
from lmm_lightning.data import BenchmarkDataModule  # noqa: E402
from lmm_lightning.models import OpenAIModel  # noqa: E402
from lmm_lightning.requests import Request, RequestType  # noqa: E402
from tests.fixtures.openai_server import ServerProcess  # noqa: E402


def workload(n: int) -> list[Request]:
    data = BenchmarkDataModule(["capitals_gen"], limit=n)
    data.setup("predict")
    return [r for r in data.requests if r.request_type is RequestType.GENERATE_UNTIL][:n]


def timed_run(base_url: str, requests: list[Request], concurrency: int) -> dict[str, Any]:
    """One pass of the workload at `concurrency` in flight: seconds, requests/s and the answers."""
    model = OpenAIModel(base_url, "smol", max_concurrency=concurrency, timeout=300)
    model.configure_model()
    try:
        start = time.perf_counter()
        responses = model.generate_until(requests)
        seconds = time.perf_counter() - start
    finally:
        model.release()
    latencies = sorted(r.usage.latency_s for r in responses)
    return {
        "seconds": seconds, "requests_per_s": len(requests) / seconds, "latency_p50_s": latencies[len(latencies) // 2],
        "texts": [r.text for r in responses],
    }


def measure(
    requests: int, concurrency: list[int], repeats: int, workers: int, threads: int, max_batch_size: int, batch_timeout: float
) -> dict[str, Any]:
    work = workload(requests)
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in concurrency}
    server_args = ["--workers", str(workers), "--threads", str(threads), "--max-batch-size", str(max_batch_size),
                   "--batch-timeout", str(batch_timeout)]
    with tempfile.TemporaryDirectory() as logs, ServerProcess(smollm2_folder(), logs, *server_args) as server:
        timed_run(server.base_url, work[: max(concurrency)], max(concurrency))  # warm-up: every worker has answered
        for _ in range(repeats):
            for c in concurrency:
                runs[c].append(timed_run(server.base_url, work, c))
    texts = {c: runs[c][0]["texts"] for c in concurrency}
    same = all(texts[c] == texts[concurrency[0]] for c in concurrency)
    return {
        "requests": len(work), "workers": workers, "threads": threads, "max_batch_size": max_batch_size,
        "batch_timeout": batch_timeout, "repeats": repeats, "same_answers": same,
        "median_requests_per_s": {c: median([r["requests_per_s"] for r in runs[c]]) for c in concurrency},
        "median_seconds": {c: median([r["seconds"] for r in runs[c]]) for c in concurrency},
        "median_latency_p50_s": {c: median([r["latency_p50_s"] for r in runs[c]]) for c in concurrency},
        "runs": {c: [{k: v for k, v in r.items() if k != "texts"} for r in runs[c]] for c in concurrency},
    }


def table(result: dict[str, Any]) -> str:
    base = result["median_requests_per_s"][min(result["median_requests_per_s"])]
    lines = ["| In flight | Requests/s | Seconds | Speed-up | Latency p50 (s) |", "|---|---|---|---|---|"]
    for c, rate in result["median_requests_per_s"].items():
        lines.append(
            f"| {c} | {rate:.2f} | {result['median_seconds'][c]:.1f} | {rate / base:.2f}x | {result['median_latency_p50_s'][c]:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=1, help="LitServe workers per endpoint")
    p.add_argument("--max-batch-size", type=int, default=16, help="LitServe dynamic batching of chat requests (1: none)")
    p.add_argument("--batch-timeout", type=float, default=0.05, help="seconds LitServe waits to fill a batch")
    p.add_argument("--threads", type=int, default=1, help="torch threads per LitServe worker")
    add_load_arguments(p)
    args = p.parse_args()
    load = wait_for_quiet(args.max_load, args.max_wait)
    result = measure(
        args.requests, args.concurrency, args.repeats, args.workers, args.threads, args.max_batch_size, args.batch_timeout
    )
    result.update(machine=machine(), commit=git_commit(), load_at_start=load)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"served_throughput_b{args.max_batch_size}_w{args.workers}.json").write_text(json.dumps(result, indent=2))
    print(f"{result['requests']} capitals_gen requests, LitServe {args.workers} worker(s) x {args.threads} thread(s), "
          f"max_batch_size {args.max_batch_size} (batch_timeout {args.batch_timeout} s), medians of {args.repeats}; "
          f"same answers at every setting: {result['same_answers']}; load at start {load:.2f}")
    print(table(result))


if __name__ == "__main__":
    main()
