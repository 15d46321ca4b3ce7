"""Feature extractors for the fidelity metrics: our trained encoder, or a local Inception file.

* :func:`train_fidelity_encoder` trains :class:`~mammosynth.models.encoder.FidelityEncoder`
  on the real training split (multi-task: density, lesion type, view, cancer, plus the
  lesion heat map) and records how in its config.
* :func:`load_fidelity_encoder` finds one: an explicit folder, or ``feature_extractor/``
  inside a checkpoint folder.
* :class:`InceptionFeatures` wraps a **user-supplied** TorchScript Inception file, e.g.
  ``inception-2015-12-05.pt`` (the TF-FID port that StyleGAN2-ADA and clean-fid use,
  called as ``model(images, return_features=True)`` on 0–255 RGB images → 2048 features).
  Any TorchScript module mapping ``(N, 3, 299, 299)`` 0–255 images to ``(N, D)`` (or
  ``(N, D, 1, 1)``) features works too. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..data.prepared import PreparedData
from ..models.encoder import ENCODER_TASKS, FidelityEncoder
from .classifiers import Recipe, fit, load_heatmaps, load_inputs, manifest_targets, predict
from .utility import accuracy

__all__ = ["FeatureExtractor", "InceptionFeatures", "train_fidelity_encoder", "load_fidelity_encoder",
           "describe_extractor"]

logger = logging.getLogger(__name__)


class FeatureExtractor(Protocol):
    """Anything with ``embed(frames uint16 (N, H, W)) -> (N, D)`` features."""

    def embed(self, frames: np.ndarray, batch_size: int = ...) -> np.ndarray: ...


class InceptionFeatures:
    """Features from a local TorchScript Inception file (never downloaded).

    Args:
        path: the ``.pt`` TorchScript file (e.g. ``inception-2015-12-05.pt``).
        resize: input size the frames are resized to (299 for Inception v3).
    """

    def __init__(self, path: str | os.PathLike, resize: int = 299):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"--inception-weights {self.path} does not exist: pass a local TorchScript Inception file "
                "such as inception-2015-12-05.pt (mammosynth never downloads weights)"
            )
        try:
            self.model = torch.jit.load(str(self.path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"--inception-weights {self.path} is not a TorchScript file that torch.jit.load can read "
                f"({error}); export your Inception model with torch.jit.script/trace first"
            ) from None
        self.resize = resize
        self._with_flag: bool | None = None

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self._with_flag is not False:
            try:
                out = self.model(x, return_features=True)
                self._with_flag = True
                return out
            except (RuntimeError, TypeError):
                if self._with_flag:
                    raise
                self._with_flag = False
        return self.model(x)

    @torch.no_grad()
    def embed(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Features ``(N, D)`` float64: frames → 0–255 grey repeated to RGB, resized to 299²."""
        out = []
        for start in range(0, len(frames), batch_size):
            x = torch.from_numpy(np.asarray(frames[start:start + batch_size]).astype(np.float32) / 257.0)[:, None]
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
            features = self._call(x.repeat(1, 3, 1, 1))
            out.append(features.reshape(len(x), -1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def train_fidelity_encoder(data: PreparedData, split: str | None = "training", sample_size: tuple[int, int] = (128, 96),
                           block_out_channels: tuple[int, ...] = (16, 32, 64, 128), epochs: int = 10,
                           batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                           validation_split: str | None = None) -> FidelityEncoder:
    """Train the fidelity encoder on real labels (density, lesion, view, cancer + heat map).

    Args:
        data: a prepared dataset of *real* images.
        split: the split to train on (``None`` = all rows).
        sample_size, block_out_channels: network input size and widths.
        epochs, batch_size, lr, seed: optimisation.
        validation_split: a split to report accuracies on (stored in ``training_info``).
    """
    rows = data.split(split)
    if len(rows) < 8:
        raise ValueError(f"the fidelity encoder needs at least 8 training images, {data.root} split {split!r} has {len(rows)}")
    recipe = Recipe(size=tuple(sample_size), block_out_channels=tuple(block_out_channels), epochs=epochs,
                    batch_size=batch_size, lr=lr)
    started = time.perf_counter()
    inputs = load_inputs(data, rows, recipe.size)
    net = fit(inputs, manifest_targets(rows), recipe, seed=seed, heatmaps=load_heatmaps(data, rows, recipe.size),
              num_classes=ENCODER_TASKS)
    info: dict[str, Any] = {
        "what": "MammoCNN trained supervised on real labels: density (A-D), lesion type (5), view (CC/MLO), "
                "cancer (BI-RADS>=4), plus a lesion heat map; features = pooled last stage",
        "data": str(data.root), "data_source": str(data.meta.get("source", "unknown")), "split": split,
        "n_images": int(len(rows)), "recipe": recipe.to_dict(), "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if validation_split:
        val = data.split(validation_split)
        probs = predict(net, load_inputs(data, val, recipe.size))
        targets = manifest_targets(val)
        info["validation"] = {f"{t}_accuracy": accuracy(targets[t], probs[t].argmax(1)) for t in ENCODER_TASKS}
        info["validation"]["split"] = validation_split
    encoder = FidelityEncoder(sample_size=tuple(sample_size), block_out_channels=tuple(block_out_channels),
                              tasks=dict(ENCODER_TASKS), localisation=True, training_info=info)
    encoder.net.load_state_dict(net.state_dict())
    return encoder.eval()


def load_fidelity_encoder(path: str | os.PathLike) -> FidelityEncoder:
    """Load an encoder from its folder, or from ``<checkpoint>/feature_extractor``."""
    path = Path(path)
    for candidate in (path, path / "feature_extractor"):
        if (candidate / "config.json").is_file() and any(candidate.glob("*.safetensors")) | any(candidate.glob("*.bin")):
            return FidelityEncoder.from_pretrained(candidate).eval()
    raise FileNotFoundError(
        f"no fidelity encoder in {path} (looked for config.json + weights there and in {path / 'feature_extractor'}); "
        "train one with `mammosynth train-encoder --data DATA --out DIR`"
    )


def describe_extractor(extractor: Any) -> dict[str, Any]:
    """What produced the features, for ``metrics.json``."""
    if isinstance(extractor, InceptionFeatures):
        return {"kind": "inception-torchscript", "path": str(extractor.path)}
    if isinstance(extractor, FidelityEncoder):
        return {"kind": "mammosynth-fidelity-encoder", "feature_dim": extractor.feature_dim,
                "sample_size": list(extractor.config.sample_size),
                "training_info": dict(extractor.config.training_info or {})}
    return {"kind": type(extractor).__name__}
