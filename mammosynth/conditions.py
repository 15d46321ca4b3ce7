"""The one vocabulary of conditions (DESIGN §7), used by data, models, CLI, UI and API.

Fields: ``birads`` 1–5, ``density`` A–D, ``view`` CC/MLO, ``laterality`` L/R, ``lesion``
(none, mass, calcification, architectural_distortion, asymmetry) and an optional lesion
``box`` ``(x0, y0, x1, y1)`` in normalised image coordinates (0–1, origin top left) of the
image *as displayed* for its laterality. Every field may be left unspecified (``None``);
classifier-free guidance then drops it.

Orientation: prepared images are stored in one canonical orientation, chest wall at the
left edge (x = 0) and the nipple pointing right, which is how a left breast is displayed
((0020,0020) Patient Orientation ``A\\R`` for L-CC). Right breasts are mirrored. Use
:func:`canonical_box` to move a displayed box into the canonical frame and back.

This module also parses the strings VinDr-Mammo uses (``"BI-RADS 4"``, ``"DENSITY C"``,
``"['Mass', 'Skin Retraction']"``) so that strings become enums where data enters.
"""

from __future__ import annotations

import ast
import enum
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

__all__ = [
    "ConditionError",
    "Density",
    "View",
    "Laterality",
    "Lesion",
    "Box",
    "Conditions",
    "BIRADS_VALUES",
    "DEFAULT_LESION_BOX",
    "NUM_CLASSES",
    "UNSPECIFIED_WORDS",
    "VINDR_CATEGORY_TO_LESION",
    "parse_birads",
    "parse_density",
    "parse_view",
    "parse_laterality",
    "parse_lesion",
    "parse_box",
    "parse_finding_categories",
    "lesion_from_category",
    "primary_lesion",
    "canonical_box",
    "box_mask",
]


class ConditionError(ValueError):
    """A condition value is unknown, malformed or contradicts another condition."""


class Density(enum.StrEnum):
    """ACR breast density category (BI-RADS 5th edition)."""

    A = "A"  # almost entirely fatty
    B = "B"  # scattered fibroglandular
    C = "C"  # heterogeneously dense
    D = "D"  # extremely dense


class View(enum.StrEnum):
    """(0018,5101) View Position."""

    CC = "CC"
    MLO = "MLO"


class Laterality(enum.StrEnum):
    """(0020,0062) Image Laterality."""

    L = "L"
    R = "R"


class Lesion(enum.StrEnum):
    """Lesion type the model can be asked for."""

    NONE = "none"
    MASS = "mass"
    CALCIFICATION = "calcification"
    ARCHITECTURAL_DISTORTION = "architectural_distortion"
    ASYMMETRY = "asymmetry"


BIRADS_VALUES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: Words that mean "unspecified" for any field (case-insensitive).
UNSPECIFIED_WORDS = frozenset({"", "any", "unspecified", "none_specified", "*"})

#: Number of classes per field for embeddings; index 0 always means "unspecified".
NUM_CLASSES: dict[str, int] = {
    "birads": len(BIRADS_VALUES) + 1,
    "density": len(Density) + 1,
    "view": len(View) + 1,
    "laterality": len(Laterality) + 1,
    "lesion": len(Lesion) + 1,
}

#: VinDr-Mammo finding categories → our lesion vocabulary. Categories not listed
#: (e.g. "Skin Thickening", "Nipple Retraction", "Suspicious Lymph Node") are kept as raw
#: findings but map to no lesion type.
VINDR_CATEGORY_TO_LESION: dict[str, Lesion] = {
    "No Finding": Lesion.NONE,
    "Mass": Lesion.MASS,
    "Suspicious Calcification": Lesion.CALCIFICATION,
    "Architectural Distortion": Lesion.ARCHITECTURAL_DISTORTION,
    "Asymmetry": Lesion.ASYMMETRY,
    "Focal Asymmetry": Lesion.ASYMMETRY,
    "Global Asymmetry": Lesion.ASYMMETRY,
}

#: When one image shows several lesion types, the one used as its single condition.
_LESION_PRIORITY = (
    Lesion.MASS,
    Lesion.CALCIFICATION,
    Lesion.ARCHITECTURAL_DISTORTION,
    Lesion.ASYMMETRY,
)

#: Default location (canonical frame: chest wall left) for a lesion requested without a
#: box: the upper-outer middle of the breast, where most findings are, about 12% of the
#: image wide.
DEFAULT_LESION_BOX = (0.30, 0.38, 0.46, 0.52)


def _is_unspecified(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in UNSPECIFIED_WORDS


def _choices(enum_cls: type[enum.Enum]) -> str:
    return ", ".join(repr(m.value) for m in enum_cls)


def parse_birads(value: Any) -> int | None:
    """Parse a BI-RADS assessment: ``4``, ``"4"``, ``"BI-RADS 4"`` or ``"birads4"`` → 4.

    Returns ``None`` for unspecified values. Raises :class:`ConditionError` otherwise.
    """
    if _is_unspecified(value):
        return None
    if isinstance(value, bool):
        raise ConditionError(f"birads must be one of 1..5 or 'any', got {value!r}")
    if isinstance(value, (int, float)) and float(value).is_integer():
        number = int(value)
    else:
        text = str(value).strip().upper().replace("BI-RADS", "").replace("BIRADS", "").strip()
        try:
            number = int(text)
        except ValueError:
            raise ConditionError(
                f"birads must be one of 1..5 (or 'BI-RADS 1'..'BI-RADS 5', or 'any'), got {value!r}"
            ) from None
    if number not in BIRADS_VALUES:
        raise ConditionError(f"birads must be one of 1..5, got {value!r}")
    return number


def _parse_enum(enum_cls: type[enum.StrEnum], name: str, value: Any, prefix: str = ""):
    if _is_unspecified(value):
        return None
    if isinstance(value, enum_cls):
        return value
    text = str(value).strip()
    if prefix and text.upper().startswith(prefix):
        text = text[len(prefix):].strip()
    for member in enum_cls:
        if text.lower() == member.value.lower() or text.lower() == member.name.lower():
            return member
    raise ConditionError(f"{name} must be one of {_choices(enum_cls)} or 'any', got {value!r}")


def parse_density(value: Any) -> Density | None:
    """Parse a density: ``"C"``, ``"DENSITY C"`` → :attr:`Density.C`."""
    return _parse_enum(Density, "density", value, prefix="DENSITY")


def parse_view(value: Any) -> View | None:
    """Parse a view position: ``"CC"`` or ``"MLO"`` (case-insensitive)."""
    return _parse_enum(View, "view", value)


def parse_laterality(value: Any) -> Laterality | None:
    """Parse a laterality: ``"L"`` or ``"R"`` (also ``"left"``/``"right"``)."""
    if isinstance(value, str) and value.strip().lower() in {"left", "right"}:
        value = value.strip()[0]
    return _parse_enum(Laterality, "laterality", value)


def parse_lesion(value: Any) -> Lesion | None:
    """Parse a lesion type from our vocabulary or from a VinDr finding category.

    ``"mass"``, ``"Mass"``, ``"Suspicious Calcification"``, ``"Focal Asymmetry"``,
    ``"architectural distortion"`` are all accepted. ``None``/``"any"`` → unspecified;
    ``"none"``/``"No Finding"`` → :attr:`Lesion.NONE`.
    """
    if isinstance(value, str):
        text = value.strip()
        if text in VINDR_CATEGORY_TO_LESION:
            return VINDR_CATEGORY_TO_LESION[text]
        normalised = text.lower().replace("-", "_").replace(" ", "_")
        if normalised in {"calcifications", "calcs", "suspicious_calcification"}:
            return Lesion.CALCIFICATION
        if normalised in {"focal_asymmetry", "global_asymmetry"}:
            return Lesion.ASYMMETRY
        if normalised in {"no_finding", "normal"}:
            return Lesion.NONE
        value = normalised if normalised in {m.value for m in Lesion} else text
    return _parse_enum(Lesion, "lesion", value)


@dataclass(frozen=True)
class Box:
    """A lesion box in normalised coordinates, ``0 <= x0 < x1 <= 1``, ``0 <= y0 < y1 <= 1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        coords = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(c, (int, float)) and math.isfinite(c) for c in coords):
            raise ConditionError(f"box coordinates must be finite numbers, got {coords}")
        if not all(0.0 <= c <= 1.0 for c in coords):
            raise ConditionError(
                f"box {coords} lies outside the image: every coordinate must be in [0, 1] "
                "(normalised x0, y0, x1, y1 with the origin at the top left)"
            )
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ConditionError(
                f"box {coords} is empty or inverted: it needs x0 < x1 and y0 < y1"
            )

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def mirrored(self) -> Box:
        """The same box after a left–right flip of the image."""
        # Rounded so that mirroring twice gives back exactly the same box.
        return Box(round(1.0 - self.x1, 12), self.y0, round(1.0 - self.x0, 12), self.y1)

    def to_pixels(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)``, end-exclusive, at least one pixel wide and tall."""
        x0 = min(int(math.floor(self.x0 * width)), width - 1)
        y0 = min(int(math.floor(self.y0 * height)), height - 1)
        x1 = max(int(math.ceil(self.x1 * width)), x0 + 1)
        y1 = max(int(math.ceil(self.y1 * height)), y0 + 1)
        return x0, y0, x1, y1

    @classmethod
    def from_pixels(cls, box: Iterable[float], height: int, width: int) -> Box:
        """Normalise a pixel box ``(x0, y0, x1, y1)``, clipping it to the image."""
        x0, y0, x1, y1 = (float(v) for v in box)
        clip = lambda v, hi: min(max(v / hi, 0.0), 1.0)  # noqa: E731
        return cls(clip(x0, width), clip(y0, height), clip(x1, width), clip(y1, height))


def parse_box(value: Any) -> Box | None:
    """Parse a box from ``"0.45,0.30,0.60,0.42"``, a 4-sequence or a :class:`Box`."""
    if _is_unspecified(value):
        return None
    if isinstance(value, Box):
        return value
    if isinstance(value, Mapping):
        try:
            value = [value[k] for k in ("x0", "y0", "x1", "y1")]
        except KeyError:
            raise ConditionError(f"box mapping needs keys x0, y0, x1, y1, got {sorted(value)}") from None
    if isinstance(value, str):
        parts = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
    else:
        try:
            parts = list(value)
        except TypeError:
            raise ConditionError(f"box must be 'x0,y0,x1,y1' or 4 numbers, got {value!r}") from None
    if len(parts) != 4:
        raise ConditionError(f"box must have 4 numbers x0,y0,x1,y1 in [0, 1], got {value!r}")
    try:
        coords = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ConditionError(f"box must have 4 numbers x0,y0,x1,y1 in [0, 1], got {value!r}") from None
    return Box(*coords)


def parse_finding_categories(value: Any) -> list[str]:
    """Parse VinDr's stringified list ``"['Mass', 'Skin Retraction']"`` into a list.

    Tolerates a plain category (``"Mass"``), an empty cell (→ ``[]``) and an actual list.
    """
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    if _is_unspecified(value):
        return []
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConditionError(f"finding_categories is not a valid list: {value!r}") from None
        if not isinstance(parsed, (list, tuple)):
            raise ConditionError(f"finding_categories is not a list: {value!r}")
        return [str(v).strip() for v in parsed]
    return [text]


def lesion_from_category(category: str) -> Lesion | None:
    """Our lesion type for one VinDr finding category, or ``None`` if it has none."""
    return VINDR_CATEGORY_TO_LESION.get(category.strip())


def primary_lesion(lesions: Iterable[Lesion | str | None]) -> Lesion:
    """The single lesion condition for an image with these lesion types (none → NONE)."""
    present = {parse_lesion(l) for l in lesions if l is not None}
    for lesion in _LESION_PRIORITY:
        if lesion in present:
            return lesion
    return Lesion.NONE


def canonical_box(box: Box, laterality: Laterality | str | None) -> Box:
    """Move a box between the displayed frame and the canonical frame (chest wall left).

    Right breasts are mirrored; left breasts (and unspecified laterality) are unchanged.
    The operation is its own inverse.
    """
    return box.mirrored() if parse_laterality(laterality) is Laterality.R else box


def box_mask(boxes: Iterable[Box], height: int, width: int):
    """A float32 ``(height, width)`` numpy mask: 1 inside any box, 0 elsewhere."""
    import numpy as np

    mask = np.zeros((height, width), dtype=np.float32)
    for box in boxes:
        x0, y0, x1, y1 = box.to_pixels(height, width)
        mask[y0:y1, x0:x1] = 1.0
    return mask


@dataclass(frozen=True)
class Conditions:
    """A validated set of conditions for one image; ``None`` means unspecified.

    Build it with :meth:`Conditions.create`, which parses strings and checks the rules:

    * unknown values are rejected with the list of allowed values;
    * a box must lie inside the image with ``x0 < x1`` and ``y0 < y1``;
    * a box needs a lesion type other than ``none``; with an unspecified lesion type it
      is rejected too, since the model would not know what to put there;
    * a lesion (other than ``none``) without a box gets :data:`DEFAULT_LESION_BOX`
      (given in the canonical frame and mirrored for right breasts);
    * BI-RADS 1 (negative) with a lesion is contradictory and rejected.
    """

    birads: int | None = None
    density: Density | None = None
    view: View | None = None
    laterality: Laterality | None = None
    lesion: Lesion | None = None
    box: Box | None = field(default=None)

    @classmethod
    def create(
        cls,
        birads: Any = None,
        density: Any = None,
        view: Any = None,
        laterality: Any = None,
        lesion: Any = None,
        box: Any = None,
    ) -> Conditions:
        """Parse and validate; raise :class:`ConditionError` naming the bad field."""
        parsed = cls(
            birads=parse_birads(birads),
            density=parse_density(density),
            view=parse_view(view),
            laterality=parse_laterality(laterality),
            lesion=parse_lesion(lesion),
            box=parse_box(box),
        )
        return parsed._validated()

    def _validated(self) -> Conditions:
        if self.birads == 1 and self.lesion not in (None, Lesion.NONE):
            raise ConditionError(
                f"BI-RADS 1 (negative) with lesion {self.lesion.value!r} is contradictory: "
                "choose BI-RADS 2-5 for a lesion, or lesion 'none' for BI-RADS 1"
            )
        if self.box is not None and self.lesion in (None, Lesion.NONE):
            raise ConditionError(
                "a lesion box was given without a lesion type: choose lesion "
                f"{', '.join(repr(l.value) for l in Lesion if l is not Lesion.NONE)}, or drop the box"
            )
        if self.lesion not in (None, Lesion.NONE) and self.box is None:
            default = canonical_box(Box(*DEFAULT_LESION_BOX), self.laterality)
            return replace(self, box=default)
        return self

    # ---- conversions -------------------------------------------------------------------

    def encode(self) -> dict[str, int]:
        """Integer class indices for the model's embeddings; 0 = unspecified.

        ``birads`` 1..5 → 1..5; the enums → 1 + their position in declaration order.
        """
        def index(enum_cls, value) -> int:
            return 0 if value is None else list(enum_cls).index(value) + 1

        return {
            "birads": 0 if self.birads is None else int(self.birads),
            "density": index(Density, self.density),
            "view": index(View, self.view),
            "laterality": index(Laterality, self.laterality),
            "lesion": index(Lesion, self.lesion),
        }

    @classmethod
    def decode(cls, codes: Mapping[str, int], box: Any = None) -> Conditions:
        """Inverse of :meth:`encode` (the box is passed separately)."""
        def member(enum_cls, code):
            code = int(code)
            if not 0 <= code <= len(enum_cls):
                raise ConditionError(f"{enum_cls.__name__} code must be 0..{len(enum_cls)}, got {code}")
            return None if code == 0 else list(enum_cls)[code - 1]

        birads = int(codes.get("birads", 0))
        return cls.create(
            birads=None if birads == 0 else birads,
            density=member(Density, codes.get("density", 0)),
            view=member(View, codes.get("view", 0)),
            laterality=member(Laterality, codes.get("laterality", 0)),
            lesion=member(Lesion, codes.get("lesion", 0)),
            box=box,
        )

    def canonical_box(self) -> Box | None:
        """The box in the canonical frame (chest wall left), or ``None``."""
        return None if self.box is None else canonical_box(self.box, self.laterality)

    def mask(self, height: int, width: int):
        """The lesion-box conditioning channel, canonical frame, ``(height, width)`` float32."""
        box = self.canonical_box()
        return box_mask([] if box is None else [box], height, width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (enums as their string values, box as a list or ``None``)."""
        data = asdict(self)
        for key in ("density", "view", "laterality", "lesion"):
            value = getattr(self, key)
            data[key] = None if value is None else value.value
        data["box"] = None if self.box is None else list(self.box.as_tuple())
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conditions:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        allowed = {"birads", "density", "view", "laterality", "lesion", "box"}
        unknown = set(data) - allowed
        if unknown:
            raise ConditionError(f"unknown condition field(s) {sorted(unknown)}; expected {sorted(allowed)}")
        return cls.create(**dict(data))

    @property
    def cancer(self) -> bool | None:
        """Cancer label as used for VinDr work: BI-RADS ≥ 4 (``None`` if unspecified)."""
        return None if self.birads is None else self.birads >= 4
