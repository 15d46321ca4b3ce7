"""mammosynth: privacy-preserving synthetic mammograms.

Subpackages (a floor imports only floors below it, DESIGN §13):
``conditions`` (1) · ``data``, ``models`` (2) · ``privacy``, ``study`` (3) ·
``pipelines``, ``evaluation`` (4) · ``ui``, ``training`` (5) · ``cli``, ``commands`` (6).

The model classes are exported lazily here (nothing heavy is imported with the package),
which is also where diffusers looks up the components of a saved ``MammoLDMPipeline``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "MammoLDMPipeline": "mammosynth.pipelines.pipeline_mammo_ldm",
    "MammoLDMPipelineOutput": "mammosynth.pipelines.pipeline_mammo_ldm",
    "ConditionEncoder": "mammosynth.models.conditioning",
    "SiameseEmbedder": "mammosynth.models.siamese",
    "PrivacyChecker": "mammosynth.privacy.checker",
    "FidelityEncoder": "mammosynth.models.encoder",
    "Conditions": "mammosynth.conditions",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mammosynth' has no attribute {name!r}")
