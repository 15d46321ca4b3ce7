"""Tiny prepared datasets with known identities for the privacy tests (+ tests of them).

Each "study" has its own random smooth tissue pattern; its 4 images (L/R × CC/MLO) are
differently shifted, scaled and noised views of that pattern inside a breast outline, so a
re-ID network can learn identity from them and two studies never share a pattern.
Other privacy test files import :func:`make_prepared` from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, map_coordinates

from mammosynth.data.prepared import PreparedWriter, load_prepared

VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))


def _study_pattern(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    field = gaussian_filter(rng.normal(size=(size, size)), 3.0)
    field += 0.5 * gaussian_filter(rng.normal(size=(size, size)), 1.2)
    return (field - field.mean()) / field.std()


def _render(pattern: np.ndarray, rng: np.random.Generator, h: int, w: int, jitter: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scale = 1.0 + jitter * rng.uniform(-0.06, 0.06)
    dy, dx = jitter * rng.uniform(-3, 3, size=2)
    coords = [(yy - h / 2) * scale + pattern.shape[0] / 2 + dy, (xx - w / 2) * scale + pattern.shape[1] / 2 + dx]
    tissue = map_coordinates(pattern, coords, order=1, mode="reflect")
    breast = ((yy - h / 2) / (0.48 * h)) ** 2 + (xx / (0.95 * w)) ** 2 < 1.0
    image = 0.45 + 0.12 * tissue + 0.03 * jitter * rng.normal(size=(h, w))
    image = np.where(breast, image, 0.0)
    return np.clip(image * 65535, 0, 65535).astype(np.uint16)


def study_patterns(seed: int, count: int, height: int = 64, width: int = 48) -> list[np.ndarray]:
    """The tissue patterns of the first ``count`` studies that :func:`make_prepared` makes for ``seed``."""
    rng = np.random.default_rng(seed)
    patterns = []
    for _ in range(count):
        patterns.append(_study_pattern(rng))
        for _ in VIEWS:
            _render(patterns[-1], rng, height, width)
    return patterns


def make_prepared(root: Path, studies: int = 10, test_studies: int = 4, height: int = 64, width: int = 48,
                  seed: int = 0, source: str = "phantom", split_all: str | None = None,
                  patterns: list[np.ndarray] | None = None, extra: list[dict] | None = None) -> Path:
    """Write a tiny prepared dataset: ``studies`` training + ``test_studies`` test studies, 4 images each.

    ``patterns`` (one per study) reuses given tissue patterns; ``split_all`` puts every row in
    one split (e.g. ``synthetic``); ``extra`` gives each image's ``extra`` field.
    """
    rng = np.random.default_rng(seed)
    total = studies + test_studies
    with PreparedWriter(root, height, width) as writer:
        for s in range(total):
            pattern = patterns[s] if patterns is not None else _study_pattern(rng)
            split = split_all or ("training" if s < studies else "test")
            study_id = f"{seed:02d}{s:030x}"
            for v, (laterality, view) in enumerate(VIEWS):
                k = s * 4 + v
                writer.add(_render(pattern, rng, height, width), {
                    "study_id": study_id, "image_id": f"{seed:02d}{s:026x}{v:04x}", "split": split,
                    "laterality": laterality, "view": view, "birads": 1, "density": "B", "lesion": "none",
                    "cancer": 0, "findings": "[]", "source": source,
                    "extra": json.dumps(extra[k]) if extra else "{}",
                })
        writer.finalize()
    return root


def test_make_prepared_has_identities(tmp_path):
    data = load_prepared(make_prepared(tmp_path / "d", studies=3, test_studies=2))
    assert (data.height, data.width) == (64, 48)
    assert data.manifest.groupby("study_id").size().tolist() == [4] * 5
    assert set(data.split("test")["study_id"]).isdisjoint(set(data.split("training")["study_id"]))
    frames = data.frames(data.manifest["index"].to_numpy()).astype(np.float64)
    flat = frames.reshape(len(frames), -1)
    flat = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)
    corr = flat @ flat.T / flat.shape[1]
    same = np.equal.outer(np.arange(20) // 4, np.arange(20) // 4) & ~np.eye(20, dtype=bool)
    # same-study images correlate more than different-study ones (identity is learnable)
    assert corr[same].mean() > corr[~same & ~np.eye(20, dtype=bool)].mean() + 0.05


@pytest.fixture
def tiny_prepared(tmp_path):
    return make_prepared(tmp_path / "prepared")
