"""Realism proxy: classifier two-sample tests (C2ST), real vs synthetic (DESIGN §10).

A discriminator is trained to tell real from synthetic images on one half of each set and
scored on the other half: ROC-AUC 0.5 means it cannot tell them apart, 1.0 means every
synthetic image is recognisable. Two flavours:

* :func:`c2st_images` – the realism number of the report: a small CNN on the pixels
  (downsampled), AUC with a bootstrap 95% CI on the held-out halves;
* :func:`c2st_features` – a cross-validated logistic regression on feature vectors (fast,
  used beside the fidelity metrics).

Both balance the classes by subsampling the larger set and keep pairs (one real, one
synthetic) on the same side of every split, so identical sets give exactly 0.5.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .classifiers import Recipe, fit, predict
from .fidelity import _check_pair
from .utility import roc_auc, roc_auc_ci

__all__ = ["c2st_features", "c2st_images"]


def _balanced(n_real: int, n_fake: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size random subsets, as pairs ``(real[i], fake[i])`` kept on the same side of every split.

    Equal-size sets use one permutation for both, so two identical sets are split
    identically: a twin never sits in training with one label and in the test with the
    other (which would push the AUC *below* 0.5).
    """
    n = min(n_real, n_fake)
    if n_real == n_fake:
        order = rng.permutation(n)
        return order, order.copy()
    return rng.permutation(n_real)[:n], rng.permutation(n_fake)[:n]


def c2st_features(real: np.ndarray, fake: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC-AUC of a logistic regression telling ``real`` from ``fake`` features.

    ≈ 0.5 for sets from one distribution, → 1 for separable sets. Symmetric up to the
    random fold assignment. ``nan`` with a warning if a set has fewer than ``folds`` samples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    real, fake = _check_pair(real, fake)
    if min(len(real), len(fake)) < max(folds, 2):
        warnings.warn(f"C2ST is undefined: it needs at least {max(folds, 2)} samples per set, got "
                      f"{len(real)} real and {len(fake)} fake; returning nan", RuntimeWarning, stacklevel=2)
        return float("nan")
    rng = np.random.default_rng(seed)
    ri, fi = _balanced(len(real), len(fake), rng)
    x = np.concatenate([real[ri], fake[fi]])
    y = np.concatenate([np.zeros(len(ri), int), np.ones(len(fi), int)])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    pairs = np.r_[np.arange(len(ri)), np.arange(len(fi))]  # pair i = (real ri[i], fake fi[i]) share a fold
    scores = cross_val_predict(model, x, y, groups=pairs, cv=GroupKFold(n_splits=folds), method="predict_proba")[:, 1]
    return roc_auc(y, scores)


def c2st_images(real: torch.Tensor, fake: torch.Tensor, recipe: Recipe, seed: int = 0,
                n_bootstrap: int = 1000) -> dict[str, Any]:
    """Train a CNN discriminator on half of each set; ROC-AUC with 95% CI on the other half.

    Args:
        real, fake: network inputs ``(N, 1, h, w)`` in [-1, 1].
        recipe: the training recipe (its ``size`` must match the inputs).
        seed: split and training seed.
        n_bootstrap: bootstrap resamples for the CI.

    Returns:
        ``{"auc", "ci_low", "ci_high", "n", "n_positive", "n_train"}``; ``auc`` ≈ 0.5 means
        indistinguishable.
    """
    if min(len(real), len(fake)) < 4:
        warnings.warn(f"C2ST is undefined: it needs at least 4 images per set, got {len(real)} real "
                      f"and {len(fake)} fake; returning nan", RuntimeWarning, stacklevel=2)
        nan = float("nan")
        return {"auc": nan, "ci_low": nan, "ci_high": nan, "n": 0, "n_positive": 0, "n_train": 0}
    rng = np.random.default_rng(seed)
    ri, fi = _balanced(len(real), len(fake), rng)
    half = len(ri) // 2
    x_train = torch.cat([real[ri[:half]], fake[fi[:half]]])
    y_train = np.concatenate([np.zeros(half, int), np.ones(half, int)])
    x_test = torch.cat([real[ri[half:]], fake[fi[half:]]])
    y_test = np.concatenate([np.zeros(len(ri) - half, int), np.ones(len(fi) - half, int)])
    model = fit(x_train, {"synthetic": y_train}, recipe, seed=seed, num_classes={"synthetic": 2})
    scores = predict(model, x_test)["synthetic"][:, 1]
    return {**roc_auc_ci(y_test, scores, n_bootstrap=n_bootstrap, seed=seed), "n_train": int(len(x_train))}
