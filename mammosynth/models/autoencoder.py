"""The 1-channel ``AutoencoderKL`` (f = 8) and its latent helpers.

A 256×192 frame in [-1, 1] becomes a 4×32×24 latent. ``vae.config.scaling_factor`` is
measured from data (:func:`measure_scaling_factor`: 1 / std of the latents) so that the
scaled latents the diffusion model sees have unit variance.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from diffusers import AutoencoderKL

__all__ = ["VAE_PRESETS", "build_vae", "encode", "decode", "measure_scaling_factor", "downsample_factor"]

#: Named sizes. ``bundled`` is the 2-CPU demo model; ``tiny`` is for tests.
VAE_PRESETS: dict[str, dict] = {
    # Sized for 2 CPU cores: ~2 s per step of 8 crops of 96x72 on one thread.
    "bundled": {"block_out_channels": (16, 32, 64, 64), "layers_per_block": 1, "norm_num_groups": 16},
    "tiny": {"block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},
}


def build_vae(
    block_out_channels: Sequence[int] = (32, 64, 128, 128),
    layers_per_block: int = 1,
    latent_channels: int = 4,
    norm_num_groups: int = 32,
    sample_size: int = 256,
) -> AutoencoderKL:
    """A fresh 1-channel ``AutoencoderKL``; ``len(block_out_channels)`` blocks → f = 2^(n-1).

    Raises:
        ValueError: if a block width is not divisible by ``norm_num_groups``.
    """
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"block_out_channels {tuple(block_out_channels)} must be divisible by norm_num_groups={norm_num_groups}")
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=1.0,
        force_upcast=False,
    )


def downsample_factor(vae: AutoencoderKL) -> int:
    """Spatial down-sampling factor of the VAE (8 for four blocks)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode(vae: AutoencoderKL, images: torch.Tensor, sample: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Images ``(N,1,H,W)`` in [-1, 1] → *scaled* latents ``(N,C,H/f,W/f)``.

    Uses the posterior mean unless ``sample`` is true.
    """
    dist = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = dist.sample(generator) if sample else dist.mode()
    return latents * vae.config.scaling_factor


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → images ``(N,1,H,W)``, roughly in [-1, 1] (not clipped)."""
    latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    return vae.decode(latents).sample


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKL, batches: Iterable[torch.Tensor]) -> float:
    """``1 / std`` of the unscaled posterior means over the given image batches."""
    values = []
    for images in batches:
        values.append(vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode().float().flatten())
    if not values:
        raise ValueError("measure_scaling_factor needs at least one batch of images")
    std = torch.cat(values).std().item()
    if not std > 0:
        raise ValueError(f"the latents have standard deviation {std}; is the VAE trained?")
    return 1.0 / std
