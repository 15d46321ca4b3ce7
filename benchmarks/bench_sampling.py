"""Sampling speed and quality, side by side: the teacher at 20 / 10 / 8 steps, the distilled student
at 1 / 2 / 4 steps, each with the full and the tiny decoder (prints figures; not a test).

For every configuration, end to end (§7 conditions → uint16 image with its privacy verdict):

* seconds per image at batch 1 (median of ``--repeat``) and images/s at batch 16;
* GFLOP per image (``torch.utils.flop_counter``, the whole call: UNet steps, decoder, gate) and the
  share of this machine's fp32 matmul peak it reaches (1024³ matmul, measured here);
* where the time goes at batch 1: UNet calls, decoder, privacy gate, the rest (Python, scheduler);
* with ``--quality N`` (N ≥ 800 for the issue's figures): FID and lesion / density adherence and
  box hit rate from ``mammosynth evaluate --parts fidelity,adherence`` on N images made with the
  conditions of the first N training rows (the same rows and seeds for every configuration), against
  the real test split; the sets and reports stay in ``--out`` and a rerun reuses them;
* with ``--contention``: batch-1 latency again while one other CPU-bound process runs, under each
  thread policy (2 threads; 1 thread; ``auto``: :func:`mammosynth.runtime.sampling_threads`).

    python benchmarks/bench_sampling.py                                  # speed only, bundled checkpoint
    python benchmarks/bench_sampling.py --quality 800 --data data/prepared-256   # + FID / adherence
    python benchmarks/bench_sampling.py --contention --only teacher-20,student-2-tiny

A configuration the checkpoint cannot run (no student, no tiny decoder) is listed as missing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mammosynth.pipelines.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from mammosynth.pipelines.pipeline_mammo_ldm import load_pipeline  # noqa: E402

MASS = dict(birads=4, density="C", lesion="mass", box=(0.45, 0.30, 0.60, 0.42), view="MLO", laterality="L")


@dataclass(frozen=True)
class Config:
    name: str
    scheduler: str   # dpm (teacher) or lcm (student)
    steps: int
    decoder: str     # full or tiny


CONFIGS = [Config(f"teacher-{n}{'-tiny' if d == 'tiny' else ''}", "dpm", n, d) for n in (20, 10, 8) for d in ("full", "tiny")]
CONFIGS += [Config(f"student-{n}{'-tiny' if d == 'tiny' else ''}", "lcm", n, d) for n in (1, 2, 4) for d in ("full", "tiny")]


def matmul_peak_gflops(threads: int, size: int = 1024, repeat: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _run(pipe, n: int, cfg: Config, seed: int = 0, guidance: float = 3.0):
    return pipe(**MASS, num_images=n, num_inference_steps=cfg.steps, guidance_scale=guidance, decoder=cfg.decoder,
                generator=torch.Generator().manual_seed(seed))


def timed(fn, repeat: int) -> float:
    fn()   # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gflop_per_image(pipe, cfg: Config) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _run(pipe, 1, cfg)
    return counter.get_total_flops() / 1e9


def breakdown(pipe, cfg: Config, repeat: int) -> dict[str, float]:
    """Seconds at batch 1 in the UNet calls, the decoder and the gate (forward hooks and wrappers)."""
    spent = {"unet": 0.0, "decoder": 0.0, "gate": 0.0}
    unet = pipe.student_unet if cfg.scheduler == "lcm" else pipe.unet
    starts: list[float] = []
    pre = unet.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    post = unet.register_forward_hook(lambda *_: spent.__setitem__("unet", spent["unet"] + time.perf_counter() - starts.pop()))
    decode, check = pipe.decode_latents, pipe.privacy_checker.check if pipe.privacy_checker is not None else None

    def timed_decode(*a, **k):
        t = time.perf_counter()
        out = decode(*a, **k)
        spent["decoder"] += time.perf_counter() - t
        return out

    def timed_check(*a, **k):
        t = time.perf_counter()
        out = check(*a, **k)
        spent["gate"] += time.perf_counter() - t
        return out

    pipe.decode_latents = timed_decode
    if check is not None:
        pipe.privacy_checker.check = timed_check
    try:
        _run(pipe, 1, cfg)
        for key in spent:
            spent[key] = 0.0
        start = time.perf_counter()
        for _ in range(repeat):
            _run(pipe, 1, cfg)
        total = (time.perf_counter() - start) / repeat
    finally:
        pre.remove()
        post.remove()
        del pipe.decode_latents
        if check is not None:
            del pipe.privacy_checker.check
    parts = {k: v / repeat for k, v in spent.items()}
    parts["rest"] = max(total - sum(parts.values()), 0.0)
    return parts


def _busy(stop) -> None:
    """One CPU-bound competitor (what a training job or another app request is to the sampler)."""
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i * i


def quality(cfg: Config, args, out: Path) -> dict:
    """FID and adherence of ``args.quality`` images (generate-set + evaluate; reused when present)."""
    folder, report = out / "sets" / cfg.name, out / "eval" / cfg.name
    if not (report / "metrics.json").is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        if not (folder / "generation_report.json").is_file():
            subprocess.run([sys.executable, "-m", "mammosynth", "generate-set", "--checkpoint", args.checkpoint,
                            "--like", args.data, "--split", "training", "--out", str(folder), "--limit",
                            str(args.quality), "--steps", str(cfg.steps), "--scheduler", cfg.scheduler,
                            "--decoder", cfg.decoder, "--guidance", str(args.guidance), "--batch-size", "16",
                            "--seed", "0", "--no-progress"], check=True, cwd=ROOT, env=env)
        subprocess.run([sys.executable, "-m", "mammosynth", "evaluate", "--data", args.data, "--synthetic",
                        str(folder), "--checkpoint", args.checkpoint, "--parts", "fidelity,adherence", "--out",
                        str(report), "--threads", str(args.threads), "--bootstrap", "200"], check=True, cwd=ROOT,
                       env=env)
    metrics = json.loads((report / "metrics.json").read_text())
    generation = json.loads((folder / "generation_report.json").read_text())
    synthetic = metrics["adherence"]["synthetic"]
    return {"fid": metrics["fidelity"]["synthetic_vs_real"]["fid"],
            "fid_floor": metrics["fidelity"]["real_vs_real_floor"]["fid"],
            "lesion_acc": synthetic["lesion_accuracy"], "density_acc": synthetic["density_accuracy"],
            "box_hit": synthetic["localisation"]["hit_rate"], "n": metrics["synthetic"]["n"],
            "set_seconds": generation.get("seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="batch size of the throughput figure")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--only", default=None, help="comma-separated configuration names (default: all)")
    parser.add_argument("--quality", type=int, default=0, help="images per configuration for FID / adherence")
    parser.add_argument("--data", default="data/prepared-256", help="the real prepared set (for --quality)")
    parser.add_argument("--out", default="runs/bench-sampling", help="sets and reports of --quality; the JSON")
    parser.add_argument("--contention", action="store_true", help="batch-1 latency beside one CPU-bound process")
    parser.add_argument("--contiguous", action="store_true",
                        help="keep the weights contiguous (default: channels-last, what load_pipeline does)")
    args = parser.parse_args()
    from mammosynth.runtime import sampling_threads

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = load_pipeline(args.checkpoint, channels_last=not args.contiguous)
    cold = time.perf_counter() - start
    teacher_scheduler = pipe.scheduler
    peak = matmul_peak_gflops(args.threads)
    torch.set_num_threads(args.threads)
    print(f"checkpoint {args.checkpoint} (cold load {cold:.2f} s); {args.threads} threads; "
          f"{'contiguous' if args.contiguous else 'channels-last'} weights; fp32 matmul peak "
          f"{peak:.1f} GFLOP/s (1024³); torch {torch.__version__}")
    wanted = set(args.only.split(",")) if args.only else None
    rows: list[dict] = []
    for cfg in CONFIGS:
        if wanted is not None and cfg.name not in wanted:
            continue
        row: dict = {"config": cfg.name, "scheduler": cfg.scheduler, "steps": cfg.steps, "decoder": cfg.decoder}
        pipe.scheduler = teacher_scheduler
        pipe.scheduler = teacher_scheduler if cfg.scheduler == "dpm" else pipe.scheduler_named("lcm")
        try:
            pipe.check_sampler(cfg.decoder)
        except ValueError as error:
            row["missing"] = str(error).split(":")[0]
            rows.append(row)
            print(f"{cfg.name:<18} missing: {row['missing']}")
            continue
        torch.set_num_threads(args.threads)
        row["s_batch1"] = timed(lambda: _run(pipe, 1, cfg), args.repeat)
        row["img_per_s_batch"] = args.batch / timed(lambda: _run(pipe, args.batch, cfg), max(1, args.repeat // 2))
        row["gflop"] = gflop_per_image(pipe, cfg)
        row["pct_peak"] = 100 * row["gflop"] / row["s_batch1"] / peak
        row["breakdown_s"] = breakdown(pipe, cfg, args.repeat)
        if args.contention:
            stop = mp.Event()
            competitor = mp.Process(target=_busy, args=(stop,), daemon=True)
            competitor.start()
            time.sleep(1.0)
            try:
                for policy in ("2", "1", "auto"):
                    threads = sampling_threads() if policy == "auto" else int(policy)
                    torch.set_num_threads(threads)
                    row[f"s_batch1_busy_{policy}"] = timed(lambda: _run(pipe, 1, cfg), args.repeat)
                    row[f"threads_busy_{policy}"] = threads
            finally:
                stop.set()
                competitor.join()
                torch.set_num_threads(args.threads)
        if args.quality:
            row.update(quality(cfg, args, out))
        rows.append(row)
        b = row["breakdown_s"]
        print(f"{cfg.name:<18} {row['s_batch1'] * 1000:7.1f} ms/img b1 · {row['img_per_s_batch']:6.1f} img/s b{args.batch}"
              f" · {row['gflop']:6.2f} GFLOP · {row['pct_peak']:4.1f} % peak · unet {b['unet'] * 1000:.1f} / decoder "
              f"{b['decoder'] * 1000:.1f} / gate {b['gate'] * 1000:.1f} / rest {b['rest'] * 1000:.1f} ms", flush=True)
    print()
    header = f"| configuration | s / image, batch 1 | images/s, batch {args.batch} | GFLOP / image | % of matmul peak |"
    line = "|---|---|---|---|---|"
    if args.contention:
        header += " busy: 2 thr / 1 thr / auto (s) |"
        line += "---|"
    if args.quality:
        header += " FID (floor) | lesion acc | density acc | box hit | set of N (s) |"
        line += "---|---|---|---|---|"
    print(header)
    print(line)
    for row in rows:
        if "missing" in row:
            print(f"| {row['config']} | missing: {row['missing']} |")
            continue
        text = (f"| {row['config']} | {row['s_batch1']:.3f} | {row['img_per_s_batch']:.1f} | {row['gflop']:.2f} | "
                f"{row['pct_peak']:.0f} % |")
        if args.contention:
            text += (f" {row['s_batch1_busy_2']:.3f} / {row['s_batch1_busy_1']:.3f} / {row['s_batch1_busy_auto']:.3f}"
                     f" ({row['threads_busy_auto']} thr) |")
        if args.quality:
            text += (f" {row['fid']:.2f} ({row['fid_floor']:.2f}) | {row['lesion_acc']:.3f} | {row['density_acc']:.3f} |"
                     f" {row['box_hit']:.3f} | {row['set_seconds']} (N = {row['n']}) |")
        print(text)
    figures = {"checkpoint": args.checkpoint, "threads": args.threads, "matmul_peak_gflops": peak,
               "channels_last": not args.contiguous,
               "cold_load_s": cold, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "rows": rows}
    (out / "bench_sampling.json").write_text(json.dumps(figures, indent=2))
    print(f"\npeak RSS {figures['peak_rss_mb']:.0f} MB; figures in {out / 'bench_sampling.json'}")


if __name__ == "__main__":
    main()
