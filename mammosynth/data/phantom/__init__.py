"""Procedural phantom mammograms in the VinDr-Mammo layout (DESIGN §3, §4).

``generate_phantom_dataset(out, studies, seed)`` writes ``images/<study>/<image>.dicom`` plus
the three VinDr CSVs and ``phantom_truth.csv``. Always phantom data: every file says so.

Modules: :mod:`.anatomy` (outline, tissue maps, pectoral muscle, curvilinear structures,
noise), :mod:`.findings` (lesions and BI-RADS), :mod:`.dicom_writer` (MG DICOM, vendors),
:mod:`.generator` (patients, studies, CSVs, parallel), :mod:`.cli` (``mammosynth phantom``).
The names below are imported lazily so that building the CLI stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DEFAULT_DENSITY_PREVALENCE": "generator",
    "PhantomConfig": "generator",
    "PhantomSummary": "generator",
    "generate_phantom_dataset": "generator",
    "generate_study": "generator",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
