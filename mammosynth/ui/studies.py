"""The study the app serves: opened once (or built in the background for the demo).

:class:`StudyService` also remembers when each reader was shown their current case (for
``seconds_on_case``), keyed by the reader's authenticated name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..study import Study

logger = logging.getLogger("mammosynth.app")

__all__ = ["StudyService", "StudyUnavailable"]


class StudyUnavailable(RuntimeError):
    """The study cannot be used now (still being prepared, failed, or none configured)."""


class StudyService:
    """The study the app serves: opened once (or built in the background for the demo)."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = None if folder is None else Path(folder)
        self._study: Study | None = None
        self._state = "none" if folder is None else "pending"
        self._message = "No reader study is loaded: start the app with --study FOLDER."
        self._lock = threading.Lock()
        self._shown: dict[tuple[str, str], float] = {}

    # state changes (the demo builder calls these)
    def preparing(self, message: str) -> None:
        self._state, self._message = "preparing", message

    def failed(self, message: str) -> None:
        self._state, self._message = "failed", message

    @property
    def state(self) -> str:
        return self._state

    @property
    def active(self) -> bool:
        """A study is served, opening or being prepared (a failed one counts: it may be fixed and resumed)."""
        return self._state != "none"

    @property
    def message(self) -> str:
        return self._message

    def study(self) -> Study:
        """The opened :class:`~mammosynth.study.Study`; raises :class:`StudyUnavailable`."""
        if self._study is not None:
            return self._study
        if self._state in ("none", "preparing", "failed") or self.folder is None:
            raise StudyUnavailable(self._message)
        with self._lock:
            if self._study is None:
                from ..study import Study, StudyError

                try:
                    self._study = Study.open(self.folder, verify="quick")
                except (StudyError, OSError) as error:
                    self.failed(f"The study at {self.folder} cannot be opened: {error}")
                    raise StudyUnavailable(self._message) from None
                self._state = "ready"
                logger.info("study %r opened (%s)", self._study.name, self.folder)
        return self._study

    def ready(self, folder: Path) -> None:
        """The demo builder finished: open ``folder`` from now on."""
        self.folder = Path(folder)
        self._state = "pending"
        self.study()

    def mark_shown(self, reader_id: str, case_id: str) -> None:
        """Remember when a reader first saw a case (for ``seconds_on_case``)."""
        self._shown.setdefault((reader_id, case_id), time.monotonic())

    def seconds_on(self, reader_id: str, case_id: str) -> float:
        """Seconds since the reader first saw the case in this server's lifetime (0 if unknown)."""
        shown = self._shown.pop((reader_id, case_id), None)
        return 0.0 if shown is None else min(max(time.monotonic() - shown, 0.0), 86399.0)
