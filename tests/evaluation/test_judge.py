"""Judged tasks: a judge model reads each answer after inference; its answers are stored, resumed, parsed,
and an unreadable one is counted and reported, never scored."""

import json
import re
import warnings
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.errors import InputError
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.evaluation.store import StoreWarning
from lmm_lightning.evaluation.callback import JudgeWarning
from lmm_lightning.models import EvalModule, HFCausalLM
from lmm_lightning.requests import Response

CAPITALS = ["Paris", "Berlin", "Rome", "Madrid", "Lisbon", "Vienna"]
# The evaluated model's answers: right, right (after strip), wrong, right, wrong, right.
ANSWERS = ["Paris", " Berlin\n", "Milan", "Madrid", "Porto", "Vienna"]
PROMPT = re.compile(r"Reference: (.*)\nAnswer: (.*)\nScore:", re.S)


class Answerer(EvalModule):
    """The evaluated model: a fixed answer per document; counts what it is asked."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.asked = 0

    def answer(self, batch) -> list[Response]:
        self.asked += sum(not pad for pad in batch.padding)  # a run with nothing left still runs one padding batch
        return [Response(uid=r.uid, text=self.hparams.answers[r.doc_id]) for r in batch.requests]


class Grader(EvalModule):
    """A judge: "1.0" when the answer in its prompt is the reference, "0.0" when not, and something
    unreadable when the reference is `unreadable_for`. Streams each answer (`answered`) as a served judge does;
    `fail_after` raises after that many answers (a judge server dying mid-way)."""

    def __init__(self, unreadable_for: str = "", version: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.fail_after = -1  # not a setting of the judge: its answers do not depend on it
        self.prompts: list[str] = []
        self.loaded = 0

    def configure_model(self) -> None:
        self.loaded += 1

    def generate_until(self, requests: list) -> list[Response]:
        out = []
        for index, request in enumerate(requests):
            if len(self.prompts) == self.fail_after:
                raise ConnectionError("judge server went away")
            self.prompts.append(request.context)
            reference, answer = PROMPT.search(request.context).groups()
            text = "no idea" if reference == self.hparams.unreadable_for else ("1.0" if answer == reference else "0.0")
            response = Response(uid=request.uid, text=text)
            self.answered(index, response)
            out.append(response)
        return out


def write_task(folder: Path, extra: str = "", prompt: str = "Reference: {{ target }}\\nAnswer: {{ response }}\\nScore:") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w") as handle:
        for capital in CAPITALS:
            handle.write(json.dumps({"capital": capital, "kind": "coastal" if capital in ("Lisbon", "Rome") else "inland"}) + "\n")
    (folder / "judged_utils.py").write_text(
        "def score(doc, results):\n"
        "    out = {'judge_score': results[0]}\n"
        "    out['judge_score_' + doc['kind']] = results[0]\n"
        "    return out\n"
        "def exact(doc, response):\n"
        "    return 1.0 if response == 'Madrid' else None\n"
    )
    path = folder / "capital_judged.yaml"
    path.write_text(
        "task: capital_judged\ndataset_path: json\ndata_files: docs.jsonl\noutput_type: generate_until\n"
        "doc_to_text: 'Capital?'\ndoc_to_target: capital\ngeneration_kwargs: {max_new_tokens: 8}\n"
        "process_results: !function judged_utils.score\n"
        "metric_list: [{metric: judge_score}, {metric: judge_score_coastal}, {metric: judge_score_inland}]\n"
        f"judge:\n  prompt: \"{prompt}\"\n  parser: number\n  max_new_tokens: 4\n" + extra
    )
    return path


def run(task: Path, output_dir: Path, model: EvalModule, judge: EvalModule, **options) -> EvaluationCallback:
    callback = EvaluationCallback(output_dir=str(output_dir), bootstrap_iters=0, print_table=False, judge=judge, **options)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[callback])
    trainer.predict(model, BenchmarkDataModule([str(task)], batch_size=4), return_predictions=False)
    return callback


def samples(output_dir: Path) -> list[dict]:
    lines = (output_dir / "samples_capital_judged.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda s: s["doc_id"])


def test_a_judged_task_scores_the_judges_parsed_answers_and_reports_the_unparsed(tmp_path):
    judge = Grader(unreadable_for="Vienna")
    with pytest.warns(JudgeWarning, match=r"1 document\(s\) could not be parsed \(doc_id \[5\]\)"):
        callback = run(write_task(tmp_path / "task"), tmp_path / "out", Answerer(ANSWERS), judge)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    scores = results["results"]["capital_judged"]
    # Vienna's judge answer is unreadable: 5 documents scored, 3 of them right (not 3 of 6: never scored 0).
    assert scores["judge_score,none"] == pytest.approx(3 / 5)
    assert scores["judge_score_coastal,none"] == 0.0  # Rome (Milan) and Lisbon (Porto), both wrong
    assert scores["judge_score_inland,none"] == 1.0  # Paris, Berlin, Madrid right; Vienna unparsed
    summary = results["judge"]["capital_judged"]
    assert summary["documents"] == 6 and summary["asked"] == 6 and summary["by_rule"] == 0
    assert summary["unparsed"] == 1 and summary["unparsed_doc_ids"] == [5]
    assert summary["model"]["class"] == "Grader"
    records = samples(tmp_path / "out")
    assert records[1]["judge"] == {
        "source": "judge", "prompt": "Reference: Berlin\nAnswer: Berlin\nScore:", "answer": "1.0", "parsed": 1.0,
    }  # the judge saw the stripped answer; the raw one stays in resps
    assert records[1]["resps"] == [[" Berlin\n"]]
    assert records[5]["judge"]["answer"] == "no idea" and records[5]["judge"]["parsed"] is None
    assert "judge_score" not in records[5]
    assert callback.evaluation_result.tasks[0].judging.unparsed == 1


def test_judge_answers_resume_and_a_new_judge_prompt_keeps_the_models_answers(tmp_path):
    task, out = write_task(tmp_path / "task"), tmp_path / "out"
    run(task, out, Answerer(ANSWERS), Grader())
    model, judge = Answerer(ANSWERS), Grader()
    run(task, out, model, judge)
    assert model.asked == 0 and judge.prompts == [] and judge.loaded == 0  # nothing asked, the judge never loaded
    assert json.loads((out / "results.json").read_text())["judge"]["capital_judged"]["resumed"] == 6
    # Another judge prompt: the model's answers still resume; the judge is asked again.
    task = write_task(tmp_path / "task", prompt="Judge it.\\nReference: {{ target }}\\nAnswer: {{ response }}\\nScore:")
    model, judge = Answerer(ANSWERS), Grader()
    run(task, out, model, judge)
    assert model.asked == 0 and len(judge.prompts) == 6
    # Another judge model (its settings differ): asked again too.
    judge = Grader(version=2)
    run(task, out, Answerer(ANSWERS), judge)
    assert len(judge.prompts) == 6


def test_a_judge_failing_midway_is_asked_only_what_is_missing_on_the_rerun(tmp_path):
    task, out = write_task(tmp_path / "task"), tmp_path / "out"
    failing = Grader()
    failing.fail_after = 4
    with pytest.raises(ConnectionError):
        run(task, out, Answerer(ANSWERS), failing)
    judge = Grader()
    run(task, out, Answerer(ANSWERS), judge)
    assert len(judge.prompts) == 2  # the 4 answered before the failure were stored as they came
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["capital_judged"]["judge_score,none"] == pytest.approx(4 / 6)
    assert results["judge"]["capital_judged"]["resumed"] == 4


@pytest.mark.parametrize("cut", [2, 0.5], ids=["last line lost its closing brace", "last line torn in half"])
def test_a_judge_store_torn_by_a_crash_asks_the_judge_again_only_for_the_torn_answer(tmp_path, cut):
    task, out = write_task(tmp_path / "task"), tmp_path / "out"
    run(task, out, Answerer(ANSWERS), Grader())
    (path,) = (out / "judge" / "store").glob("responses-rank*.jsonl")
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # where the last line starts
    path.write_bytes(data[: len(data) - cut] if cut == 2 else data[: last + (len(data) - last) // 2])
    judge = Grader()
    with pytest.warns(StoreWarning, match=r"skipped 1 line\(s\) of the response store .*judge"):
        run(task, out, Answerer(ANSWERS), judge)
    assert len(judge.prompts) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["judge"]["capital_judged"]["resumed"] == 5
    assert results["results"]["capital_judged"]["judge_score,none"] == pytest.approx(4 / 6)


def test_a_quick_rule_answers_without_the_judge(tmp_path):
    task = write_task(tmp_path / "task", extra="  quick: !function judged_utils.exact\n")
    judge = Grader()
    run(task, tmp_path / "out", Answerer(ANSWERS), judge)
    assert len(judge.prompts) == 5  # Madrid was answered by rule
    record = samples(tmp_path / "out")[3]
    assert record["judge"] == {"source": "rule", "prompt": None, "answer": None, "parsed": 1.0}
    summary = json.loads((tmp_path / "out" / "results.json").read_text())["judge"]["capital_judged"]
    assert summary["by_rule"] == 1 and summary["asked"] == 5


def test_a_judged_task_without_a_judge_is_an_error_before_the_model_loads(tmp_path):
    class Loading(Answerer):
        def configure_model(self) -> None:
            raise AssertionError("the model loaded")

    with pytest.raises(InputError, match=r"capital_judged.*scored by a judge model: give one, e.g. --evaluation.judge"):
        run(write_task(tmp_path / "task"), tmp_path / "out", Loading(ANSWERS), None)


def test_a_judge_section_is_checked_key_by_key(tmp_path):
    from lmm_lightning.tasks.spec import TaskSpec, TaskSpecError

    for extra, message in [
        ("  parser: guess\n", r"judge.parser': expected a !function or one of \['number', 'text'\]"),
        ("  max_new_tokens: 0\n", r"judge.max_new_tokens': expected a positive integer"),
        ("  temperature: 1\n", r"field 'judge': unknown key\(s\) \['temperature'\]"),
    ]:
        path = write_task(tmp_path / "task")
        text = path.read_text().replace("  parser: number\n", "").replace("  max_new_tokens: 4\n", "")
        path.write_text(text + extra)
        with pytest.raises(TaskSpecError, match=message):
            TaskSpec.from_yaml(path)


def test_a_local_transformers_model_can_be_the_judge(tmp_path, tiny_model):
    task = write_task(tmp_path / "task")
    judge = HFCausalLM(pretrained=str(tiny_model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JudgeWarning)  # a random tiny model writes no numbers
        run(task, tmp_path / "out", Answerer(ANSWERS), judge)
    records = samples(tmp_path / "out")
    # Its answers are the tiny model's own greedy generations for those prompts.
    reference = HFCausalLM(pretrained=str(tiny_model))
    reference.configure_model()
    from lmm_lightning.requests import GenerationSpec, Request, RequestType

    requests = [Request(i, "j", i, RequestType.GENERATE_UNTIL, r["judge"]["prompt"], generation=GenerationSpec(max_new_tokens=4))
                for i, r in enumerate(records)]
    assert [r["judge"]["answer"] for r in records] == [a.text for a in reference.generate_until(requests)]
    assert judge.model is None  # released after judging


# --- a served model's cost travels with its answers: the store, the gather, results.json ----------------
def test_usage_is_stored_with_an_answer_and_read_back(tmp_path):
    from lmm_lightning.evaluation.store import ResponseStore, parse_line
    from lmm_lightning.requests import Usage

    store = ResponseStore(tmp_path, 0, "m")
    paid = Response(uid=0, text="Paris", usage=Usage(12, 3, 0.25, 1))
    store.append([("k0", paid), ("k1", Response(uid=1, text="Rome"))])
    store.close()
    lines = (tmp_path / "store" / "responses-rank0.jsonl").read_text().splitlines()
    assert "usage" in json.loads(lines[0]) and "usage" not in json.loads(lines[1])  # a local model's line as before
    scan = ResponseStore(tmp_path, 0, "m").load()
    assert scan.responses["k0"] == paid and scan.responses["k1"].usage is None
    bad = json.loads(lines[0])
    bad["usage"]["prompt_tokens"] = "12"
    assert parse_line(json.dumps(bad).encode()) is None  # a mangled cost is a foreign line, not a crash


def test_usage_goes_through_the_gather_and_into_the_totals():
    from lmm_lightning.evaluation.gather import ResponseCollector
    from lmm_lightning.evaluation.result import UsageTotals
    from lmm_lightning.requests import Usage

    collector = ResponseCollector()
    usages = [Usage(10, 2, 0.1, 0), Usage(20, 4, 0.5, 2), Usage(30, 6, 0.3, 0)]
    collector.update([Response(uid=i, text="x", usage=u) for i, u in enumerate(usages)] + [Response(uid=3, text="y")],
                     [False] * 4)
    gathered = collector.compute()
    assert [r.usage for r, _ in gathered.pairs] == [*usages, None]
    totals = UsageTotals.of(usages, resumed=2)
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens, totals.retries) == (3, 60, 12, 2)
    assert totals.latency_p50_s == 0.3 and totals.latency_p95_s == pytest.approx(0.48)


class ConstantGrader(EvalModule):
    """A judge answering MM-Vet's grading prompt by the ground truth's length: "1.0" for one word, else "0.4"."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()

    def generate_until(self, requests: list) -> list[Response]:
        out = []
        for request in requests:
            truth = request.context.rsplit("\n", 1)[-1].split("|")[1].strip()
            out.append(Response(uid=request.uid, text="1.0" if " " not in truth else "0.4"))
        return out


def test_the_shipped_mmvet_is_judged_end_to_end_with_capability_scores(tmp_path):
    from tests.fixtures.benchmarks import write_judged_benchmarks

    task = write_judged_benchmarks(tmp_path / "data")["mmvet"]
    answers = ["x = -1 or -5", "5", "conditioner", "the garage", "red"]
    run(task, tmp_path / "out", Answerer(answers), ConstantGrader())
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]["mmvet"]
    # Ground truths "-1 <AND> -5", "double garage" and "red <OR> dark red" hold spaces: graded 0.4; the others 1.0.
    assert results["mmvet_score,none"] == pytest.approx((0.4 + 1 + 1 + 0.4 + 0.4) / 5)
    assert results["mmvet_rec,none"] == pytest.approx((1 + 0.4) / 2)  # v1_1, v1_4
    assert results["mmvet_spat,none"] == pytest.approx((1 + 0.4) / 2)  # v1_2, v1_3
    assert results["mmvet_score_stderr,none"] != "N/A"
