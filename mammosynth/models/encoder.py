"""The fidelity feature extractor: a mammography CNN trained on real labels (DESIGN §10).

ImageNet Inception weights are not available here, so FID/KID/precision–recall use this
encoder instead: a :class:`~mammosynth.models.classifier.MammoCNN` trained *supervised*
on the real training split with four tasks at once — breast density (A–D), primary lesion
type (none, mass, calcification, architectural distortion, asymmetry), view (CC/MLO) and
cancer (BI-RADS ≥ 4) — plus a lesion heat-map head. Its features are the globally pooled
last stage (``block_out_channels[-1]`` numbers, 128 by default), taken in eval mode on
frames area-downsampled to ``sample_size``.

It is shipped in the checkpoint folder as ``feature_extractor/`` (``save_pretrained``) and
loaded with ``FidelityEncoder.from_pretrained(path)``. Its config records how it was
trained (``training_info``) so every report can state which extractor produced its numbers.
The same heads score condition adherence of synthetic images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .classifier import MammoCNN, frames_to_input

__all__ = ["FidelityEncoder", "ENCODER_TASKS", "ENCODER_PRESETS"]

#: Named sizes (``sample_size``, ``block_out_channels``). ``bundled`` is the 2-CPU encoder (the
#: ``train-encoder`` defaults); ``tiny`` is for tests; ``vindr-512`` / ``vindr-1024`` see the frames at half
#: their size, wide enough for texture statistics of real mammograms.
ENCODER_PRESETS: dict[str, dict] = {
    "bundled": {"sample_size": (128, 96), "block_out_channels": (16, 32, 64, 128)},
    "tiny": {"sample_size": (32, 24), "block_out_channels": (8, 16)},
    "vindr-512": {"sample_size": (256, 192), "block_out_channels": (32, 64, 128, 256, 256)},
    "vindr-1024": {"sample_size": (512, 384), "block_out_channels": (32, 64, 128, 256, 256, 256)},
}
ENCODER_PRESETS["device-512"] = ENCODER_PRESETS["bundled"]
ENCODER_PRESETS["vindr-tiny"] = ENCODER_PRESETS["tiny"]


#: The supervised tasks of the encoder and their class counts (targets are 0-based).
ENCODER_TASKS: dict[str, int] = {"density": 4, "lesion": 5, "view": 2, "cancer": 2}


class FidelityEncoder(ModelMixin, ConfigMixin):
    """Mammography feature extractor for FID/KID/PRDC, with density/lesion/view/cancer heads.

    Args:
        sample_size: ``(height, width)`` the frames are downsampled to.
        block_out_channels: CNN widths (the embedding has the last one).
        tasks: task → number of classes (default :data:`ENCODER_TASKS`).
        localisation: include the lesion heat-map head.
        training_info: free-form provenance (data, split, epochs, accuracy) written by training.
    """

    @register_to_config
    def __init__(self, sample_size: tuple[int, int] | list[int] = (128, 96),
                 block_out_channels: tuple[int, ...] | list[int] = (16, 32, 64, 128),
                 tasks: dict[str, int] | None = None, localisation: bool = True,
                 training_info: dict[str, Any] | None = None):
        super().__init__()
        if len(sample_size) != 2 or min(sample_size) < 8:
            raise ValueError(f"sample_size must be (height, width) of at least 8 pixels, got {sample_size}")
        self.net = MammoCNN(dict(tasks or ENCODER_TASKS), block_out_channels, localisation=localisation)

    @property
    def feature_dim(self) -> int:
        return self.net.embedding_dim

    def forward(self, images: torch.Tensor, with_features: bool = False) -> dict[str, torch.Tensor]:
        """``(N, 1, h, w)`` in [-1, 1] → ``{task: logits, "heatmap": ..., ["features"]}``."""
        return self.net(images, with_features=with_features)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint16 frames ``(N, H, W)`` → network input at ``sample_size``."""
        return frames_to_input(frames, tuple(self.config.sample_size))

    @torch.no_grad()
    def embed(self, frames: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Features ``(N, feature_dim)`` float64 of uint16 frames (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(frames), batch_size):
            x = self.preprocess(np.asarray(frames[start:start + batch_size])).to(self.device)
            out.append(self.net.features(x).double().cpu().numpy())
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim))
