"""Compare VAE decoders on the same generated latents (prints figures; not a test).

The checkpoint's diffusion model generates latents once, with the conditions of the real
test images; each decoder (the checkpoint's own, and every ``--decoder NAME=FOLDER``: a VAE
trained with ``train-vae --freeze_encoder`` on that checkpoint's VAE) draws them. Printed per
decoder: FID, precision/recall/density/coverage against the real test images (the
checkpoint's fidelity feature extractor), and reconstruction PSNR/SSIM of real test images.
A grid (one row per decoder, the real images of the same conditions on top) goes to --out.

    python benchmarks/compare_decoders.py --decoder plain=runs/vae-decoder --decoder gan=runs/vae-gan \\
        --num 200 --threads 2

The images stay in memory and in the grid, which is written locally for the developer, so
the privacy gate is not loaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "mammosynth-phantom-256"))
    parser.add_argument("--decoder", action="append", default=[], metavar="NAME=FOLDER",
                        help="a decoder to compare (train-vae run folder or VAE folder); repeatable")
    parser.add_argument("--data", default=str(ROOT / "data" / "prepared-256"))
    parser.add_argument("--num", type=int, default=200, help="generated images (conditions of the first test rows)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "out" / "compare_decoders.png"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import AutoencoderKL

    from mammosynth.data.dataset import from_unit_range
    from mammosynth.data.prepared import load_prepared
    from mammosynth.evaluation.features import load_fidelity_encoder
    from mammosynth.evaluation.fidelity import fid, prdc
    from mammosynth.evaluation.generate_set import plan_like
    from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline
    from mammosynth.models.autoencoder import from_model_space, resolve_vae_folder
    from mammosynth.training.common import save_image_grid
    from mammosynth.training.train_vae import reconstruction_metrics

    decoders = {"checkpoint": None}
    for item in args.decoder:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--decoder must be NAME=FOLDER, got {item!r}")
        decoders[name] = AutoencoderKL.from_pretrained(resolve_vae_folder(folder), dtype=torch.float32).eval()

    pipe = MammoLDMPipeline.from_pretrained(args.checkpoint, requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    decoders["checkpoint"] = pipe.vae
    data = load_prepared(args.data)
    plan = plan_like(data, "test")[: args.num]
    test_rows = data.split("test")
    real = data.frames(test_rows["index"].to_numpy())

    started = time.perf_counter()
    latents = []
    for start in range(0, len(plan), 8):
        chunk = plan[start:start + 8]
        generators = [torch.Generator().manual_seed(args.seed + item.position) for item in chunk]
        out = pipe(conditions=[item.conditions for item in chunk], num_images=len(chunk), output_type="latent",
                   num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generators)
        latents.append(out.images)
    latents = torch.cat(latents)
    print(f"{len(latents)} latents generated in {time.perf_counter() - started:.0f} s "
          f"({args.steps} steps, guidance {args.guidance})")

    encoder = load_fidelity_encoder(args.checkpoint)
    real_features = encoder.embed(real)
    rows_for_grid = [real[:6]]
    print(f"{'decoder':<12} {'FID':>7} {'prec':>6} {'recall':>6} {'dens':>6} {'cover':>6} {'PSNR':>6} {'SSIM':>6}")
    for name, vae in decoders.items():
        with torch.no_grad():
            frames = np.concatenate([
                from_unit_range(vae.decode(from_model_space(vae, batch.to(vae.dtype))).sample.float().clamp(-1, 1)
                                [:, 0])
                for batch in latents.split(16)])
        features = encoder.embed(frames)
        scores = prdc(real_features, features)
        recon = reconstruction_metrics(vae, real[: args.num])
        print(f"{name:<12} {fid(real_features, features):7.2f} {scores['precision']:6.3f} {scores['recall']:6.3f} "
              f"{scores['density']:6.3f} {scores['coverage']:6.3f} {recon['psnr']:6.2f} {recon['ssim']:6.4f}")
        rows_for_grid.append(frames[:6])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(np.concatenate(rows_for_grid), Path(args.out), ncols=6)
    print(f"grid (top row: real test images with the same conditions; then one row per decoder: "
          f"{', '.join(decoders)}): {args.out}")


if __name__ == "__main__":
    main()
