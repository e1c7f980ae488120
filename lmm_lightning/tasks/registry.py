"""Finding tasks, groups and tags by name, YAML path or folder; no import-time registration.

Each folder is indexed once per process: every `*.yaml` under it (outside `__pycache__`) is read with
its `include:` files but without importing any `!function`, and its task or group name and its tags
are noted; files that are neither a task nor a group (templates such as `_default_yaml`) are skipped,
as lm-evaluation-harness's `TaskIndex` does. lm-eval's 14k YAMLs index in a few seconds.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml

from lmm_lightning.tasks.spec import GroupSpec, TaskSpec, TaskSpecError, is_group, read_yaml, spec_from_dict

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin"
_IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}


@dataclass
class Resolved:
    """The tasks to run (each once, in order) and the groups that combine them."""

    tasks: list[TaskSpec] = field(default_factory=list)
    groups: list[GroupSpec] = field(default_factory=list)
    subtasks: dict[str, list[str]] = field(default_factory=dict)  # group -> task names (leaves)


@dataclass
class FolderIndex:
    """The names one folder defines: task or group name -> its YAML files, tag -> task names."""

    names: dict[str, list[Path]] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)


def _yaml_files(folder: Path) -> list[Path]:
    files = (p for p in folder.rglob("*.yaml") if not _IGNORED_DIRS.intersection(p.parts) and p.is_file())
    return sorted(files, key=lambda p: p.as_posix())


class _TolerantLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """For indexing only: every `!tag` is read as its plain value, nothing is imported."""


_TolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _names_of(path: Path, cache: dict[Path, Optional[dict]]) -> Optional[dict[str, Any]]:
    """A YAML's top-level mapping with its includes merged (cached per file), or None when unreadable."""
    path = path.resolve()
    if path in cache:
        return cache[path]
    cache[path] = None  # an include cycle reads as unreadable
    try:
        raw = yaml.load(path.read_text(), Loader=_TolerantLoader)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    include = raw.pop("include", None)
    merged: dict[str, Any] = {}
    for item in include if isinstance(include, list) else ([include] if include else []):
        base = _names_of(path.parent / str(item), cache) if isinstance(item, str) else None
        merged.update({k: v for k, v in (base or {}).items() if k != "task_list"})
    cache[path] = {**merged, **raw}
    return cache[path]


def index_entry(raw: Optional[dict[str, Any]]) -> Optional[tuple[str, list[str]]]:
    """The (name, tags) a parsed YAML defines, or None for a template that is neither task nor group."""
    if raw is None:
        return None
    name = raw.get("group") if is_group(raw) else raw.get("task")
    if not isinstance(name, str):
        return None
    tags = raw.get("tag")
    tags = [tags] if isinstance(tags, str) else [t for t in tags or [] if isinstance(t, str)]
    if not is_group(raw) and isinstance(raw.get("group"), (str, list)):  # legacy `group:` on a task: a tag
        legacy = raw["group"]
        tags += [legacy] if isinstance(legacy, str) else [g for g in legacy if isinstance(g, str)]
    return name, tags


_INDEXES: dict[Path, FolderIndex] = {}


def index_folder(folder: Path) -> FolderIndex:
    """The names under `folder`, read once per process."""
    folder = folder.resolve()
    if folder in _INDEXES:
        return _INDEXES[folder]
    index, cache = FolderIndex(), {}
    for path in _yaml_files(folder):
        entry = index_entry(_names_of(path, cache))
        if entry is None:
            continue
        name, tags = entry
        index.names.setdefault(name, []).append(path)
        for tag in tags:
            index.tags.setdefault(tag, []).append(name)
    _INDEXES[folder] = index
    return index


def available_tasks(folders: Iterable[Path] = (BUILTIN_DIR,)) -> dict[str, Path]:
    """Task or group name -> YAML file, for every YAML under the given folders (the first, where several)."""
    return {name: paths[0] for name, paths in task_files(folders).items()}


def task_files(folders: Iterable[Path] = (BUILTIN_DIR,)) -> dict[str, list[Path]]:
    """Task or group name -> every YAML file under the given folders that defines it."""
    found: dict[str, list[Path]] = {}
    for folder in folders:
        for name, paths in index_folder(Path(folder)).names.items():
            found.setdefault(name, []).extend(paths)
    return found


def as_folders(include_path: Union[str, Path, list, tuple, None]) -> list[Path]:
    """`include_path` as a list of folders (one string or path still works)."""
    if include_path is None:
        return []
    items = include_path if isinstance(include_path, (list, tuple)) else [include_path]
    return [Path(p) for p in items]


class _Resolver:
    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.out = Resolved()
        self.defined_in: dict[str, Path] = {}  # task name -> the YAML that defined it

    def _indexed(self, name: str) -> Optional[list[Path]]:
        """The files defining `name` in the last folder that defines it (an include_path folder wins over
        the builtin tasks, as lm-evaluation-harness's later paths do); several in one folder is an error."""
        for folder in reversed(self.folders):
            paths = index_folder(folder).names.get(name)
            if paths:
                if len(paths) > 1:
                    raise TaskSpecError(f"task '{name}' is defined by several YAMLs {[str(p) for p in paths]}; rename all but one")
                return paths
        return None

    def _tagged(self, name: str) -> list[str]:
        members: set[str] = set()
        for folder in self.folders:
            members.update(index_folder(folder).tags.get(name, []))
        return sorted(members)

    def lookup(self, name: str, relative_to: Optional[Path]) -> Union[list[Path], list[str]]:
        """YAML files for a path, folder or task/group name; task names for a tag."""
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
        paths = self._indexed(name)
        if paths is not None:
            return paths
        tagged = self._tagged(name)
        if tagged:
            return tagged
        raise TaskSpecError(
            f"unknown task '{name}': not a YAML file, a folder, a known task, group or tag name; "
            f"run `lmm-lightning tasks` to list them"
        )

    def add(self, name: str, relative_to: Optional[Path] = None, stack: tuple[str, ...] = (),
            overrides: Optional[dict[str, Any]] = None) -> list[str]:
        """Resolve one entry; returns the leaf task names it stands for."""
        leaves: list[str] = []
        for item in self.lookup(name, relative_to):
            if isinstance(item, str):  # a tag: each of its tasks
                leaves.extend(self.add(item, None, stack, overrides))
                continue
            raw = read_yaml(item)
            if not is_group(raw) and not isinstance(raw.get("task"), str) and Path(name).is_dir():
                continue  # a template in a folder of YAMLs
            leaves.extend(self.add_config({**raw, **(overrides or {})}, item, stack))
        return leaves

    def add_config(self, raw: dict[str, Any], path: Path, stack: tuple[str, ...]) -> list[str]:
        """A task or group mapping read from `path` (a YAML, or the group holding it inline)."""
        spec = spec_from_dict(raw, path)
        if isinstance(spec, TaskSpec):
            return self.add_task(spec, path)
        if spec.group in stack:
            raise TaskSpecError(f"{path}: group '{spec.group}' contains itself")
        members: list[str] = []
        for sub in spec.task:
            members.extend(self.add_member(sub, spec, path, stack + (spec.group,)))
        if spec.group not in self.out.subtasks:
            self.out.groups.append(spec)
            self.out.subtasks[spec.group] = members
        return members

    def add_member(self, sub: Union[str, dict[str, Any]], group: GroupSpec, path: Path, stack: tuple[str, ...]) -> list[str]:
        """One entry of a group's `task:` list: a name, a name with settings, or an inline task or group."""
        if isinstance(sub, str):
            return self.add(sub, path.parent, stack, group.overrides)
        settings = {**group.overrides, **sub}
        name = sub.get("group", sub.get("task"))
        known = isinstance(name, str) and (self._indexed(name) is not None or self._tagged(name))
        if known:
            rest = {k: v for k, v in settings.items() if k != ("group" if "group" in sub else "task")}
            return self.add(name, path.parent, stack, rest)
        return self.add_config(settings, path, stack)  # inline: defined here, not elsewhere

    def add_task(self, spec: TaskSpec, path: Path) -> list[str]:
        first = self.defined_in.setdefault(spec.task, path.resolve())
        if first != path.resolve():
            raise TaskSpecError(f"{path}: task '{spec.task}' is also defined by {first}; task names must be unique")
        if spec.task not in {t.task for t in self.out.tasks}:
            self.out.tasks.append(spec)
        return [spec.task]


def resolve(names: Iterable[str], include_path: Union[str, Path, list, None] = None) -> Resolved:
    """Each entry is a task, group or tag name, a YAML path or a folder of YAMLs; order is kept,
    duplicates run once. Names are looked up in the builtin tasks and the `include_path` folders."""
    resolver = _Resolver([BUILTIN_DIR] + as_folders(include_path))
    for name in names:
        resolver.add(name)
    return resolver.out


def resolve_tasks(names: Iterable[str], include_path: Union[str, Path, list, None] = None) -> list[TaskSpec]:
    return resolve(names, include_path).tasks
