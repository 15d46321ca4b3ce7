"""Benchmark the app: start-up to a usable page, one image through the API, study latency.

    python benchmarks/bench_app.py                       # bundled checkpoint (tiny stand-in if missing)
    python benchmarks/bench_app.py --checkpoint DIR --readers 20 --rounds 5

Prints three figures (targets from issue 7, on 2 cores):
1. ``python app.py`` to a page that answers HTTP 200 (≤ 20 s);
2. one 20-step image through ``/generate`` with the model warm, median of 3 (≤ 3 s);
3. ``study_next`` + ``study_answer`` p95 with N concurrent readers (≤ 200 ms).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def bench_startup(checkpoint: Path, work: Path) -> float:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoint", str(checkpoint), "--port",
                                str(port), "--work-dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/", 120)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def launch(checkpoint: Path, study: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """``python app.py`` in its own process (clients here do not share its GIL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoint", str(checkpoint), "--study",
                                str(study), "--port", str(port), "--work-dir", str(work), "--log-level", "WARNING"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    wait_http(url, 120)
    return process, url


def bench_generate(url: str, user: str, password: str, steps: int = 20, repeats: int = 3) -> list[float]:
    from gradio_client import Client

    client = Client(url, auth=(user, password), verbose=False)
    args = dict(birads="4", density="C", view="MLO", laterality="L", lesion="mass", box="0.3,0.36,0.46,0.5",
                seed=1, steps=steps, guidance=3.0, sampler="dpm", num_images=1)
    client.predict(**args, api_name="/generate")  # warm-up: loads the model
    times = []
    for k in range(repeats):
        started = time.perf_counter()
        client.predict(**{**args, "seed": 2 + k}, api_name="/generate")
        times.append(time.perf_counter() - started)
    return times


def bench_study(url: str, n_readers: int, rounds: int) -> dict[str, list[float]]:
    from gradio_client import Client

    clients = [Client(url, auth=(f"reader{i + 1:02d}", "demo"), verbose=False) for i in range(n_readers)]
    timings: dict[str, list[float]] = {"study_next": [], "study_answer": [], "pair": []}
    lock = threading.Lock()
    barrier = threading.Barrier(n_readers)

    def read(client) -> None:
        barrier.wait()
        for _ in range(rounds):
            t0 = time.perf_counter()
            _, case = client.predict(api_name="/study_next")
            t1 = time.perf_counter()
            client.predict(case["case_id"], "real", 3, None, 1.0, api_name="/study_answer")
            t2 = time.perf_counter()
            with lock:
                timings["study_next"].append(t1 - t0)
                timings["study_answer"].append(t2 - t1)
                timings["pair"].append(t2 - t0)

    threads = [threading.Thread(target=read, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return timings


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mammosynth-phantom-256")
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-startup", action="store_true")
    args = parser.parse_args()

    import torch

    from mammosynth.study.create import create_study
    from mammosynth.study.demo import make_demo_datasets, write_demo_readers
    from mammosynth.ui.testing import make_tiny_checkpoint

    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    checkpoint = args.checkpoint
    note = ""
    if not (checkpoint / "model_index.json").is_file():
        checkpoint = make_tiny_checkpoint(work / "tiny-checkpoint")
        note = " (bundled checkpoint missing: TINY random stand-in, not representative)"
    print(f"checkpoint: {checkpoint}{note}; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")

    if not args.skip_startup:
        seconds = bench_startup(checkpoint, work / "startup")
        print(f"1. python app.py -> usable page: {seconds:.1f} s (target <= 20 s)")

    readers = write_demo_readers(work / "readers.csv", args.readers, password="demo")
    real, synthetic = make_demo_datasets(work / "sets", n_real=40, n_synthetic=40, height=64, width=48)
    study = work / "study"
    create_study(study, name="bench", real=real, synthetic=synthetic, readers_csv=readers, n_cases=40, real_split=None)
    server, url = launch(checkpoint, study, work / "app")
    try:
        times = bench_generate(url, "reader01", "demo")
        print(f"2. one image, 20 steps, warm, via /generate: median {statistics.median(times):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)}; target <= 3 s)")
        timings = bench_study(url, args.readers, args.rounds)
        print(f"3. {args.readers} concurrent readers x {args.rounds} cases: p95 study_next "
              f"{1000 * p95(timings['study_next']):.0f} ms, study_answer {1000 * p95(timings['study_answer']):.0f} ms, "
              f"next+answer {1000 * p95(timings['pair']):.0f} ms (target <= 200 ms)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
