"""Fidelity metrics on known answers, and shared properties over the metric registry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mammosynth.evaluation.fidelity import (
    FID, FIDELITY_METRICS, KID, PRDC, fid, frechet_distance, kid, prdc)
from mammosynth.evaluation.realism import c2st_features


def _gauss(n: int, d: int = 8, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


# ---- FID -----------------------------------------------------------------------------------

def test_frechet_distance_closed_form_diagonal():
    # For diagonal covariances: ||mu1 - mu2||^2 + sum (s1 - s2)^2 with s the standard deviations.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    expected = 1.0 + 4.0 + (2.0 ** 2 + 1.0 ** 2 + 0.0)
    assert frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_closed_form_rotated_covariance():
    # Σ2 = R Σ1 Rᵀ with commuting-free structure: check against the textbook sqrtm formula.
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    textbook = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(textbook, rel=1e-8)


def test_fid_matches_monai_and_is_zero_for_identical_sets():
    from monai.metrics.fid import get_fid_score

    real, fake = _gauss(300, seed=0), _gauss(300, shift=0.3, seed=1)
    ours = fid(real, fake)
    theirs = float(get_fid_score(torch.from_numpy(fake), torch.from_numpy(real)))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert fid(real, real) == pytest.approx(0.0, abs=1e-8)
    # rank-deficient covariance (fewer samples than features) stays real and ≥ 0
    small = _gauss(5, d=20)
    assert fid(small, small) == pytest.approx(0.0, abs=1e-8)


def test_fid_sample_estimate_near_population_value_and_grows_with_shift():
    # N(0, I) vs N(m, I) in d dims: FID = d m^2 exactly for the populations.
    real, fake = _gauss(4000, d=4, seed=0), _gauss(4000, d=4, shift=1.0, seed=1)
    assert fid(real, fake) == pytest.approx(4.0, rel=0.05)
    assert fid(real, _gauss(4000, d=4, shift=2.0, seed=1)) > fid(real, fake) > fid(real, _gauss(4000, d=4, seed=2))


# ---- KID -----------------------------------------------------------------------------------

def test_kid_near_zero_for_same_distribution_and_larger_for_shift():
    real = _gauss(400, seed=0)
    same, shifted = _gauss(400, seed=1), _gauss(400, shift=0.5, seed=1)
    assert abs(kid(real, same)) < 0.02
    assert kid(real, shifted) > 10 * abs(kid(real, same))
    assert kid(real, real) == pytest.approx(0.0, abs=0.05)
    # subsets path (sets larger than subset_size) gives a similar value, deterministic per seed
    a = kid(real, shifted, subset_size=100, num_subsets=20, seed=0)
    assert a == kid(real, shifted, subset_size=100, num_subsets=20, seed=0)
    assert a == pytest.approx(kid(real, shifted), rel=0.3)


def test_kid_rejects_bad_settings():
    with pytest.raises(ValueError, match="subset_size"):
        kid(_gauss(10), _gauss(10), subset_size=1)


# ---- precision / recall / density / coverage -------------------------------------------------

def test_prdc_hand_made_case():
    # 1-D, k=1. Real points 0, 1, 2, 3 → each 1-NN radius is 1.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    # fakes: 0.5 (inside the balls of 0 and 1), 10 (outside everything), 2.0 (inside 1, 2, 3; 2 at distance 0)
    fake = np.array([[0.5], [10.0], [2.0]])
    # fake radii (1-NN within fakes): 0.5 → 1.5, 10 → 8, 2.0 → 1.5
    result = prdc(real, fake, k=1)
    assert result["precision"] == pytest.approx(2 / 3)
    # recall: real r is inside the fake manifold if |r - f| < radius(f) for some f.
    # 0: |0-0.5|=0.5<1.5 yes; 1: yes; 2: |2-2|=0<1.5 yes; 3: |3-2|=1<1.5 yes → 1.0
    assert result["recall"] == pytest.approx(1.0)
    # density: counts of real balls (radius 1, strict) holding each fake: 0.5 → {0,1}=2;
    # 10 → 0; 2.0 → {1? |1-2|=1 not < 1, 2 yes, 3? 1 not < 1} = 1 → (2+0+1)/3/k
    assert result["density"] == pytest.approx(1.0)
    # coverage: real i covered if its nearest fake is closer than its radius 1:
    # 0 → 0.5 yes, 1 → 0.5 yes, 2 → 0 yes, 3 → 1 no → 3/4
    assert result["coverage"] == pytest.approx(0.75)


def test_prdc_identical_and_disjoint_sets():
    real = _gauss(200, seed=0)
    same = prdc(real, real, k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0, abs=0.3)
    far = prdc(real, _gauss(200, shift=50.0, seed=1), k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_thin_classes_match_functions():
    real, fake = _gauss(50, seed=0), _gauss(50, shift=0.2, seed=1)
    assert FID()(real, fake) == fid(real, fake)
    assert KID(subset_size=20, num_subsets=5)(real, fake) == kid(real, fake, subset_size=20, num_subsets=5)
    assert PRDC(k=3)(real, fake) == prdc(real, fake, k=3)


# ---- C2ST on features ----------------------------------------------------------------------

def test_c2st_features_identical_half_and_shifted_one():
    real = _gauss(300, seed=0)
    assert abs(c2st_features(real, _gauss(300, seed=1)) - 0.5) < 0.1
    assert c2st_features(real, real.copy()) == pytest.approx(0.5)
    assert c2st_features(real, _gauss(300, shift=3.0, seed=1)) > 0.99
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(c2st_features(real[:3], real[:3]))


# ---- the registry: shared properties of every fidelity metric -------------------------------

@pytest.mark.parametrize("name", sorted(FIDELITY_METRICS))
def test_registry_metric_properties(name):
    metric = FIDELITY_METRICS[name]
    a, b = _gauss(60, seed=0), _gauss(60, shift=0.7, seed=1)
    value = metric.fn(a, b)
    assert np.isfinite(value)
    if metric.symmetric:
        assert metric.fn(b, a) == pytest.approx(value, rel=1e-9, abs=1e-12)
    if metric.identical_value is not None:
        assert metric.fn(a, a) == pytest.approx(metric.identical_value, abs=1e-6)
    # a better synthetic set scores better than a shifted one
    closer = metric.fn(a, _gauss(60, shift=0.05, seed=2))
    farther = metric.fn(a, _gauss(60, shift=3.0, seed=2))
    assert (closer > farther) if metric.higher_is_better else (closer < farther)
    # undefined: too few samples → nan and a warning (never an exception)
    tiny = a[: metric.min_samples - 1]
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(metric.fn(tiny, b))
    # bad input → clear errors naming what was expected
    with pytest.raises(ValueError, match="same width"):
        metric.fn(a, b[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        metric.fn(a[:, 0], b)
    with pytest.raises(ValueError, match="NaN"):
        metric.fn(np.full_like(a, np.nan), b)


def test_no_warning_on_defined_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for metric in FIDELITY_METRICS.values():
            metric.fn(_gauss(20, seed=0), _gauss(20, seed=1))
