"""Evaluate on a Ray cluster with Ray Train: one Lightning `Trainer.predict` per Ray worker, the same outputs.

    pip install 'ray[train]'
    python examples/ray_train.py --num_workers 2                       # the offline demo model and quiz, on CPU
    python examples/ray_train.py --pretrained /models/llama --tasks mmlu --num_workers 8 --use_gpu

Ray starts the workers and their process group (`TorchConfig`, whose `timeout_s` is the process-group timeout
here: `--process_group_timeout` of `lmm-lightning predict` does not apply); `RayDDPStrategy` and
`RayLightningEnvironment` make Lightning use them. Each worker is one rank: the sampler, the response store
(resume by rerunning with the same `--output_dir` on a folder every worker can reach), the gather and
results.json work as under torchrun; this script prints results.json's scores once the workers are done.
Ray's `RayTrainReportCallback` is left out: it reports at the end of training epochs, which `predict` has none of
(and Ray Train keeps only metrics reported with a checkpoint, of which an evaluation has none).
"""

import argparse
import json
from pathlib import Path
from typing import Any

import ray.train
from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer
from ray.train.torch import TorchConfig, TorchTrainer


def evaluate_on_worker(config: dict[str, Any]) -> None:
    """One Ray worker: the same Trainer as `lmm-lightning predict`, on Ray's devices and process group."""
    from lightning.pytorch import Trainer

    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation import EvaluationCallback
    from lmm_lightning.models import HFCausalLM

    evaluation = EvaluationCallback(output_dir=config["output_dir"], bootstrap_iters=config["bootstrap_iters"])
    trainer = Trainer(
        accelerator="auto",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=[evaluation],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = prepare_trainer(trainer)
    model = HFCausalLM(pretrained=config["pretrained"], dtype="float32")
    data = BenchmarkDataModule(config["tasks"], limit=config["limit"], batch_size=config["batch_size"])
    trainer.predict(model, data, return_predictions=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", default="smollm2-135m-instruct", help="model folder or offline asset")
    parser.add_argument("--tasks", default="capitals_mc", help="comma-separated task names or YAML paths")
    parser.add_argument("--limit", default="20", help="documents per task: a count, a fraction like 0.1, or -1 for all")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--bootstrap_iters", type=int, default=1000)
    parser.add_argument("--output_dir", default="outputs/ray", help="a folder every worker can reach")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--use_gpu", action="store_true")
    parser.add_argument("--process_group_timeout", type=int, default=60_000, help="seconds before a collective times out")
    args = parser.parse_args(argv)
    limit = float(args.limit) if "." in args.limit else int(args.limit)
    local = lambda name: str(Path(name).resolve()) if Path(name).exists() else name  # workers may run elsewhere
    trainer = TorchTrainer(
        evaluate_on_worker,
        train_loop_config={
            "pretrained": local(args.pretrained), "tasks": [local(t) for t in args.tasks.split(",") if t], "limit": limit,
            "batch_size": args.batch_size, "bootstrap_iters": args.bootstrap_iters,
            "output_dir": str(Path(args.output_dir).resolve()),
        },
        torch_config=TorchConfig(backend="nccl" if args.use_gpu else "gloo", timeout_s=args.process_group_timeout),
        scaling_config=ray.train.ScalingConfig(num_workers=args.num_workers, use_gpu=args.use_gpu),
    )
    trainer.fit()
    results = json.loads((Path(args.output_dir) / "results.json").read_text())["results"]
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
