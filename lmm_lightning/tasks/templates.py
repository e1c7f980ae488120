"""Turning a document into text, a target or choices: a column name, a Jinja2 template or a literal."""

import ast
import importlib
import importlib.util
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Union

import jinja2

from lmm_lightning.errors import InputError

def _regex_replace(string: str, pattern: str, repl: str, count: int = 0) -> str:
    """lm-evaluation-harness's Jinja2 filter `regex_replace`, which its templates use."""
    return re.sub(pattern, repl, string, count=count)


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENV.filters["regex_replace"] = _regex_replace


@lru_cache(maxsize=256)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render(template: Union[str, int, list, Callable], doc: dict[str, Any]) -> Any:
    """A function is called on the doc; a column name returns the column's value; any other string is Jinja2."""
    if callable(template):
        return template(doc)
    if not isinstance(template, str):
        return template
    if template in doc:
        return doc[template]
    return _compile(template).render(**doc)


def render_choices(template: Union[str, list, Callable], doc: dict[str, Any]) -> list[str]:
    """Choices may be a literal list, a list-valued column, or a template rendering a list literal."""
    value = render(template, doc)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"doc_to_choice rendered {value!r}, which is not a list literal") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"doc_to_choice must give a non-empty list of strings, got {value!r}")
    return [str(choice) for choice in value]


_REFERENCE = re.compile(r"^(?:(?P<file>/[^:\n]+\.py)|(?P<module>[A-Za-z_][\w.]*?)(?:\.py)?):(?P<function>[A-Za-z_]\w*)$")


def is_reference(value: Any) -> bool:
    """`utils:doc_to_text` or `utils.py:doc_to_text`: a function, not a template."""
    return isinstance(value, str) and bool(_REFERENCE.match(value))


def resolve_reference(reference: str, root: Optional[Path], where: str) -> Callable:
    """Import `module:function` (or `/path/to/file.py:function`), looking for `module.py` beside the YAML first."""
    match = _REFERENCE.match(reference)
    module_name, function = match["module"] or match["file"], match["function"]
    local = Path(match["file"]) if match["file"] else root / (module_name.replace(".", "/") + ".py") if root else None
    try:
        if local is not None and local.is_file():
            spec = importlib.util.spec_from_file_location(f"lmm_lightning_task_{abs(hash(str(local)))}", local)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"{where}: cannot import module '{module_name}' for {reference!r}: {err}") from None
    if not hasattr(module, function):
        raise InputError(f"{where}: module '{module_name}' has no function '{function}'")
    return getattr(module, function)


def anchor(value: Any, folder: Path) -> Any:
    """Pin a reference to the folder of the YAML that wrote it (`utils:fn` -> `/abs/utils.py:fn`), so a
    YAML that includes it from elsewhere still finds the function."""
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    if match is None or match["file"]:
        return value
    local = folder / (match["module"].replace(".", "/") + ".py")
    return f"{local.resolve()}:{match['function']}" if local.is_file() else value


def _load_module_file(path: Path) -> Any:
    """A module from its file, imported once per file (lm-evaluation-harness's tasks share a utils.py)."""
    name = f"lmm_lightning_task_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_function(qualname: str, folder: Path, where: str) -> Callable:
    """A `!function module.attr` tag: `<folder>/module.py` first, else an importable module
    (lm-evaluation-harness's order)."""
    module_name, _, attr = qualname.rpartition(".")
    if not module_name:
        raise InputError(f"{where}: !function {qualname!r}: expected module.function")
    local = (folder / (module_name.replace(".", "/") + ".py")).resolve()
    try:
        module = _load_module_file(local) if local.is_file() else importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"{where}: cannot import module '{module_name}' for !function {qualname}: {err}") from None
    if not hasattr(module, attr):
        raise InputError(f"{where}: module '{module_name}' ({local if local.is_file() else module_name}) has no function '{attr}'")
    return getattr(module, attr)
