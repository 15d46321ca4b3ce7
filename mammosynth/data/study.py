"""A batch of generated images as ONE synthetic DICOM study (issue 22.1).

* :class:`SyntheticStudy` – one (0020,000D) Study Instance UID, one synthetic patient
  pseudonym ((0010,0020) Patient ID ``SYN-`` + 10 random hex digits, Patient's Name
  ``SYNTHETIC^MAMMOSYNTH``), one study date and time, and one series per side and view
  (R-CC, L-CC, R-MLO, L-MLO are series 1-4, as a screening study is read; images whose side
  or view was left unspecified get series 5+);
* :func:`export_study` – the DICOMs of a batch into a folder (written beside it, then renamed
  into place) and/or a zip without DICOMDIR (what a PACS upload page or a viewer's "open
  folder" takes);
* :func:`zip_study` – a zip of DICOM files, written atomically;
* :func:`read_generated` – the (frame, recipe) pairs of a folder that ``mammosynth sample``
  wrote (16-bit PNG + JSON recipe per image).

Floor 2, like :mod:`mammosynth.data.export`: frames and recipes in, files out.
"""

from __future__ import annotations

import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..conditions import Conditions, Laterality, View
from .export import Recipe, read_png16, read_recipe, save_dataset, synthetic_dicom

__all__ = ["SyntheticStudy", "StudyExport", "export_study", "zip_study", "read_generated", "dicom_name"]

#: Series numbers of the four screening views; other combinations are numbered after them.
SCREENING_SERIES = {("R", "CC"): 1, ("L", "CC"): 2, ("R", "MLO"): 3, ("L", "MLO"): 4}


def _series_key(conditions: Conditions) -> tuple[str, str]:
    side = conditions.laterality.value if isinstance(conditions.laterality, Laterality) else "?"
    view = conditions.view.value if isinstance(conditions.view, View) else "?"
    return side, view


def _pseudonym() -> str:
    return "SYN-" + secrets.token_hex(5).upper()


@dataclass
class _Series:
    uid: str
    number: int
    instances: int = 0


@dataclass
class SyntheticStudy:
    """The shared identity of one batch; :meth:`dataset` makes each image's DICOM.

    Attributes:
        patient_id: the synthetic pseudonym (default: fresh ``SYN-…``).
        study_uid: (0020,000D) (default: fresh).
        created: the study date and time (default: now, UTC).
        model_name: shown in each Series Description.
    """

    patient_id: str = field(default_factory=_pseudonym)
    study_uid: str = field(default_factory=lambda: _uid())
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    model_name: str = "MammoLDM"
    _series: dict[tuple[str, str], _Series] = field(default_factory=dict, init=False, repr=False)

    def series_for(self, conditions: Conditions) -> _Series:
        """The series of this side and view (made on first use)."""
        key = _series_key(conditions)
        if key not in self._series:
            extra = 1 + sum(1 for k in self._series if k not in SCREENING_SERIES)
            number = SCREENING_SERIES.get(key, len(SCREENING_SERIES) + extra)
            self._series[key] = _Series(_uid(), number)
        return self._series[key]

    def dataset(self, frame: np.ndarray, recipe: Recipe) -> Any:
        """The synthetic DICOM dataset of one image of this study (next instance number of its series)."""
        series = self.series_for(recipe.conditions)
        series.instances += 1
        return synthetic_dicom(frame, recipe, study_uid=self.study_uid, series_uid=series.uid,
                               series_number=series.number, instance_number=series.instances,
                               model_name=self.model_name, patient_id=self.patient_id,
                               study_datetime=self.created)

    def write(self, frame: np.ndarray, recipe: Recipe, folder: str | os.PathLike, name: str | None = None) -> Path:
        """Write one image of this study into ``folder`` (atomically) as ``name`` or :func:`dicom_name`."""
        dataset = self.dataset(frame, recipe)
        return save_dataset(dataset, Path(folder) / (name or dicom_name(dataset, recipe)))


def _uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def dicom_name(dataset: Any, recipe: Recipe) -> str:
    """A file name that sorts by series: ``S03_R-MLO_0002_seed000042.dcm``."""
    side, view = _series_key(recipe.conditions)
    side, view = side.replace("?", "X"), view.replace("?", "any")
    return f"S{int(dataset.SeriesNumber):02d}_{side}-{view}_{int(dataset.InstanceNumber):04d}_seed{recipe.seed:06d}.dcm"


@dataclass(frozen=True)
class StudyExport:
    """What :func:`export_study` wrote (``files``: those in ``folder``; none for a zip only)."""

    study_uid: str
    patient_id: str
    files: list[Path]
    folder: Path | None
    zip: Path | None


def export_study(images: Iterable[tuple[np.ndarray, Recipe]], folder: str | os.PathLike | None = None,
                 zip_path: str | os.PathLike | None = None, study: SyntheticStudy | None = None) -> StudyExport:
    """Write ``images`` as one synthetic study into ``folder`` and/or ``zip_path``.

    The folder must not exist yet or be empty: the files are written into a sibling staging
    folder that is renamed into place at the end, so a failure leaves no half study.

    Raises:
        ValueError: no images, no destination, or a frame that does not fit its recipe.
        FileExistsError: ``folder`` holds files already.
    """
    if folder is None and zip_path is None:
        raise ValueError("export_study needs a folder, a zip path or both")
    target = Path(folder) if folder is not None else None
    if target is not None and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder: choose a new folder for the study")
    study = study or SyntheticStudy()
    staging = _staging_folder(target or Path(zip_path))
    try:
        files = _write_all(images, staging, study)
        zipped = zip_study(files, zip_path) if zip_path is not None else None
        if target is not None:
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
        files = [target / f.name for f in files] if target is not None else []
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return StudyExport(study.study_uid, study.patient_id, files, target, zipped)


def _staging_folder(near: Path) -> Path:
    near.parent.mkdir(parents=True, exist_ok=True)
    staging = near.parent / f".{near.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()
    return staging


def _write_all(images: Iterable[tuple[np.ndarray, Recipe]], folder: Path, study: SyntheticStudy) -> list[Path]:
    files = []
    for frame, recipe in images:
        files.append(study.write(frame, recipe, folder))
    if not files:
        raise ValueError("no images to export: the study would be empty")
    return files


def zip_study(files: Sequence[str | os.PathLike], zip_path: str | os.PathLike) -> Path:
    """A zip of the DICOM files (flat, no DICOMDIR), written to a temporary name then renamed."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partial = zip_path.with_name(f".{zip_path.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, arcname=Path(path).name)
    os.replace(partial, zip_path)
    return zip_path


def read_generated(inputs: Sequence[str | os.PathLike]) -> list[tuple[np.ndarray, Recipe]]:
    """The (frame, recipe) pairs of 16-bit PNGs with their JSON recipe beside them.

    Each input is a PNG or a folder of them (``mammosynth sample`` output); a PNG without its
    ``.json`` recipe is an error that names it.
    """
    pngs: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            pngs += sorted(item.glob("*.png"))
        elif item.suffix.lower() == ".png" and item.is_file():
            pngs.append(item)
        else:
            raise ValueError(f"{item} is neither a 16-bit PNG nor a folder of them")
    if not pngs:
        raise ValueError(f"no PNG images in {', '.join(map(str, inputs))}")
    pairs = []
    for png in pngs:
        recipe = png.with_suffix(".json")
        if not recipe.is_file():
            raise ValueError(f"{png} has no recipe {recipe.name} beside it (written by `mammosynth sample`)")
        pairs.append((read_png16(png), read_recipe(recipe)))
    return pairs
