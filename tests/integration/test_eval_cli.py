"""`lmm-lightning eval`: lm-eval's flags mapped onto the `predict` run, and its outputs in lm-eval's layout,
read back with lm-eval's own readers (`lm_eval.utils`), `datasets`, and our `load_run` / `compare`."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from lm_eval.utils import (
    get_file_datetime, get_file_task_name, get_latest_filename, get_results_filenames, get_sample_results_filenames,
    make_table, sanitize_model_name,
)

from lmm_lightning.cli import main
from lmm_lightning.eval_cli import MODELS, lightning_args
from lmm_lightning.errors import InputError
from lmm_lightning.evaluation.results import dataset_card, load_run, sanitize_model_name as our_sanitize

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
STAMP = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{6}"  # datetime.now().isoformat() with ':' as '-', as lm-eval names files
NOISE = ("LightningCLI's args", "Tip:", "litlogger", "GPU available", "TPU available", "DeprecationWarning",
         "is deprecated", "No seed found", "Seed set to", "transfer_batch_to_device")


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmm_lightning", *args], capture_output=True, text=True, timeout=300, env=ENV, cwd=cwd
    )


def eval_args(tiny_model: Path, tiny_tasks: Path, output: Path, *more: str) -> list[str]:
    return [
        "eval", "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=float32", "--tasks", "tiny_mc,tiny_gen",
        "--include_path", str(tiny_tasks), "--batch_size", "4", "--limit", "5", "--device", "cpu",
        "--output_path", str(output), "--log_samples", "--gen_kwargs", "max_gen_toks=4", "--seed", "1234",
        "--evaluation.bootstrap_iters", "10", *more,
    ]


def printed_config(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


# --- the flag mapping ---------------------------------------------------------------------------
def test_every_lm_eval_flag_lands_on_the_predict_config(tiny_model, tiny_tasks, tmp_path, capsys):
    args = [
        "eval", "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=bfloat16,max_length=128",
        "--tasks", "tiny_mc,tiny_gen", "--num_fewshot", "5", "--batch_size", "auto:4", "--limit", "100", "--devices", "2",
        "--output_path", str(tmp_path / "out"), "--log_samples", "--gen_kwargs", "temperature=0,max_gen_toks=64",
        "--seed", "0,None,8,52", "--predict_only", "--include_path", str(tiny_tasks), "--use_cache", str(tmp_path / "cache"),
        "--system_instruction", "Be brief.", "--print_config",
    ]
    config = printed_config(args, capsys)
    model, data, evaluation = config["model"], config["data"]["init_args"], config["evaluation"]
    assert model["class_path"] == "lmm_lightning.models.HFCausalLM"
    assert model["init_args"]["pretrained"] == str(tiny_model) and model["init_args"]["dtype"] == "bfloat16"
    assert model["init_args"]["max_length"] == 128 and model["init_args"]["system_prompt"] == "Be brief."
    assert data["tasks"] == ["tiny_mc", "tiny_gen"] and data["num_fewshot"] == 5 and data["limit"] == 100
    assert data["batch_size"] == "auto" and data["include_path"] == str(tiny_tasks) and data["seed"] == 52
    assert data["generation_kwargs"] == {"*": {"temperature": 0, "max_new_tokens": 64}}
    assert str(config["trainer"]["devices"]) == "2" and config["trainer"]["strategy"] == "ddp" and config["seed_everything"] == 8
    assert evaluation["output_dir"] == str(tmp_path / "out") and evaluation["layout"] == "lm_eval"
    assert evaluation["log_samples"] is True and evaluation["predict_only"] is True
    assert evaluation["cache_dir"] == str(tmp_path / "cache")


def test_a_single_seed_seeds_every_slot_and_device_names_the_accelerator(tiny_model, capsys):
    config = printed_config(
        ["eval", "--model_args", f"pretrained={tiny_model}", "--tasks", "capitals_mc", "--seed", "7", "--device", "cpu",
         "--apply_chat_template", "--print_config"],
        capsys,
    )
    assert config["seed_everything"] == 7 and config["data"]["init_args"]["seed"] == 7
    assert config["trainer"]["accelerator"] == "cpu" and config["model"]["init_args"]["use_chat_template"] is True


@pytest.mark.parametrize("name", ["vlm", "hf-multimodal", "llava_hf", "qwen2_vl"])
def test_vision_model_names_are_the_vision_class(name):
    assert MODELS[name] == "lmm_lightning.models.HFVisionLM"
    args = lightning_args(["--model", name, "--tasks", "mme"])
    assert args[args.index("--model") + 1] == "lmm_lightning.models.HFVisionLM"


def test_a_class_path_is_taken_as_it_is_and_cuda_n_is_one_device():
    args = lightning_args(["--model", "lmm_lightning.models.HFCausalLM", "--model_args", "pretrained=x", "--device", "cuda:1"])
    pairs = dict(zip(args[1::2], args[2::2]))
    assert pairs["--model"] == "lmm_lightning.models.HFCausalLM"
    assert pairs["--trainer.accelerator"] == "gpu" and pairs["--trainer.devices"] == "[1]"


def test_vllm_parallel_sizes_become_a_data_x_tensor_mesh():
    args = lightning_args(["--model_args", "pretrained=x,tensor_parallel_size=2,data_parallel_size=3", "--tasks", "mme"])
    pairs = dict(zip(args[1::2], args[2::2]))
    assert pairs["--trainer.strategy"] == "lightning.pytorch.strategies.ModelParallelStrategy"
    assert (pairs["--trainer.strategy.data_parallel_size"], pairs["--trainer.strategy.tensor_parallel_size"]) == ("3", "2")
    assert pairs["--trainer.devices"] == "6" and "--model.init_args.tensor_parallel_size" not in pairs


def test_a_served_model_applies_its_own_chat_template_and_a_judge_is_the_callbacks():
    args = lightning_args(["--model", "openai", "--model_args", "base_url=http://127.0.0.1:8000/v1,model=smol", "--apply_chat_template",
                           "--system_instruction", "Be brief.", "--judge_model", "openai", "--judge_model_args", "base_url=http://h/v1,model=j"])
    pairs = dict(zip(args[1::2], args[2::2]))
    assert pairs["--model"] == "lmm_lightning.models.OpenAIModel" and "--model.init_args.use_chat_template" not in pairs
    assert pairs["--model.init_args.system_prompt"] == "Be brief." and pairs["--model.init_args.model"] == "smol"
    assert pairs["--evaluation.judge"] == "lmm_lightning.models.OpenAIModel" and pairs["--evaluation.judge.init_args.model"] == "j"
    completions = dict(zip(*[iter(lightning_args(["--model", "local-completions", "--model_args", "base_url=http://h/v1,model=m"])[1:])] * 2))
    assert completions["--model.init_args.chat"] == "false"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "local-completions", "--model_args", "base_url=http://h/v1,model=m", "--apply_chat_template"],
         "--apply_chat_template: --model local-completions posts raw prompts to /completions"),
        (["--model_args", "pretrained=x,tensor_parallel_size=0"], "--model_args: tensor_parallel_size expected a positive integer, got 0"),
        (["--model_args", "pretrained=x,bogus=1"], "--model_args: unknown key 'bogus' for HFCausalLM; known keys: pretrained, dtype"),
        (["--model", "nope"], "--model: unknown model 'nope'"),
        (["--batch_size", "big"], "--batch_size: expected a positive integer, 'auto' or 'auto:N'"),
        (["--seed", "1,2"], "--seed: expected one integer or four"),
        (["--fewshot_as_multiturn"], "--fewshot_as_multiturn: needs --apply_chat_template"),
        (["--output_path", "x.json"], "--output_path: expected a folder"),
        (["--bogus_flag", "1"], "--bogus_flag: unknown option"),
        (["--gen_kwargs", "temperature"], "--gen_kwargs: expected key=value pairs"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--tasks", "capitals_mc", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and expected in err


def test_eval_help_fits_on_one_screen_and_help_all_shows_lightnings(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    short = capsys.readouterr().out
    assert len(short.splitlines()) <= 42 and "--model_args" in short and "--trainer.precision" not in short
    with pytest.raises(SystemExit):
        main(["eval", "--help-all"])
    assert "--trainer.precision" in capsys.readouterr().out


def test_print_config_round_trips_through_predict(tiny_model, tiny_tasks, tmp_path, capsys):
    """The YAML `eval --print_config` prints is one `predict --config` accepts, and it means the same run."""
    first = printed_config(eval_args(tiny_model, tiny_tasks, tmp_path / "out", "--print_config"), capsys)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(first))
    assert printed_config(["predict", "--config", str(path), "--print_config"], capsys) == first
    assert printed_config(["eval", "--config", str(path), "--print_config"], capsys) == first


# --- a whole run, as a process ------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory, tiny_model, tiny_tasks):
    root = tmp_path_factory.mktemp("eval_run")
    cache = root / "cache"
    first = run_cli(eval_args(tiny_model, tiny_tasks, root / "out", "--use_cache", str(cache)), root)
    again = run_cli(eval_args(tiny_model, tiny_tasks, root / "out"), root)
    elsewhere = run_cli(eval_args(tiny_model, tiny_tasks, root / "other", "--use_cache", str(cache)), root)
    for result in (first, again, elsewhere):
        assert result.returncode == 0, result.stderr[-3000:]
    return root, first, again, elsewhere


def test_outputs_are_named_and_placed_as_lm_eval_does(lm_eval_run, tiny_model):
    root, *_ = lm_eval_run
    folder = root / "out" / sanitize_model_name(str(tiny_model))
    assert our_sanitize(str(tiny_model)) == folder.name
    files = [str(p) for p in folder.iterdir()]
    results = get_results_filenames(files)
    samples = get_sample_results_filenames(files)
    assert len(results) == 2 and len(samples) == 4  # two runs, lm-eval keeps both
    latest = get_latest_filename(results)
    stamp = get_file_datetime(Path(latest).name).replace(".json", "")
    assert re.fullmatch(STAMP, stamp)
    assert sorted(get_file_task_name(Path(s).name) for s in samples if stamp in s) == ["tiny_gen", "tiny_mc"]
    assert (folder / "store" / "responses-rank0.jsonl").is_file()  # the store: one stable place, not per time stamp


def latest(root: Path, model: Path) -> tuple[dict, dict[str, list[dict]]]:
    folder = root / "out" / sanitize_model_name(str(model))
    path = Path(get_latest_filename(get_results_filenames([str(p) for p in folder.iterdir()])))
    stamp = path.name[len("results_"):-len(".json")]
    samples = {
        task: [json.loads(line) for line in (folder / f"samples_{task}_{stamp}.jsonl").read_text().splitlines()]
        for task in ("tiny_mc", "tiny_gen")
    }
    return json.loads(path.read_text()), samples


def test_make_table_reads_our_results_without_a_samples_row(lm_eval_run, tiny_model):
    document, _ = latest(lm_eval_run[0], tiny_model)
    table = make_table(document)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    assert [r[4] for r in rows] == ["exact_match", "acc", "acc_norm"] and "samples" not in table
    for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config",
                "git_hash", "date", "task_hashes", "model_name", "model_name_sanitized", "total_evaluation_time_seconds"):
        assert key in document, key
    assert document["n-samples"]["tiny_mc"] == {"original": 13, "effective": 5}


def test_samples_are_in_lm_evals_on_disk_format(lm_eval_run, tiny_model):
    document, samples = latest(lm_eval_run[0], tiny_model)
    mc, gen = samples["tiny_mc"][0], samples["tiny_gen"][0]
    for line in (mc, gen):
        assert {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
                "prompt_hash", "target_hash", "prompt"} <= set(line)
        assert isinstance(line["target"], str) and line["filter"] == "none"
    assert mc["arguments"]["gen_args_0"]["arg_0"] == "Question: What is the capital of France? Answer:"
    assert [mc["arguments"][f"gen_args_{i}"]["arg_1"] for i in range(3)] == [" Paris", " Berlin", " Lisbon"]
    assert mc["metrics"] == ["acc", "acc_norm"] and mc["acc"] in (0.0, 1.0) and len(mc["filtered_resps"]) == 3
    assert gen["arguments"]["gen_args_0"]["arg_1"]["max_new_tokens"] == 4 and gen["metrics"] == ["exact_match"]
    assert mc["prompt"] == mc["arguments"]["gen_args_0"]["arg_0"]  # no chat template: the context as it is
    assert [s["doc_id"] for s in samples["tiny_mc"]] == [0, 1, 2, 3, 4]
    assert document["task_hashes"]["tiny_mc"] and len(document["task_hashes"]) == 2


def test_samples_load_with_datasets_and_parse_as_the_zeno_script_does(lm_eval_run, tiny_model):
    """lm-eval writes `arguments` as nested dicts so `datasets` can load the file; scripts/zeno_visualize.py
    reads `arguments["gen_args_0"]["arg_0"]`, the `filtered_resps` and each metric by name."""
    root = lm_eval_run[0]
    folder = root / "out" / sanitize_model_name(str(tiny_model))
    path = max(folder.glob("samples_tiny_mc_*.jsonl"), key=lambda p: get_file_datetime(p.name))
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(loaded) == 5 and loaded[0]["arguments"]["gen_args_1"]["arg_1"] == " Berlin"
    choices = [[x["arguments"][f"gen_args_{i}"]["arg_1"] for i in range(len(x["arguments"]))] for x in loaded]
    predictions = [max(range(len(x["filtered_resps"])), key=lambda i: x["filtered_resps"][i][0]) for x in loaded]
    assert all(len(c) == 3 for c in choices) and len(predictions) == 5 and set(loaded[0]["metrics"]) == {"acc", "acc_norm"}
    # what zeno_visualize.py (lm-eval main) reads besides: the latest results file's configs[task]: output_type,
    # metric_list entries with "metric" and "aggregation", filter_list; then each sample line's value per metric
    results = json.loads(Path(get_latest_filename(get_results_filenames([str(p) for p in folder.iterdir()]))).read_text())
    assert isinstance(results["config"]["model_args"], (str, dict))
    for task in results["configs"]:
        config = results["configs"][task]
        lines = [json.loads(line) for line in max(folder.glob(f"samples_{task}_*.jsonl"), key=lambda p: get_file_datetime(p.name)).read_text().splitlines()]
        assert config["output_type"] in ("multiple_choice", "generate_until") and lines
        means = [m["metric"] for m in config["metric_list"] if m.get("aggregation") == "mean"]
        assert means and all(isinstance(line[m], (int, float)) for line in lines for m in means)
        ids = [f"{x['doc_id']}.{x['filter']}" for x in lines] if config.get("filter_list") else [x["doc_id"] for x in lines]
        assert len(set(ids)) == len(lines)
        assert all(isinstance(x["arguments"]["gen_args_0"]["arg_0"], str) and x["filtered_resps"] for x in lines)


def test_a_run_is_quiet_before_its_progress_bar(lm_eval_run):
    _, first, _, _ = lm_eval_run
    before = (first.stdout + first.stderr).split("tiny_mc ")[0]
    assert not [n for n in NOISE if n in before], before


def test_a_resumed_run_says_what_it_reused_and_the_cache_serves_another_folder(lm_eval_run):
    _, first, again, elsewhere = lm_eval_run
    assert "reused" not in first.stdout
    assert re.search(r"^resumed: reused 20 of 20 requests \(20 from \S+/out/\S+/store\)$", again.stdout, re.M)
    assert re.search(r"^resumed: reused 20 of 20 requests \(20 from \S+/cache/store\)$", elsewhere.stdout, re.M)


def test_load_run_and_compare_read_the_lm_eval_layout(lm_eval_run, tiny_model, capsys):
    root = lm_eval_run[0]
    run = load_run(root / "out")
    assert run.folder == root / "out" / sanitize_model_name(str(tiny_model))
    assert [k.metric for k in run.metrics["tiny_mc"]] == ["acc", "acc_norm"] and len(run.samples["tiny_mc"]) == 5
    assert run.samples["tiny_mc"][0]["acc,none"] in (0.0, 1.0)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(root / "out"), str(root / "other"), "--iters", "50"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "| tiny_mc | acc | 5 |" in out and "+0.0000" in out


def test_predict_writes_the_lm_eval_layout_when_asked(tiny_model, tiny_tasks, tmp_path):
    args = ["predict", "--model", "lmm_lightning.models.HFCausalLM", "--model.pretrained", str(tiny_model),
            "--data.tasks", "tiny_mc", "--data.include_path", str(tiny_tasks), "--data.limit", "3",
            "--trainer.accelerator", "cpu", "--evaluation.output_dir", str(tmp_path), "--evaluation.bootstrap_iters", "10",
            "--evaluation.layout", "lm_eval", "--evaluation.predict_only", "true"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / sanitize_model_name(str(tiny_model))
    (results,) = folder.glob("results_*.json")
    document = json.loads(results.read_text())
    assert document["results"]["tiny_mc"] == {"alias": "tiny_mc"}  # predict_only: no metrics
    (samples,) = folder.glob("samples_tiny_mc_*.jsonl")
    line = json.loads(samples.read_text().splitlines()[0])
    assert line["metrics"] == [] and "acc" not in line and len(line["resps"]) == 3
    assert not (tmp_path / "results.json").exists()


def test_the_dataset_card_holds_the_results_table_and_a_config_per_task():
    document = {
        "model_name": "org/model", "date": 0.0, "results": {"t": {"alias": "t", "acc,none": 0.5}},
        "samples_files": {"samples_t_2024-01-01T00-00-00.000000.jsonl": {}},
    }
    card = dataset_card(document, "| Tasks | Metric |\n|---|---|\n| t | acc |")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["configs"] == [{"config_name": "org__model__t", "data_files": [{"split": "latest", "path": ["samples_t_2024-01-01T00-00-00.000000.jsonl"]}]}]
    assert "# Evaluation run of org/model" in card and "| t | acc |" in card and '"acc,none": 0.5' in card


def test_fewshot_as_multiturn_sends_each_example_as_chat_turns(tiny_model, tiny_tasks, tmp_path):
    """A whole `eval --apply_chat_template --fewshot_as_multiturn --num_fewshot 2` run: the prompt the model
    received (samples' `prompt`) holds two user/assistant example turns before the question; without
    --fewshot_as_multiturn the same run sends one user turn, and its answers are not reused for it."""
    import shutil

    from transformers import AutoTokenizer

    chat = tmp_path / "chat"
    shutil.copytree(tiny_model, chat)
    tokenizer = AutoTokenizer.from_pretrained(chat)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer.save_pretrained(chat)
    prompts, reused = {}, {}
    for mode, extra in (("multi", ["--fewshot_as_multiturn"]), ("single", []), ("multi again", ["--fewshot_as_multiturn"])):
        args = eval_args(chat, tiny_tasks, tmp_path / "out", "--apply_chat_template", "--num_fewshot", "2", *extra)
        run = run_cli(args, tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        _, samples = latest(tmp_path, chat)
        prompts[mode] = samples["tiny_gen"][0]["prompt"]
        reused[mode] = re.findall(r"reused (\d+) of (\d+) requests", run.stdout + run.stderr)
    assert reused["single"] == [] and len(reused["multi again"]) == 1  # the other prompt's answers are never served
    assert reused["multi again"][0][0] == reused["multi again"][0][1] and prompts["multi again"] == prompts["multi"]
    assert prompts["multi"].count("<|im_start|>assistant") == 3 and prompts["multi"].count("<|im_start|>user") == 3
    assert prompts["single"].count("<|im_start|>assistant") == 1 and prompts["single"].count("<|im_start|>user") == 1
