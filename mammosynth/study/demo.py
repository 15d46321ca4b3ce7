"""Small prepared datasets for demos, tests, benchmarks and the notebook (no real patients).

:func:`make_demo_datasets` writes two prepared datasets in the standard format: a "real"
stand-in (``source="phantom"``) and a "synthetic" one (``source="synthetic"``) whose frames
have slightly different statistics (smoother texture, shifted brightness), with the same
label mix. They are random textures, not mammograms; they exist to exercise the study
machinery. A real study uses ``mammosynth ingest`` output and a generated set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["make_demo_datasets", "demo_frame", "write_demo_readers"]

_DENSITIES, _VIEWS, _LATS = ("A", "B", "C", "D"), ("CC", "MLO"), ("L", "R")
_LESIONS = ("none", "none", "mass", "calcification")


def demo_frame(rng: np.random.Generator, height: int, width: int, synthetic: bool) -> np.ndarray:
    """One random uint16 frame: a bright "breast" half-ellipse at the left plus texture."""
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx / (0.8 * width)) ** 2 + ((yy - height / 2) / (0.45 * height)) ** 2) < 1
    noise = rng.normal(0, 1, (height, width))
    if synthetic:  # smoother, slightly brighter
        noise = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))) / 2
    base = 0.55 + (0.04 if synthetic else 0.0)
    image = np.where(inside, base + 0.12 * noise, 0.0)
    return (np.clip(image, 0, 1) * 65535).astype(np.uint16)


def make_demo_datasets(
    root: str | os.PathLike, n_real: int = 40, n_synthetic: int = 40, height: int = 64, width: int = 48, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``root/real`` and ``root/synthetic`` prepared datasets; returns their paths.

    Labels cycle through density, view, laterality and lesion type identically in both sets
    so a study can match them. All "real" images are in the ``test`` split.
    """
    from ..data.prepared import PreparedWriter

    root = Path(root)
    rng = np.random.default_rng(seed)
    paths = []
    for kind, count in (("real", n_real), ("synthetic", n_synthetic)):
        folder = root / kind
        with PreparedWriter(folder, height, width, meta={"source": kind, "demo": True}) as writer:
            for i in range(count):
                lesion = _LESIONS[i % 4]
                row = {
                    "study_id": f"{kind}-s{i // 2:04d}",
                    "image_id": f"{kind}-{i:05d}",
                    "split": "test" if kind == "real" else "generated",
                    "laterality": _LATS[(i // 2) % 2],
                    "view": _VIEWS[i % 2],
                    "birads": 1 if lesion == "none" else 4,
                    "density": _DENSITIES[(i // 4) % 4],
                    "lesion": lesion,
                    "cancer": 0 if lesion == "none" else 1,
                    "findings": [],
                    "source": "synthetic" if kind == "synthetic" else "phantom",
                    "extra": {"seed": int(seed), "demo": True} if kind == "synthetic" else {},
                }
                writer.add(demo_frame(rng, height, width, kind == "synthetic"), row)
            writer.finalize()
        paths.append(folder)
    return paths[0], paths[1]


def write_demo_readers(path: str | os.PathLike, n_readers: int, password: str = "demo", admin: bool = True) -> Path:
    """A readers.csv with ``reader01..`` (and ``admin``), all with the same demo password.

    Hashing uses the standard scrypt parameters, so this takes ~50 ms per account.
    """
    from .readers import Reader, Role, hash_password, readers_csv_text

    stored = hash_password(password)  # one salt for all demo accounts keeps demos fast
    readers = [Reader(f"reader{i + 1:02d}", f"Reader {i + 1}", Role.READER, stored) for i in range(n_readers)]
    if admin:
        readers.append(Reader("admin", "Study admin", Role.ADMIN, stored))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(readers_csv_text(readers), encoding="utf-8")
    return path
