"""Procedural phantom mammograms in the VinDr-Mammo layout (DESIGN §3, §4).

``generate_phantom_dataset(out, studies, seed)`` writes ``images/<study>/<image>.dicom`` plus
the three VinDr CSVs and ``phantom_truth.csv``. Always phantom data: every file says so.
"""

from __future__ import annotations

from .generator import (
    DEFAULT_DENSITY_PREVALENCE,
    PhantomConfig,
    PhantomSummary,
    generate_phantom_dataset,
    generate_study,
)

__all__ = [
    "DEFAULT_DENSITY_PREVALENCE",
    "PhantomConfig",
    "PhantomSummary",
    "generate_phantom_dataset",
    "generate_study",
]
