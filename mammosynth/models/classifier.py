"""A small multi-task CNN for mammograms: the evaluation classifiers and the fidelity encoder.

One backbone (a stem and ``len(block_out_channels) - 1`` stride-2 residual-free stages of
two 3×3 convolutions each, BatchNorm and ReLU), global average pooling to an embedding of
``block_out_channels[-1]`` numbers, and one linear head per task. An optional
localisation head predicts a lesion heat map (logits) at 1/4 of the input size from the
second stage, trained against the lesion-box mask.

It works on downsampled frames (e.g. 128×96 or 64×48) so that every classifier of an
evaluation trains in seconds to minutes on a CPU. No torchvision: plain ``torch.nn``.

Targets use ``-1`` for "unknown"; those samples are ignored by that task's loss.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MammoCNN", "frames_to_input", "masks_to_heatmap"]


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MammoCNN(nn.Module):
    """Backbone + task heads.

    Args:
        heads: task name → number of classes (binary tasks use 2).
        block_out_channels: channels of the stem and of each following stride-2 stage;
            the embedding has ``block_out_channels[-1]`` features.
        in_channels: input channels (1 for mammograms).
        localisation: add a lesion heat-map head (output key ``"heatmap"``).
        dropout: dropout before the heads.
    """

    def __init__(self, heads: Mapping[str, int], block_out_channels: Sequence[int] = (16, 32, 64, 128),
                 in_channels: int = 1, localisation: bool = False, dropout: float = 0.1):
        super().__init__()
        channels = [int(c) for c in block_out_channels]
        if len(channels) < 2:
            raise ValueError(f"block_out_channels needs at least 2 entries, got {list(block_out_channels)}")
        bad = {name: n for name, n in heads.items() if int(n) < 2}
        if bad:
            raise ValueError(f"every head needs at least 2 classes, got {bad}")
        self.stem = _stage(in_channels, channels[0], stride=2)
        self.stages = nn.ModuleList(_stage(a, b, stride=2) for a, b in zip(channels[:-1], channels[1:]))
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(channels[-1], int(n)) for name, n in heads.items()})
        self.heatmap = nn.Conv2d(channels[1], 1, 1) if localisation else None
        self.embedding_dim = channels[-1]

    def forward(self, images: torch.Tensor, with_features: bool = False) -> dict[str, torch.Tensor]:
        """``images`` ``(N, C, H, W)`` in [-1, 1] → ``{task: logits (N, classes)}``.

        Adds ``"heatmap"`` ``(N, 1, H/4, W/4)`` logits with localisation, and ``"features"``
        (the pooled embedding) when ``with_features``.
        """
        x = self.stem(images)
        out: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 0 and self.heatmap is not None:
                out["heatmap"] = self.heatmap(x)
        features = x.mean(dim=(2, 3))
        pooled = self.dropout(features)
        for name, head in self.heads.items():
            out[name] = head(pooled)
        if with_features:
            out["features"] = features
        return out

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``(N, embedding_dim)``."""
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3))


def frames_to_input(frames: np.ndarray, size: tuple[int, int], chunk: int = 256) -> torch.Tensor:
    """uint16 frames ``(N, H, W)`` → float32 ``(N, 1, h, w)`` in [-1, 1], area-downsampled.

    Args:
        frames: uint16 array (a memmap slice is fine) in the canonical orientation.
        size: ``(h, w)`` of the network input.
        chunk: frames converted at a time (bounds memory).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (N, H, W), got shape {frames.shape}")
    h, w = int(size[0]), int(size[1])
    out = torch.empty((len(frames), 1, h, w), dtype=torch.float32)
    for start in range(0, len(frames), chunk):
        block = torch.from_numpy(frames[start:start + chunk].astype(np.float32))[:, None] / 32767.5 - 1.0
        if block.shape[-2:] != (h, w):
            block = F.interpolate(block, size=(h, w), mode="area")
        out[start:start + len(block)] = block
    return out


def masks_to_heatmap(masks: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Lesion masks ``(N, H, W)`` → float ``(N, 1, h, w)`` targets (1 where any box pixel falls)."""
    masks = torch.as_tensor(np.asarray(masks, dtype=np.float32))[:, None]
    if masks.shape[-2:] == tuple(size):
        return (masks > 0).float()
    return (F.adaptive_max_pool2d(masks, output_size=tuple(size)) > 0).float()
