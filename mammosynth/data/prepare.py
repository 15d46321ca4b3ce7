"""Turn mammograms into a prepared dataset (DESIGN §6): crop, flip, resize, pad, ingest.

Pure image steps first, then the ingest driver:

* :func:`breast_bbox` – the breast's bounding box (threshold + largest component on a
  coarse, smoothed copy, so detector noise and burned-in markers do not count);
* :func:`chest_wall_side` – which image edge the breast is attached to;
* :func:`prepare_image` – crop, flip to the canonical orientation (chest wall at x = 0),
  aspect-kept area resize and zero padding at the right/bottom to ``H×W``, with lesion
  boxes moved through the same crop/flip/scale and clipped;
* :func:`ingest` – a parallel, resumable driver: an adapter
  (:mod:`~mammosynth.data.vindr` or :mod:`~mammosynth.data.folder`) plans one
  :class:`~mammosynth.data.plan.ImageTask` per image; worker processes read and transform; this process alone
  writes through :class:`~mammosynth.data.prepared.PreparedWriter`; a summary is printed and
  ``report.json`` lists what was skipped and why.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .plan import ImageTask, Issue, Plan
from .prepared import PreparedWriter, atomic_write_text

__all__ = [
    "tissue_mask",
    "DEFAULT_SIZE",
    "Crop",
    "PreparedImage",
    "IngestReport",
    "breast_bbox",
    "chest_wall_side",
    "prepare_image",
    "transform_box",
    "process_task",
    "ingest",
    "parse_size",
]

log = logging.getLogger(__name__)

DEFAULT_SIZE: tuple[int, int] = (256, 192)
REPORT_FILE = "report.json"
_COARSE_HEIGHT = 192


# ---- pure image steps --------------------------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """A pixel rectangle ``[y0, y1) × [x0, x1)`` of the stored image."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def _coarse(pixels: np.ndarray) -> tuple[np.ndarray, float, float]:
    """An area-reduced float copy about 192 px high, and its (y, x) reduction factors."""
    from PIL import Image

    height, width = pixels.shape
    factor = max(1.0, height / _COARSE_HEIGHT)
    ch, cw = max(1, round(height / factor)), max(1, round(width / factor))
    if (ch, cw) == (height, width):
        return pixels.astype(np.float32), 1.0, 1.0
    # Every s-th pixel, then an area reduce: each coarse pixel still averages a few
    # samples (noise), at a fraction of the cost of reducing all 10 megapixels.
    stride = max(1, int(factor // 3))
    sample = np.ascontiguousarray(pixels[::stride, ::stride])
    small = Image.fromarray(sample).resize((cw, ch), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32), height / ch, width / cw


def tissue_mask(coarse: np.ndarray) -> np.ndarray:
    """Largest connected bright region of a coarse image (the breast), as a bool mask."""
    from scipy import ndimage

    smooth = ndimage.uniform_filter(coarse, size=3, mode="nearest")
    low, high = np.percentile(smooth, [1.0, 99.0])
    if high - low < 1e-6 * 65535:
        return np.ones(coarse.shape, dtype=bool)  # flat image: all of it
    mask = smooth > low + 0.1 * (high - low)
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.ones(coarse.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def _mask_crop(mask: np.ndarray, fy: float, fx: float, shape: tuple[int, int], margin: int = 1) -> Crop:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = shape
    y0 = max(0, int(np.floor((rows[0] - margin) * fy)))
    y1 = min(height, int(np.ceil((rows[-1] + 1 + margin) * fy)))
    x0 = max(0, int(np.floor((cols[0] - margin) * fx)))
    x1 = min(width, int(np.ceil((cols[-1] + 1 + margin) * fx)))
    return Crop(y0, y1, x0, x1)


def _tissue(pixels: np.ndarray) -> tuple[np.ndarray, float, float]:
    coarse, fy, fx = _coarse(pixels)
    return tissue_mask(coarse), fy, fx


def breast_bbox(
    pixels: np.ndarray, include: Iterable[Sequence[float]] = (), tissue: tuple[np.ndarray, float, float] | None = None
) -> Crop:
    """The breast's bounding box in a display image (0 = black background).

    On an area-reduced copy (~192 px high), smoothed: threshold at 10% between the
    1st and 99th percentile, open, keep the largest connected component, take its box plus
    one coarse pixel. Boxes in ``include`` (pixel ``x0, y0, x1, y1``) are added so a lesion
    at the edge is never cut off.

    Args:
        pixels: ``(H, W)`` uint16 display image.
        include: boxes the crop must contain (clipped to the image).
        tissue: a precomputed ``_tissue(pixels)`` (internal).
    """
    mask, fy, fx = tissue if tissue is not None else _tissue(pixels)
    crop = _mask_crop(mask, fy, fx, pixels.shape)
    return _union(crop, include, pixels.shape)


def _union(crop: Crop, boxes: Iterable[Sequence[float]], shape: tuple[int, int]) -> Crop:
    height, width = shape
    y0, y1, x0, x1 = crop.y0, crop.y1, crop.x0, crop.x1
    for bx0, by0, bx1, by1 in boxes:
        bx0, bx1 = max(0, int(np.floor(bx0))), min(width, int(np.ceil(bx1)))
        by0, by1 = max(0, int(np.floor(by0))), min(height, int(np.ceil(by1)))
        if bx0 < bx1 and by0 < by1:
            y0, y1, x0, x1 = min(y0, by0), max(y1, by1), min(x0, bx0), max(x1, bx1)
    return Crop(y0, y1, x0, x1)


def chest_wall_side(pixels: np.ndarray, tissue: tuple[np.ndarray, float, float] | None = None) -> str | None:
    """``"left"`` or ``"right"``: the image edge the breast tissue touches; ``None`` if unclear.

    Compares how much of the outermost 5% of columns on each side is breast tissue; one
    side must hold at least 20% tissue and twice as much as the other.
    """
    mask = (tissue if tissue is not None else _tissue(pixels))[0]
    strip = max(1, mask.shape[1] // 20)
    left, right = float(mask[:, :strip].mean()), float(mask[:, -strip:].mean())
    if max(left, right) < 0.2 or (max(left, right) < 2 * min(left, right)):
        return None
    return "left" if left > right else "right"


def transform_box(
    box: Sequence[float], crop: Crop, flip: bool, content: tuple[int, int]
) -> list[float] | None:
    """Move a stored-image pixel box into the prepared frame.

    Args:
        box: ``(x0, y0, x1, y1)`` pixels of the stored image.
        crop: the crop applied to the image.
        flip: whether the crop was mirrored left–right.
        content: ``(height, width)`` of the resized crop inside the padded frame.

    Returns:
        ``[x0, y0, x1, y1]`` in prepared pixels, clipped to the content, or ``None`` if the
        box lies entirely outside the crop.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = max(x0 - crop.x0, 0.0), min(x1 - crop.x0, float(crop.width))
    y0, y1 = max(y0 - crop.y0, 0.0), min(y1 - crop.y0, float(crop.height))
    if x0 >= x1 or y0 >= y1:
        return None
    if flip:
        x0, x1 = crop.width - x1, crop.width - x0
    sy, sx = content[0] / crop.height, content[1] / crop.width
    return [round(x0 * sx, 2), round(y0 * sy, 2), round(x1 * sx, 2), round(y1 * sy, 2)]


@dataclass
class PreparedImage:
    """Result of :func:`prepare_image`: the frame, the moved boxes and what was done."""

    frame: np.ndarray
    boxes: list[list[float] | None]
    crop: Crop
    flipped: bool
    content: tuple[int, int]
    tissue_side: str | None


def prepare_image(
    pixels: np.ndarray,
    size: tuple[int, int] = DEFAULT_SIZE,
    laterality: str | None = None,
    boxes: Sequence[Sequence[float] | None] = (),
    trust_laterality: bool = True,
) -> PreparedImage:
    """Crop to the breast, flip to the canonical side, resize with the aspect kept, pad.

    The chest wall is expected at the right edge of a stored right breast (``"R"``) and
    at the left edge of a left one, as they are displayed. With ``trust_laterality=False``
    (or no laterality) the side the tissue touches decides when it is clear.

    Args:
        pixels: ``(H, W)`` uint16 display image as stored.
        size: ``(height, width)`` of the prepared frame.
        laterality: ``"L"``, ``"R"`` or ``None``.
        boxes: lesion boxes (pixel ``x0, y0, x1, y1`` of the stored image) or ``None``.
        trust_laterality: follow ``laterality`` even when the tissue says otherwise.
    """
    from PIL import Image

    height, width = size
    tissue = _tissue(pixels)
    tissue_side = chest_wall_side(pixels, tissue)
    flip = laterality == "R"
    if tissue_side is not None and (laterality is None or not trust_laterality):
        flip = tissue_side == "right"
    crop = breast_bbox(pixels, include=[b for b in boxes if b is not None], tissue=tissue)
    scale = min(height / crop.height, width / crop.width)
    content = (min(height, max(1, round(crop.height * scale))), min(width, max(1, round(crop.width * scale))))
    image = Image.fromarray(np.ascontiguousarray(pixels))
    small = image.resize((content[1], content[0]), Image.Resampling.BOX,
                         box=(crop.x0, crop.y0, crop.x1, crop.y1))
    resized = np.asarray(small, dtype=np.uint16)
    frame = np.zeros((height, width), dtype=np.uint16)
    frame[: content[0], : content[1]] = resized[:, ::-1] if flip else resized
    moved = [None if b is None else transform_box(b, crop, flip, content) for b in boxes]
    return PreparedImage(frame=frame, boxes=moved, crop=crop, flipped=flip, content=content,
                         tissue_side=tissue_side)


# ---- worker ----------------------------------------------------------------------------------


@dataclass
class _Done:
    frame: np.ndarray
    row: dict[str, Any]
    issues: list[Issue]
    file: str


def _cancer(birads: int | None) -> int | None:
    return None if birads is None else int(birads >= 4)


def process_task(task: ImageTask, size: tuple[int, int]) -> _Done | Issue:
    """Read, check and prepare one image; return the frame and manifest row, or an Issue."""
    from .dicom import DicomReadError, read_mammogram

    try:
        image = read_mammogram(task.path)
    except DicomReadError as error:
        return Issue(error.reason, f"{task.file}: {error.detail}", file=task.file, image_id=task.image_id)
    except FileNotFoundError:
        return Issue("missing_file", f"{task.file}: the file disappeared during ingest", task.file, task.image_id)
    except MemoryError:
        return Issue("out_of_memory", f"{task.file}: not enough memory to decode it", task.file, task.image_id)
    header = image.header
    issues: list[Issue] = []
    laterality = task.laterality or header.laterality
    view = task.view or header.view
    h, w = image.pixels.shape
    if task.expected_shape and tuple(task.expected_shape) != (h, w):
        issues.append(Issue("size_mismatch", f"{task.file}: the CSV says {task.expected_shape[0]}x"
                            f"{task.expected_shape[1]} but the image is {h}x{w}; boxes are used as given",
                            task.file, task.image_id, skipped=False))
    boxes: list[tuple[float, float, float, float] | None] = []
    for finding in task.findings:
        box = finding.box
        if box is not None:
            x0, y0, x1, y1 = box
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                inside = min(x1, w) > max(x0, 0) and min(y1, h) > max(y0, 0)
                issues.append(Issue("box_outside_image",
                                    f"{task.file}: {finding.category} box {list(box)} lies "
                                    f"{'partly' if inside else 'entirely'} outside the {w}x{h} image; "
                                    f"{'clipped' if inside else 'dropped'}",
                                    task.file, task.image_id, skipped=False))
                box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))) if inside else None
        boxes.append(box)
    prepared = prepare_image(image.pixels, size, laterality, boxes, trust_laterality=task.trust_laterality)
    if laterality is not None and prepared.tissue_side is not None:
        expected = "right" if laterality == "R" else "left"
        if prepared.tissue_side != expected:
            action = "followed the tissue" if not task.trust_laterality else "followed the laterality"
            issues.append(Issue("orientation_mismatch",
                                f"{task.file}: laterality {laterality} but the breast touches the "
                                f"{prepared.tissue_side} edge; {action}", task.file, task.image_id, skipped=False))
    findings = [
        {"category": f.category, "lesion": f.lesion, "birads": f.birads, "box": box}
        for f, box in zip(task.findings, prepared.boxes)
    ]
    from ..conditions import primary_lesion

    lesion = primary_lesion([f.lesion for f in task.findings if f.lesion])
    row = {
        "study_id": task.study_id,
        "image_id": task.image_id,
        "split": task.split,
        "laterality": laterality,
        "view": view,
        "birads": task.birads,
        "density": task.density,
        "lesion": lesion.value,
        "cancer": _cancer(task.birads),
        "findings": findings,
        "source": task.source,
        "extra": {
            "manufacturer": header.manufacturer or task.manufacturer,
            "photometric": header.photometric,
            "bits_stored": header.bits_stored,
            "voi": image.voi,
            "pixel_spacing_mm": list(header.pixel_spacing) if header.pixel_spacing else None,
            "original_shape": [h, w],
            "crop": [prepared.crop.x0, prepared.crop.y0, prepared.crop.x1, prepared.crop.y1],
            "flipped": prepared.flipped,
        },
    }
    return _Done(prepared.frame, row, issues, task.file)


def _run_task(args: tuple[ImageTask, tuple[int, int]]) -> _Done | Issue:
    task, size = args
    try:
        return process_task(task, size)
    except Exception as error:  # a worker never takes the batch down
        return Issue("error", f"{task.file}: unexpected {type(error).__name__}: {error}", task.file, task.image_id)


def _preload() -> None:
    """Import what workers use before forking, so each worker does not import it again."""
    import PIL.Image  # noqa: F401
    import pydicom.pixels  # noqa: F401
    import scipy.ndimage  # noqa: F401

    from . import dicom  # noqa: F401
    try:
        import openjpeg  # noqa: F401  (JPEG 2000 decoder plugin)
    except ImportError:
        pass


def _results(tasks: list[ImageTask], size: tuple[int, int], workers: int) -> Iterator[_Done | Issue]:
    """Results in task order; ``workers`` processes decode and transform in parallel."""
    jobs = ((task, size) for task in tasks)
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_run_task, jobs)
        return
    import multiprocessing as mp

    _preload()
    # fork: workers start at once and need no importable __main__ (stdin, notebooks);
    # they only use numpy, PIL and pydicom, which hold no locks across the fork.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(_run_task, jobs, chunksize=1)


# ---- driver ----------------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What an ingest did; written to ``report.json`` and printed as a summary."""

    source: str
    root: str
    out: str
    size: list[int]
    ingested: int
    ingested_this_run: int
    already_done: int
    skipped: int
    skipped_by_reason: dict[str, int]
    warnings_by_kind: dict[str, int]
    splits: dict[str, int]
    seconds: float
    images_per_second: float
    skipped_files: list[dict[str, Any]]
    warnings: list[dict[str, Any]]

    def summary(self) -> str:
        """A few lines for a person."""
        lines = [
            f"ingested {self.ingested} image(s) into {self.out} at {self.size[0]}x{self.size[1]} "
            f"({self.ingested_this_run} this run, {self.already_done} from an earlier run; "
            f"{self.images_per_second:.1f} images/s)",
            f"splits: " + (", ".join(f"{k} {v}" for k, v in sorted(self.splits.items())) or "none"),
            f"skipped {self.skipped}" + (": " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped_by_reason.items()))
                                         if self.skipped else ""),
        ]
        if self.warnings_by_kind:
            lines.append("warnings: " + ", ".join(f"{k} {v}" for k, v in sorted(self.warnings_by_kind.items())))
        if self.skipped or self.warnings_by_kind:
            lines.append(f"details (file, reason, message): {Path(self.out) / REPORT_FILE}")
        return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    """``"256x192"`` → ``(256, 192)``; both must be positive multiples of 8."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"size must be HEIGHTxWIDTH such as 256x192, got {text!r}") from None
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise ValueError(f"size must be positive multiples of 8 such as 256x192, got {height}x{width}")
    return height, width


def _plan(root: Path, source: str, labels: str | os.PathLike | None, test_fraction: float, out: Path) -> Plan:
    if source == "vindr":
        if labels is not None:
            raise ValueError("--labels is for --format dicom-folder; a VinDr root carries its own CSVs")
        from .vindr import plan_vindr

        return plan_vindr(root)
    if source == "dicom-folder":
        from .folder import plan_folder

        return plan_folder(root, labels=labels, test_fraction=test_fraction, exclude=out)
    raise ValueError(f"format must be 'vindr' or 'dicom-folder', got {source!r}")


def _check_splits(rows: Iterable[dict[str, str]]) -> dict[str, int]:
    study_split: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for row in rows:
        split = study_split.setdefault(row["study_id"], row["split"])
        if split != row["split"]:
            raise RuntimeError(f"study {row['study_id']} is in splits {split!r} and {row['split']!r}")
        counts[row["split"]] += 1
    return dict(counts)


def ingest(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    source: str = "vindr",
    labels: str | os.PathLike | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    workers: int | None = None,
    limit: int | None = None,
    test_fraction: float = 0.2,
    quiet: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest a VinDr-layout root or a folder of MG DICOMs into a prepared dataset.

    Resumable: images already in ``out`` (from a run that was stopped) are not redone.

    Args:
        root: the dataset root (VinDr layout, DESIGN §4) or any folder of DICOMs.
        out: the prepared-dataset folder to write.
        source: ``"vindr"`` or ``"dicom-folder"``.
        labels: optional labels CSV for ``dicom-folder`` (see :mod:`mammosynth.data.folder`).
        size: ``(height, width)`` of the frames, multiples of 8.
        workers: decoding processes (default: all cores).
        limit: ingest at most this many images (the first in study/image order).
        test_fraction: for ``dicom-folder`` studies without a split: share sent to ``test``.
        quiet: do not print the summary.
        progress: called with ``(done, total)`` after each image.
    """
    started = time.perf_counter()
    root, out = Path(root), Path(out)
    height, width, workers = _check_ingest_args(root, out, size, workers, limit)
    plan = _plan(root, source, labels, test_fraction, out)
    tasks = _first_images(sorted(plan.tasks, key=lambda t: (t.study_id, t.image_id)), limit)
    issues = list(plan.issues)
    from .. import __version__

    meta = {"source_format": plan.source, "mammosynth_version": __version__,
            "pipeline": "modality LUT > VOI LUT > presentation > padding masked; breast crop; "
                        "canonical flip (chest wall at x=0); aspect-kept area resize; zero pad right/bottom"}
    with PreparedWriter(out, height, width, meta=meta) as writer:
        already = len(writer)
        pending = _pending(tasks, writer.done_ids)
        planned = {t.image_id for t in tasks}
        log.info("ingest %s: %d image(s) planned (%d file(s)), %d already done, %d file(s) to read, %d worker(s)",
                 plan.source, len(planned), len(tasks), len(planned & writer.done_ids), len(pending), workers)
        written = _write_results(writer, _results(pending, (height, width), workers), len(pending), issues, progress)
        splits = _check_splits(writer.rows)
        writer.finalize()
        total = len(writer)
    seconds = time.perf_counter() - started
    skipped = [asdict(i) for i in issues if i.skipped]
    warned = [asdict(i) for i in issues if not i.skipped]
    for entry in skipped + warned:
        entry.pop("skipped")
    report = IngestReport(
        source=plan.source, root=str(root), out=str(out), size=[height, width], ingested=total,
        ingested_this_run=written, already_done=already, skipped=len(skipped),
        skipped_by_reason=dict(Counter(i["reason"] for i in skipped)),
        warnings_by_kind=dict(Counter(i["reason"] for i in warned)), splits=splits,
        seconds=round(seconds, 2), images_per_second=round(written / seconds, 2) if seconds > 0 else 0.0,
        skipped_files=skipped, warnings=warned,
    )
    atomic_write_text(out / REPORT_FILE, json.dumps(asdict(report), indent=2))
    if not quiet:
        print(report.summary(), file=sys.stdout, flush=True)
    return report


def _check_ingest_args(root: Path, out: Path, size: tuple[int, int], workers: int | None,
                       limit: int | None) -> tuple[int, int, int]:
    """``(height, width, workers)`` after checking the folders, the size and the counts."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder (expected the dataset root given with --root)")
    if out.resolve() == root.resolve():
        raise ValueError(f"--out {out} must be another folder than --root {root}")
    height, width = parse_size(f"{size[0]}x{size[1]}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return height, width, workers


def _first_images(tasks: list[ImageTask], limit: int | None) -> list[ImageTask]:
    """The tasks of the first ``limit`` images (every file of each), in task order."""
    if limit is None:
        return tasks
    keep = set(list(dict.fromkeys(t.image_id for t in tasks))[:limit])
    return [t for t in tasks if t.image_id in keep]


def _pending(tasks: list[ImageTask], done_ids: set[str]) -> list[ImageTask]:
    """The files to read: those of images not ingested yet, and every file of an image with copies.

    An image with several files is read again on a resume, so that each copy gets the same
    report as in an uninterrupted run (the first readable one is the one an earlier run kept).
    """
    files_per_image = Counter(t.image_id for t in tasks)
    return [t for t in tasks if t.image_id not in done_ids or files_per_image[t.image_id] > 1]


def _write_results(writer: PreparedWriter, results: Iterable[_Done | Issue], total: int, issues: list[Issue],
                   progress: Callable[[int, int], None] | None) -> int:
    """Add each prepared image to ``writer`` and each skip or warning to ``issues``; return how many were added.

    An image counts as ingested only once a file of it has been read: the first readable file
    of an ``image_id`` is kept (written, or on a resume already in ``writer``); a later readable
    file of it is a ``duplicate_image``; an unreadable file keeps its own reason and claims nothing.
    """
    written = 0
    kept: dict[str, str] = {}  # image_id -> the file kept for it
    for count, result in enumerate(results, start=1):
        if isinstance(result, Issue):
            issues.append(result)
            log.warning("skipped %s", result.message)
        elif result.row["image_id"] in kept:
            issues.append(_duplicate(result, kept[result.row["image_id"]]))
            log.warning("skipped %s", issues[-1].message)
        else:
            kept[result.row["image_id"]] = result.file
            if result.row["image_id"] not in writer.done_ids:
                writer.add(result.frame, result.row)
                written += 1
                for issue in result.issues:
                    issues.append(issue)
                    log.warning("%s", issue.message)
        if progress is not None:
            progress(count, total)
    return written


def _duplicate(result: _Done, kept: str) -> Issue:
    return Issue("duplicate_image", f"{result.file}: the same (0008,0018) SOP Instance UID as {kept}, which was "
                 "ingested; not ingested twice", file=result.file, image_id=result.row["image_id"])
