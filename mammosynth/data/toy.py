"""Tiny labelled toy datasets in the prepared format, for tests, benchmarks and notebooks.

Not a phantom (see :mod:`mammosynth.data.phantom` for that): a fast, fully controlled
picture whose labels are easy to learn, so that metrics can be checked against known
answers. The breast is a half ellipse at the chest wall (x = 0); density sets the tissue
brightness; MLO views carry a bright pectoral triangle; each lesion type has its own mark
inside its box (mass: disc, calcification: dots, distortion: lines, asymmetry: soft
blob); cancer (BI-RADS ≥ 4) goes with masses and calcifications. ``shift`` adds a
brightness offset and coarse noise, to make a set that differs from the unshifted one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..conditions import Density, Lesion
from .prepared import PreparedWriter

__all__ = ["toy_frame", "write_toy_dataset"]

_BRIGHTNESS = {"A": 0.25, "B": 0.4, "C": 0.55, "D": 0.7}


def _hex_id(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:32]


def toy_frame(height: int, width: int, density: str, view: str, lesion: str,
              box: tuple[int, int, int, int] | None, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """One uint16 toy frame (canonical orientation) with the given labels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, ry, rx = height / 2, height * rng.uniform(0.38, 0.46), width * rng.uniform(0.7, 0.9)
    inside = ((x / rx) ** 2 + ((y - cy) / ry) ** 2) <= 1.0
    image = np.where(inside, _BRIGHTNESS[density] + 0.05 * rng.standard_normal((height, width)), 0.0)
    if view == "MLO":
        image = np.where((x < width * 0.35) & (y < height * 0.4 - x * 1.1) & inside, 0.9, image)
    if lesion != "none" and box is not None:
        x0, y0, x1, y1 = box
        mx, my, r = (x0 + x1) / 2, (y0 + y1) / 2, max(1.0, min(x1 - x0, y1 - y0) / 2)
        if lesion == "mass":
            image = np.where((x - mx) ** 2 + (y - my) ** 2 <= r * r, 1.0, image)
        elif lesion == "calcification":
            for _ in range(5):
                px, py = rng.integers(x0, max(x0 + 1, x1)), rng.integers(y0, max(y0 + 1, y1))
                image[py, px] = 1.0
        elif lesion == "architectural_distortion":
            image[int(my), x0:x1] = 1.0
            image[y0:y1, int(mx)] = 1.0
        else:
            image = image + 0.25 * np.exp(-((x - mx) ** 2 + (y - my) ** 2) / (2 * r * r))
    if shift:
        coarse = rng.standard_normal((max(1, height // 8), max(1, width // 8)))
        image = image + shift * (0.5 + np.kron(coarse, np.ones((8, 8)))[:height, :width]) * inside
    return (np.clip(image, 0.0, 1.0) * 65535).astype(np.uint16)


def write_toy_dataset(root: str | os.PathLike, n: int, height: int = 64, width: int = 48, seed: int = 0,
                      split: str | tuple[str, ...] = ("training", "test"), test_fraction: float = 0.3,
                      shift: float = 0.0, source: str = "toy") -> Path:
    """Write ``n`` labelled toy images as a prepared dataset and return its folder.

    Args:
        root: output folder (must not hold another dataset).
        n: number of images (4 per study: L/R × CC/MLO).
        height, width: frame size (multiples of 8).
        seed: random seed; the same seed gives the same labels *and* pixels.
        split: one split name for all rows, or ``(train_name, test_name)`` split by study.
        test_fraction: share of studies in the test split when two names are given.
        shift: distribution shift strength (0 = none).
        source: the manifest ``source`` value.
    """
    rng = np.random.default_rng(seed)
    densities = [d.value for d in Density]
    lesions = [l.value for l in Lesion if l is not Lesion.NONE]
    with PreparedWriter(root, height, width, meta={"source": source, "toy": True, "seed": seed}) as writer:
        for i in range(n):
            study = i // 4
            if isinstance(split, str):
                split_name = split
            else:
                split_name = split[1] if (study * 7919 + seed) % 1000 < test_fraction * 1000 else split[0]
            density = densities[int(rng.choice(4, p=[0.1, 0.3, 0.45, 0.15]))]
            view = "CC" if i % 2 == 0 else "MLO"
            laterality = "L" if (i // 2) % 2 == 0 else "R"
            lesion = "none" if rng.random() < 0.5 else lesions[int(rng.integers(len(lesions)))]
            box = None
            if lesion != "none":
                bw, bh = int(width * rng.uniform(0.15, 0.25)), int(height * rng.uniform(0.12, 0.2))
                x0 = int(rng.integers(int(width * 0.15), int(width * 0.6) - bw + 1))
                y0 = int(rng.integers(int(height * 0.25), int(height * 0.75) - bh + 1))
                box = (x0, y0, x0 + bw, y0 + bh)
            if lesion in ("mass", "calcification"):
                birads = int(rng.choice([3, 4, 5], p=[0.1, 0.5, 0.4]))
            elif lesion == "none":
                birads = int(rng.choice([1, 2], p=[0.8, 0.2]))
            else:
                birads = int(rng.choice([2, 3, 4], p=[0.4, 0.45, 0.15]))
            frame = toy_frame(height, width, density, view, lesion, box, rng, shift)
            findings = [{"category": "No Finding", "lesion": "none", "birads": None, "box": None}]
            if lesion != "none":
                findings = [{"category": lesion, "lesion": lesion, "birads": birads, "box": list(box)}]
            writer.add(frame, {
                "study_id": _hex_id(source, seed, "study", study), "image_id": _hex_id(source, seed, "image", i),
                "split": split_name, "laterality": laterality, "view": view, "birads": birads,
                "density": density, "lesion": lesion, "cancer": int(birads >= 4), "findings": findings,
                "source": source, "extra": {"toy_seed": seed},
            })
        return writer.finalize()
