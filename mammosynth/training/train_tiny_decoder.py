"""Distil the VAE decoder of a checkpoint into a tiny ``AutoencoderTiny`` decoder (``mammosynth distill-decoder``).

The tiny decoder (:mod:`mammosynth.models.tiny_decoder`) learns to draw what the checkpoint's full
VAE decoder draws from the same latents, at a tenth of its cost, for previews and fast image sets.

Data: the training split of ``--data``, encoded once with the checkpoint's frozen VAE (posterior mean
and std, the latent cache of ``train-ldm``: ``<out>/latents.pt``, or shards with
``--latent_shard_size``). Each step draws posterior samples ``mean + std·ε`` (ε from the step's seeded
generator), maps them to model space (what the UNet produces) and decodes them with both decoders.

Loss (one batch): ``L1 + ssim_weight·(1 − SSIM)`` between the tiny decoder's image and the full
decoder's (clipped to [-1, 1], as the pipeline shows it), plus ``real_weight`` × the same loss against
the real image (``--real_weight``, default 0: pure distillation). Whole frames: the full decoder's
mid-block attention sees the whole latent (a decoded crop differs from the crop of the decoded frame
by ~26 dB PSNR), so the targets must be decoded from whole latents, and the teacher's decode is then
three quarters of a step's cost whatever the student trains on.

The run is a training run like the others (:class:`~mammosynth.training.loop.TrainingLoop`: ``run.json``,
``log.csv``, ``checkpoints/``, ``--max_minutes``, EMA, exact resume with ``--resume_from_checkpoint
latest``). At the end ``<out>/tiny_vae/`` holds the decoder (EMA weights; ``AutoencoderTiny.from_pretrained``;
fp16 with ``--save_fp16``) and ``distill.json``: the VAE it was distilled from (folder, sha256), steps
and minutes, its reconstruction on the test split (PSNR / SSIM tiny vs full decoder, and each against
the real image; posterior means) and its cost (:func:`~mammosynth.models.tiny_decoder.measure_tiny_decoder`:
GFLOP and ms per image at batch 1 on ``--measure_threads`` threads; the full decoder's beside it).

Run::

    mammosynth distill-decoder --checkpoint checkpoints/mammosynth-phantom-256 --data data/prepared-256 \\
        --out runs/tiny-decoder --max_minutes 10 --num_threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import common, options
from .loop import TensorDictDataset, TrainingLoop, TrainingSetup, seeded_dataloader
from .train_vae import psnr_ssim, ssim_float32

logger = logging.getLogger(__name__)

__all__ = ["parse_args", "main", "load_vae", "distill_loss", "reconstruction_report", "TINY_FOLDER"]

#: The run folder's output: the tiny decoder (``AutoencoderTiny``) and its ``distill.json``.
TINY_FOLDER = "tiny_vae"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return options.tiny_decoder_parser().parse_args(argv)


def load_vae(checkpoint: str | os.PathLike):
    """The frozen fp32 VAE of ``checkpoint`` (a pipeline folder's ``vae/``, a train-vae run folder or a VAE folder)
    and its folder.

    Raises:
        FileNotFoundError: if there is no VAE there (the message names ``checkpoint``).
        ValueError: if it is not a 1-channel ``AutoencoderKL``.
    """
    from diffusers import AutoencoderKL

    from ..models.autoencoder import resolve_vae_folder

    try:
        folder = resolve_vae_folder(checkpoint)
    except FileNotFoundError:
        raise FileNotFoundError(f"--checkpoint {checkpoint} has no VAE (looked for {Path(checkpoint) / 'vae'} with "
                                "config.json and .safetensors weights): pass a pipeline folder such as "
                                "checkpoints/mammosynth-phantom-256, or a train-vae run folder") from None
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name") != "AutoencoderKL":
        raise ValueError(f"--checkpoint {checkpoint}: {folder} holds a {config.get('_class_name')}, not the "
                         "AutoencoderKL to distil")
    vae = AutoencoderKL.from_pretrained(folder, dtype=torch.float32)
    if vae.config.in_channels != 1 or vae.config.out_channels != 1:
        raise ValueError(f"--checkpoint {checkpoint}: its VAE has {vae.config.in_channels}/{vae.config.out_channels} "
                         "in/out channels; mammosynth's is 1-channel")
    return vae.requires_grad_(False).eval(), folder


@torch.no_grad()
def _full_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents → the full decoder's images ``(N, 1, H, W)``, clipped to [-1, 1] as shown."""
    from ..models.autoencoder import decode

    return decode(vae, latents).float().clamp(-1, 1)


def _image_loss(image: torch.Tensor, reference: torch.Tensor, ssim_weight: float) -> tuple[torch.Tensor, float, float]:
    """``L1 + ssim_weight·(1 − SSIM)`` of images in [-1, 1] (SSIM on [0, 1], float32); returns it, L1 and SSIM."""
    l1 = (image - reference).abs().mean()
    similarity = ssim_float32((image.clamp(-1, 1) + 1) / 2, (reference + 1) / 2)
    return l1 + ssim_weight * (1 - similarity), l1.item(), similarity.item()


def distill_loss(decoder: Callable[[torch.Tensor], torch.Tensor], vae, latents: torch.Tensor,
                 ssim_weight: float = 0.5, real: torch.Tensor | None = None,
                 real_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss of one batch; returns ``(loss, parts)``.

    Args:
        decoder: model-space latents → images ``(N, 1, H, W)`` in [-1, 1] (the tiny decoder,
            :func:`~mammosynth.models.tiny_decoder.tiny_decoder_output`), differentiable.
        vae: the frozen teacher; its full decoder's output on ``latents`` (clipped) is the target.
        latents: model-space latents ``(N, C, h, w)`` on the decoder's device.
        ssim_weight: weight of ``1 − SSIM`` beside L1.
        real: the real images ``(N, 1, H, W)`` in [-1, 1], needed when ``real_weight`` > 0.
        real_weight: weight of the same loss against ``real``.

    ``parts`` has ``l1`` and ``ssim`` against the full decoder (and ``l1_real`` / ``ssim_real``).
    """
    target = _full_decode(vae, latents)
    image = decoder(latents).float()
    loss, l1, similarity = _image_loss(image, target, ssim_weight)
    parts = {"l1": l1, "ssim": similarity}
    if real_weight > 0:
        if real is None:
            raise ValueError("real_weight > 0 needs the real images")
        real_loss, l1_real, ssim_real = _image_loss(image, real.to(image), ssim_weight)
        loss = loss + real_weight * real_loss
        parts.update(l1_real=l1_real, ssim_real=ssim_real)
    return loss, parts


@torch.no_grad()
def reconstruction_report(tiny, vae, frames: np.ndarray, batch_size: int = 8) -> dict:
    """PSNR (dB) / SSIM of uint16 frames ``(N, H, W)`` through the VAE's encoder (posterior mean) and each decoder.

    ``tiny_vs_full`` compares the tiny decoder's image with the full decoder's (what distillation
    aims at); ``full_vs_real`` / ``tiny_vs_real`` compare each with the real frame. Higher is better.
    """
    from ..data.dataset import to_unit_range
    from ..models.autoencoder import encode
    from ..models.tiny_decoder import tiny_decode

    pairs = {"tiny_vs_full": ([], []), "full_vs_real": ([], []), "tiny_vs_real": ([], [])}
    for start in range(0, len(frames), batch_size):
        images = to_unit_range(frames[start:start + batch_size][:, None])
        latents = encode(vae, images)
        real = (images + 1) / 2
        full = ((_full_decode(vae, latents) + 1) / 2).cpu()
        small = tiny_decode(tiny, latents)[:, None].cpu()
        for name, (reference, image) in {"tiny_vs_full": (full, small), "full_vs_real": (real, full),
                                         "tiny_vs_real": (real, small)}.items():
            psnr, similarity = psnr_ssim(reference, image)
            pairs[name][0].extend(psnr.tolist())
            pairs[name][1].extend(similarity.tolist())
    report: dict = {"images": len(frames)}
    for name, (psnrs, ssims) in pairs.items():
        report[name] = {"psnr": round(float(np.mean(psnrs)), 3) if psnrs else float("nan"),
                        "ssim": round(float(np.mean(ssims)), 4) if ssims else float("nan")}
    return report


class _Decoder(torch.nn.Module):
    """The tiny decoder as one ``forward`` (model-space latents → [-1, 1] images): what accelerate prepares."""

    def __init__(self, tiny):
        super().__init__()
        self.tiny = tiny

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        from ..models.tiny_decoder import tiny_decoder_output

        return tiny_decoder_output(self.tiny, latents)


class _Rows(Dataset):
    """Items of a latent cache with their row in the training split (for the real image)."""

    def __init__(self, items: Dataset):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {**self.items[i], "row": i}


def main(args: argparse.Namespace) -> dict:
    """Distil (or resume) a tiny decoder run; returns ``distill.json`` (with ``--dry-run``: the measured cost)."""
    from ..data.dataset import PreparedDataset

    if args.dry_run:
        return _dry_run(args)
    options.require_run_folders(args, "checkpoint", "data", "out")
    _check_args(args)
    vae, vae_folder = load_vae(args.checkpoint)
    out, accelerator, data = common.start_run(args)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if data.height % factor or data.width % factor:
        raise ValueError(f"--data {args.data}: frames {data.height}x{data.width} are not divisible by the VAE "
                         f"factor {factor}")
    vae.to(accelerator.device)
    torch.manual_seed(args.seed)
    tiny = _build_tiny(args, vae)
    if args.gradient_checkpointing:
        tiny.enable_gradient_checkpointing()
    from .train_ldm import _file_sha, _latent_cache   # the LDM's latent cache and VAE fingerprint: one home

    vae_info = {"checkpoint": str(args.checkpoint), "folder": str(vae_folder), "sha256": _file_sha(vae_folder)}
    if accelerator.is_main_process:
        _check_resume(out, vae_info, tiny)
        common.write_run_info(out, args, "tiny-decoder", {"vae": vae_info, "model": {"tiny_vae": dict(tiny.config)}})
    train = PreparedDataset(data, split="training")
    cache = _latent_cache(accelerator, vae, train, out,
                          key=f"{vae_info['sha256']}:{common.manifest_sha256(args.data)}:label-masks",
                          shard_size=args.latent_shard_size)
    items = cache if isinstance(cache, Dataset) else TensorDictDataset({k: cache[k] for k in ("mean", "std")})
    setup = _training_setup(accelerator, tiny, vae, _Rows(items), train, data, out, args)
    loop = TrainingLoop(accelerator, args, out, setup, desc="distill-decoder")
    state = loop.run()
    if not accelerator.is_main_process:
        return {}
    return _finish(loop.trained_model(), vae, vae_info, data, out, args, state, accelerator.device)


def _check_args(args: argparse.Namespace) -> None:
    if args.init_tiny_decoder and (args.widths or args.num_blocks):
        raise ValueError("--init_tiny_decoder keeps that decoder's widths; leave out --widths / --num_blocks")
    if args.eval_images < 0:
        raise ValueError(f"--eval_images must be >= 0 (0 = all), got {args.eval_images}")
    if args.measure_threads < 1:
        raise ValueError(f"--measure_threads must be >= 1, got {args.measure_threads}")


def _build_tiny(args: argparse.Namespace, vae):
    """A fresh tiny decoder of ``--widths`` / ``--num_blocks``, or ``--init_tiny_decoder`` (checked against ``vae``)."""
    from diffusers import AutoencoderTiny

    from ..models.tiny_decoder import DEFAULT_NUM_BLOCKS, DEFAULT_WIDTHS, build_tiny_decoder, check_tiny_decoder

    if args.init_tiny_decoder:
        root = Path(args.init_tiny_decoder)
        folder = root / TINY_FOLDER if (root / TINY_FOLDER / "config.json").is_file() else root
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"--init_tiny_decoder {root} is not a tiny decoder folder or a distill-decoder run "
                                    f"folder (no {root / TINY_FOLDER / 'config.json'} or {root / 'config.json'})")
        tiny = AutoencoderTiny.from_pretrained(folder, dtype=torch.float32)
        check_tiny_decoder(tiny, vae, name=f"--init_tiny_decoder {root}")
        return tiny
    widths = options.int_list(args.widths, "--widths") if args.widths else DEFAULT_WIDTHS
    blocks = options.int_list(args.num_blocks, "--num_blocks") if args.num_blocks else DEFAULT_NUM_BLOCKS
    if isinstance(widths, tuple) and len(widths) == 1:
        widths = widths[0]
    return build_tiny_decoder(vae, widths=widths, num_blocks=blocks)


def _check_resume(out: Path, vae_info: dict, tiny) -> None:
    """A run folder continues only with the same VAE and the same tiny decoder shape (``ValueError`` otherwise)."""
    path = out / "run.json"
    if not path.is_file():
        return
    info = json.loads(path.read_text())
    recorded = info.get("vae", {}).get("sha256")
    if recorded and recorded != vae_info["sha256"]:
        raise ValueError(f"{out} distils the VAE in {info['vae'].get('folder')} (sha256 {recorded[:12]}…), but "
                         f"--checkpoint {vae_info['checkpoint']} has {vae_info['sha256'][:12]}…: use a new --out")
    config = info.get("model", {}).get("tiny_vae", {})
    for key in ("decoder_block_out_channels", "num_decoder_blocks", "latent_channels"):
        ours = list(np.atleast_1d(tiny.config[key]))
        if key in config and list(np.atleast_1d(config[key])) != ours:
            raise ValueError(f"{out} trains a tiny decoder with {key} {config[key]}, this one has {ours}: give the "
                             "same --widths / --num_blocks (or --init_tiny_decoder) or a new --out")


def _training_setup(accelerator, tiny, vae, items: Dataset, train, data, out: Path,
                    args: argparse.Namespace) -> TrainingSetup:
    from ..data.dataset import from_unit_range, to_unit_range
    from ..models.autoencoder import encode, to_model_space
    from ..models.tiny_decoder import tiny_decode

    device = accelerator.device
    frame_index = train.rows["index"].to_numpy()
    optimizer = torch.optim.AdamW(tiny.decoder.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    tiny.encoder.requires_grad_(False)   # untrained and unused (see models.tiny_decoder)

    def loss(models, batch, micro_step: int):
        g = common.step_generator(args.seed, micro_step, accelerator.process_index)
        mean, std = batch["mean"], batch["std"]
        latents = to_model_space(vae, mean + std * torch.randn(mean.shape, generator=g)).to(device)
        real = None
        if args.real_weight > 0:
            real = to_unit_range(data.frames(frame_index[batch["row"].numpy()])[:, None]).to(device)
        return distill_loss(models[0], vae, latents, args.ssim_weight, real, args.real_weight)

    frames = _test_frames(data, 4)
    with torch.no_grad():
        val_latents = encode(vae, to_unit_range(frames[:, None]).to(device))
        val_full = _full_decode(vae, val_latents)

    @torch.no_grad()
    def validate(step: int, model) -> dict:
        model.eval()
        small = tiny_decode(model, val_latents)[:, None] * 2 - 1
        rows = np.concatenate([frames, from_unit_range(val_full[:, 0]), from_unit_range(small[:, 0])], axis=0)
        common.save_image_grid(rows, out / "validation" / f"step-{step:06d}.png", ncols=len(frames))
        psnr, _ = psnr_ssim((val_full.cpu() + 1) / 2, (small.cpu() + 1) / 2)
        return {"val_psnr_vs_full": float(psnr.mean())}

    return TrainingSetup(network=tiny, models=[_Decoder(tiny)], optimizers=[optimizer], loss=loss, validate=validate,
                         validate_last=True, dataloader=seeded_dataloader(items, args.train_batch_size, args.seed),
                         reserve_fraction=0.05, postfix=("ssim",))


def _test_frames(data, n: int | None = None) -> np.ndarray:
    """uint16 frames of the test split (all rows if there is none), the first ``n`` (all if ``None``)."""
    has_test = "test" in set(data.manifest["split"])
    rows = data.split("test") if has_test else data.manifest
    return data.frames(rows["index"].to_numpy()[:n])


def _finish(model, vae, vae_info: dict, data, out: Path, args, state, device) -> dict:
    """Measure the decoder on the test split and its cost, save ``<out>/tiny_vae`` with ``distill.json``."""
    from ..data.prepared import atomic_write_text
    from ..models.autoencoder import decode
    from ..models.tiny_decoder import measure_decode_cost, measure_tiny_decoder

    model = model.eval().requires_grad_(False)
    if args.save_fp16:   # measure what is saved
        model = model.to(torch.float16).to(torch.float32)
    frames = _test_frames(data, args.eval_images or None)
    has_test = "test" in set(data.manifest["split"])
    report = {"split": "test" if has_test else "all", **reconstruction_report(model, vae, frames)}
    cpu_model, cpu_vae = model.to("cpu"), vae.to("cpu")
    cost = {"tiny": measure_tiny_decoder(cpu_model, data.height, data.width, threads=args.measure_threads)}
    if args.measure_threads != 1:
        cost["tiny_1_thread"] = measure_tiny_decoder(cpu_model, data.height, data.width, threads=1)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.randn((1, vae.config.latent_channels, data.height // factor, data.width // factor),
                          generator=torch.Generator().manual_seed(0))
    cost["full_decoder"] = measure_decode_cost(lambda z: decode(cpu_vae, z), latents, threads=args.measure_threads,
                                               repeats=5, warmup=1)
    config = cpu_model.config
    record = {
        "kind": "tiny-decoder",
        "vae": vae_info,
        "data": {"root": str(args.data), "manifest_sha256": common.manifest_sha256(args.data)},
        "latents": "model space (models.autoencoder.to_model_space), as the UNet makes them; output [0, 1]",
        "decoder_block_out_channels": list(config.decoder_block_out_channels),
        "num_decoder_blocks": list(config.num_decoder_blocks),
        "parameters": sum(p.numel() for p in cpu_model.decoder.parameters()),
        "loss": {"l1": 1.0, "ssim_weight": args.ssim_weight, "real_weight": args.real_weight},
        "steps": state.step,
        "train_minutes": round(state.elapsed_s / 60, 2),
        "cpu_minutes": round(state.elapsed_s / 60, 2) if torch.device(device).type == "cpu" else None,
        "num_threads": args.num_threads or torch.get_num_threads(),
        "ema": bool(args.use_ema),
        "fp16": bool(args.save_fp16),
        "reconstruction": report,
        "cost": cost,
        "git_sha": common.git_sha(),
    }
    staging = out / f".{TINY_FOLDER}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (cpu_model.to(torch.float16) if args.save_fp16 else cpu_model).save_pretrained(staging, safe_serialization=True)
    atomic_write_text(staging / "distill.json", json.dumps(record, indent=2) + "\n")
    target = out / TINY_FOLDER
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    common.update_run_info(out, metrics={"reconstruction": report, "cost": cost, "steps": state.step}, finished=True)
    tiny_full, tiny_cost = report["tiny_vs_full"], cost["tiny"]
    print(f"tiny decoder after {state.step} steps ({record['train_minutes']:.1f} min): vs the full decoder on "
          f"{report['images']} {report['split']} images PSNR {tiny_full['psnr']:.2f} dB, SSIM {tiny_full['ssim']:.4f} "
          f"(full vs real {report['full_vs_real']['psnr']:.2f} dB, tiny vs real {report['tiny_vs_real']['psnr']:.2f} "
          f"dB); {tiny_cost['gflop_per_image']:.3f} GFLOP, {tiny_cost['ms_per_image']:.1f} ms per image on "
          f"{tiny_cost['threads']} thread(s) (full decoder {cost['full_decoder']['gflop_per_image']:.2f} GFLOP, "
          f"{cost['full_decoder']['ms_per_image']:.0f} ms); saved {target}")
    return record


def _dry_run(args: argparse.Namespace) -> dict:
    """Build the tiny decoder for ``--checkpoint`` and print its size and measured cost; trains and writes nothing."""
    from ..models.tiny_decoder import measure_tiny_decoder
    from ..pipelines.checkpoint import checkpoint_image_size

    options.require_run_folders(args, "checkpoint")
    _check_args(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    vae, _ = load_vae(args.checkpoint)
    tiny = _build_tiny(args, vae)
    height, width = checkpoint_image_size(args.checkpoint)
    if args.data:
        from ..data.prepared import load_prepared

        data = load_prepared(args.data)
        height, width = data.height, data.width
    cost = measure_tiny_decoder(tiny, height, width, threads=args.measure_threads)
    info = {"decoder_block_out_channels": list(tiny.config.decoder_block_out_channels),
            "num_decoder_blocks": list(tiny.config.num_decoder_blocks),
            "parameters": sum(p.numel() for p in tiny.decoder.parameters()), **cost}
    print(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
    sys.exit(0)
