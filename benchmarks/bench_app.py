"""Benchmark the app: start-up to a usable page, one image through the API, study latency.

    python benchmarks/bench_app.py                       # bundled checkpoint (tiny stand-in if missing)
    python benchmarks/bench_app.py --checkpoint DIR --readers 20 --rounds 5
    python benchmarks/bench_app.py --skip-startup --skip-generate     # the study figures only

Prints these figures (targets from issue 7, on 2 cores):

1. ``python app.py`` to a page that answers HTTP 200 (≤ 20 s);
2. one 20-step image through ``/generate`` with the model warm, median of 3 (≤ 3 s);
3. ``study_next`` + ``study_answer`` p95 with N concurrent readers (≤ 200 ms), end to end over
   HTTP as the browser does it: each reader logs in and opens its session first (like a page
   load; not timed), keeps its own connection, POSTs ``/gradio_api/run/<api_name>`` (how the
   page calls these ``queue=False`` events) and then GETs the returned case image; a call's
   time ends when the image's last byte has arrived. Two loads:

   * ``with think time``: a reader looks at each case for 0.5–1.5 s before answering and
     starts at a random moment within the first 1.5 s (radiologists take 10–60 s a case;
     this is 20 readers at many times the real pace);
   * ``no think time``: all readers start together and fire each request the moment the
     last one returns — a saturation test: p95 then grows with N × the server's cost per case.

   Also printed: the server's CPU time per case, and one reader through ``gradio_client``
   (the documented Python API). ``gradio_client`` opens new HTTP clients for every call
   (a POST to the queue, an event stream, a download), which costs tens of ms of client CPU
   per call; that is the client's cost, so N concurrent ``gradio_client`` readers in this
   one process would measure this process, not the server (``--client gradio_client`` does
   it anyway, for comparison).

The server runs in its own process; the machine's load average is printed for context.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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

from mammosynth.pipelines.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402 - light (no torch, no gradio)


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
                                str(study), "--port", str(port), "--work-dir", str(work), "--log-level", "WARNING",
                                # its readers generate (step 2): lift the study's blinding of the generator
                                "--readers-may-generate"],
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


async def _open_page(client, user: str, password: str, session: str) -> None:
    """Log in and open a session like a page load does (not timed: scrypt and Gradio's session setup)."""
    response = await client.post("/login", data={"username": user, "password": password})
    response.raise_for_status()
    response = await client.post("/gradio_api/run/study_progress", json={"data": [], "session_hash": session})
    response.raise_for_status()


async def _browser_reader(client, user: str, session: str, rounds: int, think: tuple[float, float] | None,
                          timings: dict[str, list[float]], rng: random.Random) -> None:
    """One logged-in reader: ``rounds`` × (study_next, look at the case, study_answer), as the page does it.

    With ``think``, the reader also starts at a random moment within the first think time
    (readers do not all click at the same millisecond).
    """
    async def call(api_name: str, data: list) -> dict:
        response = await client.post(f"/gradio_api/run/{api_name}", json={"data": data, "session_hash": session})
        response.raise_for_status()
        image, case = response.json()["data"]
        if image is not None:  # the page then loads the image
            got = await client.get(image["url"])
            got.raise_for_status()
            if len(got.content) < 64:
                raise RuntimeError(f"the case image of {user} came back with only {len(got.content)} bytes")
        return case

    if think:
        await asyncio.sleep(rng.uniform(0.0, think[1]))
    for _ in range(rounds):
        t0 = time.perf_counter()
        case = await call("study_next", [])
        t1 = time.perf_counter()
        if case["finished"]:
            raise RuntimeError(f"{user} has no case left: make a bigger study or use fewer rounds")
        if think:
            await asyncio.sleep(rng.uniform(*think))
        t2 = time.perf_counter()
        await call("study_answer", [case["case_id"], "real", 3, None, None])
        t3 = time.perf_counter()
        timings["study_next"].append(t1 - t0)
        timings["study_answer"].append(t3 - t2)
        timings["pair"].append((t1 - t0) + (t3 - t2))


def bench_study_http(url: str, users: list[str], password: str, rounds: int, think: tuple[float, float] | None,
                     server_pid: int | None = None) -> tuple[dict[str, list[float]], float, float | None]:
    """N browser-like readers at once over HTTP.

    Returns the latencies of each kind of call, the wall time and the server's CPU seconds
    (``None`` if unknown) from the moment all readers are logged in to the end.
    """
    import httpx

    timings: dict[str, list[float]] = {"study_next": [], "study_answer": [], "pair": []}
    measured: dict[str, float | None] = {}

    async def main() -> None:
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)  # a page's own connections
        clients = [httpx.AsyncClient(base_url=url.rstrip("/"), timeout=120, limits=limits) for _ in users]
        try:
            sessions = [f"bench-{user}-{os.getpid()}" for user in users]
            await asyncio.gather(*(_open_page(c, u, password, h) for c, u, h in zip(clients, users, sessions)))
            cpu0 = process_cpu_seconds(server_pid) if server_pid else None
            t0 = time.perf_counter()
            await asyncio.gather(*(_browser_reader(c, u, h, rounds, think, timings, random.Random(i))
                                   for i, (c, u, h) in enumerate(zip(clients, users, sessions))))
            measured["wall"] = time.perf_counter() - t0
            cpu1 = process_cpu_seconds(server_pid) if server_pid else None
            measured["cpu"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        finally:
            for c in clients:
                await c.aclose()

    asyncio.run(main())
    return timings, measured["wall"], measured["cpu"]


def bench_study_gradio_client(url: str, users: list[str], password: str, rounds: int, server_pid: int | None = None
                              ) -> tuple[dict[str, list[float]], float, float | None]:
    """Readers through ``gradio_client`` (one thread each, all in this process); as :func:`bench_study_http`."""
    from gradio_client import Client

    clients = [Client(url, auth=(user, password), verbose=False) for user in users]
    for client in clients:
        client.predict(api_name="/study_progress")  # open the session (not timed)
    timings: dict[str, list[float]] = {"study_next": [], "study_answer": [], "pair": []}
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients))

    def read(client) -> None:
        barrier.wait()
        for _ in range(rounds):
            t0 = time.perf_counter()
            _, case = client.predict(api_name="/study_next")
            t1 = time.perf_counter()
            client.predict(case["case_id"], "real", 3, None, None, api_name="/study_answer")
            t2 = time.perf_counter()
            with lock:
                timings["study_next"].append(t1 - t0)
                timings["study_answer"].append(t2 - t1)
                timings["pair"].append(t2 - t0)

    threads = [threading.Thread(target=read, args=(c,)) for c in clients]
    cpu0 = process_cpu_seconds(server_pid) if server_pid else None
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1 = process_cpu_seconds(server_pid) if server_pid else None
    return timings, wall, None if cpu0 is None or cpu1 is None else cpu1 - cpu0


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def summary(timings: dict[str, list[float]]) -> str:
    return (f"p95 study_next {1000 * p95(timings['study_next']):.0f} ms, study_answer "
            f"{1000 * p95(timings['study_answer']):.0f} ms, next+answer {1000 * p95(timings['pair']):.0f} ms "
            f"(median {1000 * statistics.median(timings['pair']):.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--readers", type=int, default=20, help="concurrent readers (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="cases each reader reads (default: %(default)s)")
    parser.add_argument("--client", choices=["http", "gradio_client"], default="http",
                        help="how the concurrent readers call the server (default: %(default)s, see above)")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--skip-generate", action="store_true")
    args = parser.parse_args()
    if args.readers < 1 or not 1 <= args.rounds <= 10:
        parser.error(f"--readers must be at least 1 and --rounds 1..10, got {args.readers} and {args.rounds}")

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
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"checkpoint: {checkpoint}{note}; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {load}")

    if not args.skip_startup:
        seconds = bench_startup(checkpoint, work / "startup")
        print(f"1. python app.py -> usable page: {seconds:.1f} s (target <= 20 s)")

    # 2N + 1 reader accounts: N for each load, one for gradio_client; 40 cases each
    n = args.readers
    readers = write_demo_readers(work / "readers.csv", 2 * n + 1, password="demo")
    users = [f"reader{i + 1:02d}" for i in range(2 * n + 1)]
    real, synthetic = make_demo_datasets(work / "sets", n_real=40, n_synthetic=40, height=64, width=48)
    study = work / "study"
    create_study(study, name="bench", real=real, synthetic=synthetic, readers_csv=readers, n_cases=40, real_split=None)
    server, url = launch(checkpoint, study, work / "app")
    try:
        if not args.skip_generate:
            times = bench_generate(url, users[-1], "demo")
            print(f"2. one image, 20 steps, warm, via /generate: median {statistics.median(times):.2f} s "
                  f"(runs {', '.join(f'{t:.2f}' for t in times)}; target <= 3 s)")
        single = bench_study_gradio_client(url, users[-1:], "demo", args.rounds)[0]
        print(f"3. study_next + study_answer (target: p95 next+answer <= 200 ms with {n} concurrent readers)")
        print(f"   1 reader via gradio_client, {args.rounds} cases: {summary(single)}")
        if args.client == "gradio_client":
            loads = [("no think time, gradio_client", users[:n], None)]
        else:
            loads = [("with think time 0.5-1.5 s", users[:n], (0.5, 1.5)), ("no think time", users[n:2 * n], None)]
        for label, group, think in loads:
            if args.client == "gradio_client":
                timings, wall, cpu = bench_study_gradio_client(url, group, "demo", args.rounds, server.pid)
            else:
                timings, wall, cpu = bench_study_http(url, group, "demo", args.rounds, think, server.pid)
            cases = len(timings["pair"])  # each: 2 calls + 2 image downloads (+ an event stream for gradio_client)
            per_request = ("" if cpu is None else
                           f"; server CPU {1000 * cpu / cases:.0f} ms per case ({100 * cpu / wall:.0f} % of a core)")
            print(f"   {n} readers x {args.rounds} cases, {label}: {summary(timings)}; wall {wall:.1f} s{per_request}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
