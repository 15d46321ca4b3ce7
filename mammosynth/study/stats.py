"""Reader-study statistics (DESIGN §12): pure functions over arrays, no study objects.

Conventions: the *positive* class is "synthetic" (``y_true == 1``), "real" is 0. A reader's
answer is ``y_pred`` (1 = said synthetic). Ratings are ordinal scores where larger means
"more confident the image is synthetic" (see :func:`answer_rating`). Higher accuracy/AUC
means readers *can* tell synthetic from real, so for a realistic generator the hoped-for
value is 0.5 (chance). Undefined quantities (no positives, one reader…) give ``nan``.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "answer_rating",
    "wilson_interval",
    "accuracy_summary",
    "sensitivity_specificity",
    "binomial_test",
    "auc_structural_components",
    "roc_auc_delong",
    "fleiss_kappa_from_answers",
    "pairwise_cohen_kappa",
]


def answer_rating(answer: str, confidence: float, confidence_min: float = 1) -> float:
    """Map an answer plus its confidence to one ordinal "synthetic-ness" rating.

    ``synthetic`` with confidence ``c`` becomes ``+(c - confidence_min + 1)`` and ``real``
    becomes ``-(c - confidence_min + 1)``, so "sure real" < "unsure real" < "unsure synthetic"
    < "sure synthetic". With a 1–5 scale this is the usual 10-point rating scale; with a 0–100
    scale it is continuous. Only the order matters for ROC-AUC.

    Args:
        answer: ``"real"`` or ``"synthetic"``.
        confidence: the reader's confidence on the study's scale.
        confidence_min: the lowest value of that scale (1 for 1–5, 0 for 0–100).
    """
    if answer not in ("real", "synthetic"):
        raise ValueError(f"answer must be 'real' or 'synthetic', got {answer!r}")
    magnitude = float(confidence) - float(confidence_min) + 1.0
    return magnitude if answer == "synthetic" else -magnitude


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (statsmodels ``method="wilson"``).

    Returns ``(nan, nan)`` for ``n == 0``.
    """
    if n == 0:
        return (math.nan, math.nan)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(int(successes), int(n), alpha=alpha, method="wilson")
    return (float(low), float(high))


def binomial_test(successes: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value of ``successes``/``n`` against ``p`` (scipy)."""
    if n == 0:
        return math.nan
    from scipy.stats import binomtest

    return float(binomtest(int(successes), int(n), p, alternative="two-sided").pvalue)


def accuracy_summary(y_true: Sequence[int], y_pred: Sequence[int], alpha: float = 0.05) -> dict:
    """Accuracy with a Wilson CI and an exact binomial test against chance (50%).

    Returns ``{"n", "correct", "accuracy", "ci_low", "ci_high", "p_vs_chance"}``. Higher
    accuracy = readers can tell the classes apart; 0.5 is chance.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}")
    n, correct = int(len(y_true)), int((y_true == y_pred).sum())
    low, high = wilson_interval(correct, n, alpha)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else math.nan,
        "ci_low": low,
        "ci_high": high,
        "p_vs_chance": binomial_test(correct, n),
    }


def sensitivity_specificity(y_true: Sequence[int], y_pred: Sequence[int], alpha: float = 0.05) -> dict:
    """Sensitivity and specificity for detecting "synthetic" (positive = 1), Wilson CIs.

    Sensitivity = synthetic images called synthetic / synthetic images; specificity = real
    images called real / real images.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    tp = int(((y_true == 1) & (y_pred == 1)).sum())
    pos = int((y_true == 1).sum())
    tn = int(((y_true == 0) & (y_pred == 0)).sum())
    neg = int((y_true == 0).sum())
    sens_ci, spec_ci = wilson_interval(tp, pos, alpha), wilson_interval(tn, neg, alpha)
    return {
        "sensitivity": tp / pos if pos else math.nan,
        "sensitivity_ci": list(sens_ci),
        "specificity": tn / neg if neg else math.nan,
        "specificity_ci": list(spec_ci),
        "n_synthetic": pos,
        "n_real": neg,
    }


def auc_structural_components(y_true: Sequence[int], score: Sequence[float]) -> tuple[float, np.ndarray, np.ndarray]:
    """Mann–Whitney AUC and DeLong's structural components.

    ``psi(x, y) = 1 if x > y, 0.5 if x == y, 0 otherwise`` for a positive score ``x`` and a
    negative score ``y``. Returns ``(auc, v10, v01)`` where ``v10[i]`` is the mean of psi over
    negatives for positive ``i`` and ``v01[j]`` the mean over positives for negative ``j``
    (DeLong, DeLong & Clarke-Pearson 1988).
    """
    y_true = np.asarray(y_true, int)
    score = np.asarray(score, float)
    pos, neg = score[y_true == 1], score[y_true == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan, np.array([]), np.array([])
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    return float(psi.mean()), psi.mean(axis=1), psi.mean(axis=0)


def roc_auc_delong(y_true: Sequence[int], score: Sequence[float], alpha: float = 0.05) -> dict:
    """Empirical (trapezoidal) ROC-AUC with DeLong's variance and a normal-theory CI.

    The CI is clipped to [0, 1]. Returns ``{"auc", "se", "ci_low", "ci_high", "n_pos",
    "n_neg"}``; ``nan`` (with a warning) when one class is missing. 0.5 = chance.
    """
    from scipy.stats import norm

    auc, v10, v01 = auc_structural_components(y_true, score)
    m, n = len(v10), len(v01)
    if m == 0 or n == 0:
        warnings.warn("ROC-AUC is undefined when only one class is present; returning nan", stacklevel=2)
        return {"auc": math.nan, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_pos": m, "n_neg": n}
    s10 = v10.var(ddof=1) if m > 1 else 0.0
    s01 = v01.var(ddof=1) if n > 1 else 0.0
    se = math.sqrt(s10 / m + s01 / n)
    z = norm.ppf(1 - alpha / 2)
    return {
        "auc": auc,
        "se": se,
        "ci_low": max(0.0, auc - z * se),
        "ci_high": min(1.0, auc + z * se),
        "n_pos": m,
        "n_neg": n,
    }


def fleiss_kappa_from_answers(answers: Mapping[str, Mapping[str, int]]) -> float:
    """Fleiss' κ of binary answers: ``answers[case][reader] = 0|1``.

    Only cases rated by every reader that appears are used (Fleiss' κ needs the same number
    of ratings per case). Returns ``nan`` with fewer than 2 readers or no complete case.
    κ = 1 perfect agreement, 0 chance-level agreement.
    """
    from statsmodels.stats.inter_rater import fleiss_kappa

    readers = sorted({r for per_case in answers.values() for r in per_case})
    if len(readers) < 2:
        return math.nan
    rows = []
    for per_case in answers.values():
        if len(per_case) == len(readers):
            ones = sum(int(v) for v in per_case.values())
            rows.append([len(readers) - ones, ones])
    if not rows:
        return math.nan
    table = np.asarray(rows)
    if (table.sum(axis=0) == 0).any():  # everybody gave the same single answer everywhere
        return math.nan
    return float(fleiss_kappa(table, method="fleiss"))


def pairwise_cohen_kappa(answers: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Cohen's κ (scikit-learn) for every reader pair, on the cases both answered.

    Keys are ``"readerA|readerB"`` (sorted). Pairs with fewer than 2 shared cases are ``nan``.
    """
    from sklearn.metrics import cohen_kappa_score

    by_reader: dict[str, dict[str, int]] = {}
    for case, per_case in answers.items():
        for reader, value in per_case.items():
            by_reader.setdefault(reader, {})[case] = int(value)
    out: dict[str, float] = {}
    for a, b in combinations(sorted(by_reader), 2):
        shared = sorted(set(by_reader[a]) & set(by_reader[b]))
        if len(shared) < 2:
            out[f"{a}|{b}"] = math.nan
            continue
        xa = [by_reader[a][c] for c in shared]
        xb = [by_reader[b][c] for c in shared]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[f"{a}|{b}"] = float(cohen_kappa_score(xa, xb))
    return out
