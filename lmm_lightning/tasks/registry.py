"""Finding tasks by name, YAML path or folder; no import-time registration."""

from pathlib import Path
from typing import Iterable, Optional

import yaml

from lmm_lightning.tasks.spec import TaskSpec, TaskSpecError, load_task_spec

BUILTIN_DIR = Path(__file__).parent / "builtin"


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.yaml") if p.is_file())


def available_tasks(folders: Iterable[Path] = (BUILTIN_DIR,)) -> dict[str, Path]:
    """Task name -> YAML file for every task YAML under the given folders."""
    found: dict[str, Path] = {}
    for folder in folders:
        for path in _yaml_files(folder):
            raw = yaml.safe_load(path.read_text())
            if isinstance(raw, dict) and isinstance(raw.get("task"), str):
                found.setdefault(raw["task"], path)
    return found


def resolve_tasks(names: Iterable[str], include_path: Optional[str] = None) -> list[TaskSpec]:
    """Each entry is a task name, a YAML path or a folder of YAMLs; the order given is kept."""
    folders = [BUILTIN_DIR] + ([Path(include_path)] if include_path else [])
    index: Optional[dict[str, Path]] = None
    specs: list[TaskSpec] = []
    for name in names:
        path = Path(name)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            specs.append(load_task_spec(path))
        elif path.is_dir():
            specs.extend(load_task_spec(p) for p in _yaml_files(path))
        else:
            index = index if index is not None else available_tasks(folders)
            if name not in index:
                raise TaskSpecError(
                    f"unknown task '{name}': not a YAML file, a folder or a known task name; "
                    f"known tasks: {sorted(index)}"
                )
            specs.append(load_task_spec(index[name]))
    return specs
