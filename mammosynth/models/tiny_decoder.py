"""A tiny decoder distilled from the VAE's: diffusers' ``AutoencoderTiny`` (TAESD) for previews and fast sets.

The bundled VAE's decoder costs ~5.8 GFLOP per 256×192 image; this one ~0.6 (the widths were chosen
by measurement, see :data:`DEFAULT_WIDTHS`). ``mammosynth distill-decoder``
(:mod:`mammosynth.training.train_tiny_decoder`) trains it to reproduce the full decoder's output on the
same latents; a checkpoint holds it as the optional component ``tiny_vae/``
(``AutoencoderTiny.from_pretrained``).

What goes in and out of :func:`tiny_decode`:

* **in**: *model-space* latents ``(N, C, h, w)``, the ones the UNet produces and
  ``MammoLDMPipeline.decode_latents`` takes (:func:`~mammosynth.models.autoencoder.to_model_space`:
  per-channel standardised, about unit variance). That is TAESD's convention too: TAESD decodes the
  diffusion model's latents directly (``scaling_factor`` 1.0). Our tiny decoders are built with
  ``scaling_factor`` 1.0 and ``shift_factor`` 0.0, so nothing is rescaled; diffusers' rule
  ``latents / scaling_factor + shift_factor`` is applied all the same. ``DecoderTiny`` then soft-clamps
  its input with ``tanh(x / 3) · 3``: about the identity for unit-variance latents (|x| < 3 holds for
  99.6 % of the bundled model's latent values), a monotone squash of the rest, which training learns.
* **out**: float32 images ``(N, H, W)`` in [0, 1], canonical orientation, exactly like
  ``decode_latents`` (``DecoderTiny``'s last layer works in TAESD's [0, 1] and maps it to diffusers'
  [-1, 1]; :func:`tiny_decoder_output` returns that, :func:`tiny_decode` maps it back and clips).

Only the decoder is trained and used: the encoder is the smallest ``EncoderTiny`` that the class
accepts (one 8-channel convolution per scale), left untrained; use the VAE to encode.

``DecoderTiny`` chains each stage's output into the next without a projection, so every stage has the
same width; its cost is dominated by the convolutions at full and half resolution (see
:func:`measure_tiny_decoder`).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

__all__ = ["DEFAULT_WIDTHS", "DEFAULT_NUM_BLOCKS", "ENCODER_WIDTH", "build_tiny_decoder", "tiny_decoder_output",
           "tiny_decode", "check_tiny_decoder", "measure_tiny_decoder", "measure_decode_cost"]

#: Channels of every decoder stage, and ``AutoencoderTinyBlock`` s per stage (coarsest first). Chosen by
#: measurement for the bundled 256×192 model (FlopCounterMode; batch 1, one thread; 2.5-minute distillations
#: on one thread, 100 test images): widths 8 / 12 / 16 with blocks (3,3,3,0) / (3,3,3,0) / (2,2,1,0) cost
#: 0.25 / 0.56 / 0.59 GFLOP and ~9.8 / 12.2 / 8.0 ms, and reached PSNR 23.8 / 25.8 / 25.8 dB, SSIM 0.71 /
#: 0.78 / 0.80 against the full decoder: 16 channels run fastest per FLOP (oneDNN's vector width, channels-last).
#: No block at full resolution: one there would cost 0.68 GFLOP alone at width 16.
DEFAULT_WIDTHS = 16
DEFAULT_NUM_BLOCKS = (2, 2, 1, 0)
#: Width of the (untrained, unused) minimal encoder.
ENCODER_WIDTH = 8


def build_tiny_decoder(vae: AutoencoderKL, widths: int | Sequence[int] = DEFAULT_WIDTHS,
                       num_blocks: Sequence[int] = DEFAULT_NUM_BLOCKS) -> AutoencoderTiny:
    """A fresh 1-channel ``AutoencoderTiny`` whose decoder takes ``vae``'s latents (model space) to its images.

    One stage per scale of the VAE (``len(vae.config.block_out_channels)``: f = 8 → 4 stages, 3
    ×2 nearest upsamplings), ``latent_channels`` the VAE's.

    Args:
        vae: the ``AutoencoderKL`` to distil.
        widths: the channels of every decoder stage: one number, or one per stage (all equal:
            ``DecoderTiny`` has no projection between stages).
        num_blocks: ``AutoencoderTinyBlock`` s per stage, coarsest first (the last stage, at full
            resolution, may have 0).

    Raises:
        ValueError: if the widths or block counts do not fit the VAE or ``DecoderTiny``.
    """
    stages = len(vae.config.block_out_channels)
    widths = (int(widths),) * stages if isinstance(widths, int) else tuple(int(w) for w in widths)
    num_blocks = tuple(int(b) for b in num_blocks)
    if len(widths) != stages or len(num_blocks) != stages:
        raise ValueError(f"the VAE has {stages} scales (f = {2 ** (stages - 1)}), so the tiny decoder needs {stages} "
                         f"widths and {stages} block counts; got widths {widths} and num_blocks {num_blocks}")
    if len(set(widths)) != 1 or widths[0] < 1:
        raise ValueError(f"the tiny decoder's stages must all have the same positive width (DecoderTiny passes each "
                         f"stage's output to the next without a projection); got widths {widths}")
    if min(num_blocks) < 0:
        raise ValueError(f"num_blocks must be >= 0 per stage, got {num_blocks}")
    return AutoencoderTiny(
        in_channels=1,
        out_channels=1,
        encoder_block_out_channels=(ENCODER_WIDTH,) * stages,
        decoder_block_out_channels=widths,
        num_encoder_blocks=(0,) * stages,
        num_decoder_blocks=num_blocks,
        latent_channels=vae.config.latent_channels,
        upsampling_scaling_factor=2,
        scaling_factor=1.0,   # it decodes model-space latents as they are (see the module docstring)
        shift_factor=0.0,
    )


def check_tiny_decoder(tiny: AutoencoderTiny, vae: AutoencoderKL, name: str = "the tiny decoder") -> None:
    """``ValueError`` naming ``name`` unless ``tiny`` decodes ``vae``'s latents to 1-channel images at its scale."""
    config = tiny.config
    stages = len(vae.config.block_out_channels)
    if config.latent_channels != vae.config.latent_channels:
        raise ValueError(f"{name} takes {config.latent_channels} latent channels, but the VAE makes "
                         f"{vae.config.latent_channels}: distil a tiny decoder from this VAE")
    if config.out_channels != 1:
        raise ValueError(f"{name} makes {config.out_channels}-channel images; mammograms have 1 channel")
    upsamplings = len(config.num_decoder_blocks) - 1
    if config.upsampling_scaling_factor ** upsamplings != 2 ** (stages - 1):
        raise ValueError(f"{name} upsamples by {config.upsampling_scaling_factor ** upsamplings}, but the VAE's "
                         f"factor is {2 ** (stages - 1)}")


def tiny_decoder_output(tiny: AutoencoderTiny, latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents ``(N, C, h, w)`` → the decoder's images ``(N, 1, H, W)`` in [-1, 1], not clipped.

    Differentiable (what training uses); :func:`tiny_decode` is the inference form. The latents go in
    channels-last: the small convolutions run ~1.7× faster that way on CPU.

    Raises:
        ValueError: if ``latents`` is not ``(N, C, h, w)`` with the decoder's ``latent_channels``.
    """
    channels = tiny.config.latent_channels
    if latents.dim() != 4 or latents.shape[1] != channels:
        raise ValueError(f"the tiny decoder takes model-space latents of shape (N, {channels}, h, w), "
                         f"got {tuple(latents.shape)}")
    x = latents.to(device=tiny.device, dtype=tiny.dtype)
    x = x / tiny.config.scaling_factor + tiny.config.shift_factor   # the identity for ours
    return tiny.decode(x.contiguous(memory_format=torch.channels_last)).sample


@torch.no_grad()
def tiny_decode(tiny: AutoencoderTiny, latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents ``(N, C, h, w)`` → float32 images ``(N, H, W)`` in [0, 1] (canonical orientation).

    The same input and output as ``MammoLDMPipeline.decode_latents`` with the full decoder.
    """
    images = tiny_decoder_output(tiny, latents)
    return ((images.float()[:, 0] + 1) / 2).clamp(0, 1)


def _count_gflop(call: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops() / 1e9


def measure_decode_cost(decode: Callable[[torch.Tensor], object], latents: torch.Tensor, threads: int = 2,
                        repeats: int = 20, warmup: int = 3) -> dict:
    """GFLOP and median milliseconds per image of ``decode(latents)`` on ``threads`` torch CPU threads.

    FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2); the time
    is the median of ``repeats`` calls after ``warmup`` ones, under ``inference_mode``. The torch thread
    count is restored afterwards. ``load_average`` (1 minute, from the OS) says how busy the machine was:
    with another process on the cores, a 2-thread figure is inflated.
    """
    batch = len(latents)
    gflop = _count_gflop(lambda: decode(latents)) / batch
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                decode(latents)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                decode(latents)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    times.sort()
    return {"gflop_per_image": round(gflop, 4), "ms_per_image": round(1e3 * times[len(times) // 2] / batch, 2),
            "ms_per_image_min": round(1e3 * times[0] / batch, 2), "threads": threads, "batch_size": batch,
            "repeats": repeats, "load_average": round(os.getloadavg()[0], 2)}


def measure_tiny_decoder(tiny: AutoencoderTiny, height: int = 256, width: int = 192, threads: int = 2,
                         batch_size: int = 1, repeats: int = 20, warmup: int = 3, seed: int = 0) -> dict:
    """Cost of :func:`tiny_decode` for ``height`` × ``width`` images on the CPU: GFLOP and ms per image.

    Random unit-variance model-space latents of the decoder's size (``height`` / 8 × ``width`` / 8 for
    f = 8) in batches of ``batch_size``; see :func:`measure_decode_cost` for how it counts and times.
    Returns its dict plus ``height`` and ``width``.

    Raises:
        ValueError: if ``height`` / ``width`` are not multiples of the decoder's upsampling factor.
    """
    factor = tiny.config.upsampling_scaling_factor ** (len(tiny.config.num_decoder_blocks) - 1)
    if height % factor or width % factor:
        raise ValueError(f"height and width have to be divisible by {factor} but are {height} and {width}")
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((batch_size, tiny.config.latent_channels, height // factor, width // factor),
                          generator=generator)
    return {**measure_decode_cost(lambda z: tiny_decode(tiny, z), latents, threads, repeats, warmup),
            "height": height, "width": width}
