"""Few-shot tasks against lm-evaluation-harness: 5-shot multiple choice (MMLU-style) and 5-shot generation (gsm8k-style).

Every question of a task repeats the same five examples in front of it (`first_n`, as MMLU and gsm8k do), so
lmm_lightning computes that prefix once per batch (`models/prefix.py`) where lm-eval recomputes it for every
question. The data are written here (synthetic questions in MMLU's and gsm8k's formats, deterministic), and one
YAML per task that both tools read: same prompt, examples, choices, stop strings and token budget.

Contestants, alternated `--repeats` times, same model folder, batch size and threads:
  lm_eval          `lm_eval --model hf ... --include_path DIR` (0.4.13 in benchmarks/.venv-lmeval), its
                   `HFLM.loglikelihood` / `HFLM.generate_until` call timed
  lmm_lightning    `lmm-lightning predict` (benchmarks/timed_cli.py: the evaluation phase timed; `model_s` the part
                   in the model's predict_step, whose throughput is the model-forward ceiling)
  unshared         lmm_lightning with `--model.init_args.share_prefix false`
  static, compile  (`--variants`) transformers' `generate` on a static cache (`static_cache true`), its decode
                   step compiled (`compile true`)

Per-sample outputs are compared with lm-eval's samples file: log-probs (max |difference|), generations (equal count).

    python benchmarks/shared_prefix.py --workload mmlu5 --repeats 3
    python benchmarks/shared_prefix.py --workload gsm5 --repeats 3
"""

import argparse
import glob
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from common import RESULTS, Contention, add_load_arguments, git_commit, idle_waiter, machine, median, wait_for_quiet
from vs_lm_eval import LMEVAL_VERSION, OUR_PYTHON, REPO, TIMED_CLI, _run, ensure_lmeval_venv

WORDS = (
    "the of a in energy system model theory process value cell market law state force rate group data function "
    "structure surface change growth policy effect source level point method power light heat water species "
    "reaction pressure measure signal network order number result condition pattern element factor memory "
    "population culture history language court trade price demand supply income council region period"
).split()
NAMES = ["Tom", "Ana", "Li", "Sara", "Omar", "Kofi", "Mia", "Raj", "Elena", "Ben"]
THINGS = ["apples", "books", "coins", "marbles", "stamps", "pencils", "shells", "cards"]

LMEVAL_DRIVER = """
import atexit, json, sys, time
import torch
from lm_eval.models.huggingface import HFLM
timing = {}
def timed(name):
    original = getattr(HFLM, name)
    def run(self, requests, *args, **kwargs):
        start = time.perf_counter()
        out = original(self, requests, *args, **kwargs)
        timing["phase_s"] = timing.get("phase_s", 0.0) + time.perf_counter() - start
        timing["requests"] = timing.get("requests", 0) + len(requests)
        timing["threads"] = torch.get_num_threads()
        return out
    setattr(HFLM, name, run)
timed("loglikelihood"); timed("generate_until")
atexit.register(lambda: print("BENCHMARK " + json.dumps(timing), flush=True))
sys.argv = ["lm_eval"] + sys.argv[1:]
from lm_eval.__main__ import cli_evaluate
cli_evaluate()
"""


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def mmlu_docs(rng: random.Random, subject: str, n: int) -> list[dict[str, Any]]:
    """Questions of MMLU's length (40-80 words, four choices of 3-8 words)."""
    return [
        {
            "question": f"{sentence(rng, rng.randint(40, 80))} What follows about {subject}?",
            "subject": subject,
            "choices": [sentence(rng, rng.randint(3, 8)) for _ in range(4)],
            "answer": rng.randrange(4),
        }
        for _ in range(n)
    ]


def gsm_docs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Two-step word problems with a worked answer ending in `#### N`, as gsm8k's."""
    docs = []
    for _ in range(n):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        a, b, c = rng.randint(5, 60), rng.randint(2, 30), rng.randint(1, 20)
        question = f"{name} has {a} {thing}. {name} buys {b} more and then gives {c} to a friend. How many {thing} does {name} have now?"
        answer = f"{name} has {a} + {b} = {a + b} {thing} after buying.\n{name} gives away {c}, so {a + b} - {c} = {a + b - c}.\n#### {a + b - c}"
        docs.append({"question": question, "answer": answer})
    return docs


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


MMLU_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    dev: {dev}
    test: {test}
test_split: test
fewshot_split: dev
num_fewshot: 5
fewshot_config:
  sampler: first_n
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {subject}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GSM_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
test_split: test
fewshot_split: train
num_fewshot: 5
fewshot_config:
  sampler: first_n
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["Question:", "</s>", "<|im_end|>"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_gen_toks}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_tasks(folder: Path, workload: str, subjects: int, questions: int, max_gen_toks: int) -> list[str]:
    """The workload's data and YAMLs in `folder`; returns the task names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    names = []
    if workload == "mmlu5":
        for s in range(subjects):
            subject = f"subject {s}"
            task = f"mmlu5_s{s}"
            write_jsonl(folder / f"{task}_dev.jsonl", mmlu_docs(rng, subject, 5))
            write_jsonl(folder / f"{task}_test.jsonl", mmlu_docs(rng, subject, questions))
            (folder / f"{task}.yaml").write_text(
                MMLU_YAML.format(task=task, subject=subject, dev=folder / f"{task}_dev.jsonl", test=folder / f"{task}_test.jsonl")
            )
            names.append(task)
    else:
        write_jsonl(folder / "gsm5_train.jsonl", gsm_docs(rng, 20))
        write_jsonl(folder / "gsm5_test.jsonl", gsm_docs(rng, questions))
        (folder / "gsm5.yaml").write_text(
            GSM_YAML.format(task="gsm5", train=folder / "gsm5_train.jsonl", test=folder / "gsm5_test.jsonl", max_gen_toks=max_gen_toks)
        )
        names.append("gsm5")
    return names


def outputs(samples: list[dict[str, Any]], generation: bool) -> dict[int, list[Any]]:
    """Per document: its log-probs (multiple choice) or its generation."""
    if generation:
        return {s["doc_id"]: [s["resps"][0][0]] for s in samples}
    return {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in samples}


def run_lmeval(python: Path, pretrained: str, tasks: list[str], task_dir: Path, batch_size: int, threads: int, output: Path, generation: bool) -> dict:
    args = [
        "--model", "hf", "--model_args", f"pretrained={pretrained},dtype=float32", "--tasks", ",".join(tasks),
        "--include_path", str(task_dir), "--batch_size", str(batch_size), "--device", "cpu",
        "--output_path", str(output), "--log_samples",
    ]
    wall, timing = _run([str(python), "-c", LMEVAL_DRIVER, *args], threads, output.with_suffix(".log"))
    per_task = {}
    for task in tasks:
        path = sorted(glob.glob(str(output / "**" / f"samples_{task}_*.jsonl"), recursive=True))[-1]
        per_task[task] = outputs([json.loads(line) for line in Path(path).read_text().splitlines()], generation)
    return {"wall_s": wall, **timing, "outputs": per_task}


def run_ours(
    pretrained: str, tasks: list[str], task_dir: Path, batch_size: int, threads: int, output: Path, generation: bool, share: bool,
    options: tuple[str, ...] = (),
) -> dict:
    args = [
        "predict", "--config", str(REPO / "configs" / "demo.yaml"), "--model.init_args.pretrained", pretrained,
        "--data.init_args.tasks", json.dumps(tasks), "--data.init_args.include_path", str(task_dir),
        "--data.init_args.batch_size", str(batch_size), "--evaluation.output_dir", str(output),
        "--evaluation.bootstrap_iters", "1000", "--trainer.enable_progress_bar", "false",
        "--model.init_args.share_prefix", "true" if share else "false", *options,
    ]
    wall, timing = _run([OUR_PYTHON, str(TIMED_CLI), *args], threads, output.with_suffix(".log"))
    per_task = {}
    for task in tasks:
        lines = (output / f"samples_{task}.jsonl").read_text().splitlines()
        per_task[task] = outputs([json.loads(line) for line in lines], generation)
    return {"wall_s": wall, **timing, "outputs": per_task}


def agreement(ours: dict, theirs: dict, generation: bool) -> dict[str, Any]:
    pairs = [
        (a, b)
        for task, docs in theirs["outputs"].items()
        for doc, values in docs.items()
        for a, b in zip(ours["outputs"][task][doc], values)
    ]
    if generation:
        return {"outputs": len(pairs), "identical_generations": sum(a == b for a, b in pairs)}
    return {"outputs": len(pairs), "max_abs_logprob_diff": max(abs(a - b) for a, b in pairs)}


def compare(args: argparse.Namespace, workdir: Path, wait: Callable[[], float]) -> dict[str, Any]:
    generation = args.workload == "gsm5"
    questions = args.questions or (40 if generation else 30)
    task_dir = workdir / "tasks"
    tasks = write_tasks(task_dir, args.workload, args.subjects, questions, args.max_gen_toks)
    python = ensure_lmeval_venv()
    contestants = {
        "lm_eval": lambda out: run_lmeval(python, args.pretrained, tasks, task_dir, args.batch_size, args.threads, out, generation),
        "lmm_lightning": lambda out: run_ours(args.pretrained, tasks, task_dir, args.batch_size, args.threads, out, generation, True),
        "unshared": lambda out: run_ours(args.pretrained, tasks, task_dir, args.batch_size, args.threads, out, generation, False),
    }
    for variant in args.variants:  # transformers' generate on a static cache, its decode step compiled or not
        options = ("--model.init_args.static_cache", "true") + (("--model.init_args.compile", "true") if variant == "compile" else ())
        contestants[variant] = lambda out, options=options: run_ours(
            args.pretrained, tasks, task_dir, args.batch_size, args.threads, out, generation, False, options
        )
    runs: dict[str, list[dict]] = {name: [] for name in contestants}
    for i in range(args.repeats):
        for name, run in contestants.items():
            wait()
            with Contention() as seen:
                row = run(workdir / f"{name}_{i}")
            runs[name].append({**row, **seen.as_dict()})
            print(f"{name} run {i}: phase {row['phase_s']:.2f} s", flush=True)
    summary: dict[str, Any] = {"workload": args.workload, "batch_size": args.batch_size, "threads": args.threads, "tasks": tasks}
    for name, rows in runs.items():
        phase = median([r["phase_s"] for r in rows])
        entry = {
            "requests": rows[0]["requests"],
            "phase_s": [r["phase_s"] for r in rows],
            "median_phase_s": phase,
            "requests_per_s": rows[0]["requests"] / phase,
            "median_wall_s": median([r["wall_s"] for r in rows]),
            "load_1min": [r["load_1min"] for r in rows],
            "others_cores": [r["others_cores"] for r in rows],
        }
        if "model_s" in rows[0]:
            entry["model_s"] = median([r["model_s"] for r in rows])
            entry["ceiling_requests_per_s"] = rows[0]["requests"] / entry["model_s"]
        if name != "lm_eval":
            entry["vs_lm_eval"] = {
                **agreement(rows[0], runs["lm_eval"][0], generation),
                "throughput_ratio": entry["requests_per_s"] / (runs["lm_eval"][0]["requests"] / median([r["phase_s"] for r in runs["lm_eval"]])),
            }
        summary[name] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["mmlu5", "gsm5"], default="mmlu5")
    parser.add_argument("--pretrained", default=None, help="model folder (default: the converted SmolLM2 folder)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=4, help="mmlu5: tasks (subjects), each with its own five examples")
    parser.add_argument("--questions", type=int, default=None, help="test questions per task (default 30 for mmlu5, 40 for gsm5)")
    parser.add_argument("--max-gen-toks", type=int, default=128)
    parser.add_argument("--variants", nargs="*", default=[], choices=["static", "compile"], help="also run with static_cache / compile")
    add_load_arguments(parser)
    args = parser.parse_args()
    if args.pretrained is None:
        from lmm_lightning.assets import smollm2_folder

        args.pretrained = str(smollm2_folder())
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        summary = compare(args, Path(workdir), idle_waiter(args))
    for name in ("lm_eval", "lmm_lightning", "unshared", *args.variants):
        s = summary[name]
        line = f"{name:>14}: {s['requests']} requests | phase {s['median_phase_s']:.2f} s ({s['requests_per_s']:.2f} req/s)"
        if "ceiling_requests_per_s" in s:
            line += f" | model {s['model_s']:.2f} s ({s['ceiling_requests_per_s']:.2f} req/s)"
        if "vs_lm_eval" in s:
            line += f" | {json.dumps(s['vs_lm_eval'])}"
        print(line, flush=True)
    RESULTS.mkdir(exist_ok=True)
    record = {"machine": machine(), "commit": git_commit(), "lm_eval_version": LMEVAL_VERSION, "argv": sys.argv[1:], **summary}
    (RESULTS / f"shared_prefix_{args.workload}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
