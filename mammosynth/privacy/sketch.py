"""The gate's second detector: a pixel-structure sketch that catches partial copies (issue 20).

The Siamese network judges a whole image by what patient it looks like. A generator that
memorised part of a training image — a blend of it with another, or a region of it pasted into
a new breast — can escape it: the patient's look is diluted, but the training image's own fine
structure is still there, in place. The sketch keeps exactly that:

1. the frame area-averaged to ``size`` (128×96 by default, 2× coarser than the 256×192 frames);
2. its fine structure: the frame minus its ``kernel``×``kernel`` box blur (the breast's shape and
   the smooth clouds, which every mammogram shares, are gone; the parenchyma's own texture stays),
   kept only well inside the breast (the skin line, every mammogram's strongest edge, is cut out);
3. zero-mean, then a seeded Gaussian random projection to ``dim`` numbers (Johnson–Lindenstrauss:
   inner products of unit vectors are kept to about ``1/sqrt(dim)``), unit norm.

Two sketches' inner product is then about the correlation of the two images' fine structure at
the same place: near 0 for different patients, ≈ α/√(α²+(1−α)²) for a blend with share α of
a training image (0.71 at α = 0.5) and ≈ √(area share) for a pasted region. The index stores
``dim`` numbers per training image (like the Siamese embeddings, not the pixels: a 512-number
random projection of a 12,288-pixel texture cannot be turned back into the image); the
projection is regenerated from its seed, never stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SKETCH_VERSION", "SketchConfig", "sketch_frames"]

#: Bumped whenever :func:`sketch_frames` changes what it computes (stored indexes then refuse to load).
SKETCH_VERSION = 1


@dataclass(frozen=True)
class SketchConfig:
    """How sketches are made (stored in the checker's config; change it and the index is rebuilt)."""

    size: tuple[int, int] = (128, 96)
    kernel: int = 5
    dim: int = 512
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "size": list(self.size), "version": SKETCH_VERSION}

    @classmethod
    def from_dict(cls, data: dict) -> SketchConfig:
        """The settings of a stored index; refuses one made by another version of :func:`sketch_frames`."""
        if data.get("version") != SKETCH_VERSION:
            from .index import IndexMismatchError

            raise IndexMismatchError(f"the checker's sketches were made by sketch version {data.get('version')}, "
                                     f"this code makes version {SKETCH_VERSION}: rebuild it with `mammosynth build-index`")
        return cls(size=tuple(int(v) for v in data["size"]), kernel=int(data["kernel"]), dim=int(data["dim"]),
                   seed=int(data["seed"]))


_PROJECTIONS: dict[SketchConfig, torch.Tensor] = {}

#: Pixels at or below this share of the range are background (outside the breast).
BACKGROUND = 0.02


def _projection(config: SketchConfig) -> torch.Tensor:
    """The seeded ``(pixels, dim)`` Gaussian projection (made once per process)."""
    if config not in _PROJECTIONS:
        generator = torch.Generator().manual_seed(config.seed)
        pixels = config.size[0] * config.size[1]
        _PROJECTIONS[config] = torch.randn((pixels, config.dim), generator=generator) / config.dim ** 0.5
    return _PROJECTIONS[config]


@torch.no_grad()
def sketch_frames(frames: np.ndarray, config: SketchConfig = SketchConfig(), batch_size: int = 128) -> np.ndarray:
    """Unit-norm sketches ``(N, dim)`` float32 of uint16 frames ``(N, H, W)`` (canonical orientation)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 3:
        raise ValueError(f"frames have to be a numpy array (N, H, W), got {getattr(frames, 'shape', type(frames))}")
    if config.kernel < 3 or config.kernel % 2 == 0:
        raise ValueError(f"the sketch kernel has to be an odd number >= 3, got {config.kernel}")
    projection = _projection(config)
    pad = config.kernel // 2
    out = np.empty((len(frames), config.dim), np.float32)
    for start in range(0, len(frames), batch_size):
        x = torch.from_numpy(np.asarray(frames[start : start + batch_size], np.float32)[:, None] / 65535.0)
        x = F.interpolate(x, size=tuple(config.size), mode="area")
        fine = x - F.avg_pool2d(F.pad(x, (pad,) * 4, mode="replicate"), config.kernel, stride=1)
        # inside the breast only: the skin line is where every mammogram has its strongest edge
        inside = F.avg_pool2d(F.pad((x > BACKGROUND).float(), (pad,) * 4, mode="replicate"), config.kernel, stride=1)
        fine = (fine * (inside > 0.999)).flatten(1)
        fine = fine - fine.mean(dim=1, keepdim=True)
        fine = fine / fine.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sketch = fine @ projection
        out[start : start + len(x)] = (sketch / sketch.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
    return out
