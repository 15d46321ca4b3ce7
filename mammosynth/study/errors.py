"""Errors of the reader-study core; every one is a ``ValueError`` with a message for a person."""

from __future__ import annotations

__all__ = [
    "StudyError",
    "UnknownReaderError",
    "CaseNotAssignedError",
    "AnswerOutOfRangeError",
    "AlreadyAnsweredError",
    "OutOfOrderError",
    "StudyTamperedError",
]


class StudyError(ValueError):
    """Base class: a reader-study operation was refused; nothing was written."""


class UnknownReaderError(StudyError):
    """The reader id is not in the study's ``readers.csv`` (or may not read cases)."""


class CaseNotAssignedError(StudyError):
    """The case id is not in this reader's reading list."""


class AnswerOutOfRangeError(StudyError):
    """An answer field (answer, confidence, BI-RADS, seconds) is outside its allowed values."""


class AlreadyAnsweredError(StudyError):
    """The case was already answered with different values; answers are final."""


class OutOfOrderError(StudyError):
    """The case is in the reader's list but is not the one they are at now."""


class StudyTamperedError(StudyError):
    """The study folder does not match its manifest (missing/changed case file, key mismatch)."""
