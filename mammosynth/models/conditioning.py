"""The condition encoder: §7 labels → one embedding vector for the UNet.

Each field (``birads``, ``density``, ``view``, ``laterality``, ``lesion``) has its own
embedding table whose row 0 means "unspecified" (see
:meth:`mammosynth.conditions.Conditions.encode`). The field embeddings are summed and
passed through a small MLP; the result is added to the UNet's timestep embedding
(``UNet2DModel(class_embed_type="identity")``).

Classifier-free guidance trains the "unspecified" rows by dropping fields at random
(:func:`drop_conditions`); sampling runs the UNet once with the codes and once with all
fields unspecified and extrapolates between the two.
"""

from __future__ import annotations

from typing import Mapping

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..conditions import NUM_CLASSES

__all__ = ["CONDITION_FIELDS", "ConditionEncoder", "drop_conditions", "unconditional_codes"]

#: The order of the condition fields everywhere in the model code.
CONDITION_FIELDS: tuple[str, ...] = ("birads", "density", "view", "laterality", "lesion")


class ConditionEncoder(ModelMixin, ConfigMixin):
    """Embeds the encoded §7 conditions into one vector of size ``out_dim``.

    Args:
        num_classes: classes per field, index 0 = unspecified (default
            :data:`mammosynth.conditions.NUM_CLASSES`).
        embed_dim: width of each field's embedding table.
        out_dim: size of the output vector; must equal the UNet's time embedding size.
    """

    @register_to_config
    def __init__(self, num_classes: dict[str, int] | None = None, embed_dim: int = 128, out_dim: int = 256):
        super().__init__()
        num_classes = dict(num_classes or NUM_CLASSES)
        missing = [f for f in CONDITION_FIELDS if f not in num_classes]
        if missing:
            raise ValueError(f"num_classes lacks the field(s) {missing}; it needs {list(CONDITION_FIELDS)}")
        self.embeddings = nn.ModuleDict({f: nn.Embedding(num_classes[f], embed_dim) for f in CONDITION_FIELDS})
        self.mlp = nn.Sequential(nn.Linear(embed_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``codes``: a LongTensor ``(N,)`` per field → float ``(N, out_dim)``."""
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
        return self.mlp(total)


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
