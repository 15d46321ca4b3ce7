"""Write generated images out: 16-bit PNG, a synthetic-marked DICOM (DESIGN §5) and a recipe.

Three files per generated image, each self-describing:

* :func:`write_png16` – the uint16 frame as a 16-bit grayscale PNG (lossless, nothing else);
* :func:`write_dicom` – a Secondary Capture Image built with highdicom: fresh UIDs, 16-bit
  MONOCHROME2 pixels, **no patient identifiers from any source**, and marked synthetic in
  every place a viewer shows: (0008,0008) Image Type ``DERIVED\\SECONDARY``, (0008,0064)
  Conversion Type ``SYN`` (synthetic image), (0028,0301) Burned In Annotation ``NO``,
  (0010,0010) Patient's Name ``SYNTHETIC^MAMMOSYNTH``, (0008,1030) Study and (0008,103E)
  Series Description starting with ``SYNTHETIC``, (0008,2111) Derivation Description naming
  the model, checkpoint and seed, (0020,4000) Image Comments holding the recipe JSON.
  It also carries what a mammography viewer sorts and hangs by: (0020,0062) Image
  Laterality, (0018,5101) View Position, (0054,0220) View Code Sequence (SNOMED CT CC
  399162004 / MLO 399368009), (0020,0020) Patient Orientation and a *nominal* (0028,0030)
  Pixel Spacing (:func:`nominal_pixel_spacing`);
* :class:`Recipe` / :func:`write_recipe` – the JSON of conditions + seed + checkpoint +
  sampler settings that makes the same image again (``Recipe.pipeline_kwargs()``);
  :class:`EditRecipe` – the same for a lesion inserted into an existing image
  (``mammosynth edit``), plus what the image was and how it was edited. An edit of an
  *uploaded* mammogram is not a synthetic patient: its DICOM says so (a synthetic lesion in an
  uploaded image, the pixels outside the box the uploaded image's), while still carrying no
  identifier of that patient.

**Modality MG in a Secondary Capture.** (0008,0060) Modality is ``MG``, not ``OT``: viewers
and hanging protocols (OHIF's mammography protocol keys on ``MG`` in Modalities in Study, then
on Image Laterality and the view code) file and place the image as a mammogram only then. The
SOP class stays Secondary Capture — not Digital Mammography X-Ray — because nothing was
acquired: the SC IOD is the one that says so, with Conversion Type ``SYN`` and its SC
Equipment module, and it has no type-1 detector, exposure or dose attributes we would have to
invent. The SC Equipment module lets Modality name the kind of image converted. (0018,5101)
View Position is not part of the SC IOD; it is added (dciodvfy: "standard extended SOP class"
warning) because many viewers show it in their overlays and the study browser.

Several images of one batch belong to one synthetic study: :mod:`mammosynth.data.study`.

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
from typing import Any, ClassVar, Mapping

import numpy as np

from ..conditions import ConditionError, Conditions, Laterality, View

__all__ = [
    "RECIPE_FORMAT",
    "EDIT_RECIPE_FORMAT",
    "EditRecipe",
    "SYNTHETIC_PATIENT_NAME",
    "Recipe",
    "write_png16",
    "read_png16",
    "write_recipe",
    "read_recipe",
    "synthetic_dicom",
    "write_dicom",
    "save_dataset",
    "patient_orientation",
    "series_description",
    "view_code",
    "nominal_pixel_spacing",
    "NOMINAL_FIELD_HEIGHT_MM",
    "SYNTHETIC_PATIENT_ID",
]

RECIPE_FORMAT = "mammosynth-recipe/1"
EDIT_RECIPE_FORMAT = "mammosynth-edit/1"
SYNTHETIC_PATIENT_NAME = "SYNTHETIC^MAMMOSYNTH"
#: (0010,0020) Patient ID of a lone image; a study gets its own pseudonym (``SYN-`` + 10 hex).
SYNTHETIC_PATIENT_ID = "SYNTHETIC"
#: The height (mm) that a generated image nominally spans (a cropped breast on a 24x30 cm detector).
NOMINAL_FIELD_HEIGHT_MM = 240.0
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
        decoder: ``"full"`` (the VAE's decoder) or ``"tiny"`` (the distilled tiny decoder).
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
    decoder: str = "full"
    privacy: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    FORMAT: ClassVar[str] = RECIPE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``format`` first, conditions as :meth:`Conditions.to_dict`)."""
        data = asdict(self)
        data["conditions"] = self.conditions.to_dict()
        return {"format": self.FORMAT, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a recipe must be a JSON object, got {type(data).__name__}")
        if data.get("format") != cls.FORMAT:
            raise ValueError(f"not a mammosynth recipe: 'format' is {data.get('format')!r}, expected {cls.FORMAT!r}")
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
                "resample_flagged": int(self.resample_flagged), "decoder": str(self.decoder)}

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


@dataclass(frozen=True)
class EditRecipe(Recipe):
    """How an edited image was made (``mammosynth edit``): a :class:`Recipe` of the inserted lesion plus its input.

    ``conditions`` hold the inserted lesion and its box (displayed frame of the output);
    ``seed`` and the sampler settings are the edit's. It cannot make the image again on its
    own: the input image is needed too (``format`` ``mammosynth-edit/1``, so ``sample --recipe``
    refuses it).

    Attributes:
        source: ``"generated"``, ``"uploaded-png"`` or ``"uploaded-dicom"``: what was edited
            (never its file name, header or ids).
        method: the inpainting method.
        margin: the feathered margin in pixels around the box.
        box_in_input: the box as given, in the input file's normalised coordinates (``None``
            when the input was already at the model's size and the two are the same).
    """

    source: str = "generated"
    method: str = ""
    margin: int = 0
    box_in_input: list[float] | None = None

    FORMAT: ClassVar[str] = EDIT_RECIPE_FORMAT

    @property
    def from_patient(self) -> bool:
        """True when the pixels outside the box may be a real patient's (an uploaded image)."""
        return self.source != "generated"

    def pipeline_kwargs(self) -> dict[str, Any]:
        raise ValueError("an edit recipe cannot make its image alone: run `mammosynth edit` with the same input image")


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
        if isinstance(data, Mapping) and data.get("format") == EDIT_RECIPE_FORMAT:
            return EditRecipe.from_dict(data)
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
                    model_name: str = "MammoLDM", patient_id: str = SYNTHETIC_PATIENT_ID,
                    study_datetime: datetime | None = None) -> Any:
    """A highdicom Secondary Capture dataset of a generated frame, marked synthetic.

    Args:
        frame: uint16 ``(H, W)`` in the display orientation.
        recipe: how the frame was made (goes into the description and comments).
        study_uid, series_uid: reuse to group images of one batch (default: fresh UIDs;
            :class:`mammosynth.data.study.SyntheticStudy` does the grouping).
        series_number, instance_number: positive integers.
        model_name: the model's name as shown in (0008,103E) Series Description.
        patient_id: (0010,0020) Patient ID, a synthetic pseudonym (never a real one).
        study_datetime: (0008,0020)/(0008,0030) Study Date and Time (default: now, UTC).

    Returns:
        ``highdicom.sc.SCImage`` (a ``pydicom.Dataset``).
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    frame = _check_frame(frame)
    if (frame.shape[0], frame.shape[1]) != (int(recipe.height), int(recipe.width)):
        raise ValueError(f"the image is {frame.shape[0]}x{frame.shape[1]} but the recipe says "
                         f"{recipe.height}x{recipe.width}")
    when = study_datetime or datetime.now(timezone.utc)
    orientation = patient_orientation(recipe.conditions)
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
        patient_id=patient_id,
        patient_name=SYNTHETIC_PATIENT_NAME,
        patient_birth_date=None,
        patient_sex=None,
        accession_number=None,
        study_id="SYNTHETIC",
        study_date=when.date(),
        study_time=when.time().replace(microsecond=0),
        referring_physician_name=None,
        pixel_spacing=nominal_pixel_spacing(frame.shape[0]),
        patient_orientation=orientation or ("A", "F"),  # placeholder, emptied below
    )
    _mark_synthetic(image, recipe, model_name)
    _add_mammography_view(image, recipe.conditions, orientation)
    image.WindowCenter = 32768
    image.WindowWidth = 65536
    image.WindowCenterWidthExplanation = "FULL RANGE"
    image.PixelRepresentation = 0
    return image


def series_description(conditions: Conditions, model_name: str, checkpoint: str) -> str:
    """(0008,103E) Series Description: ``SYNTHETIC L MLO MammoLDM <checkpoint>`` (64 characters at most)."""
    side = conditions.laterality.value if conditions.laterality else "side any"
    view = conditions.view.value if conditions.view else "view any"
    return _ascii(f"SYNTHETIC {side} {view} {model_name} {Path(str(checkpoint)).name or checkpoint}", 64)


def _mark_synthetic(image: Any, recipe: Recipe, model_name: str) -> None:
    """How it was made, in every field a viewer or PACS shows (DESIGN §5)."""
    checkpoint = Path(str(recipe.checkpoint)).name or str(recipe.checkpoint)
    if isinstance(recipe, EditRecipe):
        _mark_edited(image, recipe, model_name, checkpoint)
        return
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.ConversionType = "SYN"  # (0008,0064) Synthetic Image
    image.Modality = "MG"  # (0008,0060): a mammogram to viewers and hanging protocols; SYN above says synthetic
    image.BurnedInAnnotation = "NO"
    image.RecognizableVisualFeatures = "NO"
    image.SeriesDescription = series_description(recipe.conditions, model_name, checkpoint)
    image.StudyDescription = _ascii("SYNTHETIC MAMMOGRAM - not a patient image", 64)
    image.ImageComments = _ascii(
        f"SYNTHETIC image generated by mammosynth {model_name}; not from any patient. "
        f"Recipe: {json.dumps(recipe.to_dict(), separators=(',', ':'))}", 10240)
    image.DerivationDescription = _ascii(
        f"SYNTHETIC: generated by {model_name} ({checkpoint}) with seed {recipe.seed}, "
        f"{recipe.num_inference_steps} steps {recipe.scheduler}, guidance {recipe.guidance_scale:g}; "
        f"conditions: {recipe.describe()}. Pixel Spacing is nominal ({NOMINAL_FIELD_HEIGHT_MM:g} mm "
        "image height), not measured", 1024)
    image.SoftwareVersions = _ascii(f"mammosynth {_version()}", 64)
    image.BodyPartExamined = "BREAST"


def _mark_edited(image: Any, recipe: EditRecipe, model_name: str, checkpoint: str) -> None:
    """An edit: a synthetic lesion in a generated or an uploaded image, said in every field a viewer shows.

    Conversion Type stays ``SYN`` (the image holds synthetic content, and the ingest never reads
    it back as a real mammogram); an uploaded image's edit is not called a synthetic patient.
    """
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.ConversionType = "SYN"
    image.Modality = "MG"
    image.BurnedInAnnotation = "NO"
    image.RecognizableVisualFeatures = "NO"
    what = ("an uploaded mammogram (de-identified; outside the box the pixels are the uploaded image's)"
            if recipe.from_patient else "a generated image")
    image.SeriesDescription = _ascii("EDITED " + series_description(recipe.conditions, model_name, checkpoint), 64)
    image.StudyDescription = _ascii("SYNTHETIC LESION in an uploaded mammogram" if recipe.from_patient
                                    else "SYNTHETIC MAMMOGRAM - not a patient image", 64)
    image.ImageComments = _ascii(
        f"EDITED by mammosynth {model_name}: a SYNTHETIC {recipe.conditions.lesion.value if recipe.conditions.lesion else ''} "
        f"lesion inserted into {what}. Recipe: {json.dumps(recipe.to_dict(), separators=(',', ':'))}", 10240)
    image.DerivationDescription = _ascii(
        f"EDITED: a synthetic lesion inserted into {what} by {model_name} ({checkpoint}), {recipe.method}, "
        f"seed {recipe.seed}, {recipe.num_inference_steps} steps {recipe.scheduler}, guidance "
        f"{recipe.guidance_scale:g}; conditions: {recipe.describe()}. Pixel Spacing is nominal "
        f"({NOMINAL_FIELD_HEIGHT_MM:g} mm image height), not measured", 1024)
    image.SoftwareVersions = _ascii(f"mammosynth {_version()}", 64)
    image.BodyPartExamined = "BREAST"


def _add_mammography_view(image: Any, conditions: Conditions, orientation: tuple[str, str] | None) -> None:
    """Side and view as mammography viewers read them: (0020,0062) Image Laterality,
    (0018,5101) View Position, (0054,0220) View Code Sequence (SNOMED CT, CID 4014)."""
    from pydicom.dataset import Dataset

    if orientation is None:  # (0020,0020) is type 2: present and empty when the side/view is unknown
        image.PatientOrientation = ""
    if conditions.laterality is not None:
        image.ImageLaterality = conditions.laterality.value
    else:  # (0020,0060) Laterality is type 2C for a paired body part without Image Laterality: empty = unknown
        image.Laterality = ""
    if conditions.view is not None:
        code = view_code(conditions.view)
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
        image.ViewCodeSequence = [item]
        image.ViewPosition = conditions.view.value


def view_code(view: View) -> Any:
    """The SNOMED CT code of a mammography view: CC 399162004, MLO 399368009 (``pydicom.sr.coding.Code``)."""
    from pydicom.sr.codedict import codes

    return {View.CC: codes.SCT.CranioCaudal, View.MLO: codes.SCT.MedioLateralObliqueProjection}[view]


def nominal_pixel_spacing(height: int) -> tuple[float, float]:
    """(0028,0030) Pixel Spacing in mm (row, column): nominal, the image height taken as
    :data:`NOMINAL_FIELD_HEIGHT_MM`. A generated image has no detector: the value lets a
    viewer's ruler show plausible sizes, it is not a measurement."""
    spacing = round(NOMINAL_FIELD_HEIGHT_MM / int(height), 6)
    return spacing, spacing


def _version() -> str:
    try:
        from .. import __version__
    except ImportError:  # pragma: no cover
        return "unknown"
    return __version__


def write_dicom(frame: np.ndarray, recipe: Recipe, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`synthetic_dicom` to ``path`` (Part 10 file with meta header)."""
    return save_dataset(synthetic_dicom(frame, recipe, **kwargs), path)


def save_dataset(dataset: Any, path: str | os.PathLike) -> Path:
    """Save a pydicom dataset as a Part 10 file, atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    dataset.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
    return path


def finite_or_none(value: Any) -> float | None:
    """A float, or ``None`` for missing/NaN values (for JSON)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
