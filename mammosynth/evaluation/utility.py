"""Utility: does a classifier trained on synthetic images work on real ones? (DESIGN §10)

One recipe (:class:`~mammosynth.evaluation.classifiers.Recipe`), a small CNN with two
heads — cancer (BI-RADS ≥ 4, per image) and density (A–D) — is trained three ways and
always tested on the same real test split:

* **TRTR**: train on real (the real training split),
* **TSTR**: train on synthetic only,
* **real + synthetic**: train on both.

Each regime is trained with several seeds. The cancer ROC-AUC is averaged over seeds and
its 95% CI comes from a percentile bootstrap over test images (each resample scores every
seed, so the CI is that of the seed-averaged AUC). Density accuracy is the second task.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import DegenerateDataWarning, bootstrap

from .classifiers import Recipe, fit, predict

__all__ = ["roc_auc", "roc_auc_ci", "roc_curve_points", "accuracy", "run_utility", "REGIMES"]

logger = logging.getLogger(__name__)

#: Training regimes, in report order.
REGIMES = ("trtr", "tstr", "real_plus_synthetic")


def _binary(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true).ravel(), np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must have the same length, got {len(y_true)} and {len(y_score)}")
    keep = y_true >= 0
    return y_true[keep].astype(np.int64), y_score[keep]


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC-AUC (:func:`sklearn.metrics.roc_auc_score`; higher is better). ``-1`` labels are ignored.

    Undefined (``nan`` + warning) when only one class is present.
    """
    y, s = _binary(y_true, y_score)
    if len(np.unique(y)) < 2:
        warnings.warn(f"ROC-AUC is undefined with only one class present ({len(y)} labels); returning nan",
                      RuntimeWarning, stacklevel=2)
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _mean_auc(y: np.ndarray, *scores: np.ndarray) -> float:
    """Mean ROC-AUC of several score arrays for one label array; ``nan`` with one class only."""
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return float("nan")
    return float(np.mean([roc_auc_score(y, s) for s in scores]))


def roc_auc_ci(y_true: np.ndarray, scores: np.ndarray | Sequence[np.ndarray], n_bootstrap: int = 1000,
               confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """AUC with a percentile-bootstrap CI; ``scores`` may be one array or one per seed.

    With several score arrays the AUC is their mean AUC and each bootstrap resample
    (:func:`scipy.stats.bootstrap`, images resampled with their labels and all score arrays
    together) averages over all of them. Resamples that hold one class only have no AUC and
    are left out of the interval.

    Returns:
        ``{"auc", "ci_low", "ci_high", "n", "n_positive"}`` (``nan`` where undefined).
    """
    arrays = [scores] if np.ndim(scores[0]) == 0 else list(scores)
    pairs = [_binary(y_true, s) for s in arrays]
    y = pairs[0][0]
    sizes = {"n": int(len(y)), "n_positive": int(y.sum())}
    if len(np.unique(y)) < 2:
        warnings.warn("ROC-AUC is undefined with only one class present; returning nan", RuntimeWarning, stacklevel=2)
        nan = float("nan")
        return {"auc": nan, "ci_low": nan, "ci_high": nan, **sizes}
    data = (y, *(s for _, s in pairs))
    low, high = _percentile_ci(data, _mean_auc, n_bootstrap, confidence, seed)
    return {"auc": _mean_auc(*data), "ci_low": low, "ci_high": high, **sizes}


def _percentile_ci(data: Sequence[np.ndarray], statistic: Callable[..., float], n_resamples: int,
                   confidence: float, seed: int) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of ``statistic``, ignoring resamples where it is ``nan``."""
    if n_resamples < 1 or len(data[0]) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(data, statistic, n_resamples=n_resamples, paired=True, vectorized=False,
                           confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if np.isnan(low) or np.isnan(high):
        defined = result.bootstrap_distribution[~np.isnan(result.bootstrap_distribution)]
        if len(defined) == 0:
            return float("nan"), float("nan")
        alpha = (1 - confidence) / 2
        low, high = np.quantile(defined, [alpha, 1 - alpha])
    return float(low), float(high)


def roc_curve_points(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of the ROC curve (for plots)."""
    from sklearn.metrics import roc_curve

    y, s = _binary(y_true, y_score)
    if len(np.unique(y)) < 2:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions among known labels (``-1`` ignored); ``nan`` if none."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    keep = y_true >= 0
    if not keep.any():
        warnings.warn("accuracy is undefined without known labels; returning nan", RuntimeWarning, stacklevel=2)
        return float("nan")
    return float((y_true[keep] == y_pred[keep]).mean())


def _task_targets(targets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"cancer": np.asarray(targets["cancer"]), "density": np.asarray(targets["density"])}


def run_utility(real_train: tuple[torch.Tensor, Mapping[str, np.ndarray]],
                synthetic: tuple[torch.Tensor, Mapping[str, np.ndarray]],
                real_test: tuple[torch.Tensor, Mapping[str, np.ndarray]],
                recipe: Recipe, seeds: Sequence[int] = (0, 1, 2), n_bootstrap: int = 1000,
                regimes: Sequence[str] = REGIMES) -> dict[str, Any]:
    """Train the recipe per regime and seed; score cancer AUC and density accuracy on real test.

    Args:
        real_train, synthetic, real_test: ``(inputs, targets)`` pairs (see
            :func:`~mammosynth.evaluation.classifiers.manifest_targets`).
        recipe: the one classifier recipe.
        seeds: training seeds.
        n_bootstrap: bootstrap resamples for the AUC CI.
        regimes: subset of :data:`REGIMES`.

    Returns:
        ``{regime: {"cancer_auc": {...CI...}, "cancer_auc_per_seed": [...],
        "density_accuracy": mean, "density_accuracy_per_seed": [...], "n_train": int,
        "seconds": float}, "tstr_over_trtr": ratio, "roc": {regime: (fpr, tpr)}, ...}``
    """
    unknown = set(regimes) - set(REGIMES)
    if unknown:
        raise ValueError(f"unknown utility regime(s) {sorted(unknown)}; choose from {list(REGIMES)}")
    test_inputs, test_targets = real_test[0], _task_targets(real_test[1])
    sources = {
        "trtr": [real_train],
        "tstr": [synthetic],
        "real_plus_synthetic": [real_train, synthetic],
    }
    result: dict[str, Any] = {"recipe": recipe.to_dict(), "seeds": list(seeds), "roc": {}}
    for regime in regimes:
        inputs = torch.cat([s[0] for s in sources[regime]])
        targets = {k: np.concatenate([_task_targets(s[1])[k] for s in sources[regime]]) for k in ("cancer", "density")}
        started = time.perf_counter()
        scores, density_acc = [], []
        for seed in seeds:
            model = fit(inputs, targets, recipe, seed=seed, num_classes={"cancer": 2, "density": 4})
            probs = predict(model, test_inputs)
            scores.append(probs["cancer"][:, 1])
            density_acc.append(accuracy(test_targets["density"], probs["density"].argmax(1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_seed = [roc_auc(test_targets["cancer"], s) for s in scores]
        result[regime] = {
            "cancer_auc": roc_auc_ci(test_targets["cancer"], scores, n_bootstrap=n_bootstrap),
            "cancer_auc_per_seed": per_seed,
            "density_accuracy": float(np.mean(density_acc)),
            "density_accuracy_per_seed": density_acc,
            "n_train": int(len(inputs)),
            "n_train_cancer": int((targets["cancer"] == 1).sum()),
            "seconds": round(time.perf_counter() - started, 2),
        }
        result["roc"][regime] = [c.tolist() for c in roc_curve_points(test_targets["cancer"], np.mean(scores, 0))]
        logger.info("utility %s: cancer AUC %.3f, density accuracy %.3f", regime,
                    result[regime]["cancer_auc"]["auc"], result[regime]["density_accuracy"])
    if "trtr" in result and "tstr" in result:
        result["tstr_over_trtr"] = result["tstr"]["cancer_auc"]["auc"] / result["trtr"]["cancer_auc"]["auc"]
    if "trtr" in result and "real_plus_synthetic" in result:
        result["real_plus_synthetic_minus_trtr"] = (
            result["real_plus_synthetic"]["cancer_auc"]["auc"] - result["trtr"]["cancer_auc"]["auc"])
    result["n_test"] = int(len(test_inputs))
    result["n_test_cancer"] = int((test_targets["cancer"] == 1).sum())
    return result
