"""A per-rank response store: every finished batch is on disk at once, so a crash loses nothing.

Each rank appends to its own `responses-rank<R>.jsonl` under `<output_dir>/store/`. A response is
keyed by a stable identity of its request (task and its config, document, choice, repeat, the
exact prompt, the generation settings and the model), not by its position, so a rerun with any
number of processes, batch size, limit or offset finds it again.

A line also names its batch and that batch's size: a batch cut short by a crash is recognised and
recomputed whole (its requests keep the composition a fresh run gives them). Lines that are not a
record of this format (torn, garbage, written by something else) are skipped and counted, never fatal.

The output folder may be shared by every rank or local to each node: at setup the ranks agree on the
union of what they hold (`agree_across_ranks`), and each stored answer is handed to the final gather by
one rank, the lowest holding it.
"""

import fcntl
import hashlib
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch

from lmm_lightning.requests import Request, Response, Usage

STORE_DIR = "store"
_NONE = type(None)
# Every field of a stored line and the JSON types it may hold; anything else is a foreign line.
FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "model": (str,),
    "batch": (str,),
    "size": (int,),
    "uid": (int,),
    "logprob": (float, _NONE),
    "is_greedy": (bool, _NONE),
    "text": (str, _NONE),
}
_MISSING = object()
# A served model's answer also records what it cost (`Usage`); a local model's line has no such field.
USAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "prompt_tokens": (int,), "completion_tokens": (int,), "latency_s": (float, int), "retries": (int,),
}


class StoreWarning(UserWarning):
    """The response store held lines that were not reused; their requests are computed again."""


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
            *([gen.seed] if gen.do_sample else []),  # a greedy answer does not depend on the seed
            *([[[m.role, m.content] for m in request.messages]] if request.messages else []),  # chat turns
            model_identity,
        ]
    )[:32]


def stored_fields(response: Response) -> dict[str, Any]:
    """A response as one store line holds it: `usage` only where the model reported one."""
    fields = asdict(response)
    if fields["usage"] is None:
        del fields["usage"]
    return fields


def config_digest(value: Any) -> str:
    return _digest(value)[:16]


def answer_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a task's config the model's answers depend on: not the file it was read from, nor how a judge
    scores the answers afterwards (a new judge prompt reuses the model's answers), nor how errors are computed."""
    return {k: v for k, v in config.items() if k not in ("judge", "cluster_key")} | {"source": None}


def task_answer_config(task: Any) -> dict[str, Any]:
    """`answer_config` of a task's spec, with the frames a video task takes from each video (other frames, other
    answers; a task without videos keeps the key it had)."""
    config = answer_config(task.spec.to_dict())
    sampling = getattr(task, "frame_sampling", None)
    return config if sampling is None else config | {"frame_sampling": asdict(sampling)}


def request_keys(requests: Sequence[Request], tasks: Mapping[str, Any], model_identity: str) -> list[str]:
    """The key of every request (by uid); a task's config counts, not the file it was read from."""
    configs = {name: config_digest(task_answer_config(task)) for name, task in tasks.items()}
    return [request_key(r, configs[r.task], model_identity) for r in requests]


def parse_line(line: bytes) -> Optional[dict[str, Any]]:
    """A stored record, or None for anything else (cut short, not UTF-8, not an object, other fields)."""
    try:
        item = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(item, dict) or set(item) - {"usage"} != set(FIELDS):
        return None
    if not _typed(item, FIELDS) or ("usage" in item and not _usage(item["usage"])):
        return None
    return item if item["size"] >= 1 else None


def _typed(item: dict[str, Any], kinds_of: dict[str, tuple[type, ...]]) -> bool:
    """Every field of `kinds_of` present in `item` with one of its types (a bool is no int here)."""
    for name, kinds in kinds_of.items():
        value = item.get(name, _MISSING)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            return False
    return True


def _usage(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == set(USAGE_FIELDS) and _typed(value, USAGE_FIELDS)



def answers(request: Request, response: Response) -> bool:
    """Whether a stored response is a usable answer to this request (the kind its type needs)."""
    if request.request_type.scores_logprob:
        return isinstance(response.logprob, float) and response.text is None
    return isinstance(response.text, str) and response.logprob is None


@dataclass
class StoreScan:
    """What the store holds for one model: responses by key, and what was left out and why."""

    responses: dict[str, Response] = field(default_factory=dict)
    skipped: int = 0  # damaged or foreign lines, lines of a batch cut short, answers of the wrong kind
    other_model: int = 0  # well-formed responses of another model identity

    def reusable(self, requests: Sequence[Request], keys: Sequence[str]) -> dict[int, Response]:
        """uid -> stored answer for each request whose key is stored with an answer of the right kind."""
        found = {}
        for request, key in zip(requests, keys):
            stored = self.responses.get(key)
            if stored is None:
                continue
            if not answers(request, stored):
                self.skipped += 1
                continue
            found[request.uid] = replace(stored, uid=request.uid)
        return found

    def warnings(self, folder: Path) -> list[str]:
        """One line for each reason something stored was not reused."""
        out = []
        if self.skipped:
            out.append(
                f"skipped {self.skipped} line(s) of the response store {folder} (damaged, foreign, or of a batch "
                "cut short by a crash); requests without a stored answer are computed again"
            )
        if self.other_model:
            out.append(
                f"did not reuse {self.other_model} stored response(s) in {folder}: they belong to another model "
                "identity (its weights, dtype or settings changed); those requests are computed again"
            )
        return out


def scan_lines(lines: Iterable[bytes], model: str) -> StoreScan:
    """Keep the responses of whole batches of `model`; count the rest."""
    scan = StoreScan()
    batches: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        item = parse_line(line)
        if item is None:
            scan.skipped += 1
        else:
            batches.setdefault(item["batch"], []).append(item)
    for items in batches.values():
        sizes = {item["size"] for item in items}
        if len(sizes) != 1 or len(items) != sizes.pop():  # cut short by a crash (or mangled)
            scan.skipped += len(items)
            continue
        for item in items:
            if item["model"] != model:
                scan.other_model += 1
            elif item["key"] not in scan.responses:
                fields = {k: item[k] for k in ("uid", "logprob", "is_greedy", "text")}
                usage = Usage(**{**item["usage"], "latency_s": float(item["usage"]["latency_s"])}) if "usage" in item else None
                scan.responses[item["key"]] = Response(**fields, usage=usage)
    return scan


def _lines(path: Path) -> list[bytes]:
    """A file's lines as bytes; a last line without its newline is kept (and fails to parse if cut)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


class ResponseStore:
    """Appends finished responses for one rank; reads back those of every rank of every earlier run.

    `lock()` takes this rank's lock file, so a second run on the same output folder is refused
    instead of interleaving its writes. It is a POSIX record lock (`fcntl.lockf`): the OS drops it
    when the process dies, however it dies, and it belongs to the process, so a rerun inside the
    same process (a notebook after a failed run) is not locked out by its own earlier attempt.
    """

    def __init__(self, output_dir: Path, rank: int, model: str = "") -> None:
        self.folder = Path(output_dir) / STORE_DIR
        self.path = self.folder / f"responses-rank{rank}.jsonl"
        self.lock_path = self.folder / f"responses-rank{rank}.lock"
        self.model = model
        self._handle = None
        self._lock: Optional[int] = None

    def lock(self) -> Optional[str]:
        """Take this rank's lock; None when taken, else who holds it (host and process id)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            return holder or "another process"
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        self._lock = fd
        return None

    def append(self, items: Iterable[tuple[str, Response]]) -> None:
        """Write and fsync one batch: once this returns, the batch survives a crash."""
        items = list(items)
        if not items:
            return
        batch = {"model": self.model, "batch": uuid.uuid4().hex[:16], "size": len(items)}
        lines = "".join(json.dumps({"key": key, **batch, **stored_fields(r)}) + "\n" for key, r in items)
        if self._handle is None:
            self._handle = self._open()
        self._handle.write(lines)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def _open(self):
        """Open for appending; a line left cut by a crash is ended first so it cannot swallow the next."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a", encoding="utf-8")
        if handle.tell() > 0:
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    handle.write("\n")
        return handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def load(self) -> StoreScan:
        """Every stored response of this store's model, by key, with counts of what was left out."""
        lines = [line for path in sorted(self.folder.glob("responses-rank*.jsonl")) for line in _lines(path)]
        return scan_lines(lines, self.model)


@dataclass(frozen=True)
class Agreement:
    """What every rank agreed on at setup: the lock, and which rank contributes each stored answer.

    Ranks may see different stores (node-local output folders, a node-local cache): a request is resumed
    when any rank holds its answer, and the lowest rank holding it hands it to the final gather, so it
    is counted once. A rank that does not store (or read) answers takes part with nothing and holds none.
    """

    locked: bool
    holders: dict[int, int]  # uid -> the rank that contributes its stored answer
    from_cache: frozenset[int] = frozenset()  # uids whose holder found them only in the shared cache

    def held_by(self, rank: int) -> list[int]:
        """The uids this rank contributes, in order."""
        return sorted(uid for uid, holder in self.holders.items() if holder == rank)


def holder_flags(locked: bool, stored: set[int], cached: set[int], rank: int, world: int, n_requests: int) -> torch.Tensor:
    """One rank's side of the agreement, made to be reduced with MIN: [locked, then one value per request].

    A request this rank holds reads 2 x rank (+1 when only in the cache), one it does not 2 x world: the
    minimum over ranks is the lowest holder, preferring its run store to the cache."""
    flags = torch.full((n_requests + 1,), 2 * world, dtype=torch.long)
    flags[0] = int(locked)
    for uids, source in ((cached - stored, 1), (stored, 0)):
        if uids:
            flags[torch.tensor(sorted(uids), dtype=torch.long) + 1] = 2 * rank + source
    return flags


def read_flags(flags: torch.Tensor, world: int) -> Agreement:
    """The agreement from the reduced flags."""
    values = flags[1:]
    held = torch.nonzero(values < 2 * world).flatten().tolist()
    codes = values[held].tolist()
    return Agreement(
        locked=bool(flags[0]),
        holders={uid: code // 2 for uid, code in zip(held, codes)},
        from_cache=frozenset(uid for uid, code in zip(held, codes) if code % 2),
    )


def agree_across_ranks(
    locked: bool, stored: set[int], cached: set[int], n_requests: int, device: torch.device
) -> Agreement:
    """Whether every rank holds its lock, and the union of the answers the ranks hold, each given to one
    rank (the lowest holding it). One collective; on one process, this process holds all it found."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    flags = holder_flags(locked, stored, cached, rank, world, n_requests)
    if distributed:
        flags = flags.to(device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        flags = flags.cpu()
    return read_flags(flags, world)
