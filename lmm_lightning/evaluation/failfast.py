"""Fail fast across ranks: a failure, a signal, a lost rank or a stuck rank ends every rank within seconds.

The main thread of each rank publishes its progress (phase, batches done, the task and documents in hand) to
the process group's key-value store at each change; a watcher thread on every rank republishes it with a
heartbeat twice a second and reads every other rank's. A watcher ends its process with one message naming the
rank at fault (and how long, doing what) when:
- a rank reported a failure (an exception, a SIGTERM, or one of the verdicts below);
- a rank it launched exited, or a rank in the same process namespace is gone (killed, exited);
- the next rank's process ended, on any machine: each rank holds a TCP connection to the next one's watcher
  (a ring), which the kernel closes when that process dies however it dies; a rank that ends in order says
  goodbye on it first. This is what names a rank killed on another node within a second;
- the store's host (rank 0) cannot be reached;
- a rank's heartbeat stopped (SIGSTOP, SIGKILL on another machine, a machine gone);
- a rank is behind the others and has not advanced for max(stall timeout, STALL_FACTOR x the slowest step
  any rank took so far): a hang in a forward, before the final gather, or while loading the model. The
  measured steps make long model loads and long generations safe: the threshold grows with them.
SIGTERM (a scheduler preempting the job) goes through the watcher too, by the signal wakeup fd, so a main
thread blocked inside a collective does not delay it. Nobody waits for the process-group timeout.
"""

import hashlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from lmm_lightning.data.datamodule import AgreedInputError
from lmm_lightning.errors import EXIT_FAILURE
from lmm_lightning.requests import Request

PREFIX = "lmm_lightning"
FAIL_KEY = f"{PREFIX}/failed"
PHASES = (
    "checking the request list", "loading the model", "waiting for the other ranks to load the model",
    "predicting", "gathering the responses", "done",
)
CHECKING, LOADING, LOADED, PREDICTING, GATHERING, DONE = range(len(PHASES))

TICK_S = 0.1  # how often a watcher looks at its signals and the ranks it launched
STORE_EVERY = 5  # ticks between two looks at the store (0.5 s)
STALL_FACTOR = 5.0  # a rank is stuck after this many times the slowest step seen (or the stall timeout)
STORE_TIMEOUT_S = 30.0  # a store operation that takes longer means its host is gone or frozen
EXIT_GRACE_S = 2.0  # time the ranks get to read a report (and exit by themselves) before being killed
COMMUNICATION_ERROR_WAIT_S = 15.0  # how long a rank whose collective broke waits for the watcher to name the cause
COMMUNICATION_ERRORS = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "socket timeout")
CONNECT_TIMEOUT_S = 2.0  # connecting to the next rank's watcher; it is retried, and the heartbeat remains
CONNECT_TRIES = 5  # failed connections to an address the next rank published before relying on the heartbeat
GOODBYE = b"bye"  # sent on a rank's connections when it ends in order (not killed)


def describe_batch(requests: Sequence[Request]) -> str:
    """`task tiny_mc, doc_id 3, 4`: what a batch holds, for messages."""
    tasks = sorted({r.task for r in requests})
    docs = sorted({r.doc_id for r in requests})
    more = " ..." if len(docs) > 8 else ""
    return f"task {', '.join(tasks)}, doc_id {', '.join(map(str, docs[:8]))}{more}"


def is_communication_error(exception: BaseException) -> bool:
    """A collective that broke because a peer went away (gloo and NCCL raise plain RuntimeErrors)."""
    if isinstance(exception, dist.DistError):
        return True
    text = str(exception).lower()
    return isinstance(exception, RuntimeError) and any(word in text for word in COMMUNICATION_ERRORS)


# --- every rank builds the same request list --------------------------------------------------------------
def request_digest(request: Request) -> int:
    """A signed 64-bit digest of what a request asks (not its model or store key)."""
    gen = request.generation
    text = json.dumps(
        [
            request.task, request.doc_id, request.choice_index, request.repeat, request.request_type.value,
            request.context, request.continuation,
            [list(gen.until), gen.max_new_tokens, gen.do_sample, gen.temperature, gen.top_p],
            *([[[m.role, m.content] for m in request.messages]] if request.messages else []),  # chat turns
        ],
        default=str,
    )
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little", signed=True)


def first_difference(table: torch.Tensor) -> tuple[int, int]:
    """(request index, rank) of the first request whose digest differs from rank 0's, in a (ranks, requests) table."""
    differs = (table != table[:1]).nonzero()
    index = int(differs[:, 1].min())
    rank = int(differs[differs[:, 1] == index][:, 0].min())
    return index, rank


def check_same_requests(requests: list[Request], device: torch.device) -> None:
    """Every rank must plan the same requests in the same order, or their shards overlap and miss documents
    (a dataset whose row or choice order differs between processes). One small all-gather; a second one
    only when the lists differ, to name the first differing task and document. Raised on every rank alike."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    world = dist.get_world_size()
    digests = torch.tensor([request_digest(r) for r in requests], dtype=torch.long)
    whole = hashlib.sha256(digests.numpy().tobytes()).digest()[:8]
    summary = torch.tensor([len(requests), int.from_bytes(whole, "little", signed=True)], dtype=torch.long, device=device)
    gathered = [torch.empty_like(summary) for _ in range(world)]
    dist.all_gather(gathered, summary)
    table = torch.stack(gathered).cpu()
    if bool((table == table[:1]).all()):
        return
    lengths = table[:, 0].tolist()
    if len(set(lengths)) > 1:
        counts = ", ".join(f"rank {r}: {n}" for r, n in enumerate(lengths))
        raise AgreedInputError(
            f"data: the ranks built request lists of different lengths ({counts}); every rank must load the same "
            "documents (is the dataset, limit or offset different between processes?)",
            dist.get_rank(),
        )
    rows = [torch.empty_like(digests.to(device)) for _ in range(world)]
    dist.all_gather(rows, digests.to(device))
    index, rank = first_difference(torch.stack(rows).cpu())
    request = requests[index]
    raise AgreedInputError(
        f"data: the ranks built different request lists: the first difference is task '{request.task}', "
        f"doc_id {request.doc_id} (request {index}), whose prompt, choice or settings differ between rank 0 and "
        f"rank {rank}; every rank must load the same documents in the same order (is a dataset's row or choice "
        "order random?)",
        dist.get_rank(),
    )


# --- what a rank publishes, and what the others make of it -----------------------------------------------
@dataclass(frozen=True)
class Progress:
    """What the main thread is doing; replaced whole (one assignment) so the watcher reads it consistently."""

    phase: int = CHECKING
    batches: int = 0
    work: str = ""  # the task and documents of the current (or last) batch
    in_batch: bool = False
    since: float = field(default_factory=time.monotonic)


@dataclass
class Peer:
    """Another rank as its last published state shows it; `seen` is when (here) its heartbeat last moved."""

    rank: int
    tick: int
    phase: int
    batches: int
    work: str
    in_batch: bool
    age: float  # seconds since its progress last changed, as it measured them
    slowest: float  # its slowest step so far (model load, a batch)
    pid: int
    namespace: Optional[str]
    seen: float
    host: str = ""

    @property
    def key(self) -> tuple[int, int]:
        return (self.phase, self.batches)


def where(state: Any) -> str:
    """`in batch 4 (task tiny_mc, doc_id 3, 4)`, `while loading the model`: what a rank was doing."""
    if state.phase != PREDICTING:
        return f"while {PHASES[state.phase]}"
    if state.in_batch:
        return f"in batch {state.batches + 1} ({state.work})"
    if state.batches == 0:
        return "before its first batch"
    return f"after batch {state.batches} ({state.work})"


def process_namespace() -> Optional[str]:
    """This boot's id and pid namespace: ranks that share it can see each other's processes."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def process_gone(pid: int) -> bool:
    """Whether a process of this namespace has exited (missing, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _store_client() -> Optional[dist.Store]:
    """A connection of our own to the process group's store, with a short timeout (the group's may be hours)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    store = dist.distributed_c10d._get_default_store().clone()
    store.set_timeout(timedelta(seconds=STORE_TIMEOUT_S))
    return store


def reachable_address() -> Optional[str]:
    """The address of this machine that the others reach it by: the one it routes to the process group's host
    through (MASTER_ADDR; no packet is sent), else what its host name resolves to."""
    master = os.environ.get("MASTER_ADDR")
    try:
        if master:
            family, kind, proto, _, address = socket.getaddrinfo(master, 1, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.connect(address)
                return probe.getsockname()[0]
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return None


def link_closed(link: socket.socket) -> Optional[bool]:
    """Whether the rank at the other end of a link ended: True when killed or exited without a word (the
    kernel closed or reset its end), False when it said goodbye, None while it is alive."""
    try:
        data = link.recv(64)  # the link does not block: nothing to read raises
    except BlockingIOError:
        return None
    except OSError:  # reset
        return True
    return not data  # nothing but the goodbye is ever sent on a link, and it may come in pieces


class Listener:
    """This rank's end of the ring: accepts the previous rank's connection and holds it, so the kernel closes
    it when this process dies; `goodbye()` tells it the end was in order."""

    def __init__(self) -> None:
        host = reachable_address()
        if host is None:
            raise OSError("no reachable address")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.bind(("", 0))
        self.socket.listen(8)
        self.socket.setblocking(False)
        port = self.socket.getsockname()[1]
        self.address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        self.accepted: list[socket.socket] = []

    def accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except (BlockingIOError, OSError):
                return
            self.accepted.append(connection)

    def goodbye(self) -> None:
        self.accept()
        for connection in self.accepted:
            try:
                connection.setblocking(True)
                connection.settimeout(0.5)
                connection.sendall(GOODBYE)
            except OSError:
                pass
            connection.close()
        self.accepted = []
        self.socket.close()


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    link = socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S)
    link.setblocking(False)
    return link


class FailFast:
    """One per rank. `start()` once the process group exists (main thread), then `phase()`, `batch_started()`
    and `batch_done()` as work goes on; `report()` from a failing rank; `stop()` once every rank has passed the
    final gather (a rank may exit from then on); `close()` at the end (restores the signal handlers).

    Args:
        rank: this process's global rank.
        launched: the `subprocess.Popen` of the ranks this process started (global ranks rank+1, rank+2, ...).
        stall_timeout: seconds without progress, while the others went on, after which a rank is stuck.
    """

    def __init__(self, rank: int, launched: Optional[list] = None, stall_timeout: float = 600.0) -> None:
        self.rank = rank
        self.launched = list(launched or [])
        self.stall_timeout = float(stall_timeout)
        self.lost_after = max(10.0, min(self.stall_timeout, 60.0))  # no heartbeat for this long: not responding
        self.progress = Progress()
        self.slowest = 0.0
        self.store: Optional[dist.Store] = None  # the watcher's connection
        self._report_store: Optional[dist.Store] = None  # the main thread's
        self.peers: dict[int, Peer] = {}
        self._pid = os.getpid()
        self._namespace = process_namespace()
        self._tick = 0
        self._watching = False
        self._closed = threading.Event()
        self._ending = threading.Lock()
        self._publishing = threading.Lock()  # the main thread and the watcher publish the same key
        self._store_lost = False
        self._reported_at: Optional[float] = None
        self._pending_signal: Optional[int] = None
        self._previous_handler: Any = None
        self._previous_wakeup = -1
        self._pipe: Optional[tuple[int, int]] = None
        self._thread: Optional[threading.Thread] = None
        self._listener: Optional[Listener] = None  # the previous rank connects here
        self._link: Optional[socket.socket] = None  # our connection to the next rank
        self._link_tries = 0
        self._host = socket.gethostname()

    # --- main thread ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self.store = _store_client()
        self._report_store = self.store.clone() if self.store is not None else None
        self._watching = self.store is not None
        if self._watching:
            self._listen()
        self.install_signal_handler()
        os.register_at_fork(after_in_child=self._forget_in_child)
        self._thread = threading.Thread(target=self._watch, name="lmm-lightning-failfast", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        """Open this rank's end of the ring and publish where it is (best effort: the heartbeat remains)."""
        try:
            self._listener = Listener()
            self._report_store.set(self._address_key(self.rank), self._listener.address)
        except Exception:  # noqa: BLE001 - no network address, or the store refused: watch by heartbeat only
            if self._listener is not None:
                self._listener.socket.close()
            self._listener = None

    def install_signal_handler(self) -> None:
        """Ours alone for SIGTERM (again after Lightning installed its own, whose collective would hang), with
        the wakeup fd that lets the watcher see the signal while the main thread is blocked in a collective."""
        if threading.current_thread() is not threading.main_thread() or self._closed.is_set():
            return
        current = signal.getsignal(signal.SIGTERM)
        if current != self._on_signal:
            self._previous_handler = current if self._pipe is None else self._previous_handler
            signal.signal(signal.SIGTERM, self._on_signal)
        if self._pipe is None:
            self._pipe = os.pipe()
            for fd in self._pipe:
                os.set_blocking(fd, False)
            self._previous_wakeup = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)

    def phase(self, phase: int) -> None:
        self._advance(Progress(phase, self.progress.batches, self.progress.work))

    def batch_started(self, work: str) -> None:
        self._publish(Progress(self.progress.phase, self.progress.batches, work, True, self.progress.since))

    def batch_done(self) -> None:
        self._advance(Progress(self.progress.phase, self.progress.batches + 1, self.progress.work))

    def _advance(self, progress: Progress) -> None:
        self.slowest = max(self.slowest, progress.since - self.progress.since)
        self._publish(progress)

    def _publish(self, progress: Progress) -> None:
        """Keep the new progress, and publish it now: a rank frozen right after (SIGSTOP) shows where it froze."""
        with self._publishing:
            self.progress = progress
            if self._watching and not self._store_lost:
                try:
                    self._report_store.set(self._state_key(self.rank), self._state())
                except Exception:  # noqa: BLE001 - the store's host is gone: the watcher says so, without a
                    self._store_lost = True  # second failed call (torch prints each one's C++ stack)

    def report(self, message: str, exit_code: int) -> None:
        """Tell every rank that this one failed (best effort: the store may be gone already)."""
        if self._report_store is None:
            self.close()  # one process: nobody to tell
            return
        self._reported_at = time.monotonic()
        try:
            self._report_store.compare_set(FAIL_KEY, "", f"{exit_code}\n{self.rank}\n{message}")
        except Exception:  # noqa: BLE001 - the store's host is gone; the others notice by themselves
            pass

    def wait_for_cause(self) -> None:
        """A collective broke: give the watcher a moment to name the rank that went away (it ends the process)."""
        if not self._watching:
            return
        deadline = time.monotonic() + COMMUNICATION_ERROR_WAIT_S
        while time.monotonic() < deadline and not self._closed.is_set():
            time.sleep(TICK_S)

    def stop(self) -> None:
        """Every rank passed the final gather: say so, and stop watching (a rank may exit from now on)."""
        self.phase(DONE)
        self._watching = False

    def close(self) -> None:
        """End the watcher, say goodbye to the previous rank, and give SIGTERM back to whoever had it."""
        self._watching = False
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * TICK_S + CONNECT_TIMEOUT_S)  # it may be using the sockets
        if self._listener is not None:
            self._listener.goodbye()
            self._listener = None
        if self._link is not None:
            self._link.close()
            self._link = None
        if threading.current_thread() is not threading.main_thread() or self._pipe is None:
            return
        if signal.getsignal(signal.SIGTERM) == self._on_signal:
            signal.signal(signal.SIGTERM, self._previous_handler if self._previous_handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_wakeup)
        for fd in self._pipe:
            os.close(fd)
        self._pipe = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        """The Python-level handler: the main thread computes nothing more (no batch after the signal) while
        the watcher, which saw the wakeup fd already, tells the others and ends the process."""
        if not self._closed.is_set():
            self._pending_signal = signum
            time.sleep(2 * STORE_TIMEOUT_S)
            os._exit(128 + signum)  # the watcher should have ended the process long ago
        previous = self._previous_handler  # closed: behave as the handler we replaced
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _forget_in_child(self) -> None:
        """A forked data-loader worker must not write into our wakeup pipe nor act on our behalf, nor hold our
        end of the ring open once we are killed (the previous rank would not see us go)."""
        sockets = [self._link] + ([self._listener.socket, *self._listener.accepted] if self._listener else [])
        for sock in sockets:
            if sock is not None:
                sock.close()  # the child's copy only
        self._link = self._listener = None
        if self._pipe is None or self._closed.is_set():
            return
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # forked from another thread: it cannot change signal handling
            pass

    # --- the watcher thread -----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._closed.wait(TICK_S):
            self._tick += 1
            self._check_signals()
            if not self._watching:
                continue
            self._check_launched()
            self._check_link()
            if self._tick % STORE_EVERY == 0:
                self._check_world()
                self._connect_next()

    def _check_signals(self) -> None:
        received = self._pending_signal
        pipe = self._pipe
        if pipe is not None:
            try:
                data = os.read(pipe[0], 512)
            except OSError:  # nothing there (non-blocking), or closed a moment ago
                data = b""
            if signal.SIGTERM in data:
                received = signal.SIGTERM
        if received is not None:
            self._terminated(received)

    def _terminated(self, signum: int) -> None:
        """A scheduler preempting the job: every rank ends, non-zero, its finished batches already on disk. A
        launcher that stops the survivors after a rank died is told apart: the dead rank is named instead."""
        if self._watching:
            self._check_launched()
            self._check_link()
            self._check_world(publish=False)  # a failure reported, a rank gone: that is the message, not our signal
        name = signal_name(signum)
        state = "while scoring the results" if self.progress.phase == DONE else where(self.progress)
        message = (
            f"rank {self.rank} received {name} {state}; stopping every rank "
            "(finished batches are kept: rerun the same command to resume)"
        )
        self._fail(message, 128 + signum)

    def _check_launched(self) -> None:
        for i, proc in enumerate(self.launched, start=1):
            code = proc.poll()
            if code is None:
                continue
            rank = self.rank + i
            peer = self._fresh_peer(rank)
            if peer is not None and peer.phase == DONE:
                continue
            self._check_failure()  # its own message, if it left one, says more
            how = f" (killed by {signal_name(-code)})" if code < 0 else ""
            state = where(peer) if peer is not None else "before it reported any progress"
            self._fail(f"rank {rank} exited with code {code}{how} {state}; stopping every rank", EXIT_FAILURE)

    def _next_rank(self) -> int:
        return (self.rank + 1) % dist.get_world_size()

    def _connect_next(self) -> None:
        """Connect to the next rank's watcher once it published its address (retried a few times)."""
        if self._link is not None or self._listener is None or self._link_tries >= CONNECT_TRIES:
            return
        key = self._address_key(self._next_rank())
        try:
            if not self.store.check([key]):
                return
            address = self.store.get(key).decode("utf-8")
        except Exception:  # noqa: BLE001 - the store's trouble is _check_world's to report
            return
        try:
            self._link = connect(address)
        except OSError:
            self._link_tries += 1

    def _check_link(self) -> None:
        """The next rank's process ended: end every rank naming it, unless it ended in order or said why."""
        if self._listener is not None:
            self._listener.accept()
        if self._link is None:
            return
        closed = link_closed(self._link)
        if closed is None:
            return
        self._link.close()
        self._link = None
        self._link_tries = CONNECT_TRIES  # it is gone: do not connect again
        rank = self._next_rank()
        if not closed or 0 < rank - self.rank <= len(self.launched):
            return  # ended in order; or a rank this process launched, whose exit code _check_launched gives
        self._check_world(publish=False)  # its own report, or the store's host gone, says more
        peer = self._fresh_peer(rank)
        if peer is not None and peer.phase == DONE:
            return
        host = f" on {peer.host}" if peer is not None and peer.host else ""
        state = where(peer) if peer is not None else "before it reported any progress"
        self._fail(f"rank {rank}{host} is gone (its process ended: killed or exited) {state}; stopping every rank", EXIT_FAILURE)

    def _check_world(self, publish: bool = True) -> None:
        try:
            if self._store_lost:
                raise ConnectionError("the main thread lost the store")
            if publish and self._publishing.acquire(timeout=TICK_S):  # the main thread may hold it, stopped
                try:
                    self.store.set(self._state_key(self.rank), self._state())
                finally:
                    self._publishing.release()
            self._check_failure()
            self._read_peers()
        except (RuntimeError, OSError):  # torch's store errors are RuntimeErrors: its host (rank 0) is gone, or frozen
            if not self._watching:
                return
            last = self.peers.get(0)
            state = f"; it was {where(last)}" if last is not None else ""
            self._end(
                f"rank {self.rank} lost contact with rank 0, which holds the run's key-value store (it exited, was "
                f"killed, or is unreachable){state}; stopping",
                EXIT_FAILURE,
            )
        verdict = self._judge()
        if verdict is not None:
            self._fail(verdict, EXIT_FAILURE)

    def _check_failure(self) -> None:
        """A rank reported a failure: end with its message (our own report: give the main thread time to exit)."""
        if not self.store.check([FAIL_KEY]):
            return
        code, rank, message = self.store.get(FAIL_KEY).decode("utf-8").split("\n", 2)
        if int(rank) != self.rank:
            self._end(f"stopping rank {self.rank} because {message}", int(code))
        if self._reported_at is not None and time.monotonic() - self._reported_at > EXIT_GRACE_S * 5:
            self._end(None, int(code))  # reported long ago and still here: exiting must have hung

    def _state_key(self, rank: int) -> str:
        return f"{PREFIX}/rank/{rank}"

    def _address_key(self, rank: int) -> str:
        return f"{PREFIX}/address/{rank}"

    def _state(self) -> str:
        progress = self.progress
        return json.dumps(
            {
                "tick": self._tick, "phase": progress.phase, "batches": progress.batches, "work": progress.work,
                "in_batch": progress.in_batch, "age": time.monotonic() - progress.since, "slowest": self.slowest,
                "pid": self._pid, "namespace": self._namespace, "host": self._host,
            }
        )

    def _read_peers(self) -> None:
        world = dist.get_world_size()
        keys = [self._state_key(r) for r in range(world) if r != self.rank]
        present = keys if self.store.check(keys) else [k for k in keys if self.store.check([k])]
        if not present:
            return
        now = time.monotonic()
        for key, raw in zip(present, self.store.multi_get(present)):
            rank = int(key.rsplit("/", 1)[1])
            item = json.loads(raw.decode("utf-8"))
            old = self.peers.get(rank)
            seen = now if old is None or old.tick != item["tick"] else old.seen
            self.peers[rank] = Peer(rank=rank, seen=seen, **item)

    def _fresh_peer(self, rank: int) -> Optional[Peer]:
        """A rank's latest state, read now (it may have published DONE a moment ago)."""
        if self.store is not None:
            try:
                self._read_peers()
            except Exception:  # noqa: BLE001
                pass
        return self.peers.get(rank)

    def _judge(self) -> Optional[str]:
        """The first rank that is gone, silent or stuck, as a message; None when all is well."""
        if not self.peers:
            return None
        now = time.monotonic()
        ahead = max([(self.progress.phase, self.progress.batches)] + [p.key for p in self.peers.values()])
        slowest = max([self.slowest] + [p.slowest for p in self.peers.values()])
        threshold = max(self.stall_timeout, STALL_FACTOR * slowest)
        for peer in sorted(self.peers.values(), key=lambda p: p.rank):
            if peer.phase == DONE:
                continue
            if self._namespace is not None and peer.namespace == self._namespace and process_gone(peer.pid):
                return f"rank {peer.rank} is gone (pid {peer.pid} exited or was killed) {where(peer)}; stopping every rank"
            silent = now - peer.seen
            stalled = peer.age + silent  # a frozen rank's own count stops with it
            if peer.key < ahead and stalled > threshold:
                return (
                    f"rank {peer.rank} is stuck: no progress for {stalled:.0f} s {where(peer)} while the other ranks "
                    f"went on (stall timeout {self.stall_timeout:g} s, slowest step {slowest:.1f} s); stopping every rank"
                )
            if silent > self.lost_after:
                return (
                    f"rank {peer.rank} is not responding: no heartbeat for {silent:.0f} s (stopped, killed, or its "
                    f"machine is unreachable); last seen {where(peer)}; stopping every rank"
                )
        return None

    def _fail(self, message: str, exit_code: int) -> None:
        """Tell every rank (the first report wins) and end with the message that won (watcher thread)."""
        if self.store is not None:
            try:
                value = f"{exit_code}\n{self.rank}\n{message}"
                won = self.store.compare_set(FAIL_KEY, "", value).decode("utf-8")
                code, rank, text = won.split("\n", 2)
                if int(rank) != self.rank:
                    message, exit_code = f"stopping rank {self.rank} because {text}", int(code)
            except Exception:  # noqa: BLE001 - no store: the others notice by themselves
                pass
        self._end(message, exit_code)

    def _end(self, message: Optional[str], exit_code: int) -> None:
        """Print the message, give the ranks this process launched a moment to read it, stop them, exit."""
        if not self._ending.acquire(blocking=False):
            return
        if message is not None:
            os.write(2, f"lmm-lightning: {message}\n".encode("utf-8", "replace"))  # fd 2: safe from any thread
        deadline = time.monotonic() + EXIT_GRACE_S
        while any(p.poll() is None for p in self.launched) and time.monotonic() < deadline:
            time.sleep(TICK_S)
        for proc in self.launched:
            if proc.poll() is None:
                proc.kill()
        if self.rank == 0 and not self.launched and self._report_store is not None:
            time.sleep(EXIT_GRACE_S / 2)  # rank 0 may hold the store: let the others read the report
        os._exit(exit_code)
