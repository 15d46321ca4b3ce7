"""The VinDr-Mammo adapter: plan an ingest from a root laid out as published (DESIGN §4).

::

    <root>/images/<study_id>/<image_id>.dicom
    <root>/breast-level_annotations.csv   one row per image (labels, split)
    <root>/finding_annotations.csv        one row per finding (categories, BI-RADS, box)
    <root>/metadata.csv                   optional; DICOM attributes per SOP Instance UID

The CSVs are read as published and their quirks are tolerated: stringified Python lists
(``"['Mass', 'Skin Retraction']"``), empty boxes on "No Finding" rows, float boxes, ids
that are not 32-hex, extra columns, a byte-order mark, stray whitespace.

Bad input does not stop the batch. A missing *column* is an error (it names the column
and the file). Per row: an unknown BI-RADS / density / laterality / view string skips
that image; an ``image_id`` without a file, a file without a CSV row, a duplicated row and
a malformed finding are reported and counted. Boxes outside the image are checked when
the image is read (:func:`mammosynth.data.prepare.process_task`).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterator

from ..conditions import ConditionError, lesion_from_category, parse_birads, parse_finding_categories
from .plan import ImageTask, Issue, Plan, RawFinding, UnknownLabelError, assign_study_splits, parse_image_labels

__all__ = [
    "BREAST_LEVEL_FILE",
    "FINDING_FILE",
    "METADATA_FILE",
    "BREAST_LEVEL_COLUMNS",
    "FINDING_COLUMNS",
    "AnnotationError",
    "read_csv_rows",
    "plan_vindr",
]

BREAST_LEVEL_FILE = "breast-level_annotations.csv"
FINDING_FILE = "finding_annotations.csv"
METADATA_FILE = "metadata.csv"
DICOM_SUFFIXES = (".dicom", ".dcm", ".DCM", ".DICOM")

#: Columns this adapter needs (the published files have these and a few more).
BREAST_LEVEL_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_birads",
                        "breast_density", "split")
#: Where each image-level label is in the breast-level CSV.
LABEL_COLUMNS = {"birads": "breast_birads", "density": "breast_density", "laterality": "laterality",
                 "view": "view_position"}
FINDING_COLUMNS = ("image_id", "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax")


class AnnotationError(ValueError):
    """An annotation CSV is missing or lacks a required column."""


def read_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV with stripped header names and values.

    Raises:
        AnnotationError: the file is missing or lacks one of ``required`` (named).
    """
    if not path.is_file():
        raise AnnotationError(f"{path} not found; a VinDr-Mammo root has {BREAST_LEVEL_FILE} and {FINDING_FILE}")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise AnnotationError(
                f"{path} has no column(s) {', '.join(repr(c) for c in missing)}; "
                f"expected {', '.join(required)} (found: {', '.join(header) or 'an empty file'})"
            )
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            yield reader.line_num, {h: (values[i].strip() if i < len(values) else "") for i, h in enumerate(header)}


def _number(text: str) -> float | None:
    if text is None or text.strip() == "" or text.strip().lower() in {"nan", "none", "null"}:
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_vindr_box(row: dict[str, str]) -> tuple[float, float, float, float] | None:
    """The ``xmin, ymin, xmax, ymax`` box of a finding row; ``None`` when all are empty.

    Raises:
        ValueError: some but not all coordinates are given, one is not a number, or the
            box is inverted.
    """
    values = [_number(row.get(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ValueError(f"box has empty coordinates: {[row.get(k) for k in ('xmin', 'ymin', 'xmax', 'ymax')]}")
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"box {values} is empty or inverted (needs xmin < xmax and ymin < ymax)")
    return (x0, y0, x1, y1)


def _image_file(root: Path, study_id: str, image_id: str) -> Path | None:
    for suffix in DICOM_SUFFIXES:
        path = root / "images" / study_id / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def _findings(root: Path, issues: list[Issue]) -> dict[str, list[RawFinding]]:
    path = root / FINDING_FILE
    by_image: dict[str, list[RawFinding]] = {}
    for line, row in read_csv_rows(path, FINDING_COLUMNS):
        image_id = row["image_id"]
        where = f"{FINDING_FILE} line {line}"
        try:
            categories = parse_finding_categories(row["finding_categories"])
        except ConditionError as error:
            issues.append(Issue("bad_finding", f"{where}: {error}; finding ignored", image_id=image_id, skipped=False))
            continue
        try:
            birads = parse_birads(row["finding_birads"])
        except ConditionError:
            issues.append(Issue("unknown_birads", f"{where}: unknown finding_birads {row['finding_birads']!r} "
                                "(expected 'BI-RADS 1'..'BI-RADS 5' or empty); finding kept without BI-RADS",
                                image_id=image_id, skipped=False))
            birads = None
        try:
            box = parse_vindr_box(row)
        except ValueError as error:
            issues.append(Issue("bad_box", f"{where}: {error}; finding kept without a box",
                                image_id=image_id, skipped=False))
            box = None
        entries = by_image.setdefault(image_id, [])
        for category in categories:
            if category == "No Finding":
                continue
            lesion = lesion_from_category(category)
            entries.append(RawFinding(category=category, lesion=None if lesion is None else lesion.value,
                                      birads=birads, box=box))
    return by_image


def _manufacturers(root: Path, issues: list[Issue]) -> dict[str, str]:
    path = root / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        rows = list(read_csv_rows(path, ("SOP Instance UID",)))
    except AnnotationError as error:
        issues.append(Issue("bad_metadata", f"{error}; {METADATA_FILE} is ignored", skipped=False))
        return {}
    return {row["SOP Instance UID"]: row["Manufacturer"] for _, row in rows if row.get("Manufacturer")}


def plan_vindr(root: str | os.PathLike) -> Plan:
    """Read the VinDr-Mammo CSVs under ``root`` and plan one task per usable image.

    Raises:
        AnnotationError: a CSV is missing or lacks a required column.
    """
    root = Path(root)
    issues: list[Issue] = []
    findings = _findings(root, issues)
    manufacturers = _manufacturers(root, issues)
    tasks: list[ImageTask] = []
    listed: set[str] = set()
    for line, row in read_csv_rows(root / BREAST_LEVEL_FILE, BREAST_LEVEL_COLUMNS):
        where = f"{BREAST_LEVEL_FILE} line {line}"
        study_id, image_id = row["study_id"], row["image_id"]
        if not study_id or not image_id:
            issues.append(Issue("bad_row", f"{where}: empty study_id or image_id; row skipped"))
            continue
        if image_id in listed:
            issues.append(Issue("duplicate_row", f"{where}: image_id {image_id} is listed again; row skipped",
                                image_id=image_id))
            continue
        listed.add(image_id)
        try:
            labels = parse_image_labels({name: row[column] for name, column in LABEL_COLUMNS.items()})
        except UnknownLabelError as error:
            column = LABEL_COLUMNS[error.field]
            issues.append(Issue(f"unknown_{error.field}", f"{where}: unknown {column} {row[column]!r} for image "
                                f"{image_id}; row skipped", image_id=image_id))
            continue
        path = _image_file(root, study_id, image_id)
        file = f"images/{study_id}/{image_id}.dicom"
        if path is None:
            issues.append(Issue("missing_file", f"{where}: image_id {image_id} has no file {file}",
                                file=file, image_id=image_id))
            continue
        shape = None
        try:
            h, w = _number(row.get("height", "")), _number(row.get("width", ""))
            shape = (int(h), int(w)) if h and w else None
        except ValueError:
            pass
        split = row["split"].strip().lower() or "training"
        tasks.append(ImageTask(
            path=str(path), file=path.relative_to(root).as_posix(), study_id=study_id, image_id=image_id,
            split=split, laterality=labels["laterality"], view=labels["view"], birads=labels["birads"],
            density=labels["density"],
            findings=findings.get(image_id, []), source="vindr", trust_laterality=True,
            expected_shape=shape, manufacturer=manufacturers.get(image_id),
        ))
    for image_id in sorted(set(findings) - listed):
        issues.append(Issue("finding_without_image", f"{FINDING_FILE}: image_id {image_id} has findings but no "
                            f"row in {BREAST_LEVEL_FILE}; its findings are ignored", image_id=image_id,
                            skipped=False))
    images = root / "images"
    if images.is_dir():
        for path in sorted(p for p in images.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.stem not in listed:
                issues.append(Issue("no_csv_row", f"{path.relative_to(root).as_posix()}: file has no row in "
                                    f"{BREAST_LEVEL_FILE}; not ingested", file=path.relative_to(root).as_posix()))
    else:
        issues.append(Issue("missing_folder", f"{images} not found: no images to ingest"))
    assign_study_splits(tasks, issues, BREAST_LEVEL_FILE)
    return Plan(tasks=tasks, issues=issues, source="vindr")
