"""Finding tasks and groups by name, YAML path or folder; no import-time registration."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

import yaml

from lmm_lightning.tasks.spec import GroupSpec, TaskSpec, TaskSpecError, load_spec

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass
class Resolved:
    """The tasks to run (each once, in order) and the groups that combine them."""

    tasks: list[TaskSpec] = field(default_factory=list)
    groups: list[GroupSpec] = field(default_factory=list)
    subtasks: dict[str, list[str]] = field(default_factory=dict)  # group -> task names (leaves)


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.yaml") if p.is_file())


def available_tasks(folders: Iterable[Path] = (BUILTIN_DIR,)) -> dict[str, Path]:
    """Task or group name -> YAML file, for every YAML under the given folders (the first, where several)."""
    return {name: paths[0] for name, paths in task_files(folders).items()}


def task_files(folders: Iterable[Path] = (BUILTIN_DIR,)) -> dict[str, list[Path]]:
    """Task or group name -> every YAML file under the given folders that defines it."""
    found: dict[str, list[Path]] = {}
    for folder in folders:
        for path in _yaml_files(folder):
            try:
                raw = yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                continue
            if not isinstance(raw, dict):
                continue
            name = raw.get("group") if isinstance(raw.get("task"), list) else raw.get("task")
            if isinstance(name, str):
                found.setdefault(name, []).append(path)
    return found


class _Resolver:
    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.index: Optional[dict[str, list[Path]]] = None
        self.out = Resolved()
        self.defined_in: dict[str, Path] = {}  # task name -> the YAML that defined it

    def lookup(self, name: str, relative_to: Optional[Path]) -> list[Path]:
        candidates = [Path(name)] + ([relative_to / name] if relative_to else [])
        for path in candidates:
            if path.suffix in (".yaml", ".yml") and path.is_file():
                return [path]
            if path.is_dir():
                return _yaml_files(path)
        if Path(name).suffix in (".yaml", ".yml"):
            raise TaskSpecError(f"{name}: task file not found")
        if "/" in name or "\\" in name:
            raise TaskSpecError(f"data.tasks: {name}: no such task file or folder")
        self.index = self.index if self.index is not None else task_files(self.folders)
        if name not in self.index:
            raise TaskSpecError(
                f"unknown task '{name}': not a YAML file, a folder or a known task name; "
                f"run `lmm-lightning tasks` to list them"
            )
        if len(self.index[name]) > 1:
            raise TaskSpecError(f"task '{name}' is defined by several YAMLs {[str(p) for p in self.index[name]]}; rename all but one")
        return self.index[name]

    def add(self, name: str, relative_to: Optional[Path] = None, stack: tuple[str, ...] = ()) -> list[str]:
        """Resolve one entry; returns the leaf task names it stands for."""
        leaves: list[str] = []
        for path in self.lookup(name, relative_to):
            spec = load_spec(path)
            if isinstance(spec, GroupSpec):
                if spec.group in stack:
                    raise TaskSpecError(f"{path}: group '{spec.group}' contains itself")
                members: list[str] = []
                for sub in spec.task:
                    members.extend(self.add(sub, path.parent, stack + (spec.group,)))
                if spec.group not in self.out.subtasks:
                    self.out.groups.append(spec)
                    self.out.subtasks[spec.group] = members
                leaves.extend(members)
            else:
                first = self.defined_in.setdefault(spec.task, path.resolve())
                if first != path.resolve():
                    raise TaskSpecError(f"{path}: task '{spec.task}' is also defined by {first}; task names must be unique")
                if spec.task not in {t.task for t in self.out.tasks}:
                    self.out.tasks.append(spec)
                leaves.append(spec.task)
        return leaves


def resolve(names: Iterable[str], include_path: Optional[str] = None) -> Resolved:
    """Each entry is a task or group name, a YAML path or a folder of YAMLs; order is kept, duplicates run once."""
    resolver = _Resolver([BUILTIN_DIR] + ([Path(include_path)] if include_path else []))
    for name in names:
        resolver.add(name)
    return resolver.out


def resolve_tasks(names: Iterable[str], include_path: Optional[str] = None) -> list[TaskSpec]:
    return resolve(names, include_path).tasks
