"""Pixels for the screen: window/level of 16-bit frames and the breast outline to draw on.

The app shows 8-bit renderings of 16-bit images through a window the user controls
((0028,1050) Window Center / (0028,1051) Window Width, linear VOI LUT); the downloads keep
all 16 bits. Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Window", "auto_window", "apply_window", "write_png8", "breast_outline"]


@dataclass(frozen=True)
class Window:
    """A linear window in percent of the 16-bit range: ``centre`` and ``width`` in (0, 100]."""

    centre: float = 50.0
    width: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.centre) <= 100.0:
            raise ValueError(f"window centre must be between 0 and 100 %, got {self.centre}")
        if not 0.0 < float(self.width) <= 200.0:
            raise ValueError(f"window width must be above 0 and at most 200 %, got {self.width}")

    @property
    def low_high(self) -> tuple[float, float]:
        """The window's lower and upper edge in 16-bit units."""
        centre, width = self.centre / 100.0 * 65535.0, self.width / 100.0 * 65535.0
        return centre - width / 2.0, centre + width / 2.0


def auto_window(frame: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> Window:
    """A window spanning the ``low_pct``–``high_pct`` percentiles of the non-background pixels.

    Background (value 0 padding, air) is ignored so that the breast fills the grey range.
    """
    frame = np.asarray(frame)
    values = frame[frame > 0]
    if values.size < 16:
        return Window()
    low, high = np.percentile(values, [low_pct, high_pct]) / 65535.0 * 100.0
    width = max(float(high - low), 0.5)
    centre = float(np.clip((low + high) / 2.0, 0.0, 100.0))
    return Window(round(centre, 2), round(min(width, 200.0), 2))


def apply_window(frame: np.ndarray, window: Window) -> np.ndarray:
    """uint16 ``(H, W)`` → uint8 ``(H, W)`` through a linear window (values outside clip)."""
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {frame.shape}")
    low, high = window.low_high
    scaled = (frame.astype(np.float32) - low) / max(high - low, 1e-6)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png8(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an 8-bit grayscale (``(H, W)``) or RGB (``(H, W, 3)``) array as PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
    return path


def breast_outline(height: int, width: int, view: str | None = None, laterality: str | None = None,
                   scale: int = 2) -> np.ndarray:
    """An RGB drawing of a breast outline (as displayed) to draw a lesion box on.

    The chest wall is at the left for a left breast (and when the side is not chosen) and at
    the right for a right breast; only MLO views show the pectoral muscle (a triangle at the
    top of the chest wall): a CC view has none, so its breast is one flat tone inside the skin
    line, with the nipple marked. ``scale`` enlarges the drawing so boxes are easy to draw; the
    box is read back in normalised coordinates, so the scale does not matter.
    """
    h, w = int(height) * scale, int(width) * scale
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth, half = 0.78 * w, 0.44 * h
    centre = 0.5 * h if view != "MLO" else 0.55 * h
    r = (xx / depth) ** 2 + ((yy - centre) / half) ** 2
    inside = r <= 1.0
    edge = (r > 0.93) & (r <= 1.0)
    image = np.full((h, w, 3), 18, np.uint8)
    image[inside] = (70, 70, 76)  # one flat tone: a wedge inside it would read as a pectoral muscle
    if view == "MLO":
        pectoral = (xx < 0.33 * w * (1.0 - yy / (0.55 * h)))
        image[pectoral & (yy < 0.55 * h)] = (125, 110, 110)
    image[edge] = (200, 200, 210)
    nipple_y, nipple_x = int(centre), int(min(depth, w - 1) - 3 * scale)
    image[max(nipple_y - 3 * scale, 0):nipple_y + 3 * scale, max(nipple_x - 3 * scale, 0):nipple_x + 3 * scale] = (200, 200, 210)
    if laterality == "R":
        image = np.ascontiguousarray(image[:, ::-1])
    return image
