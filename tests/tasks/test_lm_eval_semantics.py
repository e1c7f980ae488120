"""Text tasks are built as lm-evaluation-harness 0.4 builds them from the same YAML fields.

Each test here failed before the fix it guards: (1) a `loglikelihood` target was sent with
`target_delimiter` in front; (2) a task without `test_split` was evaluated on its train split;
(3) without `fewshot_split`, few-shot examples came from the evaluated split; (4) generation was
cut at 64 new tokens where lm-eval allows 256.
"""

import json
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.loading import select_range
from lmm_lightning.errors import InputError
from lmm_lightning.evaluation import EvaluationCallback
from lmm_lightning.models import EvalModule
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec
from lmm_lightning.tasks.spec import TaskSpecError

# lm-eval's lambada_openai: the context is all but the last word, the target the last word with its space.
LAMBADA = """task: lambada_like
dataset_path: json
data_files: {files}
{splits}output_type: loglikelihood
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list: [{{metric: perplexity}}, {{metric: acc}}]
"""
SPLITS = {"train": ["the cat sat on the mat", "a dog ran in the park"],
          "validation": ["she opened the old door", "he read the long book"],
          "test": ["birds fly over the sea", "rain fell on the roof"]}


def write_data(folder: Path, splits: tuple[str, ...]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in splits:
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in SPLITS[split]))
        files[split] = str(path)
    return files


def write_task(folder: Path, splits: tuple[str, ...], fields: str, body: str = LAMBADA) -> Path:
    files = write_data(folder, splits)
    path = folder / "task.yaml"
    path.write_text(body.format(files=json.dumps(files), splits=fields))
    return path


def requests_of(path: Path, **kwargs) -> list:
    data = BenchmarkDataModule([str(path)], **kwargs)
    data.setup()
    return data.requests


def test_loglikelihood_target_is_sent_without_target_delimiter(tmp_path):
    path = write_task(tmp_path, ("test",), "test_split: test\n")
    request = requests_of(path)[0]
    assert request.context == "birds fly over the"
    assert request.continuation == " sea"  # lm-eval sends (ctx, doc_to_target) unchanged; was "  sea"


def test_multiple_choice_choices_keep_target_delimiter(tiny_tasks):
    data = BenchmarkDataModule([str(tiny_tasks / "tiny_mc.yaml")], limit=1)
    data.setup()
    assert all(r.continuation.startswith(" ") and not r.continuation.startswith("  ") for r in data.requests)


def test_without_test_split_the_validation_split_is_evaluated(tmp_path):
    path = write_task(tmp_path, ("train", "validation"), "training_split: train\nvalidation_split: validation\n")
    contexts = [r.context for r in requests_of(path)]
    assert contexts == ["she opened the old", "he read the long"]  # validation, not train


def test_test_split_wins_over_validation_split(tmp_path):
    path = write_task(tmp_path, ("train", "validation", "test"), "validation_split: validation\ntest_split: test\n")
    assert [r.context for r in requests_of(path)] == ["birds fly over the", "rain fell on the"]


def test_no_split_to_evaluate_is_one_clear_error(tmp_path):
    path = write_task(tmp_path, ("train", "test"), "training_split: train\n")
    with pytest.raises(TaskSpecError, match=r"task.yaml: field 'test_split': no test_split or validation_split"):
        TaskSpec.from_yaml(path)


def test_single_file_data_is_its_own_split(tiny_tasks):
    spec = TaskSpec.from_yaml(tiny_tasks / "tiny_mc.yaml")
    assert spec.evaluated_split == "train" == spec.fewshot_source


def shots(requests: list, k: int) -> set[str]:
    return {example for r in requests for example in r.context.split("\n\n")[:k]}


# A few-shot example is doc_to_text + target_delimiter + doc_to_target, as lm-eval writes it (the
# lambada target carries its own space, hence two).
TRAIN_SHOTS = {"the cat sat on the  mat", "a dog ran in the  park"}
VALIDATION_SHOTS = {"she opened the old  door", "he read the long  book"}


def test_fewshot_examples_come_from_the_training_split(tmp_path):
    path = write_task(tmp_path, ("train", "validation", "test"),
                      "training_split: train\nvalidation_split: validation\ntest_split: test\nnum_fewshot: 2\n")
    assert shots(requests_of(path), 2) == TRAIN_SHOTS  # was: the other test documents
    spec = TaskSpec.from_yaml(path)
    assert (spec.evaluated_split, spec.fewshot_source) == ("test", "train")


def test_fewshot_falls_back_to_validation_then_to_the_evaluated_split(tmp_path):
    path = write_task(tmp_path / "a", ("validation", "test"), "validation_split: validation\ntest_split: test\nnum_fewshot: 2\n")
    assert TaskSpec.from_yaml(path).fewshot_source == "validation"
    assert shots(requests_of(path), 2) == VALIDATION_SHOTS
    path = write_task(tmp_path / "b", ("test",), "test_split: test\nnum_fewshot: 1\n")
    assert TaskSpec.from_yaml(path).fewshot_source == "test"
    first, second = requests_of(path)
    # the only other test document is the example, never the document itself
    assert first.context == "rain fell on the  roof\n\nbirds fly over the"
    assert second.context == "birds fly over the  sea\n\nrain fell on the"


def test_fewshot_split_wins(tmp_path):
    path = write_task(tmp_path, ("train", "validation", "test"),
                      "training_split: train\nfewshot_split: validation\ntest_split: test\nnum_fewshot: 2\n")
    assert shots(requests_of(path), 2) == VALIDATION_SHOTS
    assert TaskSpec.from_yaml(path).fewshot_source == "validation"


class Scripted(EvalModule):
    def loglikelihood(self, requests: list) -> list[Response]:
        return [Response(uid=r.uid, logprob=-1.0, is_greedy=True) for r in requests]


def test_results_record_the_evaluated_split_and_fewshot_source(tmp_path):
    fewshot = write_task(tmp_path / "a", ("train", "test"), "training_split: train\ntest_split: test\nnum_fewshot: 1\n")
    zero_shot = write_task(tmp_path / "b", ("validation",), "validation_split: validation\n",
                           LAMBADA.replace("lambada_like", "lambada_zero"))
    callback = EvaluationCallback(output_dir=str(tmp_path / "out"), bootstrap_iters=10, print_table=False)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[callback])
    trainer.predict(Scripted(), BenchmarkDataModule([str(fewshot), str(zero_shot)]), return_predictions=False)
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["splits"] == {
        "lambada_like": {"evaluated": "test", "fewshot": "train"},
        "lambada_zero": {"evaluated": "validation", "fewshot": None},
    }
    assert written["results"]["lambada_like"]["acc,none"] == 1.0


def test_generation_length_defaults_to_lm_evals_256(tmp_path):
    body = ("task: gen\ndataset_path: json\ndata_files: {files}\n{splits}output_type: generate_until\n"
            "doc_to_text: text\ndoc_to_target: text\n")
    task = Task(TaskSpec.from_yaml(write_task(tmp_path / "a", ("test",), "test_split: test\n", body)))
    assert task.kind.generation.max_new_tokens == 256
    with_until = body + "generation_kwargs: {{until: ['\\n']}}\n"
    assert Task(TaskSpec.from_yaml(write_task(tmp_path / "b", ("test",), "test_split: test\n", with_until))).kind.generation.max_new_tokens == 256
    gen_toks = body + "generation_kwargs: {{max_gen_toks: 32}}\n"
    assert Task(TaskSpec.from_yaml(write_task(tmp_path / "c", ("test",), "test_split: test\n", gen_toks))).kind.generation.max_new_tokens == 32


@pytest.mark.parametrize(
    "limit, expected",
    [(None, 10), (-1, 10), (3, 3), (3.0, 3), (0.25, 3), (1.0, 10), (0.01, 1), (100, 10)],
)
def test_limit(limit, expected):
    assert len(select_range(10, limit, 0)) == expected


@pytest.mark.parametrize("limit", [1.5, 0, -2, 0.0, True])
def test_bad_limit(limit):
    with pytest.raises(ValueError, match="limit"):
        select_range(10, limit, 0)


def test_limit_minus_one_through_the_data_module(tiny_tasks):
    every = BenchmarkDataModule([str(tiny_tasks / "tiny_gen.yaml")])
    every.setup()
    minus_one = BenchmarkDataModule([str(tiny_tasks / "tiny_gen.yaml")], limit=-1)
    minus_one.setup()
    assert len(minus_one.requests) == len(every.requests) > 1
    with pytest.raises(InputError, match="limit 1.5"):
        BenchmarkDataModule([str(tiny_tasks / "tiny_gen.yaml")], limit=1.5).setup()
