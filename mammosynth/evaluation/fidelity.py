"""Fidelity metrics on feature arrays: FID, KID, improved precision/recall, density/coverage.

Every metric is a pure function of two feature arrays ``(real, fake)`` of shape ``(n, d)``
(the reference first, as in scikit-learn), plus a thin class for the CLI and report.
Undefined cases (fewer than 2 samples, fewer samples than the k-NN needs) warn and
return ``nan`` instead of raising, so one bad split never sinks a whole report.

* **FID** (Heusel et al. 2017) – Fréchet distance between Gaussians fitted to the two
  sets; lower is better, 0 for identical sets. Computed with a symmetric eigen
  decomposition (``tr sqrt(Σr Σf) = Σ sqrt(eig(sqrt(Σr) Σf sqrt(Σr)))``), which is exact
  for positive semi-definite covariances and never produces complex numbers.
* **KID** (Bińkowski et al. 2018) – unbiased squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x·y / d + 1)^3``, averaged over random subsets; lower is better, ≈ 0 for
  sets from one distribution.
* **Precision / recall** (Kynkäänniemi et al. 2019) – fraction of fake samples inside the
  real k-NN manifold and of real samples inside the fake one; higher is better (≤ 1).
* **Density / coverage** (Naeem et al. 2020) – the k-NN counts version of precision, and
  the fraction of real samples whose neighbourhood holds a fake sample; higher is better
  (density can exceed 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "as_features",
    "frechet_distance",
    "fid",
    "kid",
    "prdc",
    "precision",
    "recall",
    "density",
    "coverage",
    "FID",
    "KID",
    "PRDC",
    "FidelityMetric",
    "FIDELITY_METRICS",
]


def as_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """Check a feature array is ``(n, d)`` and finite; return it as float64."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {array.shape}")
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_pair(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, fake = as_features(real, "real"), as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake features must have the same width, got {real.shape[1]} and {fake.shape[1]}"
        )
    return real, fake


def _undefined(metric: str, why: str) -> float:
    warnings.warn(f"{metric} is undefined: {why}; returning nan", RuntimeWarning, stacklevel=3)
    return float("nan")


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_real: np.ndarray, sigma_real: np.ndarray, mu_fake: np.ndarray,
                     sigma_fake: np.ndarray) -> float:
    """Fréchet distance between ``N(mu_real, sigma_real)`` and ``N(mu_fake, sigma_fake)``.

    ``||mu_r - mu_f||² + tr(Σr) + tr(Σf) - 2 tr((Σr^½ Σf Σr^½)^½)``, computed with symmetric
    eigen decompositions so it stays real and ≥ 0 for singular covariances.
    """
    mu_real, mu_fake = np.asarray(mu_real, np.float64), np.asarray(mu_fake, np.float64)
    sigma_real, sigma_fake = np.atleast_2d(sigma_real).astype(np.float64), np.atleast_2d(sigma_fake).astype(np.float64)
    if mu_real.shape != mu_fake.shape or sigma_real.shape != sigma_fake.shape:
        raise ValueError(
            f"means and covariances must match in shape, got {mu_real.shape}/{mu_fake.shape} "
            f"and {sigma_real.shape}/{sigma_fake.shape}"
        )
    root = _psd_sqrt(sigma_real)
    inner = root @ sigma_fake @ root
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum()
    diff = mu_real - mu_fake
    value = diff @ diff + np.trace(sigma_real) + np.trace(sigma_fake) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to ``real`` and ``fake`` features (lower is better).

    Symmetric; 0 for identical sets. Biased upward for small sets: compare numbers at the
    same sample size only (the report pairs each with a real-vs-real floor of that size).
    """
    real, fake = _check_pair(real, fake)
    if len(real) < 2 or len(fake) < 2:
        return _undefined("FID", f"it needs at least 2 samples per set, got {len(real)} real and {len(fake)} fake")
    return frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kid(real: np.ndarray, fake: np.ndarray, subset_size: int = 1000, num_subsets: int = 100,
        seed: int = 0) -> float:
    """Kernel Inception Distance: mean unbiased MMD² (cubic polynomial kernel) over subsets.

    Lower is better; ≈ 0 (and can be slightly negative) for sets from one distribution.
    When both sets are no larger than ``subset_size`` the whole sets are used once, which
    makes the value deterministic and symmetric in its arguments.
    """
    real, fake = _check_pair(real, fake)
    if len(real) < 2 or len(fake) < 2:
        return _undefined("KID", f"it needs at least 2 samples per set, got {len(real)} real and {len(fake)} fake")
    if subset_size < 2 or num_subsets < 1:
        raise ValueError(f"subset_size must be ≥ 2 and num_subsets ≥ 1, got {subset_size} and {num_subsets}")
    if len(real) <= subset_size and len(fake) <= subset_size:
        return _mmd2_unbiased(real, fake)
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(real[rng.choice(len(real), size, replace=False)], fake[rng.choice(len(fake), size, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values))


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def _kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    distances = _pairwise_distances(x, x)
    # column 0 of the sorted row is the point itself (distance 0)
    return np.partition(distances, k, axis=1)[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Improved precision/recall and density/coverage with ``k``-nearest-neighbour balls.

    Follows Naeem et al. 2020 (the reference ``prdc`` code): a sample lies in a manifold
    when its distance to some manifold point is *strictly* below that point's distance to
    its ``k``-th nearest neighbour in its own set.

    Returns:
        ``{"precision", "recall", "density", "coverage"}``; all ``nan`` (with a warning)
        when a set has ``k`` or fewer samples.
    """
    real, fake = _check_pair(real, fake)
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if len(real) <= k or len(fake) <= k:
        value = _undefined("precision/recall/density/coverage",
                           f"k={k} needs more than {k} samples per set, got {len(real)} real and {len(fake)} fake")
        return {"precision": value, "recall": value, "density": value, "coverage": value}
    real_radii = _kth_neighbour_radii(real, k)
    fake_radii = _kth_neighbour_radii(fake, k)
    real_fake = _pairwise_distances(real, fake)  # (n_real, n_fake)
    inside_real = real_fake < real_radii[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((real_fake < fake_radii[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((real_fake.min(axis=1) < real_radii).mean()),
    }


def precision(real: np.ndarray, fake: np.ndarray, k: int = 5) -> float:
    """Fraction of fake samples inside the real k-NN manifold (higher is better, ≤ 1)."""
    return prdc(real, fake, k)["precision"]


def recall(real: np.ndarray, fake: np.ndarray, k: int = 5) -> float:
    """Fraction of real samples inside the fake k-NN manifold (higher is better, ≤ 1)."""
    return prdc(real, fake, k)["recall"]


def density(real: np.ndarray, fake: np.ndarray, k: int = 5) -> float:
    """Mean number of real k-NN balls holding a fake sample, divided by k (≈ 1 when matched)."""
    return prdc(real, fake, k)["density"]


def coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> float:
    """Fraction of real samples whose k-NN ball holds a fake sample (higher is better, ≤ 1)."""
    return prdc(real, fake, k)["coverage"]


@dataclass(frozen=True)
class FidelityMetric:
    """A registered metric: its function and the properties the generic tests check.

    Attributes:
        name: key in ``metrics.json``.
        fn: ``fn(real, fake) -> float``.
        higher_is_better: the direction of improvement.
        symmetric: ``fn(a, b) == fn(b, a)``.
        identical_value: the value for two identical sets (``None`` if not fixed).
        min_samples: fewer samples per set give ``nan`` and a warning.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool
    symmetric: bool
    identical_value: float | None
    min_samples: int


class FID:
    """FID as a callable object (see :func:`fid`)."""

    def __call__(self, real: np.ndarray, fake: np.ndarray) -> float:
        return fid(real, fake)


class KID:
    """KID as a callable object with fixed subset settings (see :func:`kid`)."""

    def __init__(self, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0):
        self.subset_size, self.num_subsets, self.seed = subset_size, num_subsets, seed

    def __call__(self, real: np.ndarray, fake: np.ndarray) -> float:
        return kid(real, fake, self.subset_size, self.num_subsets, self.seed)


class PRDC:
    """Precision, recall, density and coverage with a fixed ``k`` (see :func:`prdc`)."""

    def __init__(self, k: int = 5):
        self.k = k

    def __call__(self, real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
        return prdc(real, fake, self.k)


#: Every fidelity metric with its shared properties (used by the report and generic tests).
FIDELITY_METRICS: dict[str, FidelityMetric] = {
    m.name: m
    for m in (
        FidelityMetric("fid", fid, higher_is_better=False, symmetric=True, identical_value=0.0, min_samples=2),
        FidelityMetric("kid", kid, higher_is_better=False, symmetric=True, identical_value=None, min_samples=2),
        FidelityMetric("precision", precision, higher_is_better=True, symmetric=False, identical_value=1.0, min_samples=6),
        FidelityMetric("recall", recall, higher_is_better=True, symmetric=False, identical_value=1.0, min_samples=6),
        FidelityMetric("density", density, higher_is_better=True, symmetric=False, identical_value=None, min_samples=6),
        FidelityMetric("coverage", coverage, higher_is_better=True, symmetric=False, identical_value=1.0, min_samples=6),
    )
}
