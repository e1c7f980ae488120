"""Fail fast across ranks: when one rank fails, every rank ends within seconds.

A failing rank writes its message into the process group's key-value store; a watchdog thread on
every rank polls that store and ends its process with the same message. The watchdog also notices
a rank that vanished without a word (SIGKILL, out of memory): rank 0 watches the processes it
launched, and a store whose host (rank 0) has gone ends the others. Nobody waits for the
process-group timeout.
"""

import os
import sys
import threading
import time
from typing import Optional

import torch.distributed as dist

FAIL_KEY = "lmm_lightning/failed"


def _default_store() -> Optional[dist.Store]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist.distributed_c10d._get_default_store()


class FailFast:
    """One per rank; `start()` once the process group exists, `report()` from the failing rank."""

    def __init__(self, rank: int, launched: Optional[list] = None, poll_s: float = 0.5) -> None:
        self.rank = rank
        self.launched = launched or []  # subprocess.Popen of the ranks this process started
        self.poll_s = poll_s
        self.store: Optional[dist.Store] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self.store = _default_store()
        if self.store is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="lmm-lightning-failfast", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def report(self, message: str, exit_code: int) -> None:
        """Tell every rank that this one failed (best effort: the store may be gone already)."""
        if self.store is None:
            return
        try:
            self.store.set(FAIL_KEY, f"{exit_code}\n{message}")
        except Exception:  # noqa: BLE001 - the store's host is gone; the others notice by themselves
            pass

    def _end(self, message: str, exit_code: int) -> None:
        print(f"lmm-lightning: {message}", file=sys.stderr, flush=True)
        for proc in self.launched:
            if proc.poll() is None:
                proc.kill()
        os._exit(exit_code)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            for i, proc in enumerate(self.launched, start=1):
                code = proc.poll()
                if code not in (None, 0):
                    time.sleep(self.poll_s)  # give its own message a moment to arrive first
                    self._check_store()
                    self._end(f"rank {i} exited with code {code}; stopping every rank", 1)
            self._check_store()

    def _check_store(self) -> None:
        if self._stop.is_set():
            return
        try:
            if not self.store.check([FAIL_KEY]):
                return
            code, message = self.store.get(FAIL_KEY).decode("utf-8").split("\n", 1)
        except Exception:  # noqa: BLE001
            if self._stop.is_set():
                return
            self._end(f"rank {self.rank}: lost contact with rank 0 (it exited or crashed); stopping", 1)
            return
        self._end(f"stopping rank {self.rank} because {message}", int(code))
