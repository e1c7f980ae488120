"""Tokenisation of loglikelihood batches: per batch (what `HFCausalLM` does) vs per request.

- per batch: `encode_pairs(tokenizer, batch)` on each of the evaluation's batches: one tokenizer
  call for the whole strings and one for the distinct contexts of the batch;
- per request: `encode_pairs(tokenizer, [pair])` for every request: two calls each, the shared
  context of a question's choices tokenised once per choice (what one call per request costs).

Both give the same tokens (checked). Reported: medians over `--repeats`, and the model time of the
same batches for scale.

    python benchmarks/tokenisation.py --tasks capitals_mc --batch-size 16 --repeats 5
"""

import argparse
import json
import time
from typing import Any, Optional

from common import RESULTS, add_load_arguments, git_commit, machine, median, wait_for_quiet
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.sampler import global_batches
from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.hf_causal import encode_pairs
from lmm_lightning.requests import RequestType


def measure(
    pretrained: str, tasks: list[str], batch_size: int, repeats: int, limit: Optional[int] = None,
    include_path: Optional[str] = None,
) -> dict[str, Any]:
    """Seconds to tokenise every loglikelihood batch both ways (and to run the model on them)."""
    model = HFCausalLM(pretrained, dtype="float32")
    model.configure_model()
    datamodule = BenchmarkDataModule(tasks, limit=limit, batch_size=batch_size, include_path=include_path)
    datamodule.setup("predict")
    request_batches = [
        b for b in global_batches(datamodule.requests, batch_size) if b[0].request_type is RequestType.LOGLIKELIHOOD
    ]
    batches = [[(model.prompt(r.context), r.continuation) for r in batch] for batch in request_batches]
    per_batch = [encode_pairs(model.tokenizer, batch) for batch in batches]
    per_request = [[encode_pairs(model.tokenizer, [pair])[0] for pair in batch] for batch in batches]
    times: dict[str, list[float]] = {"per_batch": [], "per_request": []}
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            encode_pairs(model.tokenizer, batch)
        times["per_batch"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for batch in batches:
            for pair in batch:
                encode_pairs(model.tokenizer, [pair])
        times["per_request"].append(time.perf_counter() - start)
    start = time.perf_counter()
    for batch in request_batches:
        model.loglikelihood(batch)
    return {
        "requests": sum(map(len, batches)),
        "batches": len(batches),
        "identical_tokens": per_batch == per_request,
        "times_s": times,
        "median_s": {k: median(v) for k, v in times.items()},
        "model_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", nargs="+", default=["capitals_mc"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    add_load_arguments(parser)
    args = parser.parse_args()
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    row = measure(args.pretrained, args.tasks, args.batch_size, args.repeats)
    m = row["median_s"]
    print(
        f"{'+'.join(args.tasks)}: {row['requests']} requests in {row['batches']} batches | per batch {1000 * m['per_batch']:.1f} ms | "
        f"per request {1000 * m['per_request']:.1f} ms (x{m['per_request'] / m['per_batch']:.2f}) | identical tokens: "
        f"{row['identical_tokens']} | model on the same batches {row['model_s']:.2f} s "
        f"(tokenisation per batch = {m['per_batch'] / row['model_s']:.1%} of it)",
        flush=True,
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tokenisation.json").write_text(json.dumps({"machine": machine(), "commit": git_commit(), **row}, indent=2))


if __name__ == "__main__":
    main()
