"""lm-evaluation-harness 0.4.x and lmms-eval 0.7.x task YAMLs load unchanged, with lm-eval's meaning.

1. Parse rate: every task or group YAML under lm-eval's and lmms-eval's installed `tasks/` folders is
   read by our loader (spec level: no dataset, no utils import); at least 90 % of each folder parse.
2. Thirteen common tasks resolve by name from lm-eval's folder, build, and give exactly the prompts and
   continuations lm-eval's own `ConfigurableTask` gives for the same hand-written documents (datasets
   replaced by those documents, so no network), with lm-eval's few-shot selection reproduced.
"""

import collections
import importlib.util
import re
import sys
import time
from pathlib import Path

import datasets
import pytest
import yaml

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.errors import InputError
from lmm_lightning.tasks import Task, TaskSpec
from lmm_lightning.tasks.registry import index_folder, resolve
from lmm_lightning.tasks.spec import FunctionRef, TaskSpecError, read_yaml, spec_from_dict

LM_EVAL_TASKS = Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks"


def _lmms_tasks() -> Path:
    spec = importlib.util.find_spec("lmms_eval")
    assert spec is not None, "install the lmms-eval 0.7.3 wheel: pip install --no-deps lmms_eval-0.7.3-py3-none-any.whl"
    return Path(spec.origin).parent / "tasks"


# --- 1. parse rate ------------------------------------------------------------------------------------
def _is_config(path: Path) -> bool:
    """What lm-eval's `TaskIndex` indexes: a YAML it can read (functions unresolved) that names a task,
    a group or a Python class; anything else (a partial template) it skips."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path, resolve_func=False)
    except Exception:  # noqa: BLE001 - lm-eval skips whatever it cannot read
        return False
    return any(key in cfg for key in ("task", "group", "class"))


def _cause(error: Exception, path: Path) -> str:
    message = str(error).replace(str(path), "").lstrip(": ")
    message = re.sub(r"; supported fields are .*", "", message)
    return re.sub(r", got .*", "", message)[:100]


def parse_folder(root: Path) -> tuple[int, int, collections.Counter]:
    parsed, causes = 0, collections.Counter()
    for path in sorted(root.rglob("*.yaml")):
        if "__pycache__" in path.parts or not _is_config(path):
            continue
        try:
            spec_from_dict(read_yaml(path), path)
            parsed += 1
        except TaskSpecError as err:
            causes[_cause(err, path)] += 1
    return parsed, sum(causes.values()), causes


@pytest.mark.parametrize("folder", ["lm_eval", "lmms_eval"])
def test_at_least_90_percent_of_the_ecosystem_yamls_parse(folder, capsys):
    from lm_eval.tasks._yaml_loader import load_yaml  # noqa: F401 - lm-eval's reader, imported before counting

    root = LM_EVAL_TASKS if folder == "lm_eval" else _lmms_tasks()
    before = set(sys.modules)
    start = time.perf_counter()
    parsed, failed, causes = parse_folder(root)
    seconds = time.perf_counter() - start
    imported = {m for m in set(sys.modules) - before if m.startswith(("lm_eval.tasks.", "lmms_eval.tasks.", "lmm_lightning_task_")) and not m.startswith("lm_eval.tasks._")}
    with capsys.disabled():
        print(f"\n{folder}: {parsed} parsed, {failed} failed of {parsed + failed} ({parsed / (parsed + failed):.1%}) in {seconds:.1f}s")
        for cause, count in causes.most_common(12):
            print(f"  {count:5d}  {cause}")
    assert parsed / (parsed + failed) >= 0.90
    assert not imported, f"parsing imported task code: {sorted(imported)[:5]}"
    assert seconds < 60


def test_the_index_names_every_task_group_and_tag_of_lm_eval():
    index = index_folder(LM_EVAL_TASKS)
    assert len(index.names) > 13000
    assert {"arc_easy", "gsm8k", "mmlu", "mmlu_stem"} <= set(index.names)
    assert sorted(index.tags["ai2_arc"]) == ["arc_challenge", "arc_easy"]


# --- YAML reading ----------------------------------------------------------------------------------------
def test_function_tags_resolve_beside_the_yaml_that_wrote_them_and_lazily(tmp_path):
    base, task = tmp_path / "base", tmp_path / "task"
    base.mkdir(), task.mkdir()
    (base / "helpers.py").write_text("import not_installed_anywhere\n")  # importing it would fail
    (base / "_template.yaml").write_text("output_type: generate_until\ndoc_to_text: !function helpers.text\ndoc_to_target: a\n")
    (task / "t.yaml").write_text("include: ../base/_template.yaml\ntask: t\ntest_split: test\n")
    spec = TaskSpec.from_yaml(task / "t.yaml")  # parsing imports nothing
    assert spec.doc_to_text == FunctionRef("helpers.text", base.resolve())
    with pytest.raises(InputError, match="cannot import module 'helpers'.*not_installed_anywhere"):
        Task(spec)  # building the task imports it, from the including file's include, not from task/


def test_includes_chain_in_order_and_local_keys_win(tmp_path):
    (tmp_path / "a.yaml").write_text("doc_to_text: from_a\ndoc_to_target: x\ndescription: A\n")
    (tmp_path / "b.yaml").write_text("description: B\n")
    (tmp_path / "t.yaml").write_text("include: [a.yaml, b.yaml]\ntask: t\ntest_split: test\ndoc_to_target: mine\n")
    spec = TaskSpec.from_yaml(tmp_path / "t.yaml")
    assert (spec.doc_to_text, spec.description, spec.doc_to_target, spec.output_type) == ("from_a", "B", "mine", "generate_until")


def test_an_unsupported_field_names_the_file_the_field_and_the_supported_ones(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: t\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\ngen_prefix: 'Answer:'\n")
    with pytest.raises(TaskSpecError, match=re.escape(f"{path}: unknown field(s) ['gen_prefix']; supported fields are [")):
        TaskSpec.from_yaml(path)


def test_an_unknown_metric_option_is_an_error_before_inference(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: t\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\nmetric_list: [{metric: exact_match, ignore_spaces: true}]\n")
    with pytest.raises(TaskSpecError, match=r"t.yaml: field 'metric_list' \(exact_match\): unknown option\(s\) \['ignore_spaces'\]; exact_match accepts \['ignore_case'"):
        Task(TaskSpec.from_yaml(path))


def test_lm_eval_exact_match_options_score_as_lm_eval(tmp_path):
    from lm_eval.api.metrics import exact_match_hf_evaluate

    options = {"ignore_case": True, "ignore_punctuation": False, "ignore_numbers": True, "regexes_to_ignore": [",", "(?s).*#### "]}
    path = tmp_path / "t.yaml"
    metric = yaml.safe_dump([{"metric": "exact_match", **options}], default_flow_style=True)
    path.write_text(f"task: t\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\nmetric_list: {metric}")
    task = Task(TaskSpec.from_yaml(path))
    for prediction, reference in [("So #### 1,234 Cats", "cats"), ("x #### 12", "13"), ("Dogs", "cats")]:
        expected = exact_match_hf_evaluate([prediction], [reference], **options)["exact_match"]
        assert task.kind.score({"a": reference}, prediction)["exact_match"] == expected


def test_aggregation_and_direction_given_as_functions(tmp_path):
    """lm-eval's `aggregation: !function utils.fn` (called on the per-document values; no stderr, as
    lm-eval reports N/A for its own aggregations) and `higher_is_better: !function`."""
    from lmm_lightning.metrics.aggregation import aggregate

    (tmp_path / "utils.py").write_text("def top(values):\n    return max(values)\n\ndef lower():\n    return False\n")
    path = tmp_path / "t.yaml"
    path.write_text(
        "task: t\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: !function utils.top\n    higher_is_better: !function utils.lower\n"
    )
    task = Task(TaskSpec.from_yaml(path))
    estimate = aggregate(task.aggregation("exact_match"), [0.0, 1.0, 0.0], bootstrap_iters=1000, seed=0)
    assert (estimate.value, estimate.n) == (1.0, 3) and estimate.stderr != estimate.stderr  # nan
    assert task.metrics[0].higher_is_better is False
    (tmp_path / "utils.py").write_text("def top(values):\n    return max(values)\n\ndef lower():\n    return 'no'\n")
    path.write_text(path.read_text().replace("utils.", "utils2."))
    (tmp_path / "utils2.py").write_text((tmp_path / "utils.py").read_text())
    with pytest.raises(TaskSpecError, match=r"metric_list\[0\].higher_is_better'.*returned 'no'; expected true or false"):
        Task(TaskSpec.from_yaml(path))


def test_lmms_eval_prompt_kwargs_reach_doc_to_text_as_its_second_argument(tmp_path):
    (tmp_path / "utils.py").write_text("def text(doc, kw):\n    return kw['pre_prompt'] + doc['q'] + kw['post_prompt']\n")
    (tmp_path / "t.yaml").write_text(
        "task: t\ntest_split: test\ndoc_to_text: !function utils.text\ndoc_to_target: a\ndoc_to_messages: !function utils.text\n"
        "lmms_eval_specific_kwargs:\n  default: {pre_prompt: '<', post_prompt: '>'}\n  qwen_vl: {pre_prompt: '', post_prompt: ''}\n"
        "model_specific_generation_kwargs: {llava: {image_aspect_ratio: original}}\nmetadata: [{version: 0.0}]\n"
    )
    task = Task(TaskSpec.from_yaml(tmp_path / "t.yaml"))
    assert task.context(0, {"q": "hi", "a": "x"}) == "<hi>"


# --- tasks, tags and groups from lm-eval's folder ------------------------------------------------------
def test_a_tag_selects_its_tasks_and_a_group_its_members():
    assert [s.task for s in resolve(["ai2_arc"], [str(LM_EVAL_TASKS)]).tasks] == ["arc_challenge", "arc_easy"]
    mmlu = resolve(["mmlu"], str(LM_EVAL_TASKS))
    assert len(mmlu.tasks) == 57 and mmlu.subtasks["mmlu"] == [t.task for t in mmlu.tasks]
    assert {g.group for g in mmlu.groups} == {"mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}
    assert mmlu.tasks[0].task_alias == "abstract_algebra" and mmlu.tasks[0].sampler == "first_n"


def test_a_group_hands_its_settings_to_members_and_holds_inline_tasks(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"q": "a", "a": "b"}\n')
    (tmp_path / "m.yaml").write_text(f"task: member\ndataset_path: json\ndata_files: {tmp_path / 'docs.jsonl'}\ndoc_to_text: q\ndoc_to_target: a\n")
    (tmp_path / "g.yaml").write_text(
        "group: g\ngroup_alias: G\nnum_fewshot: 0\ndescription: 'D '\ntask:\n  - member\n"
        "  - {task: inline, dataset_path: json, data_files: " + str(tmp_path / "docs.jsonl") + ", doc_to_text: q, doc_to_target: a}\n"
        "aggregate_metric_list: [{metric: exact_match, weight_by_size: false}]\nmetadata: {version: 1}\n"
    )
    out = resolve(["g"], [str(tmp_path)])
    assert [t.task for t in out.tasks] == ["member", "inline"]
    assert [t.description for t in out.tasks] == ["D ", "D "]
    assert out.groups[0].group_alias == "G" and not out.groups[0].weight_by_size("exact_match")


def test_a_name_defined_twice_in_one_folder_names_both_files(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("task: twice\ndoc_to_text: q\ndoc_to_target: a\ntest_split: test\n")
    with pytest.raises(TaskSpecError, match=r"task 'twice' is defined by several YAMLs .*a.yaml.*b.yaml"):
        resolve(["twice"], [str(tmp_path)])


def test_include_path_takes_a_list_and_a_single_folder(tmp_path):
    (tmp_path / "t.yaml").write_text("task: only_here\ndoc_to_text: q\ndoc_to_target: a\ntest_split: test\n")
    assert BenchmarkDataModule(tasks=["only_here"], include_path=str(tmp_path)).include_path == str(tmp_path)
    with pytest.raises(InputError, match="data.include_path: '/no/such' is not a folder"):
        BenchmarkDataModule(tasks=["x"], include_path=[str(tmp_path), "/no/such"])
    with pytest.raises(InputError, match="data.fewshot_selection"):
        BenchmarkDataModule(tasks=["x"], fewshot_selection="shuffled")


# --- 2. the thirteen tasks give lm-eval's own prompts and continuations ---------------------------------
def _arc(i):
    return {"id": f"q{i}", "question": f"Which one is a gas, number {i}?", "choices": {"text": ["ice", f"steam {i}", "rock"], "label": ["A", "B", "C"]}, "answerKey": "B"}


def _hellaswag(i):
    return {"ind": i, "activity_label": "Baking", "ctx_a": f"A man mixes flour {i} [title] times.", "ctx_b": "he",
            "ctx": "", "endings": ["pours it.", f"bakes [step] it {i}.", "eats.", "leaves."], "source_id": "s",
            "split": "val", "split_type": "indomain", "label": str(i % 4)}


def _mmlu(i):
    return {"question": f" What is {i} + {i}? ", "subject": "abstract_algebra", "choices": [str(i), str(2 * i), "0", "1"], "answer": 1}


def _truthfulqa(i):
    return {"question": f"Is the moon made of cheese {i}?", "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
            "mc2_targets": {"choices": ["No.", "Not at all.", "Yes."], "labels": [1, 1, 0]}}


DOCS = {  # dataset_path -> one document per index, in the dataset's real columns
    "allenai/ai2_arc": _arc,
    "Rowan/hellaswag": _hellaswag,
    "baber/piqa": lambda i: {"goal": f"How to open a jar {i}?", "sol1": "Twist the lid.", "sol2": "Freeze it.", "label": i % 2},
    "allenai/winogrande": lambda i: {"sentence": f"The trophy {i} does not fit in the case because the _ is too big.",
                                      "option1": "trophy", "option2": "case", "answer": str(1 + i % 2)},
    "aps/super_glue": lambda i: {"question": f"is water wet {i}", "passage": "Water is a liquid.", "idx": i, "label": i % 2},
    "allenai/openbookqa": lambda i: {"id": str(i), "question_stem": f"The sun is a {i}", "choices": {"text": ["star", "moon"], "label": ["A", "B"]}, "answerKey": "A"},
    "allenai/sciq": lambda i: {"question": f"What do plants make {i}?", "distractor1": "salt", "distractor2": "iron",
                               "distractor3": "gold", "correct_answer": "sugar", "support": "  Plants photosynthesise."},
    "cais/mmlu": _mmlu,
    "EleutherAI/lambada_openai": lambda i: {"text": f"the cat {i} sat on the mat"},
    "truthfulqa/truthful_qa": _truthfulqa,
    "openai/gsm8k": lambda i: {"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"},
}
SPLITS = {"train": range(0, 8), "validation": range(8, 12), "test": range(12, 16), "dev": range(16, 22)}
TASKS = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq", "openbookqa", "sciq",
         "mmlu_abstract_algebra", "lambada_openai", "truthfulqa_mc1", "truthfulqa_mc2", "gsm8k"]


@pytest.fixture
def offline_datasets(monkeypatch):
    """`datasets.load_dataset` answers every split of the thirteen datasets from `DOCS`, for lm-eval and us."""

    def load_dataset(path=None, name=None, split=None, data_files=None, **kwargs):
        make = DOCS[path]
        splits = {s: datasets.Dataset.from_list([make(i) for i in ids]) for s, ids in SPLITS.items()}
        return splits[split] if split else datasets.DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def lm_eval_requests(name: str, num_fewshot: int | None) -> tuple[list, list]:
    """lm-eval's own task, built as its TaskFactory builds it: (documents, requests per document)."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    path = index_folder(LM_EVAL_TASKS).names[name][0]
    config = load_yaml(path, resolve_func=True)
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    shots = task.config.num_fewshot or 0 if num_fewshot is None else num_fewshot
    docs = list(task.eval_docs)
    out = []
    for doc in docs:
        instances = task.construct_requests(doc, task.fewshot_context(doc, shots))
        out.append([i.arguments for i in (instances if isinstance(instances, list) else [instances])])
    return docs, out


def our_requests(name: str, num_fewshot: int | None) -> BenchmarkDataModule:
    dm = BenchmarkDataModule(tasks=[name], include_path=[str(LM_EVAL_TASKS)], num_fewshot=num_fewshot, fewshot_selection="lm_eval")
    dm.setup()
    return dm


@pytest.mark.parametrize("num_fewshot", [None, 3])
@pytest.mark.parametrize("name", TASKS)
def test_each_task_loads_unchanged_and_prompts_as_lm_eval(offline_datasets, name, num_fewshot):
    docs, expected = lm_eval_requests(name, num_fewshot)
    dm = our_requests(name, num_fewshot)
    task = dm.tasks[name]
    assert task.spec.source.is_relative_to(LM_EVAL_TASKS)
    assert [dm.documents[name].docs[i] for i in range(len(docs))] == [dict(d) for d in docs]  # process_docs too
    by_doc = collections.defaultdict(list)
    for request in dm.requests:
        by_doc[request.doc_id].append(request)
    for doc_id, arguments in enumerate(expected):
        ours = by_doc[doc_id]
        if task.spec.output_type == "generate_until":
            (context, kwargs), = arguments
            generation = ours[0].generation
            assert ours[0].context == context
            assert generation.until == tuple(kwargs["until"]) and generation.do_sample == kwargs["do_sample"]
            assert generation.max_new_tokens == kwargs.get("max_gen_toks", 256) and generation.temperature == kwargs["temperature"]
        else:
            assert [(r.context, r.continuation) for r in ours] == [tuple(a) for a in arguments]


@pytest.mark.parametrize("name", ["arc_easy", "hellaswag", "winogrande", "boolq", "mmlu_abstract_algebra", "truthfulqa_mc2"])
def test_the_gold_choice_is_lm_evals(offline_datasets, name):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(index_folder(LM_EVAL_TASKS).names[name][0], resolve_func=True)
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    theirs = ConfigurableTask(config=config)
    dm = our_requests(name, None)
    for doc_id, doc in enumerate(theirs.eval_docs):
        gold = theirs.doc_to_text(doc) if theirs.multiple_input else theirs.doc_to_target(doc)
        gold = theirs.doc_to_choice(doc).index(gold) if isinstance(gold, str) else gold
        ours = dm.tasks[name]
        assert ours.kind.doc_to_target(dm.documents[name].docs[doc_id]) == gold
        if theirs.multiple_input:  # the samples file's target: the shared continuation, as lm-eval writes it
            assert ours.doc_to_target(dm.documents[name].docs[doc_id]) == theirs.doc_to_target(doc)


def test_seeded_selection_does_not_depend_on_which_documents_run(offline_datasets):
    dm = BenchmarkDataModule(tasks=["arc_easy"], include_path=[str(LM_EVAL_TASKS)], num_fewshot=2, offset=2)
    dm.setup()
    alone = BenchmarkDataModule(tasks=["arc_easy"], include_path=[str(LM_EVAL_TASKS)], num_fewshot=2)
    alone.setup()
    assert [r.context for r in dm.requests] == [r.context for r in alone.requests if r.doc_id >= 2]


# --- few-shot examples as chat turns (lm-eval's --apply_chat_template --fewshot_as_multiturn) -------------
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def chat_model(tmp_path):
    from transformers import AutoTokenizer

    from lmm_lightning.models import HFCausalLM
    from tests.fixtures import build_tiny_model

    folder = build_tiny_model(tmp_path / "chat")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return HFCausalLM(str(folder), use_chat_template=True), tokenizer


@pytest.mark.parametrize("multiturn", [True, False])
@pytest.mark.parametrize("name,num_fewshot", [("arc_easy", 3), ("mmlu_abstract_algebra", 2), ("gsm8k", None), ("boolq", 2)])
def test_chat_prompts_are_lm_evals(offline_datasets, chat_model, name, num_fewshot, multiturn):
    """The prompt our model renders from a request (its chat turns where it has them) equals lm-eval 0.4.13's
    `fewshot_context(..., apply_chat_template=True, fewshot_as_multiturn=...)` with the same tokenizer's
    template (mmlu has a description: it becomes the system turn in both modes)."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    model, tokenizer = chat_model

    def chat_template(history, add_generation_prompt=True):  # what lm-eval's HFLM.apply_chat_template does
        return tokenizer.apply_chat_template(
            history, tokenize=False, add_generation_prompt=add_generation_prompt, continue_final_message=not add_generation_prompt
        )

    config = load_yaml(index_folder(LM_EVAL_TASKS).names[name][0], resolve_func=True)
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    theirs = ConfigurableTask(config=config)
    theirs.set_fewshot_seed(1234)
    shots = theirs.config.num_fewshot or 0 if num_fewshot is None else num_fewshot
    dm = BenchmarkDataModule(tasks=[name], include_path=[str(LM_EVAL_TASKS)], num_fewshot=num_fewshot,
                             fewshot_selection="lm_eval", fewshot_as_multiturn=multiturn)
    dm.setup()
    firsts = {}
    for request in dm.requests:
        firsts.setdefault(request.doc_id, request)
    assert shots > 0
    for doc_id, doc in enumerate(theirs.eval_docs):
        expected = theirs.fewshot_context(doc, shots, apply_chat_template=True, fewshot_as_multiturn=multiturn, chat_template=chat_template)
        request = firsts[doc_id]
        assert sum(m.role == "assistant" for m in request.messages) == (shots if multiturn else 0)
        assert model.prompt(request.context, request.messages) == expected
        has_description = name == "mmlu_abstract_algebra"
        assert bool(request.messages and request.messages[0].role == "system") == has_description
        assert bool(request.messages) == (multiturn or has_description)
    if multiturn:  # the single-turn run has other chat turns, so another store key
        plain = BenchmarkDataModule(tasks=[name], include_path=[str(LM_EVAL_TASKS)], num_fewshot=num_fewshot, fewshot_selection="lm_eval")
        plain.setup()
        assert plain.requests[0].context == dm.requests[0].context
        from lmm_lightning.evaluation.store import request_key

        assert request_key(plain.requests[0], "c", "m") != request_key(dm.requests[0], "c", "m")


def test_lmms_eval_prompt_kwargs_follow_the_model_name(tmp_path):
    """lmms-eval hands a model its own `lmms_eval_specific_kwargs` entry when the task has one, else `default`;
    `eval --model qwen2_vl` names the entry."""
    from lmm_lightning.eval_cli import lightning_args

    (tmp_path / "utils.py").write_text("def text(doc, kw):\n    return kw['pre_prompt'] + doc['q'] + kw['post_prompt']\n")
    (tmp_path / "t.yaml").write_text(
        "task: t\ntest_split: test\ndoc_to_text: !function utils.text\ndoc_to_target: a\n"
        "lmms_eval_specific_kwargs:\n  default: {pre_prompt: '', post_prompt: ' Answer briefly.'}\n"
        "  qwen2_vl: {pre_prompt: 'Q: ', post_prompt: ' One word.'}\n"
    )
    spec = TaskSpec.from_yaml(tmp_path / "t.yaml")
    assert Task(spec).doc_to_text({"q": "Sky?"}) == "Sky? Answer briefly."
    assert Task(spec, prompt_model="qwen2_vl").doc_to_text({"q": "Sky?"}) == "Q: Sky? One word."
    assert Task(spec, prompt_model="llava_hf").doc_to_text({"q": "Sky?"}) == "Sky? Answer briefly."
    args = lightning_args(["--model", "qwen2_vl", "--model_args", "pretrained=x", "--tasks", "t"])
    assert args[args.index("--data.prompt_model") + 1] == "qwen2_vl"
    assert "--data.prompt_model" not in lightning_args(["--model", "vlm", "--model_args", "pretrained=x", "--tasks", "t"])
