"""The choice lists of the app's condition controls, made from :mod:`mammosynth.conditions`.

Values come from the one vocabulary (``BIRADS_VALUES``, ``Density``, ``View``, ``Laterality``,
``Lesion``); only the words shown next to them live here. ``ANY`` is the app's word for an
unspecified field (one of :data:`~mammosynth.conditions.UNSPECIFIED_WORDS`).
"""

from __future__ import annotations

from ..conditions import BIRADS_VALUES, Density, Laterality, Lesion, View

__all__ = ["ANY", "BIRADS_CHOICES", "DENSITY_CHOICES", "VIEW_CHOICES", "LATERALITY_CHOICES", "LESION_CHOICES",
           "BIRADS_ASSESSMENT_CHOICES", "NOT_ASSESSED"]

ANY = "any"

#: The value of the reader-study BI-RADS control when the reader gives no assessment.
NOT_ASSESSED = "none"

BIRADS_MEANING = {1: "negative", 2: "benign", 3: "probably benign", 4: "suspicious",
                  5: "highly suggestive of malignancy"}
DENSITY_MEANING = {Density.A: "almost entirely fatty", Density.B: "scattered fibroglandular",
                   Density.C: "heterogeneously dense", Density.D: "extremely dense"}
VIEW_MEANING = {View.CC: "craniocaudal", View.MLO: "mediolateral oblique"}
LATERALITY_MEANING = {Laterality.L: "left", Laterality.R: "right"}
LESION_LABEL = {Lesion.NONE: "none (normal)"}

_ANY_CHOICE = (ANY, ANY)

BIRADS_CHOICES = [_ANY_CHOICE] + [(f"{b} · {BIRADS_MEANING[b]}", str(b)) for b in BIRADS_VALUES]
DENSITY_CHOICES = [_ANY_CHOICE] + [(f"{d.value} · {DENSITY_MEANING[d]}", d.value) for d in Density]
VIEW_CHOICES = [_ANY_CHOICE] + [(f"{v.value} ({VIEW_MEANING[v]})", v.value) for v in View]
LATERALITY_CHOICES = [_ANY_CHOICE] + [(LATERALITY_MEANING[side], side.value) for side in Laterality]
LESION_CHOICES = [_ANY_CHOICE] + [(LESION_LABEL.get(k, k.value.replace("_", " ")), k.value) for k in Lesion]
#: The reader study's optional BI-RADS assessment.
BIRADS_ASSESSMENT_CHOICES = [("not assessed", NOT_ASSESSED)] + [(str(b), str(b)) for b in BIRADS_VALUES]
