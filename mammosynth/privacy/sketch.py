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

A whole-frame correlation at the same place is lost as soon as the copy moves: an elastic warp of
a few pixels, a re-framing. So the sketch has a second, local part (version 2): the fine structure
cut into ``block``×``block`` blocks, each projected to ``block_dim`` numbers by its own seeded
projection and stored as int8 (the index holds ``blocks × block_dim`` bytes per training image,
again not the pixels). A generated frame is compared with a few *candidate* training images
(its Siamese nearest neighbours and the whole-frame sketch's nearest): for every block of the
candidate, the best correlation of that block with the frame's structure shifted by up to
``shift`` pixels either way (every shift at once, as one convolution); the local similarity is
the mean of these over the candidate's blocks inside the breast, and the best candidate's is the
detector's score. A copy bent, shifted or re-framed by a few pixels keeps each block's structure
nearby (0.5-0.9); another patient's best shift only finds chance structure (0.4-0.5 with
64 numbers a block, calibrated on unseen patients like the Siamese threshold).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SKETCH_VERSION", "SketchConfig", "sketch_frames", "block_sketches", "local_similarity", "sketch_scores"]

#: Bumped whenever :func:`sketch_frames` changes what it computes (stored indexes then refuse to load).
SKETCH_VERSION = 2


@dataclass(frozen=True)
class SketchConfig:
    """How sketches are made (stored in the checker's config; change it and the index is rebuilt).

    ``size``: the frame is area-averaged to this; ``kernel``: the box blur taken away (odd);
    ``dim``: numbers of the whole-frame sketch; ``block``: side of a local block in pixels of
    ``size``; ``shift``: how far (pixels of ``size``) each block is searched either way;
    ``block_dim``: numbers per block; ``seed``: of the projections.
    """

    size: tuple[int, int] = (128, 96)
    kernel: int = 7
    dim: int = 512
    seed: int = 0
    block: int = 16
    shift: int = 6
    block_dim: int = 64

    def __post_init__(self) -> None:
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise ValueError(f"the sketch kernel has to be an odd number >= 3, got {self.kernel}")
        if not self.kernel <= self.block <= min(self.size):
            raise ValueError(f"the sketch block has to be between the kernel ({self.kernel}) and the sketch size "
                             f"{tuple(self.size)}, got {self.block}")
        if self.shift < 0 or self.dim < 1 or self.block_dim < 1:
            raise ValueError(f"shift has to be >= 0 and dim, block_dim >= 1, got shift {self.shift}, dim {self.dim}, "
                             f"block_dim {self.block_dim}")

    @property
    def blocks(self) -> tuple[int, int]:
        """Blocks down and across (the rim beyond whole blocks is left out)."""
        return self.size[0] // self.block, self.size[1] // self.block

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
                   seed=int(data["seed"]), block=int(data["block"]), shift=int(data["shift"]),
                   block_dim=int(data["block_dim"]))


_PROJECTIONS: dict[object, torch.Tensor] = {}  # by config (whole) and ("block", config)

#: Pixels at or below this share of the range are background (outside the breast).
BACKGROUND = 0.02


def _projection(config: SketchConfig) -> torch.Tensor:
    """The seeded ``(pixels, dim)`` Gaussian projection (made once per process)."""
    if config not in _PROJECTIONS:
        generator = torch.Generator().manual_seed(config.seed)
        pixels = config.size[0] * config.size[1]
        _PROJECTIONS[config] = torch.randn((pixels, config.dim), generator=generator) / config.dim ** 0.5
    return _PROJECTIONS[config]


def _block_projection(config: SketchConfig) -> torch.Tensor:
    """The seeded ``(block_dim, 1, block, block)`` projection of one block, as convolution kernels."""
    key = ("block", config)
    if key not in _PROJECTIONS:
        generator = torch.Generator().manual_seed(config.seed + 1)
        weights = torch.randn((config.block_dim, 1, config.block, config.block), generator=generator)
        _PROJECTIONS[key] = weights / config.block_dim ** 0.5
    return _PROJECTIONS[key]


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 3:
        raise ValueError(f"frames have to be a numpy array (N, H, W), got {getattr(frames, 'shape', type(frames))}")


def _fine(frames: np.ndarray, config: SketchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The fine structure ``(N, 1, *size)`` inside the breast, and where it is inside."""
    pad = config.kernel // 2
    x = torch.from_numpy(np.asarray(frames, np.float32)[:, None] / 65535.0)
    x = F.interpolate(x, size=tuple(config.size), mode="area")
    fine = x - F.avg_pool2d(F.pad(x, (pad,) * 4, mode="replicate"), config.kernel, stride=1)
    # inside the breast only: the skin line is where every mammogram has its strongest edge
    inside = F.avg_pool2d(F.pad((x > BACKGROUND).float(), (pad,) * 4, mode="replicate"), config.kernel, stride=1) > 0.999
    return fine * inside, inside


@torch.no_grad()
def sketch_frames(frames: np.ndarray, config: SketchConfig = SketchConfig(), batch_size: int = 128) -> np.ndarray:
    """Unit-norm sketches ``(N, dim)`` float32 of uint16 frames ``(N, H, W)`` (canonical orientation)."""
    _check_frames(frames)
    projection = _projection(config)
    out = np.empty((len(frames), config.dim), np.float32)
    for start in range(0, len(frames), batch_size):
        fine = _fine(frames[start : start + batch_size], config)[0].flatten(1)
        fine = fine - fine.mean(dim=1, keepdim=True)
        fine = fine / fine.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sketch = fine @ projection
        out[start : start + len(fine)] = (sketch / sketch.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
    return out


@torch.no_grad()
def block_sketches(frames: np.ndarray, config: SketchConfig = SketchConfig(), batch_size: int = 128) -> np.ndarray:
    """The local part of the sketch: int8 ``(N, blocks, block_dim)``, each block's fine structure
    (zero-mean) projected and scaled to unit norm × 127; all zeros for a block not wholly inside the breast."""
    _check_frames(frames)
    kernels, b = _block_projection(config), config.block
    rows, cols = config.blocks
    out = np.zeros((len(frames), rows * cols, config.block_dim), np.int8)
    for start in range(0, len(frames), batch_size):
        fine, inside = _fine(frames[start : start + batch_size], config)
        fine, inside = fine[..., : rows * b, : cols * b], inside[..., : rows * b, : cols * b]
        means = F.avg_pool2d(fine, b, stride=b).repeat_interleave(b, 2).repeat_interleave(b, 3)
        blocks = F.conv2d(fine - means, kernels, stride=b).flatten(2).transpose(1, 2)  # (n, blocks, block_dim)
        blocks = blocks / blocks.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        whole = F.avg_pool2d(inside.float(), b, stride=b).flatten(1) > 0.999
        out[start : start + len(fine)] = torch.round(blocks * whole[..., None] * 127).to(torch.int8).numpy()
    return out


def _search_positions(config: SketchConfig) -> torch.Tensor:
    """``(blocks, (2 shift + 1)²)``: for each block and shift, its window in the padded frame's
    stride-1 grid of windows (flattened)."""
    b, r = config.block, config.shift
    rows, cols = config.blocks
    across = config.size[1] + 2 * r - b + 1
    by, bx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    dy, dx = torch.meshgrid(torch.arange(2 * r + 1), torch.arange(2 * r + 1), indexing="ij")
    return (by.reshape(-1, 1) * b + dy.reshape(1, -1)) * across + bx.reshape(-1, 1) * b + dx.reshape(1, -1)


@torch.no_grad()
def local_similarity(frames: np.ndarray, stored: torch.Tensor, candidates: np.ndarray,
                     config: SketchConfig = SketchConfig(), batch_size: int = 16) -> np.ndarray:
    """The local detector's score ``(N,)``: for each frame, the best over its candidate training images
    of the mean (over the candidate's blocks inside the breast) of each block's best correlation with
    the frame's structure shifted by up to ``shift`` pixels.

    Args:
        frames: uint16 ``(N, H, W)``.
        stored: the index's :func:`block_sketches` ``(M, blocks, block_dim)`` (an int8 tensor).
        candidates: ``(N, C)`` rows of ``stored`` to compare each frame with.
    """
    _check_frames(frames)
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or len(candidates) != len(frames):
        raise ValueError(f"candidates have to be (N, C) for {len(frames)} frames, got {candidates.shape}")
    rows, cols = config.blocks
    if tuple(stored.shape[1:]) != (rows * cols, config.block_dim):
        raise ValueError(f"stored block sketches are {tuple(stored.shape)}; the settings make (M, {rows * cols}, "
                         f"{config.block_dim})")
    kernels, b, r = _block_projection(config), config.block, config.shift
    positions, ones = _search_positions(config), kernels.sum(dim=(1, 2, 3))
    out = np.zeros(len(frames), np.float32)
    for start in range(0, len(frames), batch_size):
        fine = F.pad(_fine(frames[start : start + batch_size], config)[0], (r,) * 4)
        # every window's projection at once: P(w - mean(w)) = Pw - mean(w) P1
        windows = F.conv2d(fine, kernels) - F.avg_pool2d(fine, b, stride=1) * ones[None, :, None, None]
        windows = windows.flatten(2).transpose(1, 2)[:, positions]     # (n, blocks, shifts, block_dim)
        windows = windows / windows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        chosen = stored[torch.from_numpy(candidates[start : start + batch_size]).long()].float() / 127.0
        best = torch.einsum("nbsd,ncbd->ncbs", windows, chosen).amax(dim=-1)   # (n, C, blocks)
        inside = (chosen.abs().sum(dim=-1) > 0).float()
        mean = (best * inside).sum(dim=-1) / inside.sum(dim=-1).clamp_min(1.0)
        out[start : start + len(fine)] = mean.amax(dim=1).numpy()
    return out


def sketch_scores(frames: np.ndarray, whole_index: torch.Tensor, block_index: torch.Tensor, neighbours: np.ndarray,
                  config: SketchConfig = SketchConfig()) -> np.ndarray:
    """The copy detector's two scores ``(N, 2)``: each frame's best whole-frame sketch similarity to the
    index ``whole_index`` ``(M, dim)``, and its :func:`local_similarity` to its candidates, the rows
    ``neighbours`` ``(N, k)`` (its Siamese search) and its nearest by the whole-frame sketch."""
    whole = torch.from_numpy(sketch_frames(frames, config)) @ whole_index.float().T
    best, nearest = whole.max(dim=1)
    candidates = np.concatenate([np.asarray(neighbours).reshape(len(frames), -1), nearest.numpy()[:, None]], axis=1)
    return np.stack([best.numpy(), local_similarity(frames, block_index, candidates, config)], axis=1)
