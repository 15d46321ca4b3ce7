"""Obuchowski–Rockette–Hillis (ORH) multi-reader multi-case analysis of AUC.

The figure of merit is the empirical (trapezoidal / Wilcoxon) AUC of each reader in each
treatment (modality). Its error covariances are estimated by the jackknife over cases, and
the analysis follows Obuchowski & Rockette (1995) with Hillis's denominator degrees of
freedom (Hillis 2007, *Stat Med* 26:596–619; Hillis, Berbaum & Metz 2008). The output names
and formulas are those of OR-DBM MRMC 2.51 (Schartz, Hillis, Pesce, Berbaum), against whose
published Van Dyke (1993) results this module is tested (``tests/test_study_mrmc.py``).

Notation: ``t`` treatments, ``r`` readers, ``c`` cases. ``Var`` is the mean error variance,
``Cov1`` the mean covariance of the same reader in different treatments, ``Cov2`` of different
readers in the same treatment, ``Cov3`` of different readers in different treatments.

* Random readers, random cases (RRRC), t ≥ 2: ``F = MS(T) / [MS(T*R) + r·max(Cov2 − Cov3, 0)]``
  on ``(t − 1, ddf_H)`` with ``ddf_H = [MS(T*R) + r·max(Cov2 − Cov3, 0)]² / (MS(T*R)² / ((t−1)(r−1)))``.
* Single-treatment CI (any t, and the analysis for a one-modality reader study):
  ``SE = sqrt((MS(R)_i + r·max(Cov2_i, 0)) / r)``, ``df = (MS(R)_i + r·max(Cov2_i, 0))² /
  (MS(R)_i² / (r − 1))`` ("ddf_H_single"), CI ``AUC ± t(1−α/2; df)·SE``, and a t test of
  ``AUC = 0.5`` with the same SE and df.
* Fixed readers, random cases (FRRC): χ² = ``(t−1)·MS(T) / [Var − Cov1 + (r−1)·max(Cov2 − Cov3, 0)]``
  and single-treatment SE ``sqrt((Var_i + (r−1)·max(Cov2_i, 0)) / r)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["ORHResult", "auc_matrix", "jackknife_auc", "orh_analysis"]


def _auc_and_jackknife(truth: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """AUC and the c leave-one-case-out AUCs for one reader/treatment (vectorised)."""
    pos, neg = scores[truth == 1], scores[truth == 0]
    m, n = len(pos), len(neg)
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    total = psi.sum()
    row, col = psi.sum(axis=1), psi.sum(axis=0)
    jack = np.empty(len(truth))
    # Removing positive i drops row i; removing negative j drops column j.
    jack[truth == 1] = (total - row) / ((m - 1) * n) if m > 1 else math.nan
    jack[truth == 0] = (total - col) / (m * (n - 1)) if n > 1 else math.nan
    return float(total / (m * n)), jack


def auc_matrix(ratings: np.ndarray, truth: Sequence[int]) -> np.ndarray:
    """Empirical AUC per treatment and reader: ``ratings`` is ``(t, r, c)`` → ``(t, r)``."""
    ratings, truth = _check(ratings, truth)
    t, r, _ = ratings.shape
    return np.array([[_auc_and_jackknife(truth, ratings[i, j])[0] for j in range(r)] for i in range(t)])


def jackknife_auc(ratings: np.ndarray, truth: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(t, r)`` and leave-one-case-out AUCs ``(t, r, c)``."""
    ratings, truth = _check(ratings, truth)
    t, r, c = ratings.shape
    aucs, jack = np.empty((t, r)), np.empty((t, r, c))
    for i in range(t):
        for j in range(r):
            aucs[i, j], jack[i, j] = _auc_and_jackknife(truth, ratings[i, j])
    return aucs, jack


def _check(ratings: np.ndarray, truth: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    ratings = np.asarray(ratings, dtype=float)
    truth = np.asarray(truth, dtype=int)
    if ratings.ndim != 3:
        raise ValueError(f"ratings must have shape (treatments, readers, cases), got {ratings.shape}")
    if truth.shape != (ratings.shape[2],):
        raise ValueError(f"truth must have one 0/1 entry per case ({ratings.shape[2]}), got shape {truth.shape}")
    if not set(np.unique(truth)) <= {0, 1}:
        raise ValueError("truth must contain only 0 (negative) and 1 (positive)")
    if (truth == 1).sum() < 2 or (truth == 0).sum() < 2:
        raise ValueError("the ORH analysis needs at least 2 positive and 2 negative cases")
    if not np.isfinite(ratings).all():
        raise ValueError("ratings contain missing values; ORH needs every reader to rate every case")
    return ratings, truth


@dataclass
class ORHResult:
    """Result of :func:`orh_analysis` (fields follow OR-DBM MRMC's output)."""

    aucs: np.ndarray  # (t, r)
    treatment_means: np.ndarray  # (t,)
    var_error: float
    cov1: float
    cov2: float
    cov3: float
    var_r: float
    var_tr: float
    ms_t: float
    ms_r: float
    ms_tr: float
    f_stat: float  # RRRC, nan for t == 1
    ddf: float
    p_value: float
    frrc_chisq: float
    frrc_p_value: float
    differences: list[dict] = field(default_factory=list)  # RRRC pairwise treatment differences
    single_treatment: list[dict] = field(default_factory=list)  # RRRC per-treatment CIs
    single_treatment_frrc: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        return out


def _covariances(jack: np.ndarray) -> np.ndarray:
    """Jackknife covariance matrix over (t·r) reader-treatment AUCs: (c−1)/c · Σ dev·devᵀ."""
    t, r, c = jack.shape
    flat = jack.reshape(t * r, c)
    dev = flat - flat.mean(axis=1, keepdims=True)
    return (c - 1) / c * (dev @ dev.T)


def _mean_cov(cov: np.ndarray, t: int, r: int, same_t: bool, same_r: bool) -> float:
    values = []
    for i in range(t):
        for j in range(r):
            for i2 in range(t):
                for j2 in range(r):
                    if (i == i2) == same_t and (j == j2) == same_r:
                        values.append(cov[i * r + j, i2 * r + j2])
    return float(np.mean(values)) if values else math.nan


def orh_analysis(ratings: np.ndarray, truth: Sequence[int], alpha: float = 0.05, null_auc: float = 0.5) -> ORHResult:
    """Obuchowski–Rockette–Hillis analysis of empirical AUC with jackknife covariances.

    Args:
        ratings: ``(treatments, readers, cases)``; larger = more likely positive. Every reader
            rates every case in every treatment (factorial design).
        truth: ``(cases,)`` 1 = positive (for a reader study: synthetic), 0 = negative.
        alpha: 1 − confidence level.
        null_auc: AUC under the single-treatment null hypothesis (0.5 = chance).

    Returns:
        :class:`ORHResult`. With one treatment the F test is undefined (``nan``) and the
        answer is in ``single_treatment`` (RRRC) and ``single_treatment_frrc``.
    """
    from scipy import stats

    aucs, jack = jackknife_auc(ratings, truth)
    t, r, _ = jack.shape
    cov = _covariances(jack)
    var_error = float(np.mean(np.diag(cov)))
    cov1 = _mean_cov(cov, t, r, same_t=False, same_r=True)
    cov2 = _mean_cov(cov, t, r, same_t=True, same_r=False)
    cov3 = _mean_cov(cov, t, r, same_t=False, same_r=False)

    grand = aucs.mean()
    t_means, r_means = aucs.mean(axis=1), aucs.mean(axis=0)
    ms_t = r * float(((t_means - grand) ** 2).sum()) / (t - 1) if t > 1 else math.nan
    ms_r = t * float(((r_means - grand) ** 2).sum()) / (r - 1) if r > 1 else math.nan
    resid = aucs - t_means[:, None] - r_means[None, :] + grand
    ms_tr = float((resid**2).sum()) / ((t - 1) * (r - 1)) if t > 1 and r > 1 else math.nan

    c23 = max(cov2 - cov3, 0.0) if t > 1 else math.nan
    var_tr = ms_tr - var_error + cov1 + c23 if t > 1 else math.nan
    var_r = (ms_r - var_tr - var_error - (t - 1) * cov1 + cov2 + (t - 1) * cov3) / t if t > 1 else (
        ms_r - var_error + cov2 if r > 1 else math.nan
    )

    # 1. RRRC global test and pairwise differences
    f_stat = ddf = p_value = math.nan
    differences: list[dict] = []
    if t > 1 and r > 1:
        denom = ms_tr + r * c23
        f_stat = ms_t / denom
        ddf = denom**2 / (ms_tr**2 / ((t - 1) * (r - 1))) if ms_tr > 0 else math.inf
        p_value = float(stats.f.sf(f_stat, t - 1, ddf))
        se = math.sqrt(2 / r * denom)
        q = stats.t.ppf(1 - alpha / 2, ddf)
        for i in range(t):
            for i2 in range(i + 1, t):
                diff = float(t_means[i] - t_means[i2])
                tv = diff / se
                differences.append({
                    "treatments": [i, i2], "difference": diff, "se": se, "df": ddf, "t": tv,
                    "p_value": float(2 * stats.t.sf(abs(tv), ddf)),
                    "ci_low": diff - q * se, "ci_high": diff + q * se,
                })

    # 2. single-treatment CIs (RRRC, Hillis 2007 ddf_H_single; and FRRC)
    single, single_frrc = [], []
    z = stats.norm.ppf(1 - alpha / 2)
    for i in range(t):
        block = cov[i * r:(i + 1) * r, i * r:(i + 1) * r]
        var_i = float(np.mean(np.diag(block)))
        off = block[~np.eye(r, dtype=bool)]
        cov2_i = float(off.mean()) if r > 1 else 0.0
        ms_r_i = float(aucs[i].var(ddof=1)) if r > 1 else 0.0
        denom_i = ms_r_i + r * max(cov2_i, 0.0)
        se_i = math.sqrt(denom_i / r)
        df_i = denom_i**2 / (ms_r_i**2 / (r - 1)) if r > 1 and ms_r_i > 0 else math.inf
        q_i = stats.t.ppf(1 - alpha / 2, df_i)
        t_i = (t_means[i] - null_auc) / se_i if se_i > 0 else math.nan
        single.append({
            "treatment": i, "auc": float(t_means[i]), "se": se_i, "df": df_i, "ms_r": ms_r_i, "cov2": cov2_i,
            "var_error": var_i, "ci_low": float(t_means[i] - q_i * se_i), "ci_high": float(t_means[i] + q_i * se_i),
            "t_vs_null": t_i, "null_auc": null_auc,
            "p_vs_null": float(2 * stats.t.sf(abs(t_i), df_i)) if math.isfinite(t_i) else math.nan,
        })
        se_f = math.sqrt((var_i + (r - 1) * max(cov2_i, 0.0)) / r)
        z_i = (t_means[i] - null_auc) / se_f if se_f > 0 else math.nan
        single_frrc.append({
            "treatment": i, "auc": float(t_means[i]), "se": se_f,
            "ci_low": float(t_means[i] - z * se_f), "ci_high": float(t_means[i] + z * se_f),
            "z_vs_null": z_i, "p_vs_null": float(2 * stats.norm.sf(abs(z_i))) if math.isfinite(z_i) else math.nan,
        })

    frrc_chisq = frrc_p = math.nan
    if t > 1:
        frrc_chisq = (t - 1) * ms_t / (var_error - cov1 + (r - 1) * c23)
        frrc_p = float(stats.chi2.sf(frrc_chisq, t - 1))

    return ORHResult(
        aucs=aucs, treatment_means=t_means, var_error=var_error, cov1=cov1, cov2=cov2, cov3=cov3,
        var_r=var_r, var_tr=var_tr, ms_t=ms_t, ms_r=ms_r, ms_tr=ms_tr, f_stat=f_stat, ddf=ddf,
        p_value=p_value, frrc_chisq=frrc_chisq, frrc_p_value=frrc_p, differences=differences,
        single_treatment=single, single_treatment_frrc=single_frrc,
    )
