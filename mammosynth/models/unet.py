"""The conditional denoiser: a diffusers ``UNet2DModel`` over latents + lesion mask.

Why ``UNet2DModel`` with ``class_embed_type="identity"`` and not ``UNet2DConditionModel``
with cross-attention: our conditions are five small categorical labels plus one spatial
mask, not a token sequence. A single embedding vector (from
:class:`~mammosynth.models.conditioning.ConditionEncoder`) added to the timestep embedding
modulates every ResNet block (like class conditioning in ADM), costs nothing at inference,
and the lesion *location* goes in where location belongs: as an extra input channel
aligned with the latent pixels. Cross-attention over five tokens would add parameters and
per-step cost (which matters on a 2-core CPU) without adding information.

Input channels: ``latent_channels`` (4) + 1 lesion-mask channel (the box mask
down-sampled to latent size); output: ``latent_channels`` (the predicted noise).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from .autoencoder import rebuilt_with

__all__ = ["UNET_PRESETS", "build_unet", "latent_mask", "widen_unet_latent"]

#: Named sizes. ``bundled`` is the 2-CPU demo model; ``tiny`` is for tests; ``vindr-512`` / ``vindr-1024`` are
#: for VinDr-Mammo on GPUs (64x48 / 128x96 latents of an f = 8 VAE) and ``device-512`` is the one-shot GPU job's
#: (512x384 frames, small enough to train for minutes and pack in < 128 MB at fp16). Self-attention (diffusers
#: SDPA) only from 32x24 latent cells down: at 64x48 (3,072 tokens) and above it costs more than the
#: convolutions it sits beside, and the mid block's attention already sees the whole breast. The training
#: side of these presets (batch, bf16, checkpointing) is :data:`mammosynth.training.presets.TRAINING_PRESETS`.
UNET_PRESETS: dict[str, dict] = {
    # Sized for 2 CPU cores: ~1.3 s per step of 16 latents on one thread.
    "bundled": {"block_out_channels": (32, 64, 128), "layers_per_block": 1, "attention_levels": (False, True, True),
                "norm_num_groups": 32, "attention_head_dim": 32},
    "tiny": {"block_out_channels": (8, 16), "layers_per_block": 1, "attention_levels": (False, True),
             "norm_num_groups": 4, "attention_head_dim": 8},
    # 64x48 latents: attention at 32x24, 16x12 and 8x6
    "vindr-512": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
                  "attention_levels": (False, True, True, True), "norm_num_groups": 32, "attention_head_dim": 64},
    # 128x96 latents: five levels, attention at 32x24, 16x12 and 8x6
    "vindr-1024": {"block_out_channels": (128, 256, 512, 512, 768), "layers_per_block": 2,
                   "attention_levels": (False, False, True, True, True), "norm_num_groups": 32,
                   "attention_head_dim": 64},
    "device-512": {"block_out_channels": (64, 128, 256, 256), "layers_per_block": 2,
                   "attention_levels": (False, True, True, True), "norm_num_groups": 32, "attention_head_dim": 64},
}
UNET_PRESETS["vindr-tiny"] = UNET_PRESETS["tiny"]   # the GPU scripts at test size (tests/test_train_vindr.py)



def build_unet(
    sample_size: tuple[int, int] = (32, 24),
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (64, 128, 256),
    layers_per_block: int = 2,
    attention_levels: Sequence[bool] = (False, True, True),
    norm_num_groups: int = 32,
    attention_head_dim: int = 32,
) -> UNet2DModel:
    """A fresh conditional ``UNet2DModel``; its time embedding size is ``4 * block_out_channels[0]``.

    The :class:`~mammosynth.models.conditioning.ConditionEncoder` must have
    ``out_dim == time_embed_dim(unet)``.
    """
    if len(attention_levels) != len(block_out_channels):
        raise ValueError(
            f"attention_levels {tuple(attention_levels)} needs one entry per block in {tuple(block_out_channels)}"
        )
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
    return UNet2DModel(
        sample_size=tuple(sample_size),
        in_channels=latent_channels + 1,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups,
        attention_head_dim=attention_head_dim,
        class_embed_type="identity",
    )


def time_embed_dim(unet: UNet2DModel) -> int:
    """Size of the UNet's time embedding (the condition vector must match it)."""
    return unet.config.block_out_channels[0] * 4


def latent_mask(masks: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Down-sample image-size lesion masks ``(N,1,H,W)`` to latent size (area average)."""
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must have shape (N, 1, H, W), got {tuple(masks.shape)}")
    if tuple(masks.shape[-2:]) == tuple(latent_size):
        return masks
    return F.adaptive_avg_pool2d(masks, latent_size)


def widen_unet_latent(unet: UNet2DModel, latent_channels: int) -> UNet2DModel:
    """The same denoiser for latents with more channels, as a warm start (e.g. after ``train-vae --latent_channels``).

    ``conv_in`` keeps its weights for the old latent channels and the mask channel (the last input)
    and gets zero weights for the new channels; ``conv_out`` keeps the old channels' rows and predicts
    zero for the new ones until trained. Every other weight is copied.

    Raises:
        ValueError: if ``latent_channels`` is not larger than the UNet's own.
    """
    old = unet.config.out_channels
    if latent_channels <= old:
        raise ValueError(f"latent_channels must be larger than the UNet's own {old} to widen it, got {latent_channels}")
    wide = rebuilt_with(unet, in_channels=unet.config.in_channels - old + latent_channels, out_channels=latent_channels)
    dst = wide.state_dict()
    with torch.no_grad():
        for key, value in unet.state_dict().items():
            target = dst[key]
            if target.shape == value.shape:
                target.copy_(value)
            elif key == "conv_in.weight":     # inputs: old latent channels, new ones (zero), the mask
                target.zero_()
                target[:, :old] = value[:, :old]
                target[:, latent_channels:] = value[:, old:]
            elif key.startswith("conv_out."):
                target.zero_()
                target[:old] = value
            else:
                raise ValueError(f"cannot widen {key}: shape {tuple(value.shape)} -> {tuple(target.shape)}")
    wide.load_state_dict(dst)
    return wide
