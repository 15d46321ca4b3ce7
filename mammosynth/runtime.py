"""How many CPU threads a sampling call should use right now (the app's thread policy).

Torch splits every operator across its intra-op threads and waits for the slowest. When another
CPU-bound process holds one of the cores, the thread that shares that core runs at half speed or
less, and every operator waits for it: on 2 cores the 2-thread sampler then runs several times slower
than on 1 thread (issue 21 measured 4–12×). :func:`sampling_threads` counts the other runnable
threads on the machine (``procs_running`` of ``/proc/stat`` less this process's own running threads)
and gives each sampling call only the cores nobody else is using, at least one.

``benchmarks/bench_sampling.py --contention`` measures the three policies (2 threads, 1, auto) beside
one CPU-bound process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["other_runnable_threads", "sampling_threads"]


def _own_running_threads() -> int:
    running = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:   # the thread ended meanwhile
            continue
        if text[text.rfind(")") + 2:].startswith("R"):
            running += 1
    return running


def other_runnable_threads(samples: int = 3, interval_s: float = 0.001) -> int | None:
    """Runnable threads of other processes (median of a few readings), or ``None`` if unknown."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                running = next(int(line.split()[1]) for line in handle if line.startswith("procs_running"))
        except (OSError, StopIteration, ValueError):
            return None
        counts.append(max(running - _own_running_threads(), 0))
        if i + 1 < samples:
            time.sleep(interval_s)
    counts.sort()
    return counts[len(counts) // 2]


def sampling_threads(limit: int | None = None) -> int:
    """Threads for the next sampling call: the cores not busy with other work, at least 1, at most ``limit``
    (default: the cores this process may use)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cores if limit is None else max(1, min(int(limit), cores))
    others = other_runnable_threads()
    if others is None:
        return limit
    return max(1, min(limit, cores - others))
