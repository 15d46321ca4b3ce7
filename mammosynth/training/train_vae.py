"""Train the 1-channel ``AutoencoderKL`` (f = 8 by default; 4 with three blocks) on a prepared dataset.

Loss: L1 + ``ssim_weight`` · (1 − SSIM) (pytorch-msssim) + ``kl_weight`` · KL, on random
crops (``--crop``) of the canonical frames: a fully convolutional VAE learns the same
from crops at a fraction of the cost, which is what makes CPU training possible.

``--init_vae`` starts from a trained VAE; with ``--freeze_encoder`` only the decoder trains,
so the latent space stays bit for bit and an LDM trained on it keeps working with the
sharper decoder (``mammosynth.models.autoencoder.swap_decoder`` puts it into a pipeline).

At the end: the latent ``scaling_factor`` (1 / std of the latents of training images) is
measured and written into the VAE config, the VAE (EMA weights) is saved to
``<out>/vae``, and reconstruction PSNR / SSIM on the test split go to
``<out>/metrics.json`` and are printed.

Run::

    mammosynth train-vae --data data/prepared-256 --out runs/vae
    mammosynth train-vae --data data/prepared-256 --out runs/vae-decoder \
        --init_vae checkpoints/mammosynth-phantom-256/vae --freeze_encoder
    accelerate launch -m mammosynth.training.train_vae --data ... --out ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from . import common, options, presets
from .loop import TrainingLoop, TrainingSetup, seeded_dataloader

logger = logging.getLogger(__name__)

__all__ = ["parse_args", "main", "reconstruction_metrics", "psnr_ssim", "vae_loss", "ssim_float32", "build_discriminator",
           "discriminator_loss"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return options.vae_parser().parse_args(argv)


def _parse_crop(text: str, height: int, width: int) -> tuple[int, int] | None:
    if text in ("full", "none", ""):
        return None
    try:
        ch, cw = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--crop must be HxW (e.g. 128x96) or 'full', got {text!r}") from None
    if ch % 8 or cw % 8 or ch > height or cw > width or ch <= 0 or cw <= 0:
        raise ValueError(f"--crop {text} must be multiples of 8 no larger than the frames ({height}x{width})")
    return None if (ch, cw) == (height, width) else (ch, cw)


def vae_loss(vae, images: torch.Tensor, ssim_weight: float, kl_weight: float,
             generator: torch.Generator | None = None, masks: torch.Tensor | None = None,
             lesion_weight: float = 0.0, discriminator: torch.nn.Module | None = None, adv_weight: float = 0.0,
             adv_adaptive: bool = False, return_reconstruction: bool = False):
    """L1 + ssim_weight·(1−SSIM) + kl_weight·KL for one batch in [-1, 1]; returns ``(loss, parts)``.

    With ``lesion_weight`` > 0 and lesion ``masks`` (N,1,H,W in {0,1}), the L1 term weighs
    pixels inside lesion boxes ``1 + lesion_weight`` times: a calcification cluster is a few
    pixels of a 256×192 frame, and plain L1 lets the VAE blur it away.

    With a ``discriminator`` and ``adv_weight`` > 0, ``adv_weight`` × the generator's
    least-squares adversarial loss (the discriminator should call the reconstruction real) is
    added; the discriminator's own weights get no gradient from it. With ``adv_adaptive`` the
    weight is ``adv_weight`` × ‖∇L_rec‖ / ‖∇L_adv‖, both gradients taken at the decoder's last
    layer (Esser et al. 2021, "Taming Transformers"): the adversarial gradient is then
    ``adv_weight`` times the reconstruction gradient, whatever their scales (logged as
    ``adv_lambda``). ``return_reconstruction`` appends the reconstruction (for the
    discriminator's step) to the returned tuple.
    """
    posterior = vae.encode(images).latent_dist
    latents = posterior.sample(generator)
    recon = vae.decode(latents).sample
    error = (recon - images).abs()
    if masks is not None and lesion_weight > 0:
        l1 = (error * (1 + lesion_weight * masks.to(error.dtype))).mean()
    else:
        l1 = error.mean()
    ssim_value = ssim_float32((recon.clamp(-1, 1) + 1) / 2, (images + 1) / 2)
    kl = posterior.kl().mean() / images[0].numel()
    reconstruction = l1 + ssim_weight * (1 - ssim_value)
    loss = reconstruction + kl_weight * kl
    parts = {"l1": l1.item(), "ssim": ssim_value.item(), "kl": kl.item()}
    if discriminator is not None and adv_weight > 0:
        discriminator.requires_grad_(False)
        logits = discriminator(recon.float().contiguous())[-1]
        discriminator.requires_grad_(True)
        adv = _adversarial_criterion()(logits, target_is_real=True, for_discriminator=False)
        weight = adv_weight
        if adv_adaptive:
            last = vae.decoder.conv_out.weight
            rec_grad = torch.autograd.grad(reconstruction, last, retain_graph=True)[0]
            adv_grad = torch.autograd.grad(adv, last, retain_graph=True)[0]
            weight = adv_weight * (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(max=1e4).detach()
            parts["adv_lambda"] = float(weight)
        loss = loss + weight * adv
        parts["adv_g"] = adv.item()
    return (loss, parts, recon) if return_reconstruction else (loss, parts)


def ssim_float32(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (pytorch-msssim, data range [0, 1]) in float32, also under bf16/fp16 autocast.

    SSIM subtracts squared means from means of squares: in bf16 that leaves errors larger than
    its constant C2 (9e-4), and a near-flat patch gives SSIM > 1 or ``inf`` (a vindr-tiny VAE run
    went NaN from such a step).
    """
    from pytorch_msssim import ssim

    with torch.autocast(image.device.type, enabled=False):
        return ssim(image.float(), reference.float(), data_range=1.0, size_average=True)


def _adversarial_criterion():
    """Least squares on the raw patch logits (MONAI's default would first apply a leaky ReLU)."""
    from monai.losses import PatchAdversarialLoss

    return PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)


def build_discriminator(channels: int = 32) -> torch.nn.Module:
    """MONAI's 2-D ``PatchDiscriminator`` (3 strided layers, a logit per ~70-pixel patch)."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=2, num_layers_d=3, channels=channels, in_channels=1, out_channels=1)


def discriminator_loss(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares patch-GAN loss of the discriminator: real images → 1, reconstructions → 0."""
    criterion = _adversarial_criterion()
    fake_loss = criterion(discriminator(fake.detach().float().contiguous())[-1], target_is_real=False,
                          for_discriminator=True)
    real_loss = criterion(discriminator(real.float().contiguous())[-1], target_is_real=True, for_discriminator=True)
    return 0.5 * (fake_loss + real_loss)


@torch.no_grad()
def reconstruction_metrics(vae, frames: np.ndarray, batch_size: int = 8) -> dict[str, float]:
    """PSNR (dB, data range [0,1]) and SSIM of VAE reconstructions of uint16 frames (N,H,W).

    Higher is better for both. Reconstruction uses the posterior mean.
    """
    from ..data.dataset import to_unit_range

    if len(frames) == 0:
        return {"psnr": float("nan"), "ssim": float("nan"), "images": 0}
    psnrs, ssims = [], []
    for start in range(0, len(frames), batch_size):
        x = to_unit_range(frames[start:start + batch_size][:, None]).to(vae.device)
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
        psnr, similarity = psnr_ssim((x + 1) / 2, (recon + 1) / 2)
        psnrs.extend(psnr.tolist())
        ssims.extend(similarity.tolist())
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "images": len(frames)}


def psnr_ssim(reference: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM of ``image`` against ``reference``, both ``(N,1,H,W)`` in [0, 1].

    The SSIM window is pytorch-msssim's 11 pixels, or the largest odd size that fits a smaller image.
    """
    from pytorch_msssim import ssim

    mse = ((reference - image) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    side = min(reference.shape[-2:])
    win = min(11, side - (1 - side % 2))
    return 10 * torch.log10(1.0 / mse), ssim(image, reference, data_range=1.0, size_average=False, win_size=win)


class VAEWithLoss(torch.nn.Module):
    """Wraps the VAE so that one ``forward`` returns the loss (what DDP needs to sync)."""

    def __init__(self, vae, **loss_options):
        super().__init__()
        self.vae = vae
        self.loss_options = loss_options   # the weights of :func:`vae_loss` (ssim_weight, kl_weight, ...)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                masks: torch.Tensor | None = None, discriminator: torch.nn.Module | None = None):
        """``(loss, parts, reconstruction)``; the adversarial term only when a discriminator is given."""
        return vae_loss(self.vae, images, generator=generator, masks=masks, discriminator=discriminator,
                        return_reconstruction=True, **self.loss_options)


def _crop_batch(images: torch.Tensor, crop: tuple[int, int] | None, generator: torch.Generator,
                masks: torch.Tensor | None = None, lesion_crop_prob: float = 0.0):
    """Random crops (top-left on the 8-pixel latent grid) of images, and of masks when given.

    With ``lesion_crop_prob`` > 0, that share of the images with a lesion get a crop that
    contains their lesion box's centre (still on the 8-pixel grid). Returns the cropped
    images, or ``(images, masks)`` when masks are given.
    """
    if crop is None:
        return images if masks is None else (images, masks)
    n, _, h, w = images.shape
    ch, cw = crop
    ys = torch.randint(0, (h - ch) // 8 + 1, (n,), generator=generator) * 8
    xs = torch.randint(0, (w - cw) // 8 + 1, (n,), generator=generator) * 8
    if masks is not None and lesion_crop_prob > 0:
        pick = torch.rand(n, generator=generator) < lesion_crop_prob
        for i in range(n):
            rows = torch.nonzero(masks[i, 0].any(dim=1)).flatten()
            cols = torch.nonzero(masks[i, 0].any(dim=0)).flatten()
            if not bool(pick[i]) or len(rows) == 0:
                continue
            cy = int(rows.float().mean())
            cx = int(cols.float().mean())
            ys[i] = min(max(cy - ch // 2, 0), h - ch) // 8 * 8
            xs[i] = min(max(cx - cw // 2, 0), w - cw) // 8 * 8
    crops = torch.stack([images[i, :, y:y + ch, x:x + cw] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
    if masks is None:
        return crops
    return crops, torch.stack([masks[i, :, y:y + ch, x:x + cw] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])


def main(args: argparse.Namespace) -> dict:
    """Train (or resume) a VAE run; returns the final metrics (with ``--dry-run``: the measured figures)."""
    from ..data.dataset import PreparedDataset

    presets.resolve_training_options(args, "vae")
    if args.dry_run:
        from .dry_run import dry_run

        return dry_run(args, "vae").to_dict()
    options.require_run_folders(args)
    out, accelerator, data = common.start_run(args)
    train = PreparedDataset(data, split="training")
    crop = _parse_crop(args.crop, data.height, data.width)
    _check_args(args)
    torch.manual_seed(args.seed)
    vae = _build_vae(args, data)
    if accelerator.is_main_process:
        common.write_run_info(out, args, "vae", {"model": {"vae": dict(vae.config)}})
    loop = TrainingLoop(accelerator, args, out, _training_setup(accelerator, vae, train, crop, data, out, args),
                        desc="train-vae")
    state = loop.run()
    if not accelerator.is_main_process:
        return {}
    return _finish(loop.trained_model(), data, train, out, args, state)


def _check_args(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work (before anything is built)."""
    from ..models.autoencoder import VAE_PRESETS

    if args.preset not in VAE_PRESETS:
        raise ValueError(f"--preset must be one of {sorted(VAE_PRESETS)}, got {args.preset!r}")
    if args.freeze_encoder and not args.init_vae:
        raise ValueError("--freeze_encoder needs --init_vae (the trained VAE whose encoder to keep)")
    if args.freeze_encoder and args.latent_channels:
        raise ValueError("--freeze_encoder keeps the latent space; it cannot go with --latent_channels")
    if args.latent_channels is not None and args.latent_channels < 1:
        raise ValueError(f"--latent_channels must be >= 1, got {args.latent_channels}")
    if args.adv_weight < 0:
        raise ValueError(f"--adv_weight must be >= 0 (0 = no adversarial term), got {args.adv_weight}")
    if args.adv_adaptive and not args.adv_weight:
        raise ValueError("--adv_adaptive scales the adversarial term: give it a weight with --adv_weight (e.g. 0.5)")
    if args.init_vae and args.block_out_channels:
        raise ValueError("--block_out_channels cannot resize the --init_vae VAE; leave it out")


def _build_vae(args: argparse.Namespace, data):
    """A fresh VAE of ``--preset``, or ``--init_vae`` (widened to ``--latent_channels``), encoder frozen if asked."""
    from diffusers import AutoencoderKL

    from ..models.autoencoder import VAE_PRESETS, build_vae, resolve_vae_folder, widen_latent

    if args.init_vae:
        vae = AutoencoderKL.from_pretrained(resolve_vae_folder(args.init_vae), dtype=torch.float32)
        if vae.config.in_channels != 1 or vae.config.out_channels != 1:
            raise ValueError(f"--init_vae {args.init_vae} is not a 1-channel VAE "
                             f"(in/out channels {vae.config.in_channels}/{vae.config.out_channels})")
        if args.latent_channels and args.latent_channels != vae.config.latent_channels:
            if args.latent_channels < vae.config.latent_channels:
                raise ValueError(f"--latent_channels {args.latent_channels} is fewer than --init_vae's "
                                 f"{vae.config.latent_channels}; a VAE can only be widened")
            vae = widen_latent(vae, args.latent_channels)
    else:
        preset = dict(VAE_PRESETS[args.preset])
        if args.block_out_channels:
            preset["block_out_channels"] = tuple(int(v) for v in args.block_out_channels.split(","))
        if not 2 <= len(preset["block_out_channels"]) <= 4:
            raise ValueError("the VAE needs 2 to 4 blocks (f = 2, 4 or 8; training crops are multiples of 8); got "
                             f"block_out_channels {tuple(preset['block_out_channels'])}")
        vae = build_vae(sample_size=data.height, **preset, latent_channels=args.latent_channels or 4)
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    if args.freeze_encoder:
        # the latent space is the encoder (+ quant_conv): keep it, so latents, their scaling and
        # any LDM trained on them stay valid; only the decoder learns
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
    return vae


def _training_setup(accelerator, vae, train, crop, data, out: Path, args: argparse.Namespace) -> TrainingSetup:
    """The VAE (in :class:`VAEWithLoss`), with a patch-GAN discriminator and its optimiser when
    ``--adv_weight`` > 0 (saved in every checkpoint: resumable)."""
    from ..data.dataset import from_unit_range, to_unit_range

    wrapper = VAEWithLoss(vae, ssim_weight=args.ssim_weight, kl_weight=args.kl_weight,
                          lesion_weight=args.lesion_weight, adv_weight=args.adv_weight, adv_adaptive=args.adv_adaptive)
    models = [wrapper]
    optimizers = [torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.learning_rate,
                                    weight_decay=args.adam_weight_decay)]
    if args.adv_weight > 0:
        discriminator = build_discriminator(args.disc_channels)
        models.append(discriminator)
        optimizers.append(torch.optim.AdamW(discriminator.parameters(), betas=(0.5, 0.9), weight_decay=0.0,
                                            lr=args.disc_learning_rate or args.learning_rate))
    use_masks = args.lesion_weight > 0 or args.lesion_crop_prob > 0

    def loss(models, batch, micro_step: int):
        g = common.step_generator(args.seed, micro_step, accelerator.process_index)
        masks = None
        if use_masks:   # every lesion, whatever its label
            images, masks = _crop_batch(batch["image"], crop, g, batch["findings_mask"], args.lesion_crop_prob)
            masks = masks.to(accelerator.device)
        else:
            images = _crop_batch(batch["image"], crop, g)
        images = images.to(accelerator.device)
        discriminator = models[1] if len(models) > 1 else None
        adversarial = discriminator is not None and micro_step // args.gradient_accumulation_steps >= args.adv_start
        judge = accelerator.unwrap_model(discriminator) if adversarial else None
        value, parts, recon = models[0](images, generator=g, masks=masks, discriminator=judge)
        if adversarial:   # one backward: the discriminator's loss sees the reconstruction detached
            d_loss = discriminator_loss(discriminator, images, recon)
            parts.update(loss=value.item(), adv_d=d_loss.item())
            value = value + d_loss
        return value, parts

    frames = _validation_frames(data, 4)

    @torch.no_grad()
    def validate(step: int, model) -> dict:
        model.eval()
        x = to_unit_range(frames[:, None]).to(model.device)
        recon = model.decode(model.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        pairs = np.concatenate([frames, from_unit_range(recon[:, 0])], axis=0)
        common.save_image_grid(pairs, out / "validation" / f"step-{step:06d}.png", ncols=len(frames))
        return {}

    return TrainingSetup(network=vae, models=models, optimizers=optimizers, loss=loss, validate=validate,
                         dataloader=seeded_dataloader(train, args.train_batch_size, args.seed, collate_fn=_collate),
                         reserve_fraction=0.12, postfix=("ssim",))


def _collate(items: list[dict]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in ("image", "findings_mask")}


def _validation_frames(data, n: int) -> np.ndarray:
    rows = data.split("test") if "test" in set(data.manifest["split"]) else data.manifest
    return data.frames(rows["index"].to_numpy()[:n])


def _finish(model, data, train, out: Path, args, state) -> dict:
    """Measure the latent scaling, save ``<out>/vae`` and the test reconstruction metrics."""
    from ..data.dataset import to_unit_range
    from ..data.prepared import atomic_write_text
    from ..models.autoencoder import measure_scaling_factor

    model.eval()
    n = min(args.scaling_images, len(train)) if args.scaling_images else len(train)
    frames = data.frames(train.rows["index"].to_numpy()[:n])
    batches = (to_unit_range(frames[i:i + 16][:, None]) for i in range(0, len(frames), 16))
    if args.freeze_encoder:   # same encoder, same latents: keep the scaling the LDM was trained with
        scaling = float(model.config.scaling_factor)
    else:
        scaling = measure_scaling_factor(model, batches)
        # a trained encoder is a new latent space: per-channel statistics from an --init_vae pipeline are stale
        model.register_to_config(scaling_factor=float(scaling), latents_mean=None, latents_std=None)
    model.save_pretrained(out / "vae")
    has_test = "test" in set(data.manifest["split"])
    rows = data.split("test") if has_test else data.manifest
    if args.eval_images:
        rows = rows.iloc[: args.eval_images]
    metrics = reconstruction_metrics(model, data.frames(rows["index"].to_numpy()))
    metrics.update({"scaling_factor": float(scaling), "steps": state.step, "elapsed_min": state.elapsed_s / 60,
                    "split": "test" if has_test else "all"})
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    common.update_run_info(out, metrics=metrics, finished=True)
    print(f"VAE reconstruction on {metrics['images']} {metrics['split']} images: "
          f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}; scaling_factor {scaling:.4f}; "
          f"saved {out / 'vae'}")
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
    sys.exit(0)
