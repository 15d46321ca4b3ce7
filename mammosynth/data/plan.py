"""The ingest plan (DESIGN §6): what an adapter hands to :func:`~mammosynth.data.prepare.ingest`.

An adapter (:mod:`~mammosynth.data.vindr`, :mod:`~mammosynth.data.folder`) reads a dataset's
layout and labels and returns a :class:`Plan`: one :class:`ImageTask` per image (with its
:class:`RawFinding` s) and the :class:`Issue` s it already met. The pseudonym and split
helpers here are the ones every adapter uses, so that ids and splits do not depend on the
source format, and so is the parsing of the image-level labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

from ..conditions import ConditionError, parse_birads, parse_density, parse_laterality, parse_view

__all__ = [
    "RawFinding",
    "ImageTask",
    "Issue",
    "Plan",
    "pseudonym",
    "hash_split",
    "assign_study_splits",
    "UnknownLabelError",
    "parse_image_labels",
]


@dataclass
class RawFinding:
    """One finding as labelled: category (e.g. ``"Mass"``), §7 lesion, BI-RADS, stored-pixel box."""

    category: str
    lesion: str | None
    birads: int | None
    box: tuple[float, float, float, float] | None


@dataclass
class ImageTask:
    """Everything a worker needs for one image (no identifying data; ids are pseudonyms)."""

    path: str
    file: str  # path relative to the root, for reports
    study_id: str
    image_id: str
    split: str
    laterality: str | None = None
    view: str | None = None
    birads: int | None = None
    density: str | None = None
    findings: list[RawFinding] = field(default_factory=list)
    source: str = "vindr"
    trust_laterality: bool = True
    expected_shape: tuple[int, int] | None = None
    manufacturer: str | None = None


@dataclass
class Issue:
    """Something skipped (``skipped=True``) or a warning, for the report."""

    reason: str
    message: str
    file: str | None = None
    image_id: str | None = None
    skipped: bool = True


@dataclass
class Plan:
    """An adapter's output: the images to ingest and what it already had to skip or warn.

    Several tasks may share an ``image_id`` (copies of one image under different files): the
    ingest keeps the first that reads, in task order, and reports the others.
    """

    tasks: list[ImageTask]
    issues: list[Issue] = field(default_factory=list)
    source: str = "vindr"


def pseudonym(kind: str, value: str) -> str:
    """A 32-hex pseudonymous id for ``value`` (e.g. a Study Instance UID)."""
    return hashlib.sha256(f"mammosynth:{kind}:{value}".encode()).hexdigest()[:32]


def hash_split(study_id: str, test_fraction: float = 0.2) -> str:
    """``"test"`` or ``"training"`` for a study, decided by a hash of its id (stable)."""
    bucket = int(hashlib.sha256(f"split:{study_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "training"


def assign_study_splits(tasks: list[ImageTask], issues: list[Issue], source_file: str) -> None:
    """Make splits study-level: a study listed in two splits keeps its first one (reported)."""
    first: dict[str, str] = {}
    for task in tasks:
        split = first.setdefault(task.study_id, task.split)
        if task.split != split:
            issues.append(Issue(
                "split_conflict",
                f"{source_file}: study {task.study_id} is listed in splits {split!r} and {task.split!r}; "
                f"image {task.image_id} is kept in {split!r} so that no study is in two splits",
                file=task.file, image_id=task.image_id, skipped=False))
            task.split = split


class UnknownLabelError(ConditionError):
    """An image-level label text that :func:`parse_image_labels` does not know."""

    def __init__(self, field: str, text: str) -> None:
        self.field, self.text = field, text
        super().__init__(f"unknown {field} {text!r}")


_IMAGE_LABEL_PARSERS = (("birads", parse_birads), ("density", parse_density),
                        ("laterality", parse_laterality), ("view", parse_view))


def parse_image_labels(texts: Mapping[str, str]) -> dict[str, int | str | None]:
    """BI-RADS, density, laterality and view of one image from their label texts.

    Args:
        texts: ``{"birads", "density", "laterality", "view"}`` → the text in the labels file.

    Returns:
        The same keys → BI-RADS as an int, the others as their condition values
        (``"C"``, ``"L"``, ``"CC"``), ``None`` where the text is empty.

    Raises:
        UnknownLabelError: the first text that is not a known value (``field`` names it).
    """
    labels: dict[str, int | str | None] = {}
    for field_name, parse in _IMAGE_LABEL_PARSERS:
        text = texts[field_name]
        try:
            value = parse(text)
        except ConditionError:
            raise UnknownLabelError(field_name, text) from None
        labels[field_name] = getattr(value, "value", value)
    return labels
