"""Utility metrics: ROC-AUC with bootstrap CI, accuracy, and the TRTR/TSTR recipe on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.evaluation.classifiers import Recipe
from mammosynth.evaluation.utility import accuracy, roc_auc, roc_auc_ci, run_utility


def test_roc_auc_known_values_and_sklearn_agreement():
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 300), rng.random(300)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    # -1 = unknown label is ignored
    assert roc_auc(np.r_[y, -1], np.r_[s, 0.3]) == pytest.approx(roc_auc_score(y, s))


def test_roc_auc_ci_brackets_the_auc_and_narrows_with_n():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    s = y + rng.standard_normal(400)
    small = roc_auc_ci(y[:80], s[:80], n_bootstrap=300)
    large = roc_auc_ci(y, s, n_bootstrap=300)
    assert small["ci_low"] <= small["auc"] <= small["ci_high"]
    assert large["ci_low"] <= large["auc"] <= large["ci_high"]
    assert large["ci_high"] - large["ci_low"] < small["ci_high"] - small["ci_low"]
    # several seeds: AUC is the mean of the per-seed AUCs
    both = roc_auc_ci(y, [s, -s], n_bootstrap=50)
    assert both["auc"] == pytest.approx(0.5)


def test_roc_auc_ci_is_seeded_and_leaves_out_one_class_resamples():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(37, int), np.ones(3, int)]  # ~4 % of resamples hold no positive
    s = y * 0.5 + rng.random(40)
    first, again = roc_auc_ci(y, s, n_bootstrap=200, seed=3), roc_auc_ci(y, s, n_bootstrap=200, seed=3)
    assert first == again
    assert np.isfinite(first["ci_low"]) and first["ci_low"] <= first["auc"] <= first["ci_high"] <= 1.0
    assert np.isnan(roc_auc_ci(y, s, n_bootstrap=0)["ci_low"])


def test_undefined_cases_warn_and_return_nan():
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(roc_auc_ci([0, 0], [0.1, 0.2])["auc"])
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(accuracy([-1, -1], [0, 1]))
    with pytest.raises(ValueError, match="same length"):
        roc_auc([0, 1], [0.1])


def test_accuracy_ignores_unknown_labels():
    assert accuracy([0, 1, 2, -1], [0, 1, 0, 2]) == pytest.approx(2 / 3)


def _separable(n: int, seed: int, random_labels: bool = False):
    """16x16 images: cancer = a bright square; density = overall brightness level."""
    rng = np.random.default_rng(seed)
    cancer = rng.integers(0, 2, n)
    density = rng.integers(0, 4, n)
    x = -0.8 + 0.3 * density[:, None, None] + 0.05 * rng.standard_normal((n, 16, 16))
    x[cancer == 1, 5:11, 5:11] = 1.0
    labels = rng.integers(0, 2, n) if random_labels else cancer
    return torch.from_numpy(x[:, None].astype(np.float32)), {"cancer": labels, "density": density}


def test_run_utility_separable_vs_random_labels():
    recipe = Recipe(size=(16, 16), block_out_channels=(8, 16), epochs=6, batch_size=32, lr=1e-2)
    train, test = _separable(160, 0), _separable(120, 1)
    result = run_utility(train, train, test, recipe, seeds=(0,), n_bootstrap=100, regimes=("trtr", "tstr"))
    assert result["trtr"]["cancer_auc"]["auc"] > 0.95
    assert result["trtr"]["density_accuracy"] > 0.6
    assert result["tstr_over_trtr"] == pytest.approx(1.0)  # same data, same seed → same model
    # labels unrelated to the images (in training and test) → chance
    noise = run_utility(train, _separable(160, 2, random_labels=True), _separable(400, 3, random_labels=True),
                        recipe, seeds=(0,), n_bootstrap=100, regimes=("tstr",))
    assert abs(noise["tstr"]["cancer_auc"]["auc"] - 0.5) < 0.12
    with pytest.raises(ValueError, match="unknown utility regime"):
        run_utility(train, train, test, recipe, regimes=("nope",))
