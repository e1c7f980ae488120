"""`lmm-lightning SUBCOMMAND ...`: one table of subcommands (`SUBCOMMANDS`). `predict` is LightningCLI with
the evaluation callback built in (`lightning_cli.py`), `eval` is the same run spelled with lm-eval's flags
(`eval_cli.py`), `tasks` lists the tasks it can find, `compare` compares two runs.

This module imports nothing heavy: each subcommand imports what it needs when it runs, so `--help`, `tasks`
and `compare` start without torch, Lightning, transformers or datasets.
"""

import difflib
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from lmm_lightning.errors import EXIT_INPUT_ERROR

# Names that lived here before the Lightning half moved to lightning_cli.py, served from there on first use.
LIGHTNING_NAMES = {
    "EvalCLI", "TRAINER_DEFAULTS", "DEFAULT_TIMEOUT_S", "strategy_with_timeout", "with_progress_bar", "one_line",
    "lightning_cli", "check_trainer_options", "describe_parse_error", "option_names", "task_lists",
}


def __getattr__(name: str) -> Any:
    if name in LIGHTNING_NAMES:
        return getattr(importlib.import_module("lmm_lightning.lightning_cli"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the subcommands: each takes the arguments after its name and returns the exit status -----------------
def predict(args: list[str]) -> Optional[int]:
    """`lmm-lightning predict --config cfg.yaml [--section.key value ...]` (LightningCLI)."""
    from lmm_lightning.lightning_cli import predict as run_predict

    return run_predict(args)


def evaluate(args: list[str]) -> Optional[int]:
    """`lmm-lightning eval --model hf --model_args pretrained=... --tasks a,b ...` (lm-eval's flags)."""
    from lmm_lightning.eval_cli import main as run_eval

    return run_eval(args)


def power(args: list[str]) -> int:
    """`lmm-lightning power RUN [--baseline RUN] [--effect D]`: power.py parses its own options."""
    from lmm_lightning.power import main

    return main(args)


def evaluate_checkpoints(args: list[str]) -> Optional[int]:
    """`lmm-lightning eval-checkpoints DIR --tasks a,b`: each checkpoint of a training run, in step order."""
    from lmm_lightning.checkpoints import main as run_checkpoints

    return run_checkpoints(args)


def task_modality(spec: Any) -> str:
    """What a task feeds the model besides text: "text", "vision" (images) or "video" (frames).

    >>> from types import SimpleNamespace as Spec
    >>> task_modality(Spec(task="mme", doc_to_visual="image", dataset_path="lmms-lab/MME", dataset_name=None))
    'vision'
    """
    if not getattr(spec, "doc_to_visual", None):
        return "text"
    names = " ".join(str(v) for v in (spec.task, spec.dataset_path, spec.dataset_name) if v).lower()
    return "video" if "video" in names else "vision"


def tasks_parser() -> "argparse.ArgumentParser":
    import argparse

    p = argparse.ArgumentParser(
        prog="lmm-lightning tasks",
        description="List every task and group (built in, and under the folders given), with its modality and output "
        "type; with --show, print one task's resolved YAML and its first prompts, rendered from its documents.",
    )
    p.add_argument("folders", nargs="*", type=Path, help="more folders of task YAMLs")
    p.add_argument("--include_path", action="append", type=Path, default=[], help="a folder of task YAMLs (repeatable)")
    p.add_argument("--show", metavar="TASK", help="print this task's resolved YAML and first rendered prompts")
    p.add_argument("--limit", type=int, default=3, help="documents whose prompts --show prints (default 3)")
    return p


def list_tasks(args: list[str]) -> int:
    """`lmm-lightning tasks [FOLDER ...] [--include_path DIR] [--show TASK]`: every task and group found."""
    from lmm_lightning.errors import InputError
    from lmm_lightning.tasks import load_spec
    from lmm_lightning.tasks.spec import GroupSpec
    from lmm_lightning.tasks.registry import BUILTIN_DIR, available_tasks

    options = tasks_parser().parse_args(args)
    folders = [*options.folders, *options.include_path]
    if options.show:
        try:
            return show_task(options.show, folders, options.limit)
        except InputError as err:
            print(f"lmm-lightning tasks: error: {err}", file=sys.stderr)
            return EXIT_INPUT_ERROR
    found = available_tasks([BUILTIN_DIR, *folders])
    width = max((len(name) for name in found), default=4)
    print(f"{'name':<{width}}  {'modality':<8}  {'output type':<16}  file")
    for name, path in sorted(found.items()):
        try:
            spec = load_spec(path)
            modality, kind = ("-", "group") if isinstance(spec, GroupSpec) else (task_modality(spec), spec.output_type)
        except ValueError as err:
            modality, kind = "-", f"invalid ({err})"
        print(f"{name:<{width}}  {modality:<8}  {kind:<16}  {path}")
    return 0


def show_task(name: str, folders: list[Path], n_docs: int) -> int:
    """A task's YAML as resolved (includes merged, references kept) and the prompts of its first documents, like
    lm-eval's --write_out: the documents are loaded, no model is."""
    import yaml

    import datasets

    from lmm_lightning.data.loading import load_documents
    from lmm_lightning.tasks import Task
    from lmm_lightning.tasks.registry import resolve

    datasets.disable_progress_bars()  # nothing between the YAML and the prompts

    include = [str(f) for f in folders]
    resolved = resolve([name], include[0] if len(include) == 1 else include or None)
    for spec in resolved.tasks:
        print(f"# {spec.task}: {spec.source}")
        print(yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True).rstrip())
        task = Task(spec)
        documents = load_documents(task, n_docs, 0)
        for doc_id, doc in documents.docs.items():
            print(f"\n--- {spec.task}, doc_id {doc_id}, target {task.doc_to_target(doc)!r}")
            for request in task.build_requests(doc_id, doc, first_uid=0):
                shown = request.context + (request.continuation or "")
                print(f"[{request.request_type.value}] {shown}")
        print()
    return 0


def compare(args: list[str]) -> int:
    """`lmm-lightning compare RUN_A RUN_B [...]`: compare.py parses its own options."""
    from lmm_lightning.compare import main

    return main(args)


# name -> (the function of the arguments after the name, its one-line help in `lmm-lightning --help`). A function
# returns its exit status, or None once it has run (`main` then returns). A new subcommand is one more entry.
Subcommand = Callable[[list[str]], Optional[int]]
SUBCOMMANDS: dict[str, tuple[Subcommand, str]] = {
    "eval": (evaluate, "evaluate with lm-eval's flags: --model hf --model_args pretrained=ID --tasks a,b (`eval --help`)"),
    "predict": (predict, "evaluate from a LightningCLI config: --config cfg.yaml [--section.key value] (`predict --help`)"),
    "tasks": (list_tasks, "list tasks with modality and output type; `tasks --show TASK` prints its YAML and prompts"),
    "compare": (compare, "compare two results folders per document: B - A, an interval, a p-value (`compare --help`)"),
    "power": (power, "how small a difference a run can detect, and the documents a difference needs (`power --help`)"),
    "eval-checkpoints": (evaluate_checkpoints, "evaluate every checkpoint in a folder by step: a table and a plot against the step"),
}


def usage(subcommands: dict[str, tuple[Subcommand, str]]) -> str:
    """`lmm-lightning --help`: every subcommand with its one-line help.

    >>> print(usage({"tasks": (list_tasks, "list the tasks")}))
    usage: lmm-lightning {tasks} ...
    <BLANKLINE>
    Evaluate language and vision-language models on benchmarks.
    <BLANKLINE>
    subcommands:
      tasks  list the tasks
    """
    width = max(map(len, subcommands))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in subcommands.items()]
    return "\n".join([
        f"usage: lmm-lightning {{{','.join(subcommands)}}} ...",
        "",
        "Evaluate language and vision-language models on benchmarks.",
        "",
        "subcommands:",
        *lines,
    ])


def unknown_subcommand(name: Optional[str]) -> str:
    """The one-line complaint about a missing or unknown subcommand.

    >>> unknown_subcommand("predcit")
    "command line: unknown subcommand 'predcit'; did you mean 'predict'? (expected one of {eval,predict,tasks,compare,power,eval-checkpoints})"
    """
    expected = f"one of {{{','.join(SUBCOMMANDS)}}}"
    if name is None:
        return f"command line: expected a subcommand, {expected}; see `lmm-lightning --help`"
    hint = difflib.get_close_matches(name, list(SUBCOMMANDS), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"command line: unknown subcommand {name!r}{suggestion} (expected {expected})"


def main(args: Optional[list[str]] = None) -> None:
    """The console script: run the subcommand named first, and exit with its status (it returns when a
    `predict` or `eval` run finishes, so a run started in-process, from a notebook or a test, carries on)."""
    args = sys.argv[1:] if args is None else args
    if args[:1] in (["-h"], ["--help"]):
        print(usage(SUBCOMMANDS))
        sys.exit(0)
    if args and args[0].startswith("-"):  # LightningCLI's own options before `predict` (`-c FILE predict ...`)
        from lmm_lightning.lightning_cli import lightning_cli

        status = lightning_cli(args)
    elif args and args[0] in SUBCOMMANDS:
        run, _ = SUBCOMMANDS[args[0]]
        status = run(args[1:])
    else:
        print(f"lmm-lightning: error: {unknown_subcommand(args[0] if args else None)}", file=sys.stderr)
        status = EXIT_INPUT_ERROR
    if status is not None:
        sys.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
