"""FSDP runs that never desynchronise: real 2-process runs on CPU (gloo, `CPUFSDPStrategy`) under torchrun.

Each scenario runs this file as a script on two ranks, in a session of its own with a timeout, so a hang
(a rank waiting on a collective the other never joins) fails the test instead of blocking it. The ranks
write what they saw (forwards per batch, the batch size they agreed, how the model was loaded, what
`release` freed) to one JSON file each, which the tests read.

- forwards: each rank gets batches made to differ from the other's (one-token vs several-token continuations,
  one rolling window vs several, 1 vs 5 new tokens, images vs none, a prompt too long to share), in every
  mode of the text and the vision model; every rank must run as many forwards of the model and of each
  FSDP unit in every batch.
- auto: the tiny tasks with `batch_size: auto`, rank 1 running out of memory above a batch of 2: both ranks
  agree on 2, rank 1 builds the model on the meta device (rank 0 alone reads the checkpoint), the samples
  equal a batch-size-1 run in one process, and `free_model_memory` empties every FSDP flat parameter.
"""

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from tests.fixtures.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240
PROBE_OOM_ABOVE = 2  # rank 1's simulated memory: a probe of more sequences runs out of it
MAX_BATCH = 8




def torchrun(scenario: str, out: Path, *args: str) -> list[dict]:
    """Run `scenario` on 2 ranks; the JSON each rank wrote. A hang is killed after TIMEOUT_S and fails."""
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(Path(__file__)), scenario, str(out), *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{scenario}: the ranks hung for {TIMEOUT_S} s (desynchronised collectives?)\n{output[-4000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, output[-6000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


# --- the tests ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forwards(tiny_model, tmp_path_factory):
    from tests.fixtures.vision import build_tiny_llava

    llava = build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")
    return torchrun("forwards", tmp_path_factory.mktemp("fsdp_forwards"), str(tiny_model), str(llava))


CASES = ["text/packed", "text/cache", "text/none", "text/rolling", "text/generation",
         "vision/shared", "vision/shared_or_alone", "vision/generation"]


@pytest.mark.parametrize("case", CASES)
def test_every_rank_runs_as_many_forwards_whatever_its_batch(forwards, case):
    rank0, rank1 = (ranks[case] for ranks in forwards)
    assert rank0["contents"] != rank1["contents"]  # the batches do differ between the ranks
    assert rank0["model"] == rank1["model"] and rank0["model"][0] > 0
    assert rank0["units"] == rank1["units"] and rank0["units"][0] > 0  # every FSDP unit gathered as often


def test_cache_mode_runs_its_second_forward_on_every_rank(forwards):
    """The case that hung: one-token continuations need one forward, longer ones two."""
    assert [ranks["text/cache"]["model"] for ranks in forwards] == [[2], [2]]


def test_vision_tower_stays_in_the_root_unit(forwards):
    """A text-only batch skips the vision tower; were its blocks FSDP units, only one rank would gather them."""
    assert all(not any("vision_tower" in name for name in ranks["vision/shared"]["unit_names"]) for ranks in forwards)


@pytest.fixture(scope="module")
def auto_run(tiny_model, tiny_tasks, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_auto")
    ranks = torchrun("auto", out, str(tiny_model), str(tiny_tasks))
    return out, ranks


def test_batch_size_auto_agrees_after_an_oom_on_one_rank(auto_run):
    _, ranks = auto_run
    assert [r["batch_size"] for r in ranks] == [{"loglikelihood": PROBE_OOM_ABOVE, "generate_until": PROBE_OOM_ABOVE}] * 2
    assert ranks[1]["probe_oom"] and not ranks[0]["probe_oom"]  # only rank 1 ran out of memory
    assert ranks[0]["probed"] == ranks[1]["probed"]  # as many probes on each rank: the collectives line up


def test_sharded_run_gives_the_samples_of_one_process(auto_run, tiny_model, tiny_tasks, tmp_path):
    from lightning.pytorch import Trainer

    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation import EvaluationCallback
    from lmm_lightning.models import HFCausalLM

    out, _ = auto_run
    callback = EvaluationCallback(output_dir=str(tmp_path / "one"), bootstrap_iters=0, print_table=False)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback], enable_progress_bar=False)
    data = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml"), str(tiny_tasks / "tiny_gen.yaml")], batch_size=1)
    trainer.predict(HFCausalLM(str(tiny_model)), data, return_predictions=False)
    for task in ("tiny_mc", "tiny_gen"):
        sharded, alone = (sorted(map(json.loads, open(folder / f"samples_{task}.jsonl")), key=lambda s: s["doc_id"])
                          for folder in (out / "eval", tmp_path / "one"))
        assert len(sharded) == len(alone) == 13
        for a, b in zip(sharded, alone):
            if task == "tiny_gen":
                assert a["filtered_resps"] == b["filtered_resps"]
            else:
                assert [greedy for _, greedy in a["filtered_resps"]] == [greedy for _, greedy in b["filtered_resps"]]
                assert [lp for lp, _ in a["filtered_resps"]] == pytest.approx([lp for lp, _ in b["filtered_resps"]], abs=1e-4)


def test_only_rank_zero_reads_the_checkpoint(auto_run):
    _, ranks = auto_run
    assert [r["loaded_on"] for r in ranks] == ["cpu", "meta"]


def test_release_frees_the_sharded_parameters(auto_run):
    out, ranks = auto_run
    for r in ranks:
        assert r["flat_bytes_before"] > 0 and r["flat_bytes_after"] == 0  # every flat parameter's storage is gone
        assert r["freed"] >= r["flat_bytes_before"]
    assert "MiB of sharded parameters freed on rank 0" in (out / "rank0.log").read_text()


# --- the scenarios, run on each rank under torchrun ------------------------------------------------------
def cpu_fsdp(**kwargs):
    from lmm_lightning.models.sharding import CPUFSDPStrategy, NoSplitModulesPolicy

    return CPUFSDPStrategy(auto_wrap_policy=NoSplitModulesPolicy(), timeout=timedelta(seconds=60), **kwargs)


class CountForwards:
    """Counts, per batch, the forwards of the Hugging Face model and of every FSDP unit (each one is a
    gather of its shards: a collective every rank must join)."""

    def __init__(self) -> None:
        from lightning.pytorch import Callback

        counter = self

        class Hooks(Callback):
            def on_predict_start(self, trainer, pl_module):
                from torch.distributed.fsdp import FullyShardedDataParallel

                counter.units = [m for m in trainer.strategy.model.modules() if isinstance(m, FullyShardedDataParallel)]
                counter.unit_names = [n for n, m in trainer.strategy.model.named_modules() if isinstance(m, FullyShardedDataParallel)]
                pl_module.model.register_forward_pre_hook(lambda *_: counter.bump("model"))
                for unit in counter.units[1:]:  # the root runs once per step, around predict_step itself
                    unit.register_forward_pre_hook(lambda *_: counter.bump("units"))

            def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
                counter.model.append(counter.now.pop("model", 0))
                counter.units_per_batch.append(counter.now.pop("units", 0))

        self.callback = Hooks()
        self.now: dict = {}
        self.model: list = []
        self.units_per_batch: list = []
        self.unit_names: list = []

    def bump(self, key: str) -> None:
        self.now[key] = self.now.get(key, 0) + 1


def count_forwards(model, batches) -> dict:
    """Forwards per batch of `model` answering this rank's `batches` under FSDP on 2 CPU processes."""
    from lightning.pytorch import Trainer

    counter = CountForwards()
    trainer = Trainer(accelerator="cpu", devices=2, strategy=cpu_fsdp(), logger=False, callbacks=[counter.callback],
                      enable_progress_bar=False, use_distributed_sampler=False)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)
    trainer.predict(model, loader, return_predictions=False)
    contents = [[(r.context, r.continuation, r.generation.max_new_tokens) for r in b.requests] + [len(v) for v in b.visuals] for b in batches]
    return {"model": counter.model, "units": counter.units_per_batch, "unit_names": counter.unit_names, "contents": contents}


def scenario_forwards(out: Path, tiny_model: str, llava: str) -> None:
    from PIL import Image

    from lmm_lightning.data.datamodule import RequestBatch
    from lmm_lightning.models import HFCausalLM, HFVisionLM
    from lmm_lightning.requests import GenerationSpec, Request, RequestType

    rank = int(os.environ["RANK"])
    one_token, long = " Paris", " Paris Berlin Madrid Rome"  # one token vs several in the tiny tokenizer

    def choices(context, continuations, kind=RequestType.LOGLIKELIHOOD, **kw):
        return RequestBatch([Request(i, "t", 0, kind, context, c, choice_index=i, **kw) for i, c in enumerate(continuations)],
                            [False] * len(continuations))

    question = "Question: What is the capital of France? Answer:"
    mc = choices(question, [one_token, " Oslo"] if rank == 0 else [long, " Oslo Dublin"])
    text = "one two three four five six seven eight nine ten " * (1 if rank == 0 else 4)
    rolling = choices("", [text], RequestType.LOGLIKELIHOOD_ROLLING)
    spec = GenerationSpec(until=(), max_new_tokens=1 if rank == 0 else 5)
    generation = choices(question, [""], RequestType.GENERATE_UNTIL, generation=spec)
    results = {}
    for mode in ("packed", "cache", "none"):
        results[f"text/{mode}"] = count_forwards(HFCausalLM(tiny_model, reuse_context=mode), [mc])
    results["text/rolling"] = count_forwards(HFCausalLM(tiny_model, max_length=8), [rolling])
    results["text/generation"] = count_forwards(HFCausalLM(tiny_model), [generation])

    image = Image.new("RGB", (30, 30), (255, 0, 0))
    shape = "what is the color of the shape?"
    with_image = RequestBatch(mc.requests, mc.padding, [[image]] * len(mc.requests))
    vision_mc = choices(shape, [" red", " blue"]) if rank == 0 else with_image
    results["vision/shared"] = count_forwards(HFVisionLM(llava), [vision_mc])
    # Rank 0's prompt is too long to share (it is cut, each choice alone: one forward); rank 1 shares (two).
    too_long = choices("red green blue yellow " * 40 + shape, [" red", " blue"])
    results["vision/shared_or_alone"] = count_forwards(HFVisionLM(llava, max_length=96), [too_long if rank == 0 else vision_mc])
    vision_gen = RequestBatch(generation.requests, generation.padding, [[image]] if rank == 1 else [])
    results["vision/generation"] = count_forwards(HFVisionLM(llava), [vision_gen])
    (out / f"rank{rank}.json").write_text(json.dumps(results))


def scenario_auto(out: Path, tiny_model: str, tiny_tasks: str) -> None:
    from lightning.pytorch import Callback, Trainer

    from lmm_lightning.data import BenchmarkDataModule
    from lmm_lightning.evaluation import EvaluationCallback
    from lmm_lightning.models import HFCausalLM

    rank = int(os.environ["RANK"])
    report = {"probe_oom": False, "probed": []}

    class SmallMemoryOnRank1(HFCausalLM):
        """Rank 1 runs out of memory probing more than PROBE_OOM_ABOVE sequences, inside the sharded forward."""

        def probe(self, batch_size: int, seq_len: int) -> None:
            report["probed"].append(batch_size)
            super().probe(batch_size, seq_len)
            if rank == 1 and batch_size > PROBE_OOM_ABOVE:
                report["probe_oom"] = True
                raise torch.OutOfMemoryError("simulated: CUDA out of memory")

        def configure_model(self) -> None:
            super().configure_model()
            report["loaded_on"] = next(self.model.parameters()).device.type

    class Watch(Callback):
        def on_predict_start(self, trainer, pl_module):
            self.storages = [p.untyped_storage() for p in trainer.strategy.model.parameters()]  # the flat parameters'
            report["flat_bytes_before"] = sum({s.data_ptr(): s.nbytes() for s in self.storages}.values())
            report["batch_size"] = trainer.datamodule.resolved_batch_size()

    model = SmallMemoryOnRank1(tiny_model)
    release = model.release
    model.release = lambda: report.__setitem__("freed", release()) or report["freed"]
    watch = Watch()
    evaluation = EvaluationCallback(output_dir=str(out / "eval"), bootstrap_iters=0, print_table=False)
    data = BenchmarkDataModule([f"{tiny_tasks}/tiny_mc.yaml", f"{tiny_tasks}/tiny_gen.yaml"], batch_size="auto", max_batch_size=MAX_BATCH)
    trainer = Trainer(accelerator="cpu", devices=2, strategy=cpu_fsdp(), logger=False, callbacks=[watch, evaluation], enable_progress_bar=False)
    trainer.predict(model, data, return_predictions=False)
    report["flat_bytes_after"] = sum(storage.nbytes() for storage in watch.storages)  # held here, yet emptied
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    scenario, folder, *rest = sys.argv[1:]
    log = Path(folder) / f"rank{os.environ['RANK']}.log"
    with open(log, "w") as handle:
        sys.stdout = handle  # what rank 0 prints (the release message) is checked by the tests
        {"forwards": scenario_forwards, "auto": scenario_auto}[scenario](Path(folder), *rest)
