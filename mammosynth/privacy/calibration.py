"""Calibrating the gate's threshold on unseen real patients (DESIGN §9).

The gate flags a generated image when its similarity to the nearest training image is
*above* the threshold. Real images of patients the model never saw (the test split) are the
natural negatives. The threshold is their split-conformal ``1 - target`` quantile of
nearest-training similarity: the ``⌈(n + 1)(1 - target)⌉``-th smallest of the ``n`` values.
A new unseen patient's image (exchangeable with the calibration images) is then flagged with
probability at most ``target`` (default 1 %), not just ``target`` of the calibration images
themselves; the plain in-sample quantile is slightly optimistic out of sample. The calibration
records how well that holds: the in-sample rate with a Clopper–Pearson 95 % upper bound and a
cross-validated (by study) out-of-sample rate.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["Calibration", "calibrate_threshold", "false_flag_rate", "clopper_pearson"]


@dataclass
class Calibration:
    """A calibrated threshold and the evidence for it (stored in the checker's config).

    Attributes:
        threshold: flag when similarity > threshold.
        target_false_flag_rate: the rate asked for.
        false_flag_rate: the rate on the calibration images themselves (≤ target).
        false_flag_upper95: Clopper–Pearson 95 % upper bound of that rate.
        cv_false_flag_rate: out-of-sample rate, thresholds fitted on the other folds
            (folds by study); ``nan`` when there were too few studies.
        n_images, n_studies: calibration set size.
        similarity_quantiles: quantiles of the calibration similarities.
        source: where the calibration images came from.
    """

    threshold: float
    target_false_flag_rate: float
    false_flag_rate: float
    false_flag_upper95: float
    cv_false_flag_rate: float
    n_images: int
    n_studies: int
    similarity_quantiles: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def false_flag_rate(similarities: np.ndarray, threshold: float) -> float:
    """Fraction of similarities strictly above the threshold (``nan`` for none)."""
    similarities = np.asarray(similarities, dtype=np.float64)
    return float((similarities > threshold).mean()) if len(similarities) else float("nan")


def clopper_pearson(flagged: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval of a rate ``flagged / total``."""
    from scipy.stats import beta

    if total <= 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low = 0.0 if flagged == 0 else float(beta.ppf(alpha / 2, flagged, total - flagged + 1))
    high = 1.0 if flagged == total else float(beta.ppf(1 - alpha / 2, flagged + 1, total - flagged))
    return low, high


def _conformal_rank(n: int, target: float) -> int:
    """``k = ⌈(n + 1)(1 - target)⌉``: P(new > k-th smallest of n) ≤ target; ``k > n`` means n is too few."""
    return int(np.ceil((n + 1) * (1.0 - target) - 1e-9))


def _threshold(similarities: np.ndarray, target: float) -> float:
    """The split-conformal threshold: the ``k``-th smallest value (the largest when ``k > n``)."""
    ordered = np.sort(similarities)
    return float(ordered[min(_conformal_rank(len(ordered), target), len(ordered)) - 1])


def calibrate_threshold(
    similarities: Sequence[float] | np.ndarray,
    target: float = 0.01,
    groups: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    source: str = "",
) -> Calibration:
    """The threshold that flags an unseen real image with probability at most ``target``
    (split-conformal, see the module docstring).

    Args:
        similarities: nearest-training similarity of each held-out real image.
        target: the false-flag rate allowed (0 < target < 1).
        groups: study id of each image, for the cross-validated rate (folds by study);
            without it every image is its own group.
        folds: number of cross-validation folds.
        seed: shuffles the studies into folds.
        source: a note on where the images came from.

    Returns:
        The :class:`Calibration`.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 1 or len(sims) == 0:
        raise ValueError("calibration needs at least one held-out similarity (a non-empty test split)")
    if not 0.0 < target < 1.0:
        raise ValueError(f"the target false-flag rate has to be between 0 and 1, not {target}")
    if not np.isfinite(sims).all():
        raise ValueError("calibration similarities contain nan or inf")
    if _conformal_rank(len(sims), target) > len(sims):
        warnings.warn(
            f"{len(sims)} calibration images are too few to guarantee a {target:.1%} false-flag rate "
            f"(need at least {int(np.ceil((1 - target) / target))}); the threshold is their maximum"
        )
    threshold = _threshold(sims, target)
    flagged = int((sims > threshold).sum())
    groups_arr = np.asarray([str(g) for g in groups]) if groups is not None else np.arange(len(sims)).astype(str)
    if len(groups_arr) != len(sims):
        raise ValueError(f"got {len(sims)} similarities but {len(groups_arr)} groups")
    unique = np.unique(groups_arr)
    cv_rate = float("nan")
    if len(unique) >= folds >= 2:
        rng = np.random.default_rng(seed)
        fold_of = dict(zip(rng.permutation(unique), np.arange(len(unique)) % folds))
        fold = np.array([fold_of[g] for g in groups_arr])
        cv_flagged = 0
        for f in range(folds):
            held = fold == f
            cv_flagged += int((sims[held] > _threshold(sims[~held], target)).sum())
        cv_rate = cv_flagged / len(sims)
    qs = (0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
    return Calibration(
        threshold=threshold,
        target_false_flag_rate=float(target),
        false_flag_rate=flagged / len(sims),
        false_flag_upper95=clopper_pearson(flagged, len(sims))[1],
        cv_false_flag_rate=cv_rate,
        n_images=int(len(sims)),
        n_studies=int(len(unique)),
        similarity_quantiles={f"q{q:g}": float(np.quantile(sims, q)) for q in qs},
        source=source,
    )
