"""The ``dicom-folder`` adapter: any folder of MG DICOMs, with an optional labels CSV.

Every file under the root (recursively; hidden files and obvious non-DICOM files such as
``.csv``, ``.txt``, ``.png`` skipped) is read header-only and planned as one image. Files
that are not usable mammograms (not DICOM, not MG, FOR PROCESSING, RGB, ...) are reported
and skipped.

Ids are pseudonyms: ``study_id`` is a hash of (0020,000D) Study Instance UID (or of the
labels' ``study_id``), ``image_id`` a hash of (0008,0018) SOP Instance UID. The UIDs
themselves are not stored. Without a split in the labels, a study goes to ``test`` with
probability ``test_fraction`` by a hash of its id (stable across runs, study-level).

Labels CSV (optional, ``--labels``), one row per image, or one row per finding of an image
(image-level columns are taken from its first row):

=====================  ==================================================================
column                 meaning
=====================  ==================================================================
``file``               path of the DICOM relative to the root (``a/b.dcm``) — or
``sop_instance_uid``   the image's (0008,0018) SOP Instance UID; one of the two is required
``study_id``           optional grouping key (e.g. a patient or exam id; hashed)
``laterality``         ``L``/``R`` (default: the DICOM's (0020,0062) Image Laterality)
``view``               ``CC``/``MLO`` (default: (0018,5101) View Position)
``birads``             1–5 or ``BI-RADS 4``
``density``            A–D or ``DENSITY C``
``split``              ``training``/``test`` (default: by hash of the study)
``lesion``             ``none``, ``mass``, ``calcification``, ``architectural_distortion``,
                       ``asymmetry``, or VinDr categories (``Mass``, ``['Mass']``)
``xmin ymin xmax ymax`` lesion box in pixels of the stored image (empty: no box)
=====================  ==================================================================

With a labels CSV, a file without a row is reported (``no_csv_row``) and not ingested; a
row whose file does not exist is reported (``missing_file``).

Files with the same SOP Instance UID (copies of one image) are all planned with the same
``image_id``: :func:`~mammosynth.data.prepare.ingest` keeps the first copy that reads and
reports each other copy under its own reason (``truncated``, ... or ``duplicate_image``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..conditions import ConditionError, lesion_from_category, parse_finding_categories, parse_lesion
from .dicom import DicomReadError, read_header
from .plan import (
    ImageTask,
    Issue,
    Plan,
    RawFinding,
    UnknownLabelError,
    assign_study_splits,
    hash_split,
    parse_image_labels,
    pseudonym,
)
from .vindr import AnnotationError, parse_vindr_box, read_csv_rows

__all__ = ["LABEL_COLUMNS", "NON_DICOM_SUFFIXES", "plan_folder"]

#: Columns understood in a labels CSV (others are ignored).
LABEL_COLUMNS = ("file", "sop_instance_uid", "study_id", "laterality", "view", "birads", "density", "split",
                 "lesion", "xmin", "ymin", "xmax", "ymax")

#: Files with these suffixes are not looked at.
NON_DICOM_SUFFIXES = frozenset({
    ".csv", ".tsv", ".txt", ".md", ".json", ".xml", ".html", ".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff",
    ".zip", ".gz", ".tar", ".xlsx", ".xls", ".py", ".ipynb", ".u16", ".npy", ".npz", ".log", ".yaml", ".yml",
})


def _walk(root: Path, exclude: Path | None) -> list[Path]:
    excluded = exclude.resolve() if exclude is not None else None
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (excluded is None or (here / d).resolve() != excluded))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() not in NON_DICOM_SUFFIXES:
                files.append(here / name)
    return files


def _read_labels(path: Path, issues: list[Issue]) -> tuple[dict[str, list[tuple[int, dict]]], str]:
    rows = list(read_csv_rows(path, ()))
    if rows:
        header = set(rows[0][1])
    else:
        with open(path, encoding="utf-8-sig") as handle:
            header = {h.strip() for h in handle.readline().split(",")}
    key = "file" if "file" in header else "sop_instance_uid" if "sop_instance_uid" in header else None
    if key is None:
        raise AnnotationError(f"{path} has neither a 'file' nor a 'sop_instance_uid' column; one of them is "
                              f"needed to match rows to DICOM files (columns understood: {', '.join(LABEL_COLUMNS)})")
    by_key: dict[str, list[tuple[int, dict]]] = {}
    for line, row in rows:
        value = row.get(key, "")
        if key == "file":
            value = Path(value).as_posix() if value else ""  # Path() drops a leading "./"
        if not value:
            issues.append(Issue("bad_row", f"{path.name} line {line}: empty {key}; row skipped"))
            continue
        by_key.setdefault(value, []).append((line, row))
    return by_key, key


def _task_labels(rows: list[tuple[int, dict]], name: str, rel: str, issues: list[Issue]) -> dict | None:
    """Image-level labels and findings from the label rows of one image (None: skip it)."""
    line, first = rows[0]
    where = f"{name} line {line}"
    try:
        labels: dict = parse_image_labels({name: first.get(name, "") for name in ("birads", "density",
                                                                                  "laterality", "view")})
    except UnknownLabelError as error:
        issues.append(Issue(f"unknown_{error.field}", f"{where}: unknown {error.field} {first.get(error.field)!r} "
                            f"for {rel}; not ingested", file=rel))
        return None
    labels["split"] = (first.get("split") or "").strip().lower() or None
    labels["study_id"] = (first.get("study_id") or "").strip() or None
    findings: list[RawFinding] = []
    for line, row in rows:
        where = f"{name} line {line}"
        try:
            box = parse_vindr_box(row)
        except ValueError as error:
            issues.append(Issue("bad_box", f"{where}: {error}; finding kept without a box", file=rel, skipped=False))
            box = None
        text = row.get("lesion", "")
        try:
            categories = parse_finding_categories(text)
            for category in categories:
                lesion = lesion_from_category(category) or parse_lesion(category)
                if lesion is None or lesion.value == "none":
                    continue
                findings.append(RawFinding(category=category, lesion=lesion.value, birads=labels["birads"], box=box))
        except ConditionError as error:
            issues.append(Issue("bad_finding", f"{where}: {error}; finding ignored", file=rel, skipped=False))
    labels["findings"] = findings
    return labels


def plan_folder(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    exclude: str | os.PathLike | None = None,
) -> Plan:
    """Plan an ingest of every MG DICOM under ``root`` (see the module docstring).

    Args:
        root: the folder to search (recursively).
        labels: optional labels CSV.
        test_fraction: share of studies without a labelled split that go to ``test``.
        exclude: a folder under ``root`` not to search (e.g. the output).
    """
    root = Path(root)
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    issues: list[Issue] = []
    label_rows: dict[str, list[tuple[int, dict]]] | None = None
    key = None
    label_path = Path(labels) if labels is not None else None
    if label_path is not None:
        if not label_path.is_file():
            raise AnnotationError(f"labels file {label_path} not found")
        label_rows, key = _read_labels(label_path, issues)
    used: set[str] = set()
    tasks: list[ImageTask] = []
    for path in _walk(root, Path(exclude) if exclude is not None else None):
        if label_path is not None and path.resolve() == label_path.resolve():
            continue
        rel = path.relative_to(root).as_posix()
        try:
            header = read_header(path)
        except DicomReadError as error:
            issues.append(Issue(error.reason, f"{rel}: {error.detail}", file=rel))
            continue
        lab: dict = {}
        if label_rows is not None:
            lookup = rel if key == "file" else (header.sop_instance_uid or "")
            rows = label_rows.get(lookup)
            if rows is None:
                issues.append(Issue("no_csv_row", f"{rel}: no row in {label_path.name} "
                                    f"(matched by {key}); not ingested", file=rel))
                continue
            used.add(lookup)
            lab = _task_labels(rows, label_path.name, rel, issues)
            if lab is None:
                continue
        # Copies sharing a SOP Instance UID are all planned: which one is ingested (the first
        # that reads) and which are duplicates is only known once their pixels are read.
        image_id = pseudonym("image", header.sop_instance_uid or rel)
        group = lab.get("study_id") or header.study_instance_uid or str(Path(rel).parent)
        study_id = pseudonym("study", group)
        tasks.append(ImageTask(
            path=str(path), file=rel, study_id=study_id, image_id=image_id,
            split=lab.get("split") or hash_split(study_id, test_fraction),
            laterality=lab.get("laterality") or header.laterality, view=lab.get("view") or header.view,
            birads=lab.get("birads"), density=lab.get("density"), findings=lab.get("findings", []),
            source="dicom-folder", trust_laterality=False, manufacturer=header.manufacturer,
        ))
    if label_rows is not None:
        for value in sorted(set(label_rows) - used):
            line = label_rows[value][0][0]
            what = f"file {value}" if key == "file" else "its sop_instance_uid"  # UIDs stay out of reports
            issues.append(Issue("missing_file", f"{label_path.name} line {line}: no DICOM found for {what}",
                                file=value if key == "file" else None))
    assign_study_splits(tasks, issues, label_path.name if label_path else "labels")
    return Plan(tasks=tasks, issues=issues, source="dicom-folder")
