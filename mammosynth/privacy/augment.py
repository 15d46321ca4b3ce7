"""The augmentations a copied training image could hide behind (torch ops only).

Used twice, deliberately the same: to train the Siamese network to see through them
(:mod:`mammosynth.training.train_siamese`) and to plant disguised copies of training images
in a synthetic set (:mod:`mammosynth.privacy.audit`), which the gate must catch.

The family: a small affine warp (shift up to ``max_shift`` of the size, ±3° rotation, ±5 %
scale), vertical / horizontal flips, brightness, contrast and gamma changes, Gaussian
blur and Gaussian noise. Every draw comes from a ``torch.Generator``, so a seed gives the
same copies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment", "augment_frames"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the augmentations (all drawn uniformly per image)."""

    max_shift: float = 0.04          # fraction of height/width
    max_rotation_deg: float = 3.0
    max_scale: float = 0.05
    p_vflip: float = 0.5
    p_hflip: float = 0.2
    brightness: float = 0.05         # ± in [0, 1] intensity units
    contrast: tuple[float, float] = (0.8, 1.25)
    gamma: tuple[float, float] = (0.7, 1.4)
    max_blur_sigma: float = 1.2      # pixels at the working resolution
    max_noise_sigma: float = 0.03    # in [0, 1] intensity units

    def __post_init__(self) -> None:
        for name in ("max_shift", "max_scale"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ValueError(f"{name} has to be in [0, 0.5), not {getattr(self, name)}")
        if not 0.0 <= self.max_rotation_deg <= 45.0:
            raise ValueError(f"max_rotation_deg has to be in [0, 45], not {self.max_rotation_deg}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict | None) -> AugmentConfig:
        """The ranges of :meth:`to_dict` (``None``: the defaults)."""
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown augmentation settings {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur (sigma 0 = unchanged)."""
    n, _, h, w = images.shape
    radius = max(1, int(math.ceil(3 * float(sigmas.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    safe = sigmas.clamp_min(1e-3).to(images.dtype)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    x = images.transpose(0, 1)  # (1, N, H, W): one group per image
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernels[:, None, None, :], groups=n)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernels[:, None, :, None], groups=n)
    return x.transpose(0, 1)


def augment(images: torch.Tensor, generator: torch.Generator | None = None,
            config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Randomly disguise a batch of images.

    Args:
        images: float ``(N, 1, H, W)`` in [-1, 1] (CPU).
        generator: source of randomness (seeded for reproducible copies).
        config: the ranges.

    Returns:
        A new float tensor of the same shape, clipped to [-1, 1].
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images have to be (N, 1, H, W) but are {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        return images.clone()
    dtype = images.dtype
    x = (images.float() + 1.0) / 2.0  # [0, 1], background 0

    # 1. geometry: flips, then a small affine warp (background stays 0)
    vflip = torch.rand(n, generator=generator) < config.p_vflip
    hflip = torch.rand(n, generator=generator) < config.p_hflip
    x = torch.where(vflip[:, None, None, None], x.flip(-2), x)
    x = torch.where(hflip[:, None, None, None], x.flip(-1), x)
    angle = _uniform(n, -config.max_rotation_deg, config.max_rotation_deg, generator) * math.pi / 180
    scale = 1.0 + _uniform(n, -config.max_scale, config.max_scale, generator)
    tx = _uniform(n, -2 * config.max_shift, 2 * config.max_shift, generator)  # grid units span 2
    ty = _uniform(n, -2 * config.max_shift, 2 * config.max_shift, generator)
    theta = torch.stack([
        torch.stack([torch.cos(angle) / scale, -torch.sin(angle) / scale, tx], dim=1),
        torch.stack([torch.sin(angle) / scale, torch.cos(angle) / scale, ty], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # 2. intensity: gamma, contrast around the image mean, brightness
    gamma = torch.exp(_uniform(n, math.log(config.gamma[0]), math.log(config.gamma[1]), generator))
    x = x.clamp(0, 1) ** gamma[:, None, None, None]
    contrast = _uniform(n, *config.contrast, generator)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    x = x + _uniform(n, -config.brightness, config.brightness, generator)[:, None, None, None]

    # 3. blur, then noise
    x = _blur(x, _uniform(n, 0.0, config.max_blur_sigma, generator))
    sigma = _uniform(n, 0.0, config.max_noise_sigma, generator)[:, None, None, None]
    x = x + sigma * torch.randn(x.shape, generator=generator)
    return (x.clamp(0, 1) * 2.0 - 1.0).to(dtype)


def augment_frames(frames: np.ndarray, seed: int = 0, config: AugmentConfig = AugmentConfig(),
                   batch_size: int = 64) -> np.ndarray:
    """Disguised copies of uint16 frames ``(N, H, W)`` → uint16 ``(N, H, W)`` (seeded)."""
    from ..data.dataset import from_unit_range, to_unit_range

    if frames.ndim != 3:
        raise ValueError(f"frames have to be (N, H, W) but are {tuple(frames.shape)}")
    generator = torch.Generator().manual_seed(int(seed))
    out = np.empty(frames.shape, dtype=np.uint16)
    for start in range(0, len(frames), batch_size):
        batch = to_unit_range(np.asarray(frames[start : start + batch_size])[:, None])
        out[start : start + batch_size] = from_unit_range(augment(batch, generator, config)[:, 0])
    return out
