"""`lmm-lightning eval`: lm-evaluation-harness's command line, mapped onto the `predict` run.

`lmm-lightning eval --model hf --model_args pretrained=ID,dtype=bfloat16 --tasks a,b --batch_size auto ...`
means what `lm-eval run` means with those flags. Each flag becomes a LightningCLI option of the same
run `predict` makes (model class_path/init_args, data init_args, trainer, evaluation callback), so
`--print_config` prints the YAML that `lmm-lightning predict --config` accepts, and any
`--model.* / --data.* / --trainer.* / --evaluation.*` option still reaches LightningCLI as given.

Parsing here needs no torch: `eval --help` is instant, and a bad flag is one line before anything loads.
"""

import argparse
import ast
import importlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from lmm_lightning.errors import EXIT_INPUT_ERROR, InputError

HF_CAUSAL = "lmm_lightning.models.HFCausalLM"
HF_VISION = "lmm_lightning.models.HFVisionLM"
OPENAI = "lmm_lightning.models.OpenAIModel"
# `--model NAME` (lm-eval's and lmms-eval's names) -> our class; a dotted name is a class path as it is.
MODELS: dict[str, str] = {
    "hf": HF_CAUSAL,
    "hf-auto": HF_CAUSAL,
    "hf-causal": HF_CAUSAL,
    "huggingface": HF_CAUSAL,
    "vlm": HF_VISION,
    "hf-multimodal": HF_VISION,
    "hf_vlm": HF_VISION,
    "llava_hf": HF_VISION,
    "llava_onevision": HF_VISION,
    "qwen2_vl": HF_VISION,
    "qwen2_5_vl": HF_VISION,
    "qwen_vl": HF_VISION,
    "idefics2": HF_VISION,
    "openai": OPENAI,  # any OpenAI-compatible server: vLLM, SGLang, TGI, a commercial API
    "openai-chat-completions": OPENAI,
    "local-chat-completions": OPENAI,
    "openai_compatible": OPENAI,
    "openai-completions": OPENAI,
    "local-completions": OPENAI,
}
# lm-eval's completions models send the prompt as text (`chat=False`); its chat ones and ours, as chat turns.
COMPLETIONS_MODELS = ("openai-completions", "local-completions")
# LightningCLI option sections that pass through untouched (`--trainer.precision bf16-true`, ...).
PASS_THROUGH = ("--model.", "--data.", "--trainer.", "--evaluation.", "--seed_everything", "--process_group_timeout")
SEED_SLOTS = ("python", "numpy", "torch", "fewshot")


def parse_value(text: str) -> Any:
    """A `key=value` value as lm-eval reads it: a Python literal when it is one, else the text.

    >>> parse_value("0"), parse_value("0.5"), parse_value("True"), parse_value("['\\\\n']"), parse_value("bfloat16")
    (0, 0.5, True, ['\\n'], 'bfloat16')
    """
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_pairs(option: str, parts: Optional[list[str]]) -> dict[str, Any]:
    """`k=v,k2=v2` (or `k=v k2=v2`, as lm-eval 0.4.13 also takes) as a dict.

    >>> parse_pairs("--gen_kwargs", ["temperature=0,max_gen_toks=64"])
    {'temperature': 0, 'max_gen_toks': 64}
    """
    out: dict[str, Any] = {}
    for part in ",".join(parts or []).split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise InputError(f"{option}: expected key=value pairs separated by commas, got {part!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_batch_size(text: str) -> Any:
    """An int, `auto`, or `auto:N` (lm-eval re-tunes N times; the size is probed once here, on the loaded model).

    >>> parse_batch_size("8"), parse_batch_size("auto:4")
    (8, 'auto')
    """
    if text == "auto" or text.startswith("auto:"):
        return "auto"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise InputError(f"--batch_size: expected a positive integer, 'auto' or 'auto:N', got {text!r}")


def parse_limit(text: str) -> Any:
    """A document count, or a fraction of each split when below 1 (as lm-eval)."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--limit: expected a number of documents or a fraction, got {text!r}") from None
    return int(value) if value >= 1 and value.is_integer() else value


def parse_seeds(text: str) -> dict[str, Optional[int]]:
    """lm-eval's `--seed`: one integer for every slot, or four (python, numpy, torch, fewshot), `None` to leave one unset.

    >>> parse_seeds("42")["fewshot"], parse_seeds("0,None,8,52")
    (42, {'python': 0, 'numpy': None, 'torch': 8, 'fewshot': 52})
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        parts = parts * len(SEED_SLOTS)
    if len(parts) != len(SEED_SLOTS) or not all(p == "None" or p.lstrip("-").isdigit() for p in parts):
        raise InputError(f"--seed: expected one integer or four comma-separated ones (python,numpy,torch,fewshot), got {text!r}")
    return {slot: None if p == "None" else int(p) for slot, p in zip(SEED_SLOTS, parts)}


class FlagParser(argparse.ArgumentParser):
    """argparse whose complaints are an InputError (one line, exit 2) instead of usage text and its own exit."""

    def error(self, message: str) -> None:
        raise InputError(f"command line: {message}; run `lmm-lightning eval --help`")


def parser() -> argparse.ArgumentParser:
    """The flags a user needs, in lm-eval's spelling; `--help-all` shows every LightningCLI option too.
    Values are read as text here and checked after (`parse_*`), so a bad one is an error naming its flag."""
    p = FlagParser(
        prog="lmm-lightning eval",
        usage="lmm-lightning eval --model hf --model_args pretrained=ID --tasks a,b [options]",
        description="Evaluate a model with lm-eval's flags (a `predict` run underneath; --print_config shows its YAML).",
        epilog="Any --model.*, --data.*, --trainer.* or --evaluation.* option is passed to the run as given; "
        "--help-all lists them all.",
        add_help=False,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=36, width=112),
    )
    add = p.add_argument
    add("-h", "--help", action="store_true", help="show this help and exit")
    add("--help-all", action="store_true", help="also list every LightningCLI option of the run")
    add("--config", "-C", action="append", default=[], metavar="FILE", help="a `predict` YAML; the flags below override it")
    add("--print_config", action="store_true", help="print the run's YAML (for `predict --config`) and exit")
    add("--model", "-M", default=None, metavar="NAME", help="hf (text), vlm / hf-multimodal / llava_hf / qwen2_vl (vision), or a class path")
    add("--model_args", "-a", nargs="+", metavar="ARGS", help="pretrained=ID,dtype=bfloat16,revision=...,peft=...")
    add("--tasks", "-t", nargs="+", metavar="TASKS", help="comma- or space-separated task and group names (`lmm-lightning tasks`)")
    add("--num_fewshot", "-f", type=int, metavar="N", help="few-shot examples per prompt (every task)")
    add("--batch_size", "-b", metavar="SIZE", help="an integer, auto, or auto:N")
    add("--max_batch_size", type=int, metavar="N", help="ceiling of --batch_size auto")
    add("--limit", "-L", metavar="N", help="documents per task (a fraction of each split when < 1)")
    add("--device", metavar="DEV", help="cuda, cuda:N, cpu or mps")
    add("--devices", metavar="N", help="processes on this node (DDP when more than one)")
    add("--gen_kwargs", nargs="+", metavar="ARGS", help="generation settings for every task: temperature=0,max_gen_toks=64")
    add("--apply_chat_template", nargs="?", const=True, default=None, metavar="true|false", help="wrap prompts in the chat template")
    add("--fewshot_as_multiturn", nargs="?", const=True, default=None, metavar="true|false", help="few-shot examples as chat turns")
    add("--system_instruction", metavar="TEXT", help="system prompt of the chat template")
    add("--include_path", action="append", default=[], metavar="DIR", help="a folder of task YAMLs (repeatable)")
    add("--output_path", "-o", metavar="DIR", help="results go to DIR/<model>/results_<time>.json (lm-eval's layout)")
    add("--log_samples", "-s", action="store_true", help="also write samples_<task>_<time>.jsonl")
    add("--predict_only", "-x", action="store_true", help="write the responses (samples), no metrics")
    add("--use_cache", "-c", metavar="PATH", help="a response cache shared by runs: a request answered before is reused")
    add("--seed", metavar="SEEDS", help="one integer, or python,numpy,torch,fewshot")
    add("--trust_remote_code", action="store_true", help="allow the model's own code from the Hub")
    add("--judge_model", metavar="NAME", help="judge of judged tasks (mmvet, mathvista_testmini): openai, hf, or a class path")
    add("--judge_model_args", nargs="+", metavar="ARGS", help="the judge's arguments: base_url=URL,model=NAME or pretrained=ID")
    return p


def flag_bool(option: str, value: Any) -> bool:
    """A flag that may be bare (true) or take true/false, as lm-eval's optional-value flags do."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise InputError(f"{option}: expected true or false (named chat templates are not supported), got {value!r}")


def model_class(name: str) -> str:
    if "." in name:
        return name
    if name not in MODELS:
        raise InputError(f"--model: unknown model {name!r}; expected one of {sorted(MODELS)} or a class path")
    return MODELS[name]


def import_class(class_path: str, option: str = "--model") -> type:
    """The class a dotted path names (imports its module: torch, not the weights)."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise InputError(f"{option}: cannot import {class_path!r}: {err}") from None


def init_arg_names(class_path: str) -> list[str]:
    """The init arguments of a model class."""
    cls = import_class(class_path)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def check_model_args(class_path: str, model_args: dict[str, Any], option: str = "--model_args") -> None:
    known = init_arg_names(class_path)
    for key in model_args:
        if key not in known:
            raise InputError(f"{option}: unknown key {key!r} for {class_path.rpartition('.')[2]}; known keys: {', '.join(known)}")


@dataclass
class Overrides:
    """The run as LightningCLI options, in the order they are given (later ones win)."""

    options: list[tuple[str, Any]] = field(default_factory=list)

    def set(self, option: str, value: Any) -> None:
        if value is not None:
            self.options.append((option, value))

    def args(self) -> list[str]:
        """`--option value` pairs; a value that is not text is written as JSON (which jsonargparse reads as YAML)."""
        out = []
        for option, value in self.options:
            out += [option, value if isinstance(value, str) else json.dumps(value)]
        return out


def model_options(options: argparse.Namespace, run: Overrides) -> None:
    model_args = parse_pairs("--model_args", options.model_args)
    chat = None if options.apply_chat_template is None else flag_bool("--apply_chat_template", options.apply_chat_template)
    multiturn = options.fewshot_as_multiturn is not None and flag_bool("--fewshot_as_multiturn", options.fewshot_as_multiturn)
    if multiturn and not chat:
        raise InputError("--fewshot_as_multiturn: needs --apply_chat_template (as in lm-eval)")
    run.set("--data.fewshot_as_multiturn", True if multiturn else None)
    if options.model is None and not model_args and chat is None and options.system_instruction is None:
        return  # the model comes from --config
    class_path = model_class(options.model or "hf")
    options.parallel = parallel_sizes(model_args)
    if options.trust_remote_code:
        model_args.setdefault("trust_remote_code", True)
    if options.model in COMPLETIONS_MODELS:
        model_args.setdefault("chat", False)
    check_model_args(class_path, model_args)
    run.set("--model", class_path)
    if class_path == HF_VISION and options.model not in (None, "vlm", "hf-multimodal", "hf_vlm"):
        run.set("--data.prompt_model", options.model)  # lmms-eval's model name picks its lmms_eval_specific_kwargs
    for key, value in model_args.items():
        run.set(f"--model.init_args.{key}", value)
    if class_path == OPENAI:  # a served chat model applies its own template; the completions endpoint takes raw text
        if chat and model_args.get("chat") is False:
            raise InputError(f"--apply_chat_template: --model {options.model} posts raw prompts to /completions; "
                             "use --model openai (the server applies the chat template)")
        chat = None
    run.set("--model.init_args.use_chat_template", chat)
    run.set("--model.init_args.system_prompt", options.system_instruction)


MODEL_PARALLEL = "lightning.pytorch.strategies.ModelParallelStrategy"


def parallel_sizes(model_args: dict[str, Any]) -> Optional[tuple[int, int]]:
    """(data, tensor) parallel sizes from vLLM's `tensor_parallel_size` / `data_parallel_size` model args (taken out
    of `model_args`), or None when neither is given.

    >>> parallel_sizes({"pretrained": "m", "tensor_parallel_size": 2})
    (1, 2)
    """
    sizes = [model_args.pop(key, 1) for key in ("data_parallel_size", "tensor_parallel_size")]
    for key, size in zip(("data_parallel_size", "tensor_parallel_size"), sizes):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputError(f"--model_args: {key} expected a positive integer, got {size!r}")
    return None if sizes == [1, 1] else (sizes[0], sizes[1])


def data_options(options: argparse.Namespace, run: Overrides) -> None:
    tasks = [t.strip() for part in options.tasks or [] for t in part.split(",") if t.strip()]
    gen_kwargs = parse_pairs("--gen_kwargs", options.gen_kwargs)
    if "max_gen_toks" in gen_kwargs:  # lm-eval's name for the budget; a task's own max_new_tokens would win over it
        gen_kwargs["max_new_tokens"] = gen_kwargs.pop("max_gen_toks")
    if options.tasks is not None and not tasks:
        raise InputError("--tasks: expected at least one task name")
    run.set("--data.tasks", tasks or None)
    run.set("--data.num_fewshot", options.num_fewshot)
    run.set("--data.batch_size", None if options.batch_size is None else parse_batch_size(options.batch_size))
    run.set("--data.max_batch_size", options.max_batch_size)
    run.set("--data.limit", None if options.limit is None else parse_limit(options.limit))
    # One folder as a string, several as a list: the data module takes either (helper A made it a list).
    include = options.include_path
    run.set("--data.include_path", include[0] if len(include) == 1 else include or None)
    run.set("--data.generation_kwargs", {"*": gen_kwargs} if gen_kwargs else None)
    if options.seed is not None:
        run.set("--data.seed", options.seed["fewshot"])


def trainer_options(options: argparse.Namespace, run: Overrides) -> None:
    device = options.device
    if device is not None:
        kind, _, index = device.partition(":")
        accelerators = {"cuda": "gpu", "gpu": "gpu", "cpu": "cpu", "mps": "mps"}
        if kind not in accelerators or (index and not index.isdigit()):
            raise InputError(f"--device: expected cuda, cuda:N, cpu or mps, got {device!r}")
        run.set("--trainer.accelerator", accelerators[kind])
        if index:
            run.set("--trainer.devices", [int(index)])
    if options.devices is not None:
        if not options.devices.isdigit() or int(options.devices) < 1:
            raise InputError(f"--devices: expected a positive number of processes, got {options.devices!r}")
        run.set("--trainer.devices", int(options.devices))
        if int(options.devices) > 1 and getattr(options, "parallel", None) is None:
            run.set("--trainer.strategy", "ddp")
    parallel = getattr(options, "parallel", None)
    if parallel is not None:  # a data x tensor mesh over data * tensor processes
        data, tensor = parallel
        run.set("--trainer.strategy", MODEL_PARALLEL)
        run.set("--trainer.strategy.data_parallel_size", data)
        run.set("--trainer.strategy.tensor_parallel_size", tensor)
        if options.devices is None:
            run.set("--trainer.devices", data * tensor)
    if options.seed is not None and options.seed["torch"] is not None:
        run.set("--seed_everything", options.seed["torch"])


def judge_options(options: argparse.Namespace, run: Overrides) -> None:
    """`--judge_model openai --judge_model_args base_url=...,model=...` as the callback's `judge` model."""
    judge_args = parse_pairs("--judge_model_args", options.judge_model_args)
    if options.judge_model is None:
        if judge_args:
            raise InputError("--judge_model_args: give --judge_model too (openai, hf, or a class path)")
        return
    class_path = model_class(options.judge_model)
    if options.judge_model in COMPLETIONS_MODELS:
        judge_args.setdefault("chat", False)
    check_model_args(class_path, judge_args, "--judge_model_args")
    run.set("--evaluation.judge", class_path)
    for key, value in judge_args.items():
        run.set(f"--evaluation.judge.init_args.{key}", value)


def evaluation_options(options: argparse.Namespace, run: Overrides) -> None:
    if options.output_path is not None and options.output_path.endswith(".json"):
        raise InputError(f"--output_path: expected a folder (results go to <folder>/<model>/results_<time>.json), got {options.output_path!r}")
    run.set("--evaluation.layout", "lm_eval")
    run.set("--evaluation.output_dir", options.output_path)
    samples = options.log_samples or options.predict_only
    run.set("--evaluation.log_samples", True if samples else (None if options.config else False))  # lm-eval: off unless asked
    run.set("--evaluation.predict_only", options.predict_only or None)
    run.set("--evaluation.cache_dir", options.use_cache)


def lightning_args(args: list[str]) -> list[str]:
    """The `predict` command line these lm-eval flags mean (their own options, then the pass-through ones)."""
    options, rest = parser().parse_known_args(args)
    unknown = [a for a in rest if a.startswith("-") and not a.startswith(PASS_THROUGH)]
    if unknown:
        raise InputError(f"{unknown[0].split('=')[0]}: unknown option; run `lmm-lightning eval --help` (or --help-all)")
    if rest and not rest[0].startswith("-"):
        raise InputError(f"command line: unexpected argument {rest[0]!r}; run `lmm-lightning eval --help`")
    options.seed = None if options.seed is None else parse_seeds(options.seed)
    run = Overrides()
    model_options(options, run)
    data_options(options, run)
    trainer_options(options, run)
    evaluation_options(options, run)
    judge_options(options, run)
    configs = [arg for path in options.config for arg in ("--config", path)]
    return ["predict", *configs, *run.args(), *rest, *(["--print_config"] if options.print_config else [])]


def main(args: list[str]) -> Optional[int]:
    """`lmm-lightning eval ...`: None once the run has finished (an in-process caller carries on), 2 on bad input."""
    help_flags = {"-h", "--help", "--help-all"} & set(args)
    if help_flags:
        parser().print_help()
        if "--help-all" in help_flags:
            from lmm_lightning.lightning_cli import lightning_cli

            print("\nEvery option of the underlying `predict` run (LightningCLI):\n", flush=True)
            return lightning_cli(["predict", "--help"]) or 0
        return 0
    try:
        translated = lightning_args(args)
    except InputError as err:
        print(f"lmm-lightning: error: {err}", file=sys.stderr, flush=True)
        return EXIT_INPUT_ERROR
    from lmm_lightning.lightning_cli import lightning_cli

    return lightning_cli(translated)
