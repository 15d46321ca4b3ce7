"""Who may log in, and with which role: the accounts of a study ``readers.csv``."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..study.readers import Reader

logger = logging.getLogger("mammosynth.app")

__all__ = ["Accounts"]


class Accounts:
    """Who may log in (a study ``readers.csv``), checked with the stored password hashes."""

    def __init__(self, readers_csv: str | os.PathLike | None):
        self.path = None if readers_csv is None else Path(readers_csv)
        self._readers: dict[str, Reader] | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def readers(self) -> dict[str, Reader]:
        if self.path is None:
            return {}
        with self._lock:
            if self._readers is None:
                from ..study.readers import read_readers_csv

                self._readers = {r.id: r for r in read_readers_csv(self.path)}
        return self._readers

    def authenticate(self, username: str, password: str) -> bool:
        """Gradio's ``auth=`` callback: True for a listed account with the right password."""
        from ..study.readers import check_password

        reader = self.readers().get(str(username or ""))
        ok = reader is not None and check_password(reader.password_hash, str(password or ""))
        logger.info("login %s for %r", "accepted" if ok else "refused", username)
        return ok

    def role(self, username: str | None) -> str | None:
        """``"reader"``, ``"admin"`` or ``None`` (not logged in / unknown)."""
        reader = self.readers().get(str(username or "")) if username else None
        return None if reader is None else str(reader.role.value)

    def display_name(self, username: str | None) -> str:
        reader = self.readers().get(str(username or "")) if username else None
        return reader.display_name if reader is not None else str(username or "")
