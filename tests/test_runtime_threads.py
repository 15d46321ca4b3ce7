"""The app's thread policy: a sampling call leaves the cores other processes are busy on."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from mammosynth.runtime import other_runnable_threads, sampling_threads


def _busy(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def test_a_busy_process_is_counted_and_its_core_is_left_to_it():
    before = other_runnable_threads(samples=5)
    stop = mp.Event()
    workers = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(_cores())]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        busy = other_runnable_threads(samples=5)
        threads = sampling_threads()
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert before is not None and busy is not None
    assert busy >= _cores() - 1          # every competitor is runnable (one may be descheduled at a reading)
    assert threads == 1                  # all cores busy elsewhere: one thread, never zero


def test_the_limit_caps_the_threads_and_this_process_does_not_count_itself():
    import threading

    import numpy as np

    from mammosynth.runtime import _own_running_threads

    assert sampling_threads(limit=1) == 1
    assert 1 <= sampling_threads() <= _cores()
    stop = threading.Event()
    a = np.random.rand(300, 300)

    def spin() -> None:   # numpy releases the GIL: this thread runs beside the reading one
        while not stop.is_set():
            a @ a

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        time.sleep(0.2)
        own = max(_own_running_threads() for _ in range(20))
    finally:
        stop.set()
        spinner.join()
    assert own >= 2   # the reading thread and the spinner: both subtracted from procs_running
