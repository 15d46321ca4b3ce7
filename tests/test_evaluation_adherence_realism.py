"""Condition adherence (label accuracy, box localisation) and the classifier two-sample test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.conditions import Box
from mammosynth.evaluation.adherence import adherence_scores, box_iou, compare_adherence, localisation_scores
from mammosynth.evaluation.classifiers import Recipe
from mammosynth.evaluation.realism import c2st_images


def test_box_iou_known_values():
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(2 / 6)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_localisation_hit_and_iou_on_hand_made_heat_maps():
    heat = np.zeros((3, 1, 10, 10))
    heat[0, 0, 2:4, 2:4] = 0.9   # exactly the requested box → hit, IoU 1
    heat[1, 0, 8, 8] = 0.9       # far away → miss, IoU 0
    heat[2, 0, 5, 5] = 0.2       # no box requested → skipped
    boxes = [Box(0.2, 0.2, 0.4, 0.4), Box(0.2, 0.2, 0.4, 0.4), None]
    result = localisation_scores(heat, boxes)
    assert result == {"hit_rate": 0.5, "mean_iou": pytest.approx(0.5), "n": 2}
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(localisation_scores(heat, [None] * 3)["hit_rate"])
    with pytest.raises(ValueError, match="heat maps"):
        localisation_scores(heat, boxes[:2])


def test_adherence_scores_and_ratio():
    probs = {"lesion": np.eye(5)[[0, 1, 2, 3]], "density": np.eye(4)[[0, 0, 0, 0]], "view": np.eye(2)[[0, 1, 0, 1]]}
    targets = {"lesion": np.array([0, 1, 2, 4]), "density": np.array([0, 1, -1, -1]), "view": np.array([0, 1, 0, 1])}
    synthetic = adherence_scores(probs, targets)
    assert synthetic == {"lesion_accuracy": 0.75, "density_accuracy": 0.5, "view_accuracy": 1.0}
    real = {"lesion_accuracy": 1.0, "density_accuracy": 0.5, "view_accuracy": 1.0}
    compared = compare_adherence(synthetic, real)
    assert compared["ratio"] == {"lesion_accuracy": 0.75, "density_accuracy": 1.0, "view_accuracy": 1.0}


def _images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = 0.3 * rng.standard_normal((n, 1, 16, 16)) + shift
    return torch.from_numpy(x.astype(np.float32))


def test_c2st_images_identical_near_half_and_shifted_near_one():
    recipe = Recipe(size=(16, 16), block_out_channels=(8, 16), epochs=4, batch_size=32, lr=1e-2)
    real = _images(160, 0)
    same = c2st_images(real, real.clone(), recipe, n_bootstrap=100)
    assert same["auc"] == pytest.approx(0.5)  # twins are always scored side by side
    assert same["ci_low"] <= 0.5 <= same["ci_high"]
    other = c2st_images(real, _images(160, 5), recipe, n_bootstrap=100)  # same distribution, other samples
    assert abs(other["auc"] - 0.5) < 0.15
    shifted = c2st_images(real, _images(160, 1, shift=0.8), recipe, n_bootstrap=100)
    assert shifted["auc"] > 0.95
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(c2st_images(real[:3], real[:3], recipe)["auc"])
