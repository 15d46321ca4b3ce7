"""Condition adherence: does a synthetic image show what was asked for? (DESIGN §10)

Classifiers trained on *real* data (the fidelity encoder's density / lesion / view heads and
its lesion heat map) score synthetic images whose requested conditions are their manifest
labels. Each score is reported beside the same classifier's score on real test images, and
as their ratio (``synthetic / real``; 1.0 = the synthetic images are as recognisable as
real ones).

Localisation: for each image with a requested lesion box, the heat map's peak must fall
inside the box (**hit rate**); the predicted box (the bounding box of heat-map cells with
probability ≥ 0.5, or the peak cell if none) is compared with the requested box (**IoU**).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from ..conditions import Box
from .utility import accuracy

__all__ = ["box_iou", "localisation_scores", "adherence_scores", "compare_adherence", "ADHERENCE_TASKS"]

#: Label tasks scored for adherence.
ADHERENCE_TASKS = ("lesion", "density", "view")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (any consistent units)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _predicted_box(heatmap: np.ndarray, threshold: float = 0.5) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    h, w = heatmap.shape
    py, px = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    peak = ((px + 0.5) / w, (py + 0.5) / h)
    ys, xs = np.nonzero(heatmap >= threshold)
    if len(xs) == 0:
        ys, xs = np.array([py]), np.array([px])
    return (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h), peak


def localisation_scores(heatmaps: np.ndarray, boxes: Sequence[Box | None]) -> dict[str, float]:
    """Hit rate and mean IoU of predicted lesion locations against requested boxes.

    Args:
        heatmaps: ``(N, 1, h, w)`` or ``(N, h, w)`` lesion probabilities (canonical frame).
        boxes: per image the requested box (normalised, canonical frame) or ``None``;
            images without a box are skipped.

    Returns:
        ``{"hit_rate", "mean_iou", "n"}`` (``nan`` with a warning when no image has a box).
    """
    maps = np.asarray(heatmaps)
    if maps.ndim == 4:
        maps = maps[:, 0]
    if len(maps) != len(boxes):
        raise ValueError(f"got {len(maps)} heat maps for {len(boxes)} boxes")
    hits, ious = [], []
    for heatmap, box in zip(maps, boxes):
        if box is None:
            continue
        target = box.as_tuple()
        predicted, (px, py) = _predicted_box(heatmap)
        hits.append(target[0] <= px <= target[2] and target[1] <= py <= target[3])
        ious.append(box_iou(predicted, target))
    if not hits:
        warnings.warn("localisation is undefined: no image has a lesion box; returning nan", RuntimeWarning, stacklevel=2)
        return {"hit_rate": float("nan"), "mean_iou": float("nan"), "n": 0}
    return {"hit_rate": float(np.mean(hits)), "mean_iou": float(np.mean(ious)), "n": len(hits)}


def adherence_scores(probabilities: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray],
                     boxes: Sequence[Box | None] | None = None) -> dict[str, Any]:
    """Accuracy per task (``lesion``, ``density``, ``view``) and localisation for one image set."""
    scores: dict[str, Any] = {}
    for task in ADHERENCE_TASKS:
        if task in probabilities and task in targets:
            y = np.asarray(targets[task])
            scores[f"{task}_accuracy"] = accuracy(y, probabilities[task].argmax(1)) if (y >= 0).any() else float("nan")
    if boxes is not None and "heatmap" in probabilities:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            scores["localisation"] = localisation_scores(probabilities["heatmap"], boxes)
    return scores


def compare_adherence(synthetic: Mapping[str, Any], real: Mapping[str, Any]) -> dict[str, Any]:
    """Put synthetic and real scores side by side with their ratio (synthetic / real)."""
    out: dict[str, Any] = {"synthetic": dict(synthetic), "real": dict(real), "ratio": {}}
    for key, value in synthetic.items():
        if isinstance(value, float) and isinstance(real.get(key), float) and real[key] and np.isfinite(real[key]):
            out["ratio"][key] = value / real[key]
    for key in ("hit_rate", "mean_iou"):
        s, r = synthetic.get("localisation", {}).get(key), real.get("localisation", {}).get(key)
        if s is not None and r and np.isfinite(r):
            out["ratio"][f"localisation_{key}"] = s / r
    return out
