"""The conditional denoiser: UNet + condition encoder + lesion mask at latent size, as one module.

This is the only place the UNet is called. Training (``train-ldm``), the pipeline's sampling loop,
the membership attacks and anything built later (a distilled student) all run
``denoiser(noisy_latents, timesteps, conditions)``; what goes into the UNet (the latents with the
mask as one more channel, the condition embedding added to the time embedding) is decided here once.

The UNet and the condition encoder stay separate diffusers components (``unet/`` and
``condition_encoder/`` of a checkpoint folder); this module only holds them, so wrapping them
costs nothing and the same weights train, sample and are attacked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from diffusers import UNet2DModel
from torch import nn

from .conditioning import ConditionEncoder
from .unet import latent_mask

__all__ = ["EncodedConditions", "ConditionalDenoiser"]


@dataclass
class EncodedConditions:
    """What the denoiser is conditioned on, for a batch of ``N``.

    Attributes:
        codes: one LongTensor ``(N,)`` per condition field (0 = unspecified), as
            :meth:`mammosynth.conditions.Conditions.encode` gives them.
        masks: lesion masks ``(N, 1, H, W)``, at image or latent size (image size is
            area-averaged down to the latents).
        guidance: the guidance scale per item ``(N,)`` float, for a distilled student whose condition
            encoder embeds it (:func:`~mammosynth.models.conditioning.with_guidance_embedding`);
            ``None`` (default) for the teacher.
    """

    codes: Mapping[str, torch.Tensor]
    masks: torch.Tensor
    guidance: torch.Tensor | None = None


class ConditionalDenoiser(nn.Module):
    """``(noisy_latents, timesteps, conditions) -> prediction`` (noise or velocity, as trained).

    Args:
        unet: a ``UNet2DModel`` with ``latent_channels + 1`` input channels (the last one is the
            lesion mask) and ``class_embed_type="identity"``.
        condition_encoder: maps the condition codes to the UNet's time-embedding width.
    """

    def __init__(self, unet: UNet2DModel, condition_encoder: ConditionEncoder):
        super().__init__()
        self.unet = unet
        self.condition_encoder = condition_encoder

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor | int,
                conditions: EncodedConditions) -> torch.Tensor:
        """The UNet's prediction for model-space latents ``(N, C, h, w)``.

        ``timesteps`` is one per item or a single value for all.
        """
        masks = conditions.masks.to(noisy_latents.device, noisy_latents.dtype)
        latent_masks = latent_mask(masks, noisy_latents.shape[-2:])
        if conditions.guidance is None:
            class_labels = self.condition_encoder(conditions.codes)
        else:
            class_labels = self.condition_encoder(conditions.codes, guidance=conditions.guidance)
        dtype = self.unet.conv_in.weight.dtype   # not ModelMixin.dtype: that walks every submodule per call
        class_labels = class_labels.to(dtype)
        model_input = torch.cat([noisy_latents, latent_masks], dim=1).to(dtype)
        if not torch.is_tensor(timesteps) or timesteps.dim() == 0:
            timesteps = torch.full((noisy_latents.shape[0],), int(timesteps), device=noisy_latents.device)
        return self.unet(model_input, timesteps, class_labels=class_labels).sample
