"""Small helpers shared by the benchmark scripts (load check, medians, machine description)."""

import argparse
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float = 1.5, max_wait_s: float = 600.0, poll_s: float = 15.0) -> float:
    """Wait (up to `max_wait_s`) until the 1-minute load is below `max_load`; returns the load seen last."""
    deadline = time.monotonic() + max_wait_s
    load = load_average()
    while load >= max_load and time.monotonic() < deadline:
        print(f"[load {load:.2f} >= {max_load}: waiting]", flush=True)
        time.sleep(poll_s)
        load = load_average()
    return load


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def machine() -> str:
    """One line describing the machine: CPU model, cores, memory, Python."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--max-load / --max-others / --max-wait: how quiet the machine must be before timing starts."""
    parser.add_argument("--max-load", type=float, default=1.5, help="at start, wait until the 1-minute load is below this")
    parser.add_argument("--max-others", type=float, default=0.3, help="before each timed run, wait until other processes use fewer cores")
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for either at most (each time)")


def idle_waiter(args: argparse.Namespace) -> Callable[[], float]:
    """A function to call before each timed run: waits for other processes to go quiet."""
    return lambda: wait_idle(args.max_others, args.max_wait)


def no_wait() -> float:
    return 0.0


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and its finished children."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def others_busy_cores(window_s: float = 3.0) -> float:
    """Cores kept busy by other processes over `window_s` (call it while this process is idle)."""
    start = busy_cpu_seconds()
    time.sleep(window_s)
    return (busy_cpu_seconds() - start) / window_s


def wait_idle(max_cores: float = 0.3, max_wait_s: float = 600.0, window_s: float = 3.0) -> float:
    """Wait (up to `max_wait_s`) until other processes use fewer than `max_cores` cores; returns the last reading.

    More direct than the load average, which also remembers this script's own previous run for a minute.
    """
    deadline = time.monotonic() + max_wait_s
    busy = others_busy_cores(window_s)
    while busy >= max_cores and time.monotonic() < deadline:
        time.sleep(10.0)
        busy = others_busy_cores(window_s)
    return busy


class Contention:
    """Measures, around a timed block, how many cores *other* processes used on average (machine busy
    time minus this process's and its children's CPU time), and the 1-minute load at the start."""

    def __enter__(self) -> "Contention":
        self.load = load_average()
        self.start = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, busy, own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
        self.wall_s = wall - self.start[0]
        self.own_cores = (own - self.start[2]) / self.wall_s
        self.others_cores = max(0.0, (busy - self.start[1]) - (own - self.start[2])) / self.wall_s

    def as_dict(self) -> dict[str, float]:
        return {"load_1min": self.load, "others_cores": self.others_cores, "own_cores": self.own_cores}
