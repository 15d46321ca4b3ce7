"""The visible tells of a synthetic mammogram, measured: background, edge lines and texture spectrum.

Three pure functions over a set of display frames ``(N, H, W)`` uint16 (as a prepared dataset or
a synthetic set holds them), each compared between two sets by :func:`compare_texture`:

* :func:`background_stats` – the pixels outside the breast (the tissue mask, grown by a margin so
  the skin line's fall-off is not counted): their mean and standard deviation in % of the 16-bit
  range. Real phantom backgrounds are black with detector noise; a denoiser that leaves a grey
  haze raises both.
* :func:`edge_lines` – the outermost pixel line of each image side minus the band just inside it,
  in % of the range: a decoder or padding artefact draws a line along an edge.
* :func:`band_power` – the power spectrum of the parenchyma in octave bands: Hann-windowed square
  regions wholly inside the breast, radially binned by spatial frequency (cycles/pixel) into
  octaves up to Nyquist. "Smooth clouds with fine grain" and "coarse mottle" differ here.

Lower differences to the real set are better; the real-vs-real floor (training vs test images) says
what no difference looks like at the same sample size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..data.prepare import tissue_mask

__all__ = ["breast_masks", "background_stats", "edge_lines", "band_power", "compare_texture", "crop_origin", "write_pairs_figure",
           "OCTAVE_EDGES"]

_RANGE = 65535.0

#: Octave band edges in cycles/pixel for the default 64-pixel regions: 1/64 … 1/2 (Nyquist).
OCTAVE_EDGES: tuple[float, ...] = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be a non-empty (N, H, W) array, got shape {frames.shape}")
    return frames


def breast_masks(frames: np.ndarray) -> np.ndarray:
    """Boolean breast masks ``(N, H, W)``: the largest bright connected region of each frame
    (:func:`mammosynth.data.prepare.tissue_mask`, the rule ingestion crops with)."""
    frames = _check_frames(frames)
    return np.stack([tissue_mask(frame.astype(np.float32)) for frame in frames])


def background_stats(frames: np.ndarray, margin: int = 4, masks: np.ndarray | None = None) -> dict[str, float]:
    """Mean and standard deviation of all pixels outside the breast, in % of the 16-bit range.

    Args:
        frames: ``(N, H, W)`` display frames.
        margin: pixels the breast mask is grown by before the background is taken.
        masks: :func:`breast_masks` of ``frames`` if already made.

    Returns:
        ``{"mean": ..., "std": ..., "fraction": share of pixels that are background}``; mean and
        std are ``nan`` when no image has background.
    """
    frames = _check_frames(frames)
    masks = breast_masks(frames) if masks is None else masks
    if margin > 0:
        grow = np.ones((1, 2 * margin + 1, 2 * margin + 1), dtype=bool)
        masks = ndimage.binary_dilation(masks, structure=grow)
    values = frames[~masks].astype(np.float64) / _RANGE * 100
    if values.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "fraction": 0.0}
    return {"mean": float(values.mean()), "std": float(values.std()), "fraction": float(values.size / frames.size)}


def edge_lines(frames: np.ndarray, inner: tuple[int, int] = (2, 5)) -> dict[str, float]:
    """Per image side, the mean of its outermost pixel line minus the mean of the band
    ``inner`` pixels in (``[2, 5)`` by default), in % of the range, averaged over images.

    A positive value is a bright line along that edge. The chest wall touches the left edge in
    the canonical frame, so there a real image has tissue on both sides of the line as well.
    """
    frames = _check_frames(frames).astype(np.float64) / _RANGE * 100
    a, b = inner
    sides = {
        "top": (frames[:, 0, :], frames[:, a:b, :]),
        "bottom": (frames[:, -1, :], frames[:, -b:frames.shape[1] - a, :]),
        "left": (frames[:, :, 0], frames[:, :, a:b]),
        "right": (frames[:, :, -1], frames[:, :, -b:frames.shape[2] - a]),
    }
    return {side: float(line.mean() - band.mean()) for side, (line, band) in sides.items()}


def _regions(frame: np.ndarray, mask: np.ndarray, size: int, per_image: int) -> list[np.ndarray]:
    """Up to ``per_image`` ``size``-square regions wholly inside ``mask``, on a half-overlapping grid."""
    inside = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=2)
    height, width = frame.shape
    stride = size // 2
    found = []
    for y in range(0, height - size + 1, stride):
        for x in range(0, width - size + 1, stride):
            if inside[y:y + size, x:x + size].all():
                found.append(frame[y:y + size, x:x + size])
    if len(found) > per_image:  # spread over the breast, not the first rows only
        found = [found[i] for i in np.linspace(0, len(found) - 1, per_image).round().astype(int)]
    return found


def band_power(frames: np.ndarray, size: int = 64, per_image: int = 4, edges: tuple[float, ...] = OCTAVE_EDGES,
               masks: np.ndarray | None = None) -> dict[str, Any]:
    """Mean power spectral density of the parenchyma in frequency bands.

    Each region (``size`` × ``size``, wholly inside the breast) has its mean removed and a 2-D Hann
    window applied; its periodogram ``|FFT|² / size²`` is averaged over the frequency bins whose
    radial frequency lies in ``[edges[k], edges[k+1])`` (the last band includes Nyquist).

    Returns:
        ``{"edges": [...], "power": [one value per band], "regions": count}``; ``power`` is all
        ``nan`` when no region fits.
    """
    frames = _check_frames(frames)
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must be at least two increasing frequencies, got {edges}")
    masks = breast_masks(frames) if masks is None else masks
    window = np.outer(np.hanning(size), np.hanning(size))
    freq = np.fft.fftfreq(size)
    radius = np.hypot(*np.meshgrid(freq, freq, indexing="ij"))
    bands = [(radius >= lo) & ((radius < hi) if k < len(edges) - 2 else (radius <= hi))
             for k, (lo, hi) in enumerate(zip(edges, edges[1:]))]
    total = np.zeros(len(bands))
    count = 0
    for frame, mask in zip(frames, masks):
        for region in _regions(frame.astype(np.float64) / _RANGE, mask, size, per_image):
            spectrum = np.abs(np.fft.fft2((region - region.mean()) * window)) ** 2 / size**2
            total += [spectrum[band].mean() for band in bands]
            count += 1
    power = (total / count).tolist() if count else [float("nan")] * len(bands)
    return {"edges": list(edges), "power": power, "regions": count}


def compare_texture(real: np.ndarray, fake: np.ndarray, **band_kwargs: Any) -> dict[str, Any]:
    """Background, edge lines and band power of ``fake`` against ``real``.

    Returns a dict with each set's values and the differences the quality bar is stated in:
    ``background_mean_diff`` / ``background_std_diff`` (percentage points of the range, fake −
    real), ``edge_line_diff`` (per side, fake − real) and ``band_power_ratio`` (fake / real per
    band) with ``band_power_max_deviation`` = max over bands of ``|ratio − 1|`` (0.1 = within 10 %).
    """
    sets = {"real": _check_frames(real), "fake": _check_frames(fake)}
    masks = {name: breast_masks(frames) for name, frames in sets.items()}  # once per set, for both measures
    background = {name: background_stats(frames, masks=masks[name]) for name, frames in sets.items()}
    edges = {name: edge_lines(frames) for name, frames in sets.items()}
    power = {name: band_power(frames, masks=masks[name], **band_kwargs) for name, frames in sets.items()}
    ratio = np.asarray(power["fake"]["power"]) / np.asarray(power["real"]["power"])
    return {
        "background": background,
        "background_mean_diff": background["fake"]["mean"] - background["real"]["mean"],
        "background_std_diff": background["fake"]["std"] - background["real"]["std"],
        "edge_lines": edges,
        "edge_line_diff": {side: edges["fake"][side] - edges["real"][side] for side in edges["real"]},
        "band_power": power,
        "band_power_ratio": ratio.tolist(),
        "band_power_max_deviation": float(np.max(np.abs(ratio - 1))),
    }


def crop_origin(frame: np.ndarray, crop: tuple[int, int], centre: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(top, left)`` of a ``crop``-sized window centred on ``centre`` (row, column), or on the breast's
    centre (the tissue mask's centroid) when none is given; clipped to the frame."""
    h, w = frame.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    if centre is None:
        centre = tuple(int(v) for v in np.argwhere(tissue_mask(frame.astype(np.float32))).mean(axis=0))
    return int(np.clip(centre[0] - ch // 2, 0, h - ch)), int(np.clip(centre[1] - cw // 2, 0, w - cw))


def write_pairs_figure(real: np.ndarray, other: np.ndarray, path: Path, zoom: int = 3, crop: tuple[int, int] = (64, 48),
                       centres: list[tuple[int, int] | None] | None = None) -> Path:
    """A 16-bit PNG with one row per pair: real | other at 1:1, then both ×``zoom`` (pixels repeated)
    in the :func:`crop_origin` window (around ``centres[i]``, or the real breast's centre), white gaps
    between."""
    from PIL import Image

    real, other = _check_frames(real), _check_frames(other)
    if real.shape != other.shape:
        raise ValueError(f"the two sets must have the same shape, got {real.shape} and {other.shape}")
    _, h, w = real.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    height = max(h, ch * zoom)
    strips = []
    for i, (a, b) in enumerate(zip(real, other)):
        top, left = crop_origin(a, (ch, cw), None if centres is None else centres[i])
        zoomed = [np.repeat(np.repeat(x[top:top + ch, left:left + cw], zoom, 0), zoom, 1) for x in (a, b)]
        tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0))) for t in (a, b, *zoomed)]
        gap = np.full((height, 4), 65535, np.uint16)
        strips.append(np.concatenate([part for t in tiles for part in (t.astype(np.uint16), gap)][:-1], axis=1))
    gap = np.full((4, strips[0].shape[1]), 65535, np.uint16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([part for s in strips for part in (s, gap)][:-1], axis=0)).save(path)
    return path
