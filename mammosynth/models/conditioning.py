"""The condition encoder: §7 labels → one embedding vector for the UNet.

Each field (``birads``, ``density``, ``view``, ``laterality``, ``lesion``) has its own
embedding table whose row 0 means "unspecified" (see
:meth:`mammosynth.conditions.Conditions.encode`). The field embeddings are summed and
passed through a small MLP; the result is added to the UNet's timestep embedding
(``UNet2DModel(class_embed_type="identity")``).

Classifier-free guidance trains the "unspecified" rows by dropping fields at random
(:func:`drop_conditions`); sampling runs the UNet once with the codes and once with all
fields unspecified and extrapolates between the two.

A distilled few-step student (``mammosynth distill``, :mod:`mammosynth.training.distill`) folds the
guidance scale into the network instead: its encoder has a guidance embedding
(``guidance_embed_dim`` > 0, :func:`with_guidance_embedding`) and takes the scale ``w`` beside the
codes, so one UNet call gives the guided prediction.
"""

from __future__ import annotations

from typing import Mapping

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..conditions import NUM_CLASSES

__all__ = ["CONDITION_FIELDS", "ConditionEncoder", "drop_conditions", "unconditional_codes", "guidance_embedding",
           "with_guidance_embedding"]

#: The order of the condition fields everywhere in the model code.
CONDITION_FIELDS: tuple[str, ...] = ("birads", "density", "view", "laterality", "lesion")


class ConditionEncoder(ModelMixin, ConfigMixin):
    """Embeds the encoded §7 conditions into one vector of size ``out_dim``.

    Args:
        num_classes: classes per field, index 0 = unspecified (default
            :data:`mammosynth.conditions.NUM_CLASSES`).
        embed_dim: width of each field's embedding table.
        out_dim: size of the output vector; must equal the UNet's time embedding size.
        guidance_embed_dim: 0 (default) for none; else the width of the sinusoidal embedding of the
            guidance scale (:func:`guidance_embedding`) that a distilled student adds through
            ``guidance_mlp`` (``Linear → SiLU → Linear``, the last one zero-initialised, so that a
            new embedding changes nothing until it is trained).
    """

    @register_to_config
    def __init__(self, num_classes: dict[str, int] | None = None, embed_dim: int = 128, out_dim: int = 256,
                 guidance_embed_dim: int = 0):
        super().__init__()
        num_classes = dict(num_classes or NUM_CLASSES)
        missing = [f for f in CONDITION_FIELDS if f not in num_classes]
        if missing:
            raise ValueError(f"num_classes lacks the field(s) {missing}; it needs {list(CONDITION_FIELDS)}")
        if guidance_embed_dim != 0 and (guidance_embed_dim < 4 or guidance_embed_dim % 2):
            raise ValueError(f"guidance_embed_dim must be 0 (no guidance embedding) or an even number >= 4, "
                             f"got {guidance_embed_dim}")
        self.embeddings = nn.ModuleDict({f: nn.Embedding(num_classes[f], embed_dim) for f in CONDITION_FIELDS})
        self.mlp = nn.Sequential(nn.Linear(embed_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.guidance_mlp = None
        if guidance_embed_dim:
            self.guidance_mlp = nn.Sequential(nn.Linear(guidance_embed_dim, out_dim), nn.SiLU(),
                                              nn.Linear(out_dim, out_dim))
            nn.init.zeros_(self.guidance_mlp[-1].weight)
            nn.init.zeros_(self.guidance_mlp[-1].bias)

    def forward(self, codes: Mapping[str, torch.Tensor], guidance: torch.Tensor | float | None = None) -> torch.Tensor:
        """``codes``: a LongTensor ``(N,)`` per field → float ``(N, out_dim)``.

        ``guidance``: the guidance scale per item ``(N,)`` (or one for all), required by an encoder
        with a guidance embedding and refused by one without.
        """
        missing = [f for f in CONDITION_FIELDS if f not in codes]
        if missing:
            raise ValueError(f"condition codes lack the field(s) {missing}; expected {list(CONDITION_FIELDS)}")
        total = None
        for field in CONDITION_FIELDS:
            table = self.embeddings[field]
            code = codes[field].to(device=table.weight.device, dtype=torch.long)
            if code.numel() and (int(code.min()) < 0 or int(code.max()) >= table.num_embeddings):
                raise ValueError(
                    f"{field} codes must be in 0..{table.num_embeddings - 1}, got {code.tolist()}"
                )
            emb = table(code)
            total = emb if total is None else total + emb
        out = self.mlp(total)
        if self.guidance_mlp is None:
            if guidance is not None:
                raise ValueError("this condition encoder has no guidance embedding (guidance_embed_dim=0), so it "
                                 "takes no `guidance`; only a distilled student's encoder does")
            return out
        if guidance is None:
            raise ValueError(f"this condition encoder has a guidance embedding (guidance_embed_dim="
                             f"{self.config.guidance_embed_dim}): pass `guidance`, the guidance scale per item (N,)")
        weight = self.guidance_mlp[0].weight
        guidance = torch.as_tensor(guidance, dtype=torch.float32, device=weight.device)
        if guidance.dim() == 0:
            guidance = guidance.expand(len(out))
        if guidance.shape != (len(out),):
            raise ValueError(f"`guidance` must hold one scale per item, shape ({len(out)},), got "
                             f"{tuple(guidance.shape)}")
        embedded = guidance_embedding(guidance, self.config.guidance_embed_dim).to(weight.dtype)
        return out + self.guidance_mlp(embedded)


def guidance_embedding(guidance: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``(N, dim)`` of guidance scales ``(N,)``: the timestep embedding of ``1000 · w``
    (as the LCM student's ``w`` embedding, Luo et al. 2023; diffusers' ``get_timestep_embedding``)."""
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(guidance.float() * 1000.0, dim, flip_sin_to_cos=False, downscale_freq_shift=1)


def with_guidance_embedding(encoder: ConditionEncoder, dim: int = 256) -> ConditionEncoder:
    """A copy of a teacher's ``encoder`` with a guidance embedding of width ``dim`` added.

    The teacher's weights are copied; the new ``guidance_mlp`` ends in a zero layer, so the copy
    gives exactly the teacher's output (for any guidance) until it is trained.

    Raises:
        ValueError: if ``encoder`` already has a guidance embedding, or ``dim`` is not valid.
    """
    if encoder.config.get("guidance_embed_dim", 0):
        raise ValueError(f"the condition encoder already has a guidance embedding (guidance_embed_dim="
                         f"{encoder.config.guidance_embed_dim}): distil a teacher, not a student")
    if dim < 4 or dim % 2:
        raise ValueError(f"the guidance embedding width must be an even number >= 4, got {dim}")
    config = {k: v for k, v in encoder.config.items() if not k.startswith("_")}
    student = ConditionEncoder(**{**config, "guidance_embed_dim": dim})
    missing, unexpected = student.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected or any(not k.startswith("guidance_mlp.") for k in missing):
        raise ValueError(f"could not copy the teacher's condition encoder: missing {missing}, unexpected {unexpected}")
    weight = next(encoder.parameters())
    if weight.dtype != torch.float32:
        student = student.to(dtype=weight.dtype)
    return student.to(weight.device)


def unconditional_codes(batch_size: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Codes with every field unspecified (0): the "unconditional" input of CFG."""
    return {f: torch.zeros(batch_size, dtype=torch.long, device=device) for f in CONDITION_FIELDS}


def drop_conditions(
    codes: Mapping[str, torch.Tensor],
    masks: torch.Tensor,
    p_field: float = 0.1,
    p_all: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-field condition dropout for classifier-free guidance (training only).

    Each field is set to 0 (unspecified) with probability ``p_field``; with probability
    ``p_all`` every field is. The lesion mask is zeroed whenever the lesion field is
    dropped, so "unspecified lesion" never comes with a location.

    Returns:
        New ``(codes, masks)``; the inputs are not modified.
    """
    if not (0.0 <= p_field <= 1.0 and 0.0 <= p_all <= 1.0):
        raise ValueError(f"dropout probabilities must be in [0, 1], got p_field={p_field}, p_all={p_all}")
    n = masks.shape[0]
    device = masks.device
    drop_all = torch.rand(n, generator=generator).to(device) < p_all
    out = {}
    for field in CONDITION_FIELDS:
        drop = drop_all | (torch.rand(n, generator=generator).to(device) < p_field)
        out[field] = torch.where(drop, torch.zeros_like(codes[field]), codes[field])
    keep_mask = (out["lesion"] != 0) | (codes["lesion"] == 0)
    masks = masks * keep_mask.to(masks.dtype).view(n, *([1] * (masks.dim() - 1)))
    return out, masks
