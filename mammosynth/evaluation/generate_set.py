"""A synthetic dataset with the label distribution of a real split: ``mammosynth generate-set``.

The simplest exact way to match every label distribution of a split (BI-RADS, density,
lesion types with their box sizes and places, views, lateralities): one synthetic image per
real row, made with that row's conditions (:func:`mammosynth.data.prepared.row_conditions`),
optionally ``copies`` times with different seeds. The result is a prepared dataset
(``source = synthetic``) whose manifest labels are the *requested* conditions; seed and
conditions are in each row's ``extra`` JSON, so every image can be made again.

Privacy gate: the pipeline's privacy checker judges every image. A flagged image is
resampled with the next seed (``privacy="resample"``, up to ``max_resamples`` times) or
dropped (``privacy="drop"``); what happened is counted in ``generation_report.json``.
Nothing flagged is ever written. Synthetic ids are fresh hashes of the run's tag and the
row's position (never of a real id), and no manifest row names a training image: which
training image each synthetic one copied its conditions from (what the privacy audit needs
for re-identification mAP@R) is written apart, to ``training_sources.csv``
(:data:`TRAINING_SOURCES`), which names training-set members and stays with the auditors —
share the set without it.

Resumable: rows already in the output (``PreparedWriter.done_ids``) are skipped, and ids
and seeds are deterministic, so a rerun continues where a crash stopped.

Many processes (GPUs or CPU cores): ``shard=(k, n)`` makes only the planned images whose
position is ``k`` modulo ``n``; each process writes its own shard folder and
:func:`merge_shards` joins finished shards, in plan order, into one prepared dataset.
``torchrun --nproc_per_node N -m mammosynth generate-set ...`` (or ``accelerate launch``)
does both: every rank makes its shard under ``<out>/.shards/`` and rank 0 merges them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..conditions import Conditions, Laterality
from ..data.prepared import (TRAINING_SOURCES, PreparedData, PreparedWriter, atomic_write_text, load_prepared,
                             read_training_sources, row_conditions)

__all__ = ["GenerationSettings", "PlannedImage", "plan_like", "synthetic_row", "generate_set", "merge_shards",
           "shard_folder", "PRIVACY_MODES", "TRAINING_SOURCES", "write_training_sources", "read_training_sources"]

logger = logging.getLogger(__name__)

PRIVACY_MODES = ("resample", "drop", "off")

#: The file of a synthetic set that maps its images to the training images whose conditions they copied.


@dataclass
class GenerationSettings:
    """How the synthetic set is sampled.

    Attributes:
        num_inference_steps, guidance_scale: passed to the pipeline.
        batch_size: images per pipeline call.
        seed: base seed; image ``j`` attempt ``a`` uses ``seed + 64 * j + a``.
        copies: synthetic images per real row (×k the split).
        privacy: ``"resample"`` flagged images, ``"drop"`` them, or ``"off"`` (no gate; the
            set is then marked ungated in its metadata).
        max_resamples: resampling attempts per image before it is dropped (< 64).
        limit: make only the first ``limit`` planned images (quick runs).
        scheduler: the sampler's short name as recorded (``"checkpoint"``: the checkpoint's own;
            ``"lcm"``: the distilled student); the caller sets it on the pipeline.
        decoder: ``"full"`` (the VAE's) or ``"tiny"`` (the distilled tiny decoder).
    """

    num_inference_steps: int = 8   # the teacher's measured default (pipeline_mammo_ldm.DEFAULT_TEACHER_STEPS)
    guidance_scale: float = 2.0
    batch_size: int = 8
    seed: int = 0
    copies: int = 1
    privacy: str = "resample"
    max_resamples: int = 3
    limit: int | None = None
    scheduler: str = "checkpoint"
    decoder: str = "full"

    def __post_init__(self) -> None:
        if self.privacy not in PRIVACY_MODES:
            raise ValueError(f"privacy must be one of {PRIVACY_MODES}, got {self.privacy!r}")
        if self.copies < 1 or self.batch_size < 1:
            raise ValueError(f"copies and batch_size must be ≥ 1, got {self.copies} and {self.batch_size}")
        if self.decoder not in ("full", "tiny"):
            raise ValueError(f"decoder must be 'full' or 'tiny', got {self.decoder!r}")
        if not 0 <= self.max_resamples < 64:
            raise ValueError(f"max_resamples must be in 0..63, got {self.max_resamples}")


@dataclass(frozen=True)
class PlannedImage:
    """One image to make: its position, conditions and deterministic ids."""

    position: int
    conditions: Conditions
    study_id: str
    image_id: str
    split: str
    source_study_id: str = ""
    source_image_id: str = ""


def _hex(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def plan_like(like: PreparedData, split: str | None, copies: int = 1, tag: str = "",
              as_split: str | None = None) -> list[PlannedImage]:
    """One planned image per row of ``split`` (× ``copies``), with that row's conditions.

    Ids are hashes of ``tag`` (e.g. checkpoint name and seed), the row's pseudonymous ids and
    the copy number: deterministic (for resuming) and distinct from the real ids.
    """
    rows = like.split(split)
    if not len(rows):
        raise ValueError(f"split {split!r} of {like.root} has no images to imitate")
    plan = []
    study_number = {study: n for n, study in enumerate(dict.fromkeys(rows["study_id"]))}
    for k in range(copies):
        for _, row in rows.iterrows():
            conditions = row_conditions(row, like.height, like.width)
            position = len(plan)
            plan.append(PlannedImage(
                position=position, conditions=conditions,
                study_id=_hex(tag, "study", study_number[row["study_id"]], k), image_id=_hex(tag, "image", position),
                split=as_split or str(row["split"]),
                source_study_id=str(row["study_id"]), source_image_id=str(row["image_id"]),
            ))
    return plan


def synthetic_row(item: PlannedImage, height: int, width: int, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The manifest row of a synthetic image: labels = requested conditions (canonical box)."""
    c = item.conditions
    lesion = c.lesion.value if c.lesion is not None else ""
    box = c.canonical_box()
    findings = [{"category": "No Finding", "lesion": "none", "birads": None, "box": None}] if lesion in ("", "none") else [
        {"category": lesion, "lesion": lesion, "birads": c.birads,
         "box": None if box is None else list(box.to_pixels(height, width))}]
    return {
        "study_id": item.study_id, "image_id": item.image_id, "split": item.split,
        "laterality": c.laterality.value if c.laterality else "", "view": c.view.value if c.view else "",
        "birads": c.birads, "density": c.density.value if c.density else "", "lesion": lesion,
        "cancer": None if c.cancer is None else int(c.cancer), "findings": findings, "source": "synthetic",
        "extra": {"seed": seed, "conditions": c.to_dict(), **extra},
    }


def write_training_sources(out: Path, plan: Sequence[PlannedImage], image_ids: Iterable[str]) -> Path:
    """``out/training_sources.csv``: the training study and image each synthetic image copied its
    conditions from (rows of ``plan`` whose id is in ``image_ids``), written atomically.

    It names training-set members: the privacy audit reads it; it is never part of what is shared.
    """
    keep = set(image_ids)
    lines = ["image_id,source_study_id,source_image_id"] + [
        f"{item.image_id},{item.source_study_id},{item.source_image_id}" for item in plan if item.image_id in keep]
    path = Path(out) / TRAINING_SOURCES
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _to_canonical(image: np.ndarray, conditions: Conditions) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ValueError(f"the pipeline must return uint16 (H, W) images, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(np.fliplr(image)) if conditions.laterality is Laterality.R else image


def _call_pipe(pipe: Any, conditions: Sequence[Conditions], seeds: Sequence[int],
               settings: GenerationSettings) -> tuple[list[np.ndarray], list[Any]]:
    import torch

    device = getattr(pipe, "device", torch.device("cpu"))
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    extra = {"decoder": settings.decoder} if settings.decoder != "full" else {}
    out = pipe(conditions=list(conditions), num_images=len(conditions),
               num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
               generator=generators, **extra)
    images = list(out.images)
    privacy = list(out.privacy) if getattr(out, "privacy", None) is not None else [None] * len(images)
    if len(images) != len(conditions) or len(privacy) != len(images):
        raise ValueError(f"the pipeline returned {len(images)} images / {len(privacy)} verdicts for {len(conditions)} requests")
    return images, privacy


@dataclass
class _Tally:
    """What happened to the planned images of one run (for ``generation_report.json``)."""

    planned: int
    already_done: int = 0
    written: int = 0
    flagged: int = 0
    resampled: int = 0
    dropped: int = 0
    dropped_images: list[dict[str, Any]] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)

    def judge(self, item: PlannedImage, attempt: int, verdict: Any, settings: GenerationSettings) -> str:
        """``"keep"``, ``"resample"`` or ``"drop"`` an image by its privacy verdict (and count it)."""
        if settings.privacy != "off" and verdict is None:
            raise ValueError("the pipeline returned no privacy verdict: load it with its privacy checker, "
                             "or pass --privacy off to make an ungated set")
        if verdict is not None and getattr(verdict, "similarity", None) is not None:
            self.similarities.append(float(verdict.similarity))
        if settings.privacy == "off" or not bool(getattr(verdict, "flagged", False)):
            return "keep"
        self.flagged += 1
        if settings.privacy == "resample" and attempt < settings.max_resamples:
            self.resampled += 1
            return "resample"
        self.dropped += 1
        self.dropped_images.append({"image_id": item.image_id, "attempts": attempt + 1,
                                    "similarity": float(getattr(verdict, "similarity", float("nan")))})
        return "drop"

    def report(self) -> dict[str, Any]:
        counts = {k: getattr(self, k) for k in ("planned", "written", "already_done", "flagged", "resampled", "dropped")}
        return {**counts, "dropped_images": self.dropped_images,
                "similarity_max": max(self.similarities) if self.similarities else None,
                "similarity_mean": float(np.mean(self.similarities)) if self.similarities else None}


def _id_tag(checkpoint: str | None, settings: GenerationSettings) -> str:
    return f"{Path(checkpoint).name if checkpoint else 'pipeline'}:{settings.seed}"


def _shard_plan(plan: list[PlannedImage], shard: tuple[int, int] | None) -> list[PlannedImage]:
    if shard is None:
        return plan
    k, n = shard
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    return [item for item in plan if item.position % n == k]


def _resumed_writer(out: Path, meta: dict[str, Any]) -> PreparedWriter | None:
    """The writer of an unfinished run in ``out`` (to resume it), or ``None`` for a fresh start."""
    state_path = out / ".writer.json"
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    return PreparedWriter(out, state["height"], state["width"], meta=meta)


def generate_set(pipe: Any, like: str | os.PathLike | PreparedData, out: str | os.PathLike, split: str | None = "training",
                 settings: GenerationSettings | None = None, as_split: str | None = None,
                 checkpoint: str | None = None, progress: bool = True,
                 on_batch: Callable[[int, int], None] | None = None,
                 shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Make a synthetic prepared dataset imitating ``split`` of ``like``; resumable.

    Args:
        pipe: a ``MammoLDMPipeline`` (or anything with its ``__call__`` contract).
        like: the real prepared dataset whose label distribution is copied.
        out: output folder (a prepared dataset; an unfinished one is resumed).
        split: split of ``like`` to imitate (``None`` = all rows).
        settings: sampling settings.
        as_split: split name written to the synthetic rows (default: the source split's name).
        checkpoint: checkpoint path/name recorded in the metadata (with its
            :func:`~mammosynth.pipelines.checkpoint.fingerprint` when it is a folder) and id tag.
        progress: show a tqdm progress bar.
        on_batch: called with ``(done, total)`` after each batch.
        shard: ``(k, n)``: make only the planned images at positions ``k`` modulo ``n`` (one
            process of ``n``; join the shards with :func:`merge_shards`).

    Returns:
        the generation report (also written to ``out/generation_report.json``).
    """
    from tqdm.auto import tqdm

    from ..pipelines.checkpoint import fingerprint

    settings = settings or GenerationSettings()
    like = like if isinstance(like, PreparedData) else load_prepared(like)
    plan = plan_like(like, split, settings.copies, tag=_id_tag(checkpoint, settings), as_split=as_split)
    plan = _shard_plan(plan[: settings.limit] if settings.limit is not None else plan, shard)
    out = Path(out)
    meta = {"source": "synthetic", "checkpoint": checkpoint,
            "checkpoint_sha256": fingerprint(checkpoint) if checkpoint else None, "like": str(like.root),
            "like_split": split, "generation": asdict(settings), "privacy_gated": settings.privacy != "off"}
    started = time.perf_counter()
    writer = _resumed_writer(out, meta)
    pending = [(item, 0) for item in plan if writer is None or item.image_id not in writer.done_ids]
    tally = _Tally(planned=len(plan), already_done=len(plan) - len(pending))
    bar = tqdm(total=len(plan), initial=tally.already_done, desc="generate-set", unit="img", disable=not progress)
    try:
        while pending:
            batch, pending = pending[: settings.batch_size], pending[settings.batch_size:]
            seeds = [settings.seed + 64 * item.position + attempt for item, attempt in batch]
            images, verdicts = _call_pipe(pipe, [item.conditions for item, _ in batch], seeds, settings)
            for (item, attempt), seed, image, verdict in zip(batch, seeds, images, verdicts):
                decision = tally.judge(item, attempt, verdict, settings)
                if decision == "resample":
                    pending.append((item, attempt + 1))
                    continue
                bar.update(1)
                if decision == "drop":
                    continue
                frame = _to_canonical(image, item.conditions)
                if writer is None:
                    writer = PreparedWriter(out, frame.shape[0], frame.shape[1], meta=meta)
                extra = {"checkpoint": checkpoint, "attempt": attempt,
                         "num_inference_steps": settings.num_inference_steps, "guidance_scale": settings.guidance_scale,
                         "privacy_similarity": None if verdict is None else getattr(verdict, "similarity", None)}
                writer.add(frame, synthetic_row(item, frame.shape[0], frame.shape[1], seed, extra))
                tally.written += 1
            if on_batch is not None:
                on_batch(tally.already_done + tally.written + tally.dropped, len(plan))
        if writer is None:
            raise ValueError(f"no synthetic image was kept ({tally.dropped} dropped by the privacy gate)")
        report = {**tally.report(), "seconds": round(time.perf_counter() - started, 1), "settings": asdict(settings),
                  "like": str(like.root), "split": split, "checkpoint": checkpoint, "total_in_set": len(writer)}
        writer.finalize({"generation_report": {k: v for k, v in report.items() if k != "dropped_images"}})
        write_training_sources(out, plan, writer.done_ids)
        atomic_write_text(out / "generation_report.json", json.dumps(report, indent=2, default=str))
        return report
    finally:
        bar.close()
        if writer is not None:
            writer.close()


def shard_folder(out: str | os.PathLike, k: int, n: int) -> Path:
    """Where process ``k`` of ``n`` writes its shard of ``out``."""
    return Path(out) / ".shards" / f"shard-{k}-of-{n}"


def merge_shards(out: str | os.PathLike, num_shards: int, like: str | os.PathLike | PreparedData,
                 split: str | None = "training", settings: GenerationSettings | None = None,
                 checkpoint: str | None = None, as_split: str | None = None,
                 keep_shards: bool = False) -> dict[str, Any]:
    """Join the finished shards of ``out`` (from ``generate_set(..., shard=(k, n))``) into ``out``.

    Rows keep the plan order (as one process would have written them); the report sums the
    shards' counts. Resumable like :func:`generate_set`: rows already merged are skipped. The
    shard folders are deleted afterwards unless ``keep_shards``.

    Raises:
        ValueError: a shard is missing or unfinished (its process has not completed).
    """
    import shutil

    settings = settings or GenerationSettings()
    like = like if isinstance(like, PreparedData) else load_prepared(like)
    out = Path(out)
    plan = plan_like(like, split, settings.copies, tag=_id_tag(checkpoint, settings), as_split=as_split)
    position = {item.image_id: item.position for item in plan}
    import csv

    shards, reports, manifests = [], [], []
    for k in range(num_shards):
        folder = shard_folder(out, k, num_shards)
        if not (folder / "generation_report.json").is_file():
            raise ValueError(f"shard {k} of {num_shards} ({folder}) is missing or unfinished: run its process "
                             "again (it resumes), then merge")
        shards.append(load_prepared(folder))
        reports.append(json.loads((folder / "generation_report.json").read_text()))
        with open(folder / "manifest.csv", encoding="utf-8", newline="") as handle:
            manifests.append(list(csv.DictReader(handle)))  # the rows as written (strings)
    rows = sorted(((position.get(row["image_id"], 1 << 62), s, row) for s, rows_ in enumerate(manifests)
                   for row in rows_), key=lambda r: r[0])
    first = shards[0]
    meta = {key: value for key, value in first.meta.items()
            if key not in ("format_version", "height", "width", "dtype", "orientation", "count", "splits",
                           "generation_report")}
    meta["shards"] = num_shards
    writer = PreparedWriter(out, first.height, first.width, meta=meta)
    try:
        for _, s, row in rows:
            if row["image_id"] in writer.done_ids:
                continue
            record = {key: value for key, value in row.items() if key != "index"}
            writer.add(np.asarray(shards[s].images[int(row["index"])]), record)
        counts = {key: sum(int(r.get(key) or 0) for r in reports)
                  for key in ("planned", "written", "already_done", "flagged", "resampled", "dropped")}
        similarities_max = [r["similarity_max"] for r in reports if r.get("similarity_max") is not None]
        report = {**counts, "seconds": max(float(r.get("seconds") or 0) for r in reports),
                  "dropped_images": [d for r in reports for d in r.get("dropped_images", [])],
                  "similarity_max": max(similarities_max) if similarities_max else None,
                  "similarity_mean": (float(np.mean([r["similarity_mean"] for r in reports
                                                     if r.get("similarity_mean") is not None]))
                                      if similarities_max else None),
                  "settings": asdict(settings), "like": str(like.root), "split": split, "checkpoint": checkpoint,
                  "shards": num_shards, "total_in_set": len(writer)}
        writer.finalize({"generation_report": {k: v for k, v in report.items() if k != "dropped_images"}})
        write_training_sources(out, plan, writer.done_ids)
        atomic_write_text(out / "generation_report.json", json.dumps(report, indent=2, default=str))
    finally:
        writer.close()
    if not keep_shards:
        shutil.rmtree(out / ".shards", ignore_errors=True)
    return report
