"""A per-rank response store: every finished batch is on disk at once, so a crash loses nothing.

Each rank appends to its own `responses-rank<R>.jsonl` under `<output_dir>/store/`. A response is
keyed by a stable identity of its request (task and its config, document, choice, repeat, the
exact prompt, the generation settings and the model), not by its position, so a rerun with any
number of processes finds it again.
"""

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from lmm_lightning.requests import Request, Response

STORE_DIR = "store"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def request_key(request: Request, task_config: str, model_identity: str) -> str:
    """A stable identity for a request; any change to the task, prompt, settings or model changes it."""
    gen = request.generation
    return _digest(
        [
            request.task,
            task_config,
            request.doc_id,
            request.choice_index,
            request.repeat,
            request.request_type.value,
            request.context,
            request.continuation,
            [list(gen.until), gen.max_new_tokens, gen.do_sample, gen.temperature, gen.top_p],
            model_identity,
        ]
    )[:32]


def config_digest(value: Any) -> str:
    return _digest(value)[:16]


class ResponseStore:
    """Appends finished responses for one rank; reads back those of every rank of every earlier run."""

    def __init__(self, output_dir: Path, rank: int) -> None:
        self.folder = Path(output_dir) / STORE_DIR
        self.path = self.folder / f"responses-rank{rank}.jsonl"
        self._handle = None

    def append(self, items: Iterable[tuple[str, Response]]) -> None:
        """Write and fsync one batch: once this returns, the batch survives a crash."""
        lines = "".join(json.dumps({"key": key, **asdict(r)}) + "\n" for key, r in items)
        if not lines:
            return
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(lines)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def load(self) -> dict[str, Response]:
        """Every stored response by key; a line cut short by a crash is ignored."""
        found: dict[str, Response] = {}
        for path in sorted(self.folder.glob("responses-rank*.jsonl")):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    key = item.pop("key")
                    found[key] = Response(**item)
        return found
