"""Reader-study reliability and speed figures (DESIGN §11; issue 6).

Prints:
* latency of one ``next_case`` + ``answer`` round (p50/p95/max) with 20 readers answering
  concurrently, in threads and in processes (target p95 ≤ 200 ms), and throughput;
* that every acknowledged answer is stored exactly once;
* a writer killed with SIGKILL mid-study: acknowledged answers lost (must be 0) and whether
  each reader resumes at the right case;
* blinding: distinct file sizes / header bytes among served cases (must be 1 / 1).

Run: ``python benchmarks/bench_study.py`` (``--readers``, ``--answers``, ``--size``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammosynth.study.create import create_study  # noqa: E402
from mammosynth.study.demo import make_demo_datasets, write_demo_readers  # noqa: E402
from mammosynth.study.study import Study  # noqa: E402


THINK = [0.0]  # mean seconds a simulated reader looks at a case between calls


def _read(study: Study, reader_id: str, n: int) -> tuple[list[float], list[str]]:
    latencies, acked = [], []
    rng = np.random.default_rng(abs(hash(reader_id)) % 2**32)
    for _ in range(n):
        if THINK[0]:
            time.sleep(rng.uniform(0, 2 * THINK[0]))
        t0 = time.perf_counter()
        view = study.next_case(reader_id)
        study.answer(reader_id, view.case_id, "real", 3, None, 1.0)
        latencies.append(time.perf_counter() - t0)
        acked.append(view.case_id)
    return latencies, acked


def _proc(root: str, reader_id: str, n: int, queue) -> None:
    study = Study.open(root, verify="quick")
    queue.put((reader_id, *_read(study, reader_id, n)))


def _check(root: Path, acked: dict[str, list[str]]) -> bool:
    study = Study.open(root, verify="quick")
    stored = study.store.answers()
    ok = len(stored) == sum(map(len, acked.values()))
    for reader_id, cases in acked.items():
        ok &= [a.case_id for a in stored if a.reader_id == reader_id] == cases
    return bool(ok)


def _report(label: str, lat: list[float], wall: float, ok: bool) -> None:
    ms = np.array(lat) * 1000
    print(f"{label:<10} next_case+answer rounds {len(ms):5d}  p50 {np.percentile(ms, 50):7.1f} ms  p95 {np.percentile(ms, 95):7.1f} ms"
          f"  max {ms.max():7.1f} ms  throughput {len(ms) / wall:6.1f}/s  exactly-once {'yes' if ok else 'NO'}")


def run_threads(root: Path, readers: list[str], n: int) -> None:
    study = Study.open(root, verify="quick")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(readers)) as pool:
        out = dict(zip(readers, pool.map(lambda r: _read(study, r, n), readers)))
    wall = time.perf_counter() - t0
    _report("threads", [x for lat, _ in out.values() for x in lat], wall, _check(root, {r: v[1] for r, v in out.items()}))


def run_processes(root: Path, readers: list[str], n: int) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_proc, args=(str(root), r, n, queue)) for r in readers]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    _report("processes", [x for _, lat, _ in results for x in lat], wall, _check(root, {r: a for r, _, a in results}))


KILLER = textwrap.dedent("""
    import sys
    from mammosynth.study.study import Study
    study = Study.open(sys.argv[1], verify="quick")
    readers = sys.argv[2].split(",")
    while True:
        for r in readers:
            view = study.next_case(r)
            if view is not None:
                study.answer(r, view.case_id, "synthetic", 2, None, 0.5)
                print("ACK", r, view.case_id, flush=True)
""")


def run_kill(root: Path, readers: list[str], after: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(root), ",".join(readers)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    acked: dict[str, list[str]] = {}
    for _ in range(after):
        _, r, c = proc.stdout.readline().split()
        acked.setdefault(r, []).append(c)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = Study.open(root)
    lost, resumed = 0, True
    for r, cases in acked.items():
        stored = [a.case_id for a in study.store.answers(r)]
        lost += sum(1 for c in cases if c not in stored)
        order, view = study.reading_list(r), study.next_case(r)
        resumed &= (view is None) if len(stored) >= len(order) else (view is not None and view.case_id == order[len(stored)])
    print(f"SIGKILL    acknowledged before kill {after}, lost {lost}, every reader resumes at the right case: "
          f"{'yes' if resumed else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--answers", type=int, default=50)
    parser.add_argument("--think", type=float, default=0.5,
                        help="mean think time per case in s for the 'realistic' runs (uniform 0..2x)")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 192), help="frame height width")
    args = parser.parse_args()
    if args.think < 0:
        parser.error(f"--think must be 0 (no think time) or more seconds, got {args.think}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_study_"))
    try:
        n = args.answers
        real, synth = make_demo_datasets(tmp, n + 10, n + 10, height=args.size[0], width=args.size[1])
        readers_csv = write_demo_readers(tmp / "readers.csv", args.readers)
        t0 = time.perf_counter()
        create_study(tmp / "template", name="bench", real=real, synthetic=synth, readers_csv=readers_csv,
                     n_cases=n, seed=0)
        t_create = time.perf_counter() - t0
        t0 = time.perf_counter()
        Study.open(tmp / "template")
        t_open = time.perf_counter() - t0
        files = list((tmp / "template" / "cases").iterdir())
        sizes = {f.stat().st_size for f in files}
        headers = {f.read_bytes()[:33] for f in files}
        print(f"study      {n} cases of {args.size[0]}x{args.size[1]}, {args.readers} readers; create {t_create:.2f} s, "
              f"open with full hash check {t_open * 1000:.0f} ms")
        print(f"blinding   distinct file sizes {len(sizes)}, distinct PNG headers {len(headers)} (both must be 1)")
        readers = [f"reader{i + 1:02d}" for i in range(args.readers)]
        # the saturated load, then the 'realistic' one (only once when --think 0 makes them the same)
        for think in dict.fromkeys((0.0, args.think)):
            THINK[0] = think
            print(f"-- {args.readers} readers x {n} answers, "
                  + ("no think time (saturated: every reader clicks as fast as the store answers)" if not think
                     else f"think time uniform 0-{2 * think:g} s per case"))
            for label, fn in (("threads", run_threads), ("processes", run_processes)):
                root = Path(shutil.copytree(tmp / "template", tmp / f"{label}{think}"))
                fn(root, readers, n)
        root = Path(shutil.copytree(tmp / "template", tmp / "kill"))
        run_kill(root, readers[:4], after=min(100, 4 * n - 4))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
