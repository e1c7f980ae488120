"""results.json and samples_<task>.jsonl read the way lm-evaluation-harness tooling reads them.

The readers below mirror, without installing lm-eval, what its code does with these files:
`lm_eval.utils.make_table` (the printed table, per task and per group), the W&B logger
(`WandbLogger._sanitize_results_dict`, its results table and `_generate_dataset` over the
sample records), and the per-task `configs` / `n-samples` / `higher_is_better` lookups.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch import Trainer

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.models import HFCausalLM


# --- mirrors of lm-eval's readers -----------------------------------------------------------------
def make_table_rows(result_dict: dict, column: str = "results") -> list[list]:
    """lm_eval.utils.make_table's rows: (name, version, filter, n-shot, metric, value, ±, stderr)."""
    rows = []
    for k in result_dict[column].keys():
        dic = dict(result_dict[column][k])
        version = result_dict["versions"].get(k, "    N/A")
        n = str(result_dict.get("n-shot", " ").get(k, " "))
        if "alias" in dic:
            k = dic.pop("alias")
        for mf, v in sorted(dic.items()):
            m, _, f = mf.partition(",")
            if m.endswith("_stderr"):
                continue
            v = f"{v:.4f}" if isinstance(v, float) else v
            if m + "_stderr" + "," + f in dic:
                se = dic[m + "_stderr" + "," + f]
                se = "   N/A" if se == "N/A" else f"{se:.4f}"
                rows.append([k, version, f, n, m, v, "±", se])
            else:
                rows.append([k, version, f, n, m, v, "", ""])
            k, version = "", ""
    return rows


def wandb_metrics(results: dict) -> dict[str, float]:
    """WandbLogger._sanitize_results_dict: "<task>/<metric>" with ",none" removed, strings dropped."""
    out = {}
    for task in results.get("results", {}):
        for name, value in results["results"][task].items():
            name = name.replace(",none", "")
            if not isinstance(value, str):
                out[f"{task}/{name}"] = value
    return out


def wandb_sample_table(data: list[dict], config: dict) -> dict[str, list]:
    """WandbLogger._generate_dataset's columns for multiple_choice and generate_until tasks."""
    columns = {"id": [x["doc_id"] for x in data], "labels": [x["target"] for x in data]}
    for metric in config["metric_list"]:
        columns[metric["metric"]] = [x[metric["metric"]] for x in data]
    columns["data"] = [x["arguments"][0][0] for x in data]
    if config["output_type"] == "multiple_choice":
        columns["choices"] = ["\n".join(f"{i}. {y[1]}" for i, y in enumerate(x["arguments"])) for x in data]
        columns["raw_predictions"] = [np.argmax([n[0][0] for n in x["resps"]]) for x in data]
        columns["filtered_predictions"] = [np.argmax([n[0] for n in x["filtered_resps"]]) for x in data]
    elif config["output_type"] == "generate_until":
        columns["raw_predictions"] = [x["resps"][0][0] for x in data]
        columns["filtered_predictions"] = [x["filtered_resps"][0] for x in data]
    return columns


# --- one run: two tasks and a group over them -----------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model, tiny_tasks) -> Path:
    folder = tmp_path_factory.mktemp("compat")
    for name in ("docs.jsonl", "tiny_mc.yaml", "tiny_gen.yaml"):
        shutil.copy(tiny_tasks / name, folder / name)
    (folder / "tiny_mc_again.yaml").write_text("include: tiny_mc.yaml\ntask: tiny_mc_again\n")
    (folder / "tiny_group.yaml").write_text(
        "group: tiny_group\ntask: [tiny_mc, tiny_mc_again]\naggregate_metric_list: [{metric: acc, weight_by_size: true}]\n"
    )
    evaluation = EvaluationCallback(output_dir=str(folder / "out"), bootstrap_iters=200, print_table=False, resume=False)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[evaluation], enable_progress_bar=False)
    data = BenchmarkDataModule(["tiny_gen", "tiny_group"], batch_size=4, include_path=str(folder))
    trainer.predict(HFCausalLM(str(tiny_model)), data, return_predictions=False)
    return folder / "out"


def load(run: Path) -> tuple[dict, dict[str, list[dict]]]:
    results = json.loads((run / "results.json").read_text())
    samples = {
        p.stem.removeprefix("samples_"): [json.loads(line) for line in p.read_text().splitlines()]
        for p in run.glob("samples_*.jsonl")
    }
    return results, samples


def test_make_table_reads_every_task_metric_and_stderr(run):
    results, _ = load(run)
    rows = make_table_rows(results)
    mc = results["results"]["tiny_mc"]
    assert ["tiny_mc", 1.0, "none", "0", "acc", f"{mc['acc,none']:.4f}", "±", f"{mc['acc_stderr,none']:.4f}"] in rows
    assert any(r[4] == "acc_norm" and r[5] == f"{mc['acc_norm,none']:.4f}" for r in rows)
    assert any(r[4] == "exact_match" and r[2] == "none" for r in rows)


def test_make_table_reads_groups(run):
    results, _ = load(run)
    assert set(results["groups"]) == {"tiny_group"} and results["group_subtasks"]["tiny_group"] == ["tiny_mc", "tiny_mc_again"]
    (row,) = [r for r in make_table_rows(results, "groups") if r[4] == "acc"]
    group = results["groups"]["tiny_group"]
    assert row[0] == "tiny_group" and row[5] == f"{group['acc,none']:.4f}" and row[7] == f"{group['acc_stderr,none']:.4f}"


def test_per_task_metadata_has_lm_eval_shapes(run):
    results, _ = load(run)
    for task in ("tiny_mc", "tiny_gen"):
        config = results["configs"][task]
        assert config["task"] == task and config["output_type"] in ("multiple_choice", "generate_until")
        assert all({"metric", "aggregation", "higher_is_better"} <= set(m) for m in config["metric_list"])
        assert isinstance(results["n-shot"][task], int) and results["versions"][task] == 1.0
        assert set(results["n-samples"][task]) == {"original", "effective"}
        assert all(isinstance(v, bool) for v in results["higher_is_better"][task].values())
    assert {"model", "model_args", "batch_size", "limit", "bootstrap_iters"} <= set(results["config"])
    assert isinstance(results["date"], float)


def test_wandb_logger_reads_numbers_only(run):
    results, _ = load(run)
    metrics = wandb_metrics(results)
    assert metrics["tiny_mc/acc"] == results["results"]["tiny_mc"]["acc,none"]
    assert metrics["tiny_mc/acc_stderr"] == results["results"]["tiny_mc"]["acc_stderr,none"]
    assert all(isinstance(v, (int, float)) for v in metrics.values())


def test_wandb_sample_table_for_multiple_choice(run):
    results, samples = load(run)
    table = wandb_sample_table(samples["tiny_mc"], results["configs"]["tiny_mc"])
    first = samples["tiny_mc"][0]
    assert table["id"][:3] == [0, 1, 2] and table["labels"][0] == first["target"]
    assert table["data"][0] == "Question: What is the capital of France? Answer:"
    assert table["choices"][0].splitlines()[0] == f"0.  {first['doc']['choices'][0]}"
    assert table["raw_predictions"] == table["filtered_predictions"]
    chosen = [int(p) for p in table["filtered_predictions"]]
    assert np.mean([c == x["target"] for c, x in zip(chosen, samples["tiny_mc"])]) == results["results"]["tiny_mc"]["acc,none"]


def test_wandb_sample_table_for_generation_metrics(run):
    results, samples = load(run)
    table = wandb_sample_table(samples["tiny_gen"], results["configs"]["tiny_gen"])
    assert table["exact_match"] == [x["exact_match"] for x in samples["tiny_gen"]]
    assert table["raw_predictions"] == [x["resps"][0][0] for x in samples["tiny_gen"]]


def test_generation_filtered_resps_is_a_list_per_request(run):
    """One filtered response per request (["Paris"]), so readers' x["filtered_resps"][0] is the whole text
    (the generation as scored: stripped of surrounding whitespace)."""
    _, samples = load(run)
    for x in samples["tiny_gen"]:
        assert x["filtered_resps"][0] == x["resps"][0][0].strip()


def test_make_table_survives_a_one_document_task(tmp_path, tiny_model, tiny_tasks):
    """An undefined stderr is "N/A", which make_table prints instead of formatting it as a number."""
    evaluation = EvaluationCallback(output_dir=str(tmp_path), bootstrap_iters=100, print_table=False, resume=False)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[evaluation], enable_progress_bar=False)
    data = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml")], batch_size=4, limit=1)
    trainer.predict(HFCausalLM(str(tiny_model)), data, return_predictions=False)
    rows = make_table_rows(json.loads((tmp_path / "results.json").read_text()))
    assert [r[7] for r in rows if r[4] == "acc"] == ["   N/A"]
