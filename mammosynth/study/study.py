"""A blinded real-vs-synthetic reader study on disk, and the API the app calls.

A study folder::

    study.json          name, uid, seed, answer settings, repeat pairs (no truth)
    readers.csv         id, display_name, role (reader|admin), password_hash
    cases/<id>.png      the blinded cases (see :mod:`mammosynth.study.blinding`)
    key/truth.json      the truth key: real or synthetic, origin and labels of each case
    manifest.json       SHA-256 of every case file, of study.json and of the key
    responses.sqlite    the answers (see :mod:`mammosynth.study.store`)

The app uses only this::

    study = Study.open("studies/pilot")            # checks the folder against its manifest
    study.readers                                  # list[Reader]
    study.verify_password(reader_id, password)     # -> bool
    view = study.next_case(reader_id)              # CaseView | None when finished
    study.answer(reader_id, view.case_id, "synthetic", confidence=4, birads=None, seconds_on_case=12.5)
    study.progress(reader_id)                      # Progress(answered, total)

Nothing returned by these reveals the truth: a :class:`CaseView` holds the opaque case id,
the PNG path and the position only. The truth key is read by :meth:`Study.key` (analysis
and admins only). Bad input raises a :class:`~mammosynth.study.errors.StudyError` and
writes nothing.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..conditions import BIRADS_VALUES
from .errors import (
    AnswerOutOfRangeError,
    CaseNotAssignedError,
    StudyError,
    StudyTamperedError,
    UnknownReaderError,
)
from .readers import Reader, Role, check_password, read_readers_csv
from .store import ResponseStore

__all__ = ["STUDY_FORMAT", "CONFIDENCE_SCALES", "StudySettings", "CaseView", "Progress", "AnswerReceipt", "Study"]

STUDY_FORMAT = 1
STUDY_FILE, READERS_FILE, MANIFEST_FILE, KEY_FILE, DB_FILE = (
    "study.json", "readers.csv", "manifest.json", "key/truth.json", "responses.sqlite",
)
#: Allowed confidence scales: name -> (lowest, highest).
CONFIDENCE_SCALES: dict[str, tuple[int, int]] = {"1-5": (1, 5), "0-100": (0, 100)}


@dataclass(frozen=True)
class StudySettings:
    """What a reader is asked for each case."""

    confidence_scale: str = "1-5"
    ask_birads: bool = False

    def __post_init__(self):
        if self.confidence_scale not in CONFIDENCE_SCALES:
            raise StudyError(f"confidence scale must be one of {sorted(CONFIDENCE_SCALES)}, got {self.confidence_scale!r}")

    @property
    def confidence_range(self) -> tuple[int, int]:
        return CONFIDENCE_SCALES[self.confidence_scale]


@dataclass(frozen=True)
class CaseView:
    """What a reader is shown: an opaque id, the image file and the position. No truth."""

    case_id: str
    image_path: Path
    position: int  # 1-based
    total: int

    @property
    def label(self) -> str:
        """``"23 / 100"``."""
        return f"{self.position} / {self.total}"


@dataclass(frozen=True)
class Progress:
    """How far a reader is."""

    reader_id: str
    answered: int
    total: int

    @property
    def done(self) -> bool:
        return self.answered >= self.total

    @property
    def fraction(self) -> float:
        return self.answered / self.total if self.total else 1.0


@dataclass(frozen=True)
class AnswerReceipt:
    """Acknowledgement of a stored answer (``duplicate``: it had been stored before)."""

    case_id: str
    position: int
    total: int
    duplicate: bool
    answered_at: str


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyTamperedError(f"{path} is missing: {what}") from None
    except json.JSONDecodeError as error:
        raise StudyTamperedError(f"{path} is not valid JSON ({error}): {what}") from None


@dataclass
class Study:
    """An opened study folder. Use :meth:`open`; safe to share between threads."""

    root: Path
    info: dict
    manifest: dict
    readers: list[Reader]
    store: ResponseStore = field(repr=False)

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike, verify: str = "full") -> Study:
        """Open a study folder and check it against its manifest.

        Args:
            folder: the study folder made by :func:`mammosynth.study.create.create_study`.
            verify: ``"full"`` re-hashes every case file and the key (default);
                ``"quick"`` checks that every file exists with the right size and hashes
                only the key and study.json.

        Raises:
            StudyTamperedError: a case file is missing, changed or unexpected, or the key /
                study.json do not match the manifest.
        """
        from .blinding import sha256_file

        if verify not in ("full", "quick"):
            raise StudyError(f"verify must be 'full' or 'quick', got {verify!r}")
        root = Path(folder)
        if not root.is_dir():
            raise StudyError(f"{root} is not a study folder; make one with `mammosynth study create`")
        info = _read_json(root / STUDY_FILE, "this is not a complete study folder")
        manifest = _read_json(root / MANIFEST_FILE, "the study cannot be checked")
        if info.get("format") != STUDY_FORMAT:
            raise StudyError(f"{root} is study format {info.get('format')}, this code reads {STUDY_FORMAT}")
        if manifest.get("study_uid") != info.get("study_uid"):
            raise StudyTamperedError(f"{root / MANIFEST_FILE} belongs to another study")
        for name, key in ((STUDY_FILE, "study_sha256"), (KEY_FILE, "key_sha256")):
            path = root / name
            if not path.is_file():
                raise StudyTamperedError(f"{path} is missing")
            if sha256_file(path) != manifest[key]:
                raise StudyTamperedError(f"{path} does not match the study manifest (key mismatch or edited file)")
        cases_dir = root / "cases"
        expected = manifest["cases"]
        present = {p.name for p in cases_dir.iterdir()} if cases_dir.is_dir() else set()
        for case_id, entry in expected.items():
            path = cases_dir / f"{case_id}.png"
            if path.name not in present:
                raise StudyTamperedError(f"case file {path} is missing")
            if path.stat().st_size != entry["bytes"] or (verify == "full" and sha256_file(path) != entry["sha256"]):
                raise StudyTamperedError(f"case file {path} was changed since the study was created")
        extra = sorted(present - {f"{c}.png" for c in expected})
        if extra:
            raise StudyTamperedError(f"{cases_dir} holds files that are not study cases: {extra[:5]}")
        readers = read_readers_csv(root / READERS_FILE)
        store = ResponseStore(root / DB_FILE, info["study_uid"], create=False)
        return cls(root=root, info=info, manifest=manifest, readers=readers, store=store)

    # -- properties ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def settings(self) -> StudySettings:
        return StudySettings(**self.info["settings"])

    @cached_property
    def case_ids(self) -> list[str]:
        """All served case ids (originals and repeat copies), sorted (i.e. random order)."""
        return sorted(self.manifest["cases"])

    def reader(self, reader_id: str) -> Reader:
        """The account ``reader_id``; raises :class:`UnknownReaderError`."""
        for reader in self.readers:
            if reader.id == reader_id:
                return reader
        raise UnknownReaderError(f"unknown reader {reader_id!r}: not listed in {self.root / READERS_FILE}")

    def verify_password(self, reader_id: str, password: str) -> bool:
        """True if ``password`` is the password of ``reader_id`` (False for unknown ids)."""
        try:
            reader = self.reader(reader_id)
        except UnknownReaderError:
            return False
        return check_password(reader.password_hash, password)

    def reading_list(self, reader_id: str) -> list[str]:
        """The reader's case ids in reading order (deterministic from the study seed)."""
        cache = self.__dict__.setdefault("_lists", {})
        if reader_id not in cache:
            reader = self.reader(reader_id)
            if reader.role is not Role.READER:
                raise UnknownReaderError(f"{reader_id!r} is an {reader.role.value} account and reads no cases")
            from .design import reading_order

            pairs = [tuple(p) for p in self.info.get("repeat_pairs", [])]
            cache[reader_id] = reading_order(self.case_ids, int(self.info["seed"]), reader_id, pairs)
        return cache[reader_id]

    def case_path(self, case_id: str) -> Path:
        return self.root / "cases" / f"{case_id}.png"

    def close(self) -> None:
        """Close this thread's database connection (SQLite then folds its WAL back into the file)."""
        self.store.close()

    # -- the reader API ------------------------------------------------------------------
    def next_case(self, reader_id: str) -> CaseView | None:
        """The case the reader is at now (resumes after a restart), or None when finished."""
        order = self.reading_list(reader_id)
        done = self.store.count(reader_id)
        if done >= len(order):
            return None
        return CaseView(order[done], self.case_path(order[done]), done + 1, len(order))

    def progress(self, reader_id: str) -> Progress:
        """Answered and total cases of a reader."""
        order = self.reading_list(reader_id)
        return Progress(reader_id, min(self.store.count(reader_id), len(order)), len(order))

    def answer(
        self,
        reader_id: str,
        case_id: str,
        answer: str,
        confidence: int,
        birads: int | None = None,
        seconds_on_case: float = 0.0,
        session: str | None = None,
    ) -> AnswerReceipt:
        """Store a reader's answer for their current case; committed before returning.

        Args:
            reader_id: a ``reader`` account.
            case_id: the id from :meth:`next_case`.
            answer: ``"real"`` or ``"synthetic"``.
            confidence: an integer on the study's scale (1–5 or 0–100).
            birads: optional BI-RADS assessment 1–5 (only if the study asks for it).
            seconds_on_case: time the reader spent on the case (≥ 0, < 24 h).
            session: optional client session id, kept for audit.

        Returns:
            :class:`AnswerReceipt`; resubmitting the identical answer returns a receipt with
            ``duplicate=True`` and writes nothing.

        Raises:
            UnknownReaderError, CaseNotAssignedError, AnswerOutOfRangeError,
            AlreadyAnsweredError, OutOfOrderError: nothing is written.
        """
        order = self.reading_list(reader_id)
        if case_id not in set(order):
            raise CaseNotAssignedError(f"case {case_id!r} is not in the reading list of reader {reader_id!r}")
        answer, confidence, birads, seconds = self._validate(answer, confidence, birads, seconds_on_case)
        stored, duplicate = self.store.record(reader_id, case_id, order, answer, confidence, birads, seconds, session)
        return AnswerReceipt(case_id, stored.position, len(order), duplicate, stored.answered_at)

    def _validate(self, answer: Any, confidence: Any, birads: Any, seconds: Any) -> tuple[str, int, int | None, float]:
        if answer not in ("real", "synthetic"):
            raise AnswerOutOfRangeError(f"answer must be 'real' or 'synthetic', got {answer!r}")
        low, high = self.settings.confidence_range
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
                or not math.isfinite(confidence) or confidence != int(confidence) or not low <= confidence <= high:
            raise AnswerOutOfRangeError(f"confidence must be a whole number from {low} to {high}, got {confidence!r}")
        if birads is not None:
            if not self.settings.ask_birads:
                raise AnswerOutOfRangeError("this study does not ask for a BI-RADS assessment; send birads=None")
            if isinstance(birads, bool) or birads not in BIRADS_VALUES:
                raise AnswerOutOfRangeError(f"birads must be one of {list(BIRADS_VALUES)} or None, got {birads!r}")
        try:
            seconds = float(seconds)
        except (TypeError, ValueError):
            raise AnswerOutOfRangeError(f"seconds_on_case must be a number, got {seconds!r}") from None
        if not math.isfinite(seconds) or not 0 <= seconds < 86400:
            raise AnswerOutOfRangeError(f"seconds_on_case must be between 0 and 86400, got {seconds!r}")
        return answer, int(confidence), None if birads is None else int(birads), seconds

    # -- admin / analysis ----------------------------------------------------------------
    def key(self) -> dict:
        """The truth key (``{"cases": {case_id: {"truth": "real"|"synthetic", ...}}}``).

        Only analysis and admin views may call this; never send it to a reader.
        """
        return _read_json(self.root / KEY_FILE, "the truth key is needed for analysis")

    def status(self) -> list[dict]:
        """Progress of every reader account (for ``mammosynth study status``)."""
        counts = self.store.counts()
        rows = []
        for reader in self.readers:
            if reader.role is Role.READER:
                total = len(self.reading_list(reader.id))
                rows.append({"reader_id": reader.id, "display_name": reader.display_name,
                             "answered": counts.get(reader.id, 0), "total": total})
        return rows
