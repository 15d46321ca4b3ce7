"""Write generated images out: 16-bit PNG, a synthetic-marked DICOM (DESIGN §5) and a recipe.

Three files per generated image, each self-describing:

* :func:`write_png16` – the uint16 frame as a 16-bit grayscale PNG (lossless, nothing else);
* :func:`write_dicom` – a Secondary Capture Image built with highdicom: fresh UIDs, 16-bit
  MONOCHROME2 pixels, **no patient identifiers from any source**, and marked synthetic in
  every place a viewer shows: (0008,0008) Image Type ``DERIVED\\SECONDARY``, (0008,0064)
  Conversion Type ``SYN`` (synthetic image), (0028,0301) Burned In Annotation ``NO``,
  (0010,0010) Patient's Name ``SYNTHETIC^MAMMOSYNTH``, (0008,103E) Series Description naming
  the model, checkpoint and seed, (0020,4000) Image Comments holding the recipe JSON;
* :class:`Recipe` / :func:`write_recipe` – the JSON of conditions + seed + checkpoint +
  sampler settings that makes the same image again (``Recipe.pipeline_kwargs()``).

This module is floor 2: it knows nothing about pipelines; callers pass the frame and the
recipe. Frames are in the *display* orientation (as the pipeline returns them).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..conditions import ConditionError, Conditions, Laterality, View

__all__ = [
    "RECIPE_FORMAT",
    "SYNTHETIC_PATIENT_NAME",
    "Recipe",
    "write_png16",
    "read_png16",
    "write_recipe",
    "read_recipe",
    "synthetic_dicom",
    "write_dicom",
    "patient_orientation",
]

RECIPE_FORMAT = "mammosynth-recipe/1"
SYNTHETIC_PATIENT_NAME = "SYNTHETIC^MAMMOSYNTH"
_MANUFACTURER = "mammosynth"


@dataclass(frozen=True)
class Recipe:
    """Everything needed to make one generated image again.

    Attributes:
        conditions: the validated §7 conditions (box in the displayed frame).
        seed: seed of the ``torch.Generator`` used for this one image.
        num_inference_steps, guidance_scale, scheduler: sampler settings (scheduler is a
            short name of ``mammosynth.pipelines.pipeline_mammo_ldm.SCHEDULERS``).
        checkpoint: the checkpoint folder name (or path) that made it.
        checkpoint_sha256: :func:`mammosynth.pipelines.checkpoint.fingerprint` of the checkpoint
            (its weights and configs, not its reports), or ``None``.
        height, width: image size in pixels.
        resample_flagged: how often a flagged image was allowed to be redrawn.
        privacy: the privacy verdict as a dict (``flagged``, ``similarity``, ``threshold``,
            ``neighbours``), or ``None`` when no checker ran.
        created_at: ISO time of generation (UTC).
    """

    conditions: Conditions
    seed: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str
    checkpoint: str
    height: int
    width: int
    checkpoint_sha256: str | None = None
    resample_flagged: int = 0
    privacy: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``format`` first, conditions as :meth:`Conditions.to_dict`)."""
        data = asdict(self)
        data["conditions"] = self.conditions.to_dict()
        return {"format": RECIPE_FORMAT, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a recipe must be a JSON object, got {type(data).__name__}")
        if data.get("format") != RECIPE_FORMAT:
            raise ValueError(f"not a mammosynth recipe: 'format' is {data.get('format')!r}, expected {RECIPE_FORMAT!r}")
        needed = ("conditions", "seed", "num_inference_steps", "guidance_scale", "scheduler", "checkpoint",
                  "height", "width")
        missing = [k for k in needed if k not in data]
        if missing:
            raise ValueError(f"the recipe lacks the field(s) {missing}")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["conditions"] = Conditions.from_dict(data["conditions"])
        return cls(**values)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``MammoLDMPipeline.__call__`` (all but ``generator``)."""
        return {"conditions": self.conditions, "num_images": 1, "num_inference_steps": int(self.num_inference_steps),
                "guidance_scale": float(self.guidance_scale), "height": int(self.height), "width": int(self.width),
                "resample_flagged": int(self.resample_flagged)}

    def describe(self) -> str:
        """One line for people: the conditions in words."""
        c = self.conditions
        parts = [f"BI-RADS {c.birads}" if c.birads else "BI-RADS any",
                 f"density {c.density.value}" if c.density else "density any",
                 c.view.value if c.view else "view any",
                 {Laterality.L: "left", Laterality.R: "right"}.get(c.laterality, "side any"),
                 f"lesion {c.lesion.value}" if c.lesion else "lesion any"]
        if c.box is not None:
            parts.append("box " + ",".join(f"{v:.2f}" for v in c.box.as_tuple()))
        return ", ".join(parts)


def _check_frame(frame: Any) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint16 or frame.ndim != 2:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"the image must be a 2-D uint16 numpy array (H, W), got {got}")
    return frame


def write_png16(frame: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint16 ``(H, W)`` frame as a 16-bit grayscale PNG (lossless)."""
    from PIL import Image

    frame = _check_frame(frame)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(frame)).save(path, format="PNG", optimize=False)
    return path


def read_png16(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit grayscale PNG back to uint16 ``(H, W)``."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("I;16", "I;16B", "I"):
            raise ValueError(f"{path} is not a 16-bit grayscale PNG (mode {image.mode})")
        return np.asarray(image, dtype=np.uint16).copy() if image.mode != "I" else np.asarray(image).astype(np.uint16)


def write_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Write ``recipe`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe.to_json(), encoding="utf-8")
    return path


def read_recipe(path_or_text: str | os.PathLike) -> Recipe:
    """Read a recipe from a JSON file path (or JSON text); errors name the problem."""
    text = str(path_or_text)
    if not text.lstrip().startswith("{"):
        path = Path(path_or_text)
        if not path.is_file():
            raise ValueError(f"recipe file {path} does not exist")
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the recipe is not valid JSON: {error}") from None
    try:
        return Recipe.from_dict(data)
    except ConditionError as error:
        raise ValueError(f"the recipe's conditions are invalid: {error}") from None


def patient_orientation(conditions: Conditions) -> tuple[str, str] | None:
    """(0020,0020) Patient Orientation of the displayed image, or ``None`` if unknown.

    Displayed mammograms have the nipple pointing away from the chest wall: a left breast
    has the chest wall at the left, so rows run toward anterior (``A``); a right breast is
    mirrored (rows run toward posterior, ``P``). Columns run toward the patient's right
    (CC of a left breast), left (CC of a right breast) or feet (MLO).
    """
    if conditions.laterality is None or conditions.view is None:
        return None
    left = conditions.laterality is Laterality.L
    row = "A" if left else "P"
    if conditions.view is View.CC:
        column = "R" if left else "L"
    else:
        column = "F"
    return row, column


def _ascii(text: str, limit: int) -> str:
    text = text.encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return text[:limit]


def synthetic_dicom(frame: np.ndarray, recipe: Recipe, *, study_uid: str | None = None,
                    series_uid: str | None = None, series_number: int = 1, instance_number: int = 1,
                    model_name: str = "MammoLDM") -> Any:
    """A highdicom Secondary Capture dataset of a generated frame, marked synthetic.

    Args:
        frame: uint16 ``(H, W)`` in the display orientation.
        recipe: how the frame was made (goes into the description and comments).
        study_uid, series_uid: reuse to group images of one batch (default: fresh UIDs).
        series_number, instance_number: positive integers.
        model_name: the model's name as shown in (0008,103E) Series Description.

    Returns:
        ``highdicom.sc.SCImage`` (a ``pydicom.Dataset``).
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    frame = _check_frame(frame)
    if (frame.shape[0], frame.shape[1]) != (int(recipe.height), int(recipe.width)):
        raise ValueError(f"the image is {frame.shape[0]}x{frame.shape[1]} but the recipe says "
                         f"{recipe.height}x{recipe.width}")
    now = datetime.now(timezone.utc)
    orientation = patient_orientation(recipe.conditions)
    checkpoint = Path(str(recipe.checkpoint)).name or str(recipe.checkpoint)
    description = _ascii(f"SYNTHETIC {model_name} {checkpoint} seed {recipe.seed}", 64)
    image = hd.sc.SCImage(
        pixel_array=np.ascontiguousarray(frame),
        photometric_interpretation="MONOCHROME2",
        bits_allocated=16,
        coordinate_system="PATIENT",
        study_instance_uid=study_uid or generate_uid(),
        series_instance_uid=series_uid or generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=int(instance_number),
        manufacturer=_MANUFACTURER,
        patient_id="SYNTHETIC",
        patient_name=SYNTHETIC_PATIENT_NAME,
        patient_birth_date=None,
        patient_sex=None,
        accession_number=None,
        study_id="SYNTHETIC",
        study_date=now.date(),
        study_time=now.time().replace(microsecond=0),
        referring_physician_name=None,
        laterality=None if recipe.conditions.laterality is None else recipe.conditions.laterality.value,
        patient_orientation=orientation or ("A", "F"),  # placeholder, emptied below
    )
    # Synthetic marking: how it was made, in every field a viewer or PACS shows.
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.ConversionType = "SYN"  # (0008,0064) Synthetic Image
    image.BurnedInAnnotation = "NO"
    image.RecognizableVisualFeatures = "NO"
    image.SeriesDescription = description
    image.StudyDescription = _ascii("SYNTHETIC MAMMOGRAM - not a patient image", 64)
    image.ImageComments = _ascii(
        f"SYNTHETIC image generated by mammosynth {model_name}; not from any patient. "
        f"Recipe: {json.dumps(recipe.to_dict(), separators=(',', ':'))}", 10240)
    image.DerivationDescription = _ascii(
        f"Generated by {model_name} ({checkpoint}) with seed {recipe.seed}, "
        f"{recipe.num_inference_steps} steps {recipe.scheduler}, guidance {recipe.guidance_scale:g}; "
        f"conditions: {recipe.describe()}", 1024)
    image.SoftwareVersions = _ascii(f"mammosynth {_version()}", 64)
    image.BodyPartExamined = "BREAST"
    image.WindowCenter = 32768
    image.WindowWidth = 65536
    image.WindowCenterWidthExplanation = "FULL RANGE"
    image.PixelRepresentation = 0
    if orientation is None:  # (0020,0020) is type 2: present and empty when the side/view is unknown
        image.PatientOrientation = ""
    if recipe.conditions.laterality is None:  # (0020,0060) is type 2C for a paired body part: empty = unknown
        image.Laterality = ""
    return image


def _version() -> str:
    try:
        from .. import __version__
    except ImportError:  # pragma: no cover
        return "unknown"
    return __version__


def write_dicom(frame: np.ndarray, recipe: Recipe, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`synthetic_dicom` to ``path`` (Part 10 file with meta header)."""
    dataset = synthetic_dicom(frame, recipe, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def finite_or_none(value: Any) -> float | None:
    """A float, or ``None`` for missing/NaN values (for JSON)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
