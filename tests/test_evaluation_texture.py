"""Background, edge-line and band-power measures of the visible tells (evaluation.texture)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mammosynth.evaluation.texture import background_stats, band_power, compare_texture, edge_lines


def breast_frames(n: int = 6, seed: int = 0, smooth: float = 0.0, haze: float = 0.0, line: float = 0.0,
                  size: tuple[int, int] = (256, 192)) -> np.ndarray:
    """Half-ellipse "breasts" at the left edge filled with noise texture, a black background
    (``haze``: its grey level, in % of the range), ``line``: a bright top row, in % of the range."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 <= 1
    frames = np.empty((n, h, w), dtype=np.uint16)
    for i in range(n):
        texture = rng.normal(size=(h, w))
        if smooth:
            texture = ndimage.gaussian_filter(texture, smooth)
            texture /= texture.std()
        image = np.where(inside, 0.5 + 0.08 * texture, haze / 100 + 0.002 * rng.normal(size=(h, w)))
        if line:
            image[0, :] += line / 100
        frames[i] = (np.clip(image, 0, 1) * 65535).astype(np.uint16)
    return frames


def test_background_is_measured_outside_the_breast_in_percent_of_the_range():
    black = background_stats(breast_frames(haze=0.0))
    grey = background_stats(breast_frames(haze=3.0))
    assert 0 <= black["mean"] < 0.3 and 0.2 < black["fraction"] < 0.8
    assert grey["mean"] == pytest.approx(3.0, abs=0.1)  # the haze, not the tissue
    assert grey["std"] == pytest.approx(0.2, abs=0.05)  # the 0.002 noise, in % of the range
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        background_stats(np.zeros((64, 48), np.uint16))


def test_an_edge_line_shows_on_its_side_only():
    plain = edge_lines(breast_frames())
    lined = edge_lines(breast_frames(line=5.0))
    assert lined["top"] - plain["top"] == pytest.approx(5.0, abs=0.5)
    for side in ("bottom", "left", "right"):
        assert lined[side] == pytest.approx(plain[side], abs=0.05)  # only their one corner pixel moved


def test_band_power_tells_fine_grain_from_coarse_mottle():
    fine = band_power(breast_frames(smooth=0.0))
    coarse = band_power(breast_frames(smooth=3.0))
    assert fine["regions"] > 0 and len(fine["power"]) == len(fine["edges"]) - 1
    # white noise puts more power at high frequencies than smoothed noise, less at low ones
    assert fine["power"][-1] > 10 * coarse["power"][-1]
    assert coarse["power"][0] > fine["power"][0]
    # the same set compared with itself (another draw) is within a few per cent in every band
    same = compare_texture(breast_frames(seed=1), breast_frames(seed=2))
    assert same["band_power_max_deviation"] < 0.1
    assert abs(same["background_mean_diff"]) < 0.05
    different = compare_texture(breast_frames(seed=1), breast_frames(seed=2, smooth=3.0, haze=3.0))
    assert different["band_power_max_deviation"] > 0.5
    assert different["background_mean_diff"] == pytest.approx(3.0, abs=0.2)
    with pytest.raises(ValueError, match="increasing"):
        band_power(breast_frames(), edges=(0.25, 0.1))
