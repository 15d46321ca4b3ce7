"""Blinded real-vs-synthetic reader studies (DESIGN §11–§12), usable without any UI.

* :mod:`.create` — :func:`create_study`: matched case set, blinded cases, truth key, manifest
* :mod:`.study` — :class:`Study`: ``open``, ``readers``, ``verify_password``, ``next_case``,
  ``answer``, ``progress`` (the API the app calls), ``key`` (admins/analysis only)
* :mod:`.store` — the SQLite (WAL) response store; :mod:`.design` — matching, reading order;
  :mod:`.blinding` — identical 16-bit PNG encoding; :mod:`.readers` — accounts, password hashes
* :mod:`.stats`, :mod:`.mrmc`, :mod:`.analysis` — statistics; :mod:`.plots`, :mod:`.report`,
  :mod:`.export` — outputs; :mod:`.demo`, :mod:`.simulate` — demo data and simulated readers

Names are imported lazily so ``import mammosynth.study`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Study": ".study", "CaseView": ".study", "Progress": ".study", "AnswerReceipt": ".study",
    "StudySettings": ".study", "create_study": ".create", "analyse": ".analysis",
    "write_report": ".report", "export_csv": ".export", "export_imrmc": ".export",
    "hash_password": ".readers", "Reader": ".readers", "Role": ".readers",
    "StudyError": ".errors", "UnknownReaderError": ".errors", "CaseNotAssignedError": ".errors",
    "AnswerOutOfRangeError": ".errors", "AlreadyAnsweredError": ".errors", "OutOfOrderError": ".errors",
    "StudyTamperedError": ".errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'mammosynth.study' has no attribute {name!r}")
