"""The prepared-dataset format (DESIGN §6): what ingest writes and training reads.

A prepared dataset is a folder::

    meta.json        format version, height, width, orientation, counts, provenance
    images.u16       raw little-endian uint16 frames, row-major (N, height, width),
                     memory-mapped for reading; frame i is manifest row with index i
    manifest.csv     one row per image (columns: :data:`MANIFEST_COLUMNS`)
    report.json      what was ingested and what was skipped, and why (ingest only)

Pixels are display values (after modality LUT → VOI LUT → presentation) rescaled to the
full 0–65535 range; the breast is cropped, put in the canonical orientation (chest wall
at x = 0, see :mod:`mammosynth.conditions`), resized with its aspect ratio kept and padded
with 0 at the right and bottom. Lesion boxes in ``findings`` are pixel boxes of the
prepared frame (canonical orientation).

Writing is crash-safe and resumable: :class:`PreparedWriter` writes a frame, flushes it,
and only then appends its manifest row to ``manifest.partial.csv`` (fsync'd). A frame
without a row is simply overwritten after a restart. :meth:`PreparedWriter.finalize`
writes ``manifest.csv`` and ``meta.json`` atomically (temp file + rename).

Nothing identifying a person is stored: ids are the pseudonymous study/image ids.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..conditions import Box, Conditions, box_mask

__all__ = [
    "TRAINING_SOURCES",
    "read_training_sources",
    "FORMAT_VERSION",
    "MANIFEST_COLUMNS",
    "PreparedFormatError",
    "PreparedWriter",
    "PreparedData",
    "load_prepared",
    "atomic_write_text",
    "row_conditions",
    "row_boxes",
    "label_boxes",
]

FORMAT_VERSION = 1
IMAGES_FILE = "images.u16"
MANIFEST_FILE = "manifest.csv"
PARTIAL_FILE = "manifest.partial.csv"
META_FILE = "meta.json"

#: Manifest columns, in order.
#:
#: * ``index`` – frame number in ``images.u16``
#: * ``study_id``, ``image_id`` – pseudonymous ids (VinDr's 32-hex ids, or hashes)
#: * ``split`` – ``training`` or ``test`` (study-level: a study is in one split only)
#: * ``laterality`` (L/R), ``view`` (CC/MLO), ``birads`` (1–5 or empty),
#:   ``density`` (A–D or empty), ``lesion`` (primary §7 lesion type; ``none`` if no finding)
#: * ``cancer`` – 1 if BI-RADS ≥ 4, 0 if < 4, empty if unknown
#: * ``findings`` – JSON list of ``{"category", "lesion", "birads", "box"}``; ``box`` is
#:   ``[x0, y0, x1, y1]`` in prepared pixels (canonical frame) or null
#: * ``source`` – where the image came from (``vindr``, ``dicom-folder``, ``synthetic``)
#: * ``extra`` – JSON object for anything else (e.g. a synthetic image's seed)
MANIFEST_COLUMNS: tuple[str, ...] = (
    "index",
    "study_id",
    "image_id",
    "split",
    "laterality",
    "view",
    "birads",
    "density",
    "lesion",
    "cancer",
    "findings",
    "source",
    "extra",
)


class PreparedFormatError(ValueError):
    """A prepared-dataset folder is missing files or does not match its metadata."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and np.isnan(value):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if hasattr(value, "value") and not isinstance(value, (int, float)):  # enums
        return str(value.value)
    return str(value)


class PreparedWriter:
    """Append frames and manifest rows to a prepared dataset; resumable after a crash.

    Args:
        root: the output folder (created if missing).
        height, width: frame size. Reopening an existing folder with another size fails.
        meta: extra provenance stored in ``meta.json`` (must be JSON-serialisable).

    Use :attr:`done_ids` to skip images a previous run already wrote, :meth:`add` for each
    image (single writer: call it from one process), then :meth:`finalize`.
    """

    def __init__(self, root: str | os.PathLike, height: int, width: int, meta: Mapping[str, Any] | None = None):
        if height <= 0 or width <= 0 or height % 8 or width % 8:
            raise PreparedFormatError(
                f"height and width have to be positive multiples of 8 but are {height} and {width}"
            )
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.height, self.width = int(height), int(width)
        self.meta = dict(meta or {})
        self._frame_bytes = self.height * self.width * 2
        state_path = self.root / ".writer.json"
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if (state["height"], state["width"]) != (self.height, self.width):
                raise PreparedFormatError(
                    f"{self.root} holds a dataset of {state['height']}x{state['width']}, "
                    f"not {self.height}x{self.width}: choose another --out or the same size"
                )
        else:
            atomic_write_text(state_path, json.dumps({"height": self.height, "width": self.width}))
        self.rows: list[dict[str, str]] = self._read_partial()
        self.done_ids: set[str] = {row["image_id"] for row in self.rows}
        self._images = open(self.root / IMAGES_FILE, "r+b" if (self.root / IMAGES_FILE).exists() else "w+b")
        self._partial = open(self.root / PARTIAL_FILE, "a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._partial, fieldnames=MANIFEST_COLUMNS)
        if self._partial.tell() == 0:
            self._csv.writeheader()
            self._partial.flush()

    def _read_partial(self) -> list[dict[str, str]]:
        path = self.root / PARTIAL_FILE
        if not path.exists():
            return []
        rows = []
        with open(path, encoding="utf-8", newline="") as handle:
            lines = handle.read().splitlines(keepends=True)
        # A crash can leave a half-written last line: keep only complete records.
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]
        seen: set[str] = set()
        for row in csv.DictReader(lines):
            if row.get("image_id") and row["image_id"] not in seen and None not in row:
                seen.add(row["image_id"])
                rows.append(row)
        with open(path, "w", encoding="utf-8", newline="") as handle:  # rewrite clean
            handle.writelines(lines[:1] if lines else [])
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
            if not lines:
                writer.writeheader()
            writer.writerows(rows)
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, image: np.ndarray, row: Mapping[str, Any]) -> int:
        """Write one frame and its manifest row; returns the frame index.

        Args:
            image: ``(height, width)`` uint16 array in the canonical orientation.
            row: manifest fields (see :data:`MANIFEST_COLUMNS`; ``index`` is assigned here).
        """
        if image.shape != (self.height, self.width) or image.dtype != np.uint16:
            raise PreparedFormatError(
                f"frame must be uint16 of shape ({self.height}, {self.width}), "
                f"got {image.dtype} {image.shape}"
            )
        image_id = str(row["image_id"])
        if image_id in self.done_ids:
            raise PreparedFormatError(f"image_id {image_id} is already in {self.root}")
        index = len(self.rows)
        self._images.seek(index * self._frame_bytes)
        self._images.write(np.ascontiguousarray(image, dtype="<u2").tobytes())
        self._images.flush()
        os.fsync(self._images.fileno())
        record = {col: _cell(row.get(col)) for col in MANIFEST_COLUMNS}
        record["index"] = str(index)
        unknown = set(row) - set(MANIFEST_COLUMNS)
        if unknown:
            raise PreparedFormatError(f"unknown manifest column(s) {sorted(unknown)}")
        self._csv.writerow(record)
        self._partial.flush()
        os.fsync(self._partial.fileno())
        self.rows.append(record)
        self.done_ids.add(image_id)
        return index

    def finalize(self, extra_meta: Mapping[str, Any] | None = None) -> Path:
        """Write ``manifest.csv`` and ``meta.json`` atomically; the dataset is then readable."""
        self._images.truncate(len(self.rows) * self._frame_bytes)
        self._images.flush()
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.root / MANIFEST_FILE, buffer.getvalue())
        splits: dict[str, int] = {}
        for row in self.rows:
            splits[row["split"]] = splits.get(row["split"], 0) + 1
        meta = {
            "format_version": FORMAT_VERSION,
            "height": self.height,
            "width": self.width,
            "dtype": "uint16",
            "orientation": "canonical: chest wall at x=0 (left), nipple pointing right",
            "count": len(self.rows),
            "splits": splits,
            **self.meta,
            **dict(extra_meta or {}),
        }
        atomic_write_text(self.root / META_FILE, json.dumps(meta, indent=2, default=str))
        return self.root

    def close(self) -> None:
        for handle in (self._images, self._partial):
            if not handle.closed:
                handle.close()

    def __enter__(self) -> PreparedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def row_boxes(row: Mapping[str, Any], height: int, width: int, lesion: str | None = None) -> list[Box]:
    """Normalised lesion boxes (canonical frame) of one manifest row.

    All findings' boxes, or with ``lesion`` only those of that lesion type. An image can
    show findings of several types (a mass beside an asymmetry) while its ``lesion`` label
    names one; conditioning pairs that label with its own boxes (:func:`label_boxes`).
    """
    findings = row.get("findings") or "[]"
    if isinstance(findings, str):
        findings = json.loads(findings)
    boxes = []
    for finding in findings:
        kind = finding.get("lesion")
        if finding.get("box") and kind not in (None, "none") and lesion in (None, kind):
            boxes.append(Box.from_pixels(finding["box"], height, width))
    return boxes


def label_boxes(row: Mapping[str, Any], height: int, width: int) -> list[Box]:
    """The boxes of the row's own ``lesion`` label (canonical frame); none for "none" or blank."""
    label = row.get("lesion")
    if _blank(label) or str(label) == "none":
        return []
    return row_boxes(row, height, width, lesion=str(label))


def _blank(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))


def row_conditions(row: Mapping[str, Any], height: int, width: int) -> Conditions:
    """The §7 conditions of one manifest row (box in the displayed frame: the first box of the
    row's lesion type, not that of another finding in the same image)."""
    from ..conditions import Lesion, canonical_box, parse_lesion

    lesion = None if _blank(row.get("lesion")) else parse_lesion(row["lesion"])
    boxes = label_boxes(row, height, width)
    laterality = None if _blank(row.get("laterality")) else row["laterality"]
    box = canonical_box(boxes[0], laterality) if boxes else None
    birads = None if _blank(row.get("birads")) else int(float(row["birads"]))
    # Real data can hold a BI-RADS 1 breast whose image still shows a finding (label noise);
    # keep the data but drop the contradictory BI-RADS rather than fail.
    if birads == 1 and lesion not in (None, Lesion.NONE):
        birads = None
    return Conditions.create(
        birads=birads,
        density=None if _blank(row.get("density")) else row["density"],
        view=None if _blank(row.get("view")) else row["view"],
        laterality=laterality,
        lesion=lesion,
        box=box,
    )


@dataclass
class PreparedData:
    """A prepared dataset opened for reading: ``images`` is a read-only memmap."""

    root: Path
    meta: dict[str, Any]
    manifest: Any  # pandas.DataFrame
    images: np.ndarray  # a read-only np.memmap (a plain empty array for an empty dataset)

    @property
    def height(self) -> int:
        return int(self.meta["height"])

    @property
    def width(self) -> int:
        return int(self.meta["width"])

    def frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint16 frames ``(len(indices), H, W)`` for manifest ``index`` values (sorted read)."""
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices), self.height, self.width), dtype=np.uint16)
        out[order] = self.images[indices[order]]
        return out

    def split(self, name: str | None) -> Any:
        """Manifest rows of one split (``None`` = all)."""
        if name is None:
            return self.manifest
        known = sorted(self.manifest["split"].unique())
        if name not in known:
            raise PreparedFormatError(f"split {name!r} is not in {self.root}; it has {known}")
        return self.manifest[self.manifest["split"] == name]

    def masks(self, rows: Any) -> np.ndarray:
        """Lesion-box masks ``(len(rows), H, W)`` float32 for manifest rows (canonical frame)."""
        return np.stack(
            [box_mask(row_boxes(row, self.height, self.width), self.height, self.width) for _, row in rows.iterrows()]
        ) if len(rows) else np.zeros((0, self.height, self.width), np.float32)


def load_prepared(root: str | os.PathLike) -> PreparedData:
    """Open a prepared dataset; raises :class:`PreparedFormatError` naming what is wrong."""
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise PreparedFormatError(f"{root} is not a folder; make one with `mammosynth ingest`")
    for name in (META_FILE, MANIFEST_FILE, IMAGES_FILE):
        if not (root / name).exists():
            hint = " (the ingest did not finish: run it again to resume)" if (root / PARTIAL_FILE).exists() else ""
            raise PreparedFormatError(f"{root} has no {name}: it is not a prepared dataset{hint}")
    meta = json.loads((root / META_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise PreparedFormatError(
            f"{root} is prepared-dataset format {meta.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    manifest = pd.read_csv(
        root / MANIFEST_FILE,
        dtype={"study_id": str, "image_id": str, "split": str, "laterality": str, "view": str,
               "density": str, "lesion": str, "findings": str, "source": str, "extra": str},
        keep_default_na=False,
        na_values={"birads": [""], "cancer": [""]},
    )
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise PreparedFormatError(f"{root / MANIFEST_FILE} lacks column(s) {missing}")
    height, width = int(meta["height"]), int(meta["width"])
    frame_bytes = height * width * 2
    size = (root / IMAGES_FILE).stat().st_size
    count = size // frame_bytes
    if size % frame_bytes or (len(manifest) and manifest["index"].max() >= count):
        raise PreparedFormatError(
            f"{root / IMAGES_FILE} holds {size} bytes, which does not match {len(manifest)} "
            f"frames of {height}x{width}: the folder is damaged"
        )
    if count == 0:  # numpy cannot memory-map an empty file
        images = np.zeros((0, height, width), dtype="<u2")
    else:
        images = np.memmap(root / IMAGES_FILE, dtype="<u2", mode="r", shape=(count, height, width))
    return PreparedData(root=root, meta=meta, manifest=manifest, images=images)


#: The file beside a synthetic set that names, per synthetic image, the training row whose conditions
#: it copied (written by ``generate-set``; it names training-set members and stays with the auditors).
TRAINING_SOURCES = "training_sources.csv"


def read_training_sources(folder: str | os.PathLike) -> dict[str, tuple[str, str]] | None:
    """``{synthetic image_id: (source_study_id, source_image_id)}`` from a set's sources file, or ``None``."""
    import csv

    path = Path(folder) / TRAINING_SOURCES
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["image_id"]: (row["source_study_id"], row["source_image_id"]) for row in csv.DictReader(handle)}
