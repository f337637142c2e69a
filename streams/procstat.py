"""What processes and the machine spent, read from /proc: CPU seconds per process, a
worker's child processes by name, the machine's idle time, and `CpuMeter` over an interval.

The bench (streams/bench.py) and the peer's own process (streams/peer.py) both measure with
these, so the peer need not import the bench and everything it brings.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = ["CpuMeter", "children_of", "cpu_seconds", "idle_seconds"]


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU of a process and all its threads so far; with `reaped`, of the
    children it has waited for (those that exited) instead."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    first = 13 if reaped else 11  # utime, stime; cutime, cstime after them
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> dict[str, int]:
    """A worker's child processes (streams/offload.py) by name (`lw-intake1`, `lw-resolve1`;
    `python…` until one has started), not multiprocessing's resource tracker, which idles
    beside them."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    name = Path(f"/proc/{child}/comm").read_text().strip()
                    found[f"{name}{sum(k.startswith(name) for k in found) + 1}"] = int(child)
    return found


def idle_seconds() -> float:
    """CPU seconds the whole machine has spent idle (idle and waiting for I/O) since boot,
    from /proc/stat: what no process used, beside what each one did."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # cpu user nice system idle iowait irq ...
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each named process spends between start() and stop(), and the cores the
    machine left idle meanwhile (what the processes did not use of it, `idle_cores`).

    A worker replaces an idle intake process after a burst (streams/offload.py), so a
    child in `parents` (name -> its worker's pid) may be gone by stop(): its share is
    what the worker reaped of it since start(), plus what its successor spent."""

    def __init__(self, pids: dict[str, int], parents: dict[str, int] | None = None) -> None:
        self.pids = pids
        self.parents = parents or {}
        self.begin: dict[str, float] = {}
        self.reaped: dict[int, float] = {}
        self.spent: dict[str, float] = {}
        self.wall = 0.0
        self.idle = 0.0

    def start(self) -> None:
        self.begin = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.reaped = {pid: cpu_seconds(pid, reaped=True) for pid in set(self.parents.values())}
        self.idle = idle_seconds()
        self.wall = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall
        self.idle = idle_seconds() - self.idle
        self.spent = {}
        for name, pid in list(self.pids.items()):
            try:
                self.spent[name] = cpu_seconds(pid) - self.begin[name]
            except OSError:
                self.spent[name] = self._replaced(name)

    def _replaced(self, name: str) -> float:
        parent = self.parents[name]  # KeyError: a process nobody replaces went away
        known = set(self.pids.values())
        successors = [pid for pid in children_of(parent).values() if pid not in known]
        if successors:
            self.pids[name] = successors[0]
        reaped = cpu_seconds(parent, reaped=True) - self.reaped[parent] - self.begin[name]
        return max(0.0, reaped) + sum(cpu_seconds(pid) for pid in successors)

    def cores(self) -> dict[str, float]:
        """Cores used by each process over the interval (1.0 = one core, all the time)."""
        return {name: round(spent / self.wall, 2) for name, spent in self.spent.items()}

    def idle_cores(self) -> float:
        """Cores the machine left idle over the interval, on average."""
        return round(self.idle / self.wall, 2)
