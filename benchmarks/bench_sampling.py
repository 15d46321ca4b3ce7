"""Sampling speed and memory of MammoLDMPipeline (prints figures; not a test).

Measures, with the model loaded: one 256×192 image with 20 steps and CFG (target ≤ 1.5 s on
2 CPU cores), batch 4 and the per-image cost, fp32 vs bf16 autocast, the speed-up of the
default sampler (DPM-Solver++, 20 steps) over DDPM with 1000 steps (timed on fewer steps
and extrapolated unless --full_ddpm), cold ``from_pretrained`` time, and peak memory
(``resource.getrusage``).

    python benchmarks/bench_sampling.py                     # bundled checkpoint
    python benchmarks/bench_sampling.py --checkpoint DIR --threads 2
    python benchmarks/bench_sampling.py --random            # fresh model with the bundled config

``--random`` (or a missing checkpoint) times a freshly initialised model built from the
bundled presets: the speed is the same, the images are noise.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mammosynth.pipelines.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from mammosynth.pipelines.pipeline_mammo_ldm import load_pipeline  # noqa: E402
MASS = dict(birads=4, density="C", lesion="mass", box=(0.45, 0.30, 0.60, 0.42), view="MLO", laterality="L")


def fresh_pipeline():
    """A random-weight model with the bundled checkpoint's configuration (256x192)."""
    from mammosynth.models.autoencoder import VAE_PRESETS
    from mammosynth.models.unet import UNET_PRESETS
    from mammosynth.pipelines.testing import tiny_pipeline

    return tiny_pipeline(256, 192, vae=VAE_PRESETS["bundled"], unet=UNET_PRESETS["bundled"], embed_dim=128)


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--random", action="store_true", help="time a fresh model with the bundled config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ddpm_steps", type=int, default=50, help="DDPM steps actually timed (extrapolated to 1000)")
    parser.add_argument("--full_ddpm", action="store_true", help="time all 1000 DDPM steps")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mammosynth.pipelines.pipeline_mammo_ldm import scheduler_from_name

    figures: dict[str, float | str] = {"threads": args.threads, "torch": torch.__version__}
    use_checkpoint = not args.random and (Path(args.checkpoint) / "model_index.json").exists()
    if use_checkpoint:
        start = time.perf_counter()
        pipe = load_pipeline(args.checkpoint)
        figures["cold_from_pretrained_s"] = time.perf_counter() - start
        figures["model"] = str(args.checkpoint)
    else:
        pipe = fresh_pipeline()
        figures["model"] = "fresh (bundled config, random weights)"

    def gen(n=1, steps=20, guidance=3.0):
        return lambda: pipe(**MASS, num_images=n, num_inference_steps=steps, guidance_scale=guidance,
                            generator=torch.Generator().manual_seed(0))

    figures["batch1_20steps_cfg_s"] = timed(gen(1), args.repeat)
    figures["batch4_20steps_cfg_s"] = timed(gen(4), max(1, args.repeat - 1))
    figures["batch4_per_image_s"] = figures["batch4_20steps_cfg_s"] / 4
    figures["batch1_20steps_no_cfg_s"] = timed(gen(1, guidance=1.0), args.repeat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        figures["batch1_20steps_cfg_bf16_autocast_s"] = timed(gen(1), args.repeat)
    start = time.perf_counter()
    pipe.vae.decode(torch.zeros(1, 4, 32, 24))
    figures["vae_decode_s"] = time.perf_counter() - start

    base = pipe.scheduler
    pipe.scheduler = scheduler_from_name("ddpm", base.config)
    steps = 1000 if args.full_ddpm else args.ddpm_steps
    t = timed(gen(1, steps=steps), 1)
    per_step = (t - figures["vae_decode_s"]) / steps
    figures["ddpm_1000_steps_s"] = t if args.full_ddpm else figures["vae_decode_s"] + per_step * 1000
    figures["ddpm_1000_extrapolated"] = not args.full_ddpm
    figures["speedup_default_vs_ddpm1000"] = figures["ddpm_1000_steps_s"] / figures["batch1_20steps_cfg_s"]
    pipe.scheduler = base
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    target = figures["batch1_20steps_cfg_s"] <= 1.5
    print(f"target (≤ 1.5 s, batch 1, 20 steps, CFG): {'met' if target else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
