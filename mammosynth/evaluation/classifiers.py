"""Training and running the small evaluation CNNs (utility, adherence, realism, encoder).

One recipe (:class:`Recipe`) for every classifier an evaluation trains, so that TRTR,
TSTR and real + synthetic differ only in their training data. Labels come from the
prepared manifests (:func:`manifest_targets`), with ``-1`` for unknown values.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..conditions import Density, Lesion, View
from ..data.prepared import PreparedData
from ..models.classifier import MammoCNN, frames_to_input, masks_to_heatmap

__all__ = [
    "Recipe",
    "manifest_targets",
    "load_inputs",
    "load_heatmaps",
    "fit",
    "predict",
]

logger = logging.getLogger(__name__)

_DENSITY = [d.value for d in Density]
_LESION = [l.value for l in Lesion]
_VIEW = [v.value for v in View]


@dataclass
class Recipe:
    """How every evaluation classifier is trained.

    Attributes:
        size: ``(height, width)`` of the downsampled input.
        block_out_channels: CNN widths.
        epochs, batch_size, lr, weight_decay: optimisation (AdamW, cosine schedule).
        heatmap_weight: weight of the lesion heat-map loss (localisation head only).
        max_train: cap on training images (random subset), ``None`` = all.
    """

    size: tuple[int, int] = (64, 48)
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    heatmap_weight: float = 1.0
    max_train: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["block_out_channels"] = list(self.block_out_channels)
        return data


def _code(values: Any, vocabulary: list[str]) -> np.ndarray:
    lookup = {v.lower(): i for i, v in enumerate(vocabulary)}
    return np.array([lookup.get(str(v).strip().lower(), -1) for v in values], dtype=np.int64)


def manifest_targets(rows: Any) -> dict[str, np.ndarray]:
    """0-based class targets per task from manifest rows (``-1`` = unknown).

    Tasks: ``density`` (A–D → 0–3), ``lesion`` (§7 order → 0–4), ``view`` (CC, MLO → 0, 1),
    ``cancer`` (1 if BI-RADS ≥ 4; from the ``cancer`` column, else from ``birads``).
    """
    cancer = np.full(len(rows), -1, dtype=np.int64)
    for i, (c, b) in enumerate(zip(rows["cancer"], rows["birads"])):
        if c == c and str(c) != "":
            cancer[i] = int(float(c))
        elif b == b and str(b) != "":
            cancer[i] = int(float(b) >= 4)
    return {
        "density": _code(rows["density"], _DENSITY),
        "lesion": _code(rows["lesion"], _LESION),
        "view": _code(rows["view"], _VIEW),
        "cancer": cancer,
    }


def load_inputs(data: PreparedData, rows: Any, size: tuple[int, int]) -> torch.Tensor:
    """Network inputs ``(len(rows), 1, h, w)`` for manifest rows of a prepared dataset."""
    indices = rows["index"].to_numpy(dtype=np.int64)
    out = torch.empty((len(indices), 1, *size), dtype=torch.float32)
    for start in range(0, len(indices), 512):
        out[start:start + 512] = frames_to_input(data.frames(indices[start:start + 512]), size)
    return out


def load_heatmaps(data: PreparedData, rows: Any, size: tuple[int, int]) -> torch.Tensor:
    """Lesion heat-map targets at 1/4 of ``size`` for manifest rows."""
    target = (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    return masks_to_heatmap(data.masks(rows), target) if len(rows) else torch.zeros((0, 1, *target))


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fit(inputs: torch.Tensor, targets: Mapping[str, np.ndarray | torch.Tensor], recipe: Recipe,
        seed: int = 0, heatmaps: torch.Tensor | None = None,
        num_classes: Mapping[str, int] | None = None) -> MammoCNN:
    """Train a :class:`MammoCNN` with one head per target (and a heat-map head if given).

    Args:
        inputs: ``(N, 1, h, w)`` in [-1, 1].
        targets: task → ``(N,)`` int class indices, ``-1`` = ignore.
        recipe: the training recipe.
        seed: seeds initialisation, subset choice and batch order.
        heatmaps: optional ``(N, 1, h/4, w/4)`` lesion targets for the localisation head.
        num_classes: task → classes (default: max target + 1, at least 2).

    Returns:
        the trained model in eval mode.
    """
    n = len(inputs)
    if n < 2:
        raise ValueError(f"a classifier needs at least 2 training images, got {n}")
    tensors = {k: torch.as_tensor(np.asarray(v), dtype=torch.long) for k, v in targets.items()}
    for name, t in tensors.items():
        if len(t) != n:
            raise ValueError(f"target {name!r} has {len(t)} values for {n} images")
    classes = dict(num_classes or {k: max(int(t.max()) + 1, 2) for k, t in tensors.items()})
    generator = _seed_everything(seed)
    index = torch.arange(n)
    if recipe.max_train and n > recipe.max_train:
        index = torch.randperm(n, generator=generator)[: recipe.max_train]
    model = MammoCNN(classes, recipe.block_out_channels, localisation=heatmaps is not None)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = max(1, recipe.epochs * math.ceil(len(index) / recipe.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe.lr, total_steps=steps, pct_start=0.2)
    pos_weight = None
    if heatmaps is not None:
        positive = float(heatmaps.mean())
        pos_weight = torch.tensor(min(50.0, (1 - positive) / max(positive, 1e-4)))
    model.train()
    started = time.perf_counter()
    for _ in range(recipe.epochs):
        order = index[torch.randperm(len(index), generator=generator)]
        for start in range(0, len(order), recipe.batch_size):
            batch = order[start:start + recipe.batch_size]
            if len(batch) < 2:  # BatchNorm needs 2 samples
                continue
            out = model(inputs[batch])
            loss = torch.zeros(())
            for name, t in tensors.items():
                y = t[batch]
                if (y >= 0).any():
                    loss = loss + F.cross_entropy(out[name], y, ignore_index=-1)
            if heatmaps is not None:
                loss = loss + recipe.heatmap_weight * F.binary_cross_entropy_with_logits(
                    out["heatmap"], heatmaps[batch], pos_weight=pos_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    _recalibrate_batchnorm(model, inputs[index], recipe.batch_size)
    logger.debug("trained %s on %d images in %.1fs", list(classes), len(index), time.perf_counter() - started)
    return model.eval()


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> None:
    """Recompute BatchNorm running statistics with the final weights (exact averages).

    Short trainings leave the running averages close to their initial values, which makes
    eval-mode outputs wrong; one pass over the training images fixes that.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches of this pass
    model.train()
    for start in range(0, len(inputs), max(batch_size, 2)):
        batch = inputs[start:start + max(batch_size, 2)]
        if len(batch) > 1:
            model(batch)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Softmax probabilities per task ``(N, classes)``, ``"heatmap"`` probabilities, ``"features"``."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(inputs), batch_size):
        out = model(inputs[start:start + batch_size], with_features=True)
        for name, value in out.items():
            if name == "heatmap":
                value = torch.sigmoid(value)
            elif name != "features":
                value = torch.softmax(value, dim=1)
            parts.setdefault(name, []).append(value.double().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
