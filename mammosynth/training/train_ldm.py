"""Train the conditional latent diffusion model (UNet + condition encoder) on a frozen VAE.

The training split is encoded once with the frozen VAE (posterior mean and std, cached
in ``<out>/latents.pt`` and re-used on resume); each step samples ``z = mean + std·ε``,
maps it to the model's latent space (the VAE's ``scaling_factor``, or with
``--latent_norm channel`` per-channel standardisation by the training latents' statistics),
adds noise at a random timestep, drops condition fields at random for classifier-free
guidance (the lesion mask goes with the lesion field) and regresses the noise.

Validation builds the real :class:`~mammosynth.pipelines.pipeline_mammo_ldm.MammoLDMPipeline`
(EMA weights) and writes a grid; the last step saves the whole pipeline folder to
``<out>/pipeline`` (``--save_fp16`` for fp16 safetensors).

Run::

    mammosynth train-ldm --data data/prepared-256 --vae runs/vae --out runs/ldm
    accelerate launch -m mammosynth.training.train_ldm --data ... --vae ... --out ...
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..models.denoiser import ConditionalDenoiser, EncodedConditions
from . import common, options, presets
from .loop import TensorDictDataset, TrainingLoop, TrainingSetup, seeded_dataloader

logger = logging.getLogger(__name__)

__all__ = ["parse_args", "main", "VALIDATION_CONDITIONS", "min_snr_weights", "lesion_loss_weights"]

#: Conditions of the validation grid (one image each; boxes in the displayed frame).
VALIDATION_CONDITIONS: list[dict] = [
    {"birads": 1, "density": "A", "view": "CC", "laterality": "L", "lesion": "none"},
    {"birads": 1, "density": "D", "view": "MLO", "laterality": "R", "lesion": "none"},
    {"birads": 4, "density": "B", "view": "MLO", "laterality": "L", "lesion": "mass", "box": (0.35, 0.40, 0.55, 0.55)},
    {"birads": 4, "density": "C", "view": "CC", "laterality": "R", "lesion": "calcification",
     "box": (0.45, 0.30, 0.60, 0.42)},
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return options.ldm_parser().parse_args(argv)


def load_denoiser(folder: str | os.PathLike, latent_channels: int, latent_size: tuple[int, int]):
    """The UNet and condition encoder of a saved pipeline (or a train-ldm run folder), in fp32, for a warm start.

    A UNet for fewer latent channels than ``latent_channels`` is widened
    (:func:`~mammosynth.models.unet.widen_unet_latent`).

    Raises:
        ValueError: if the folder has no UNet / condition encoder, or they do not fit the latents.
    """
    from diffusers import UNet2DModel

    from ..models.conditioning import ConditionEncoder
    from ..models.unet import time_embed_dim, widen_unet_latent

    root = Path(folder)
    if (root / "pipeline" / "model_index.json").is_file():
        root = root / "pipeline"
    missing = [p for p in ("unet/config.json", "condition_encoder/config.json") if not (root / p).is_file()]
    if missing:
        raise ValueError(f"--init_pipeline {folder} is not a saved pipeline or train-ldm run folder (no "
                         f"{', '.join(missing)})")
    unet = UNet2DModel.from_pretrained(root / "unet", torch_dtype=torch.float32)
    encoder = ConditionEncoder.from_pretrained(root / "condition_encoder", torch_dtype=torch.float32)
    if tuple(unet.config.sample_size) != tuple(latent_size):
        raise ValueError(f"--init_pipeline {folder} was trained on {tuple(unet.config.sample_size)} latents; "
                         f"these are {tuple(latent_size)}")
    if unet.config.out_channels > latent_channels:
        raise ValueError(f"--init_pipeline {folder} denoises {unet.config.out_channels}-channel latents; the VAE "
                         f"has {latent_channels}")
    if unet.config.out_channels < latent_channels:
        unet = widen_unet_latent(unet, latent_channels)
    if encoder.config.out_dim != time_embed_dim(unet):
        raise ValueError(f"--init_pipeline {folder}: condition encoder width {encoder.config.out_dim} does not "
                         f"fit the UNet's time embedding {time_embed_dim(unet)}")
    return unet, encoder


def _file_sha(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@torch.no_grad()
def encode_dataset(vae, dataset, device, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Posterior mean/std (unscaled), latent-size masks and codes for every item."""
    from ..models.conditioning import CONDITION_FIELDS
    from ..models.unet import latent_mask

    means, stds, masks = [], [], []
    codes = {f: [] for f in CONDITION_FIELDS}
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([it["image"] for it in items]).to(device, vae.dtype)
        dist = vae.encode(images).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
        m = torch.stack([it["mask"] for it in items])
        masks.append(latent_mask(m, (m.shape[-2] // f, m.shape[-1] // f)))
        for field in CONDITION_FIELDS:
            codes[field].extend(int(it[field]) for it in items)
    return {"mean": torch.cat(means), "std": torch.cat(stds), "masks": torch.cat(masks),
            **{k: torch.tensor(v, dtype=torch.long) for k, v in codes.items()}}


def _latent_cache(accelerator, vae, dataset, out: Path, key: str, shard_size: int = 0):
    """The training split's latents: one ``latents.pt`` in memory, or with ``shard_size`` > 0 memory-mapped
    shards under ``<out>/latents`` (:class:`~mammosynth.training.latent_cache.LatentShards`)."""
    if shard_size:
        from .latent_cache import build_latent_shards

        return build_latent_shards(accelerator, lambda part: encode_dataset(vae, part, accelerator.device),
                                   dataset, out / "latents", key, shard_size)
    path = out / "latents.pt"
    if accelerator.is_main_process:
        cached = torch.load(path, weights_only=True) if path.exists() else None
        if cached is None or cached.get("key") != key:
            logger.info("encoding %d training images with the frozen VAE", len(dataset))
            cache = encode_dataset(vae, dataset, accelerator.device)
            cache["key"] = key
            tmp = path.with_suffix(".tmp")
            torch.save(cache, tmp)
            tmp.replace(path)
    accelerator.wait_for_everyone()
    return torch.load(path, weights_only=True)


def _training_step(denoiser, noise_scheduler, batch: dict, affine: tuple[torch.Tensor, torch.Tensor], generator, args,
                   device):
    """One loss on a batch of the latent cache (``mean``, ``std``, ``masks`` and the condition codes, on the CPU);
    ``affine = (shift, scale)`` per channel maps VAE latents to model latents."""
    from ..models.autoencoder import apply_latent_affine
    from ..models.conditioning import CONDITION_FIELDS, drop_conditions

    mean, std = batch["mean"], batch["std"]
    latents = apply_latent_affine(mean + std * torch.randn(mean.shape, generator=generator), affine)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(mean),), generator=generator)
    codes = {f: batch[f] for f in CONDITION_FIELDS}
    codes, masks = drop_conditions(codes, batch["masks"], args.cond_dropout, args.cond_drop_all, generator)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    codes = {k: v.to(device) for k, v in codes.items()}
    pred = denoiser(noisy.to(device), timesteps.to(device), EncodedConditions(codes, masks.to(device)))
    v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    error = F.mse_loss(pred.float(), target.to(device).float(), reduction="none")
    if args.lesion_weight:
        error = error * lesion_loss_weights(batch["masks"], args.lesion_weight).to(device)
    per_sample = error.mean(dim=(1, 2, 3))
    if args.snr_gamma:
        per_sample = per_sample * min_snr_weights(noise_scheduler, timesteps, args.snr_gamma).to(device)
    return per_sample.mean()


def lesion_loss_weights(latent_masks: torch.Tensor, lesion_weight: float) -> torch.Tensor:
    """Per-cell loss weights ``1 + lesion_weight · mask`` for latent-size lesion masks ``(N,1,h,w)``.

    The masks are the true ones, not the CFG-dropped copy: the model learns what a lesion looks like
    also when it is asked for an unconditional image. ``lesion_weight`` = 0 gives all ones.
    """
    if not lesion_weight >= 0:
        raise ValueError(f"lesion_weight has to be >= 0, got {lesion_weight}")
    return 1 + lesion_weight * latent_masks.float()


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample Min-SNR-γ loss weights (Hang et al. 2023, as in diffusers' training examples).

    With SNR(t) = ᾱ_t / (1 − ᾱ_t): ``min(SNR, γ) / SNR`` for ε-prediction and
    ``min(SNR, γ) / (SNR + 1)`` for v-prediction: the nearly clean timesteps (whose noise
    is hard to tell from fine texture, so their ε-loss stays large while saying little about
    the image) stop dominating the gradient, and the noisy ones that lay out the breast and
    background get their share.
    """
    from diffusers.training_utils import compute_snr

    if not gamma > 0:
        raise ValueError(f"snr_gamma has to be > 0, got {gamma}")
    snr = compute_snr(noise_scheduler, timesteps).float()
    clipped = torch.clamp(snr, max=gamma)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def main(args: argparse.Namespace) -> dict:
    """Train (or resume) an LDM run; returns final info."""
    from diffusers import AutoencoderKL, DDPMScheduler

    from ..data.dataset import PreparedDataset
    from ..models.autoencoder import resolve_vae_folder
    from ..pipelines.pipeline_mammo_ldm import default_scheduler

    presets.resolve_training_options(args, "ldm")
    if args.dry_run:
        from .dry_run import dry_run

        return dry_run(args, "ldm").to_dict()
    options.require_run_folders(args, "data", "out", "vae")
    out, accelerator, data = common.start_run(args)
    train = PreparedDataset(data, split="training")
    vae_folder = resolve_vae_folder(args.vae)
    vae = AutoencoderKL.from_pretrained(vae_folder, dtype=torch.float32).to(accelerator.device)
    vae.requires_grad_(False).eval()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if data.height % factor or data.width % factor:
        raise ValueError(f"frames {data.height}x{data.width} are not divisible by the VAE factor {factor}")
    torch.manual_seed(args.seed)
    denoiser = _build_denoiser(args, vae.config.latent_channels, (data.height // factor, data.width // factor))
    if args.gradient_checkpointing:
        denoiser.unet.enable_gradient_checkpointing()
    base = default_scheduler(args.num_train_timesteps)
    if accelerator.is_main_process:
        common.write_run_info(out, args, "ldm", {"vae": {"folder": str(vae_folder), "sha256": _file_sha(vae_folder)},
                                                 "model": {"unet": dict(denoiser.unet.config),
                                                           "condition_encoder": dict(denoiser.condition_encoder.config)}})
    # "label-masks": the masks hold the boxes of each image's own lesion label (older caches held every finding's)
    cache = _latent_cache(accelerator, vae, train, out,
                          key=f"{_file_sha(vae_folder)}:{common.manifest_sha256(args.data)}:label-masks",
                          shard_size=args.latent_shard_size)
    affine = _latent_norm(vae, vae_folder, cache, args)
    setup = _training_setup(accelerator, denoiser, DDPMScheduler.from_config(base.config), cache, affine, vae, base,
                            out, args)
    loop = TrainingLoop(accelerator, args, out, setup, desc="train-ldm")
    state = loop.run()
    if not accelerator.is_main_process:
        return {}
    pipe = build_pipeline(vae, loop.trained_model(), base)
    final = _validate(pipe, args, out / "validation" / "final.png")
    if args.save_fp16:
        pipe.to(torch.float16)
    # Validation ran ungated; the saved pipeline requires its gate (build-index adds it).
    pipe.register_to_config(requires_privacy_checker=True)
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    losses = _loss_summary(out / "log.csv")
    info = {"steps": state.step, "elapsed_min": state.elapsed_s / 60, "fp16": bool(args.save_fp16), **losses}
    common.update_run_info(out, metrics=info, finished=True)
    print(f"LDM trained {state.step} steps in {state.elapsed_s / 60:.1f} min; final loss {losses.get('final_loss')}; "
          f"saved {out / 'pipeline'} (validation grid {final})")
    return info


def _build_denoiser(args: argparse.Namespace, latent_channels: int, latent_size: tuple[int, int]) -> ConditionalDenoiser:
    """A fresh UNet of ``--preset`` and condition encoder, or the ``--init_pipeline`` ones."""
    from ..models.conditioning import ConditionEncoder
    from ..models.unet import UNET_PRESETS, build_unet, time_embed_dim

    if args.preset not in UNET_PRESETS:
        raise ValueError(f"--preset must be one of {sorted(UNET_PRESETS)}, got {args.preset!r}")
    if args.init_pipeline:
        if args.block_out_channels or args.layers_per_block:
            raise ValueError("--block_out_channels / --layers_per_block cannot resize the --init_pipeline UNet; "
                             "leave them out")
        return ConditionalDenoiser(*load_denoiser(args.init_pipeline, latent_channels, latent_size))
    preset = dict(UNET_PRESETS[args.preset])
    if args.block_out_channels:
        preset["block_out_channels"] = tuple(int(v) for v in args.block_out_channels.split(","))
        preset["attention_levels"] = (False,) + (True,) * (len(preset["block_out_channels"]) - 1)
    if args.layers_per_block:
        preset["layers_per_block"] = args.layers_per_block
    unet = build_unet(sample_size=latent_size, latent_channels=latent_channels, **preset)
    return ConditionalDenoiser(unet, ConditionEncoder(embed_dim=args.embed_dim, out_dim=time_embed_dim(unet)))


def _latent_norm(vae, vae_folder: Path, cache: dict, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel ``(shift, scale)`` from VAE latents to model latents (``--latent_norm``)."""
    from ..models.autoencoder import channel_stats, has_channel_stats, latent_affine

    if getattr(args, "keep_latent_stats", False):
        if not (args.init_pipeline and has_channel_stats(vae.config)):
            raise ValueError("--keep_latent_stats needs --init_pipeline and a --vae whose config carries "
                             f"latents_mean/latents_std (the warm-started pipeline's own vae/); {vae_folder} has none"
                             if not has_channel_stats(vae.config) else "--keep_latent_stats needs --init_pipeline")
        logger.info("keeping the VAE's per-channel latent statistics (warm start from %s)", args.init_pipeline)
    elif args.latent_norm == "channel":  # the pipeline's VAE config carries the statistics (the source folder is kept)
        latents_mean, latents_std = channel_stats(cache["mean"]) if isinstance(cache, dict) else cache.channel_stats()
        vae.register_to_config(latents_mean=latents_mean, latents_std=latents_std)
        logger.info("per-channel latent standardisation: mean %s, std %s", np.round(latents_mean, 4).tolist(),
                    np.round(latents_std, 4).tolist())
    elif has_channel_stats(vae.config):
        raise ValueError(f"the VAE in {vae_folder} carries per-channel latents_mean/latents_std; train with "
                         "--latent_norm channel (or use a VAE without them)")
    return latent_affine(vae)


def _training_setup(accelerator, denoiser: ConditionalDenoiser, noise_scheduler, cache: dict, affine, vae, base,
                    out: Path, args: argparse.Namespace) -> TrainingSetup:
    """The denoiser trained on the cached latents; validation builds the pipeline with the EMA weights."""
    def loss(models, batch, micro_step: int):
        g = common.step_generator(args.seed, micro_step, accelerator.process_index)
        return _training_step(models[0], noise_scheduler, batch, affine, g, args, accelerator.device), {}

    def validate(step: int, model: ConditionalDenoiser) -> dict:
        _validate(build_pipeline(vae, model, base), args, out / "validation" / f"step-{step:06d}.png")
        return {}

    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    return TrainingSetup(network=denoiser, models=[denoiser], optimizers=[optimizer], loss=loss, validate=validate,
                         dataloader=seeded_dataloader(cache if isinstance(cache, Dataset) else TensorDictDataset(cache),
                                                      args.train_batch_size, args.seed))


def build_pipeline(vae, denoiser: ConditionalDenoiser, scheduler):
    """A :class:`MammoLDMPipeline` of ``denoiser`` (its UNet and condition encoder) and copies of ``vae`` and ``scheduler``."""
    from ..pipelines.pipeline_mammo_ldm import MammoLDMPipeline

    pipe = MammoLDMPipeline(vae=copy.deepcopy(vae), unet=denoiser.unet, condition_encoder=denoiser.condition_encoder,
                            scheduler=copy.deepcopy(scheduler), requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _validate(pipe, args, path: Path) -> Path:
    from ..conditions import Conditions

    conds = [Conditions.create(**c) for c in VALIDATION_CONDITIONS][: max(args.num_validation_images, 1)]
    gens = [torch.Generator().manual_seed(args.seed + i) for i in range(len(conds))]
    images = pipe(conditions=conds, num_inference_steps=args.validation_inference_steps,
                  guidance_scale=args.guidance_scale, generator=gens).images
    common.save_image_grid(np.stack(images), path, ncols=len(images))
    return path


def _loss_summary(path: Path) -> dict:
    if not path.exists():
        return {}
    import pandas as pd

    log = pd.read_csv(path)
    if log.empty:
        return {}
    tail = log["loss"].tail(max(len(log) // 10, 1))
    return {"first_loss": float(log["loss"].iloc[0]), "final_loss": float(tail.mean())}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
    sys.exit(0)
