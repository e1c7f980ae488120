"""Wrong results that nothing caught: a scoring function that fails, ranks that built different request
lists, non-finite log-probs, and sampled answers that depend on which other tasks run.

One-process runs go in-process through `lmm_lightning.cli.main` (fast); the rank disagreements are real
2-process runs.
"""

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmm_lightning.cli import main
from lmm_lightning.evaluation.failfast import first_difference, request_digest
from lmm_lightning.evaluation.results import samples_jsonl, strict_json
from lmm_lightning.evaluation.scoring import Integrity, scoreable, score_task
from lmm_lightning.models import HFCausalLM
from lmm_lightning.models.generation import request_seed
from lmm_lightning.requests import GenerationSpec, Request, RequestType, Response
from tests.integration.reliability.test_hangs import REPO, run_eval, write_config

import torch


@pytest.fixture(autouse=True)
def tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # faulty.py: the model and the task functions


def task_yaml(folder: Path, tiny_tasks: Path, name: str, generation: bool = False, **fields: Any) -> Path:
    """A task over the tiny documents: multiple choice like tiny_mc, or a generation like tiny_gen."""
    spec: dict[str, Any] = {
        "task": name, "dataset_path": "json", "data_files": str(tiny_tasks / "docs.jsonl"),
        "doc_to_text": "Question: What is the capital of {{country}}? Answer:",
    }
    if generation:
        spec.update(output_type="generate_until", doc_to_target="capital", generation_kwargs={"until": ["."], "max_new_tokens": 6})
    else:
        spec.update(output_type="multiple_choice", doc_to_choice="choices", doc_to_target="answer")
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    return path


def in_process(cfg: Path, out: Path, *extra: str) -> None:
    main(["predict", "--config", str(cfg), "--evaluation.output_dir", str(out), *extra])


def strict_load(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# --- a failure in rank 0's scoring --------------------------------------------------------------------
def test_a_process_results_that_raises_names_task_doc_and_cause_in_one_line(tmp_path, tiny_model, tiny_tasks, capsys):
    task = task_yaml(
        tmp_path, tiny_tasks, "tiny_scored", generation=True,
        process_results="tests.fixtures.faulty:raising_process_results", metric_list=[{"metric": "acc"}],
    )
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, tasks=(str(task),), model="lmm_lightning.models.HFCausalLM")
    with pytest.raises(SystemExit) as exit_info:
        in_process(cfg, tmp_path / "out")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("lmm-lightning:")]
    assert lines == [
        f"lmm-lightning: error: task 'tiny_scored' ({task}), doc_id 3: process_results (tests.fixtures.faulty:raising_process_results) "
        "failed: ZeroDivisionError: division by zero"
    ], err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "results.json").exists()


# --- every rank builds the same request list ------------------------------------------------------------
def test_ranks_with_a_different_choice_order_are_refused_naming_the_document(tmp_path, tiny_model, tiny_tasks):
    task = task_yaml(tmp_path, tiny_tasks, "tiny_choices", doc_to_choice="tests.fixtures.faulty:choices_by_rank")
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, tasks=(str(task),), model="lmm_lightning.models.HFCausalLM")
    run = run_eval(cfg, tmp_path / "out")
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.messages == [
        "lmm-lightning: error: data: the ranks built different request lists: the first difference is task "
        "'tiny_choices', doc_id 3 (request 9), whose prompt, choice or settings differ between rank 0 and rank 1; "
        "every rank must load the same documents in the same order (is a dataset's row or choice order random?)"
    ], run.stderr[-3000:]
    assert not (tmp_path / "out" / "results.json").exists()


def test_ranks_with_a_different_row_order_are_refused_naming_the_document(tmp_path, tiny_model, tiny_tasks):
    task = task_yaml(tmp_path, tiny_tasks, "tiny_rows", dataset_path="tests.fixtures.faulty:rows_by_rank", data_files=None, test_split="train")
    cfg = write_config(tmp_path, tiny_model, tiny_tasks, tasks=(str(tiny_tasks / "tiny_gen.yaml"), str(task)))
    run = run_eval(cfg, tmp_path / "out", env={"FAULTY_DOCS": str(tiny_tasks / "docs.jsonl")})
    assert run.returncode == 2, run.stderr[-3000:]
    assert len(run.messages) == 1 and "first difference is task 'tiny_rows', doc_id 5 (request 28)" in run.messages[0]


def test_the_first_difference_is_the_lowest_request_then_the_lowest_rank():
    table = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 9, 3, 8], [1, 2, 7, 4]])
    assert first_difference(table) == (1, 2)
    a = Request(0, "t", 3, RequestType.LOGLIKELIHOOD, "Q?", " A", 0)
    assert request_digest(a) == request_digest(Request(7, "t", 3, RequestType.LOGLIKELIHOOD, "Q?", " A", 0))  # not the uid
    assert request_digest(a) != request_digest(Request(0, "t", 3, RequestType.LOGLIKELIHOOD, "Q?", " B", 0))


# --- non-finite log-probs ------------------------------------------------------------------------------
NONFINITE = {"0:0": "nan", "1:0": "-inf", "2:1": "inf"}  # doc 0's gold choice is 0; doc 1's is 2; doc 2's is 1


def test_nonfinite_logprobs_are_counted_scored_alike_fresh_and_resumed_and_written_as_strict_json(tmp_path, tiny_model, tiny_tasks):
    out = tmp_path / "out"
    faulty = write_config(tmp_path, tiny_model, tiny_tasks, tasks=("tiny_mc.yaml",), nonfinite=NONFINITE)
    in_process(faulty, out)
    fresh = {p.name: p.read_text() for p in sorted(out.glob("*.json*"))}
    results = strict_load(fresh["results.json"])
    samples = [strict_load(line) for line in fresh["samples_tiny_mc.jsonl"].splitlines()]
    assert results["integrity"]["tiny_mc"]["nonfinite_logprobs"] == 3
    by_doc = {s["doc_id"]: s for s in samples}
    assert by_doc[0]["acc"] == 0.0 and by_doc[2]["acc"] == 0.0  # a NaN or +inf gold choice never wins
    assert by_doc[0]["resps"][0] == [[None, False]] and by_doc[1]["resps"][0] == [[None, False]]

    plain = write_config(tmp_path, tiny_model, tiny_tasks, tasks=("tiny_mc.yaml",), model="lmm_lightning.models.HFCausalLM")
    in_process(plain, out)  # every answer, NaN included, read back from the store
    again = strict_load((out / "results.json").read_text())
    assert again["integrity"]["tiny_mc"]["resumed"] == 39
    assert again["integrity"]["tiny_mc"]["nonfinite_logprobs"] == 3
    assert again["results"] == results["results"]
    assert (out / "samples_tiny_mc.jsonl").read_text() == fresh["samples_tiny_mc.jsonl"]


def test_nan_from_the_gather_and_nan_from_the_store_score_the_same(tiny_tasks):
    """The gather carries a NaN log-prob as None; the store keeps it as NaN: both score as -inf."""
    from lmm_lightning.data.datamodule import TaskDocuments
    from lmm_lightning.tasks import Task, load_spec

    task = Task(load_spec(tiny_tasks / "tiny_mc.yaml"))
    doc = json.loads((tiny_tasks / "docs.jsonl").read_text().splitlines()[0])
    requests = task.build_requests(0, doc, first_uid=0)
    documents = TaskDocuments(task, {0: doc}, 1)
    scored = {}
    for name, bad in [("gathered", None), ("stored", math.nan), ("infinite", math.inf)]:
        answers = {r.uid: Response(r.uid, logprob=-1.0 - r.uid, is_greedy=False) for r in requests}
        answers[0] = Response(0, logprob=bad, is_greedy=True)  # the gold choice
        result = score_task(documents, requests, answers, 0, 0)
        scored[name] = samples_jsonl(result.records)
        assert result.integrity.nonfinite_logprobs == 1 and result.records[0]["acc"] == 0.0
    assert scored["gathered"] == scored["stored"] == scored["infinite"]
    assert scoreable(requests[1], Response(1, logprob=-math.inf, is_greedy=False)).logprob == -math.inf


def test_strict_json_writes_null_for_every_non_finite_number():
    import numpy as np

    value = {"a": [math.nan, -math.inf, 1.5], "b": {"c": np.float64("inf"), "d": np.array([1.0, np.nan])}, "e": "NaN"}
    assert strict_json(value) == {"a": [None, None, 1.5], "b": {"c": None, "d": [1.0, None]}, "e": "NaN"}
    assert strict_load(samples_jsonl([value])) == strict_json(value)
    assert "nonfinite_logprobs" in Integrity().__dict__


# --- sampled generation is seeded per request -------------------------------------------------------------
def test_sampled_answers_do_not_depend_on_which_other_tasks_run(tmp_path, tiny_model, tiny_tasks):
    sampled = task_yaml(
        tmp_path, tiny_tasks, "tiny_sampled", generation=True, repeats=3,
        generation_kwargs={"until": ["."], "max_new_tokens": 6, "do_sample": True, "temperature": 1.0},
    )
    alone = write_config(tmp_path, tiny_model, tiny_tasks, tasks=(str(sampled),), model="lmm_lightning.models.HFCausalLM")
    together = write_config(
        tmp_path, tiny_model, tiny_tasks, tasks=("tiny_gen.yaml", str(sampled)), model="lmm_lightning.models.HFCausalLM",
        batch_size=3,
    )
    in_process(alone, tmp_path / "alone")
    in_process(together, tmp_path / "together")
    first, second = (
        [json.loads(line)["resps"] for line in (tmp_path / run / "samples_tiny_sampled.jsonl").read_text().splitlines()]
        for run in ("alone", "together")
    )
    assert first == second
    assert any(len(set(map(str, doc))) > 1 for doc in first)  # the repeats really sample


def test_a_sampled_request_draws_the_same_whatever_its_batch(tiny_model):
    lm = HFCausalLM(pretrained=str(tiny_model))
    lm.configure_model()
    spec = GenerationSpec(until=(), max_new_tokens=6, do_sample=True, temperature=1.0)
    mine = Request(5, "g", 2, RequestType.GENERATE_UNTIL, "one two", generation=spec, repeat=1)
    others = [Request(i, "h", i, RequestType.GENERATE_UNTIL, "Question: What is the capital of Peru? Answer:", generation=spec) for i in range(3)]
    alone = lm.generate_until([mine])[0].text
    assert lm.generate_until([*others, mine])[-1].text == alone
    assert lm.generate_until([Request(99, "g", 2, RequestType.GENERATE_UNTIL, "one two", generation=spec, repeat=1)])[0].text == alone
    assert request_seed(mine) != request_seed(Request(5, "g", 2, RequestType.GENERATE_UNTIL, "x", generation=spec, repeat=2))
    reseeded = GenerationSpec(until=(), max_new_tokens=6, do_sample=True, temperature=1.0, seed=7)
    assert request_seed(mine) != request_seed(Request(5, "g", 2, RequestType.GENERATE_UNTIL, "one two", generation=reseeded, repeat=1))


def test_the_seed_is_part_of_a_sampled_request_key_only():
    from lmm_lightning.evaluation.store import request_key

    sampled = lambda seed: Request(0, "t", 0, RequestType.GENERATE_UNTIL, "q", generation=GenerationSpec(do_sample=True, seed=seed))
    greedy = lambda seed: Request(0, "t", 0, RequestType.GENERATE_UNTIL, "q", generation=GenerationSpec(seed=seed))
    assert request_key(sampled(1), "c", "m") != request_key(sampled(2), "c", "m")
    assert request_key(greedy(1), "c", "m") == request_key(greedy(2), "c", "m")
