"""The response store: one SQLite database (WAL) per study, safe for concurrent readers.

Every answer is committed (``synchronous=FULL``) before :meth:`ResponseStore.record`
returns, so an acknowledged answer survives a crash of the writer. Writers serialise on
``BEGIN IMMEDIATE``; readers of the database never block writers (WAL). Each thread and
each process uses its own connection. Answers that arrive together share a transaction
(group commit: one fsync for all, each answer still acknowledged only after it).

Policy (enforced inside one transaction):

* a reader answers the cases of their reading list **in order**; the answer to list
  position ``k`` can only be stored when positions ``1..k-1`` are stored, so "where a reader
  is" is simply the number of stored answers (resume = read one count);
* answers are final: resubmitting the *same* answer for a case is acknowledged again
  (idempotent, nothing written); a *different* answer is refused.

Schema versions (``PRAGMA user_version``) and their migrations are in :data:`MIGRATIONS`;
opening an older database upgrades it, opening a newer one is refused.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .errors import AlreadyAnsweredError, OutOfOrderError, StudyError, StudyTamperedError

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "StoredAnswer", "ResponseStore"]

#: Migration ``i`` takes a database from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the answers table and the study binding
    """
    CREATE TABLE study_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE answers (
        reader_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        position INTEGER NOT NULL CHECK (position >= 1),
        answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
        confidence INTEGER NOT NULL,
        birads INTEGER CHECK (birads IS NULL OR birads BETWEEN 0 AND 6),
        seconds_on_case REAL NOT NULL CHECK (seconds_on_case >= 0),
        answered_at TEXT NOT NULL,
        PRIMARY KEY (reader_id, case_id),
        UNIQUE (reader_id, position)
    );
    """,
    # 1 -> 2: which client session gave the answer (audit), and a time index
    """
    ALTER TABLE answers ADD COLUMN session TEXT;
    CREATE INDEX answers_time ON answers (answered_at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class StoredAnswer:
    """One stored answer (a row of ``answers``)."""

    reader_id: str
    case_id: str
    position: int
    answer: str
    confidence: int
    birads: int | None
    seconds_on_case: float
    answered_at: str
    session: str | None = None


_COLUMNS = "reader_id, case_id, position, answer, confidence, birads, seconds_on_case, answered_at, session"


class ResponseStore:
    """The study's answers in ``responses.sqlite``.

    Args:
        path: the database file (created with the current schema if missing).
        study_uid: the study this database belongs to; a database of another study is refused.
        create: allow creating a new database (otherwise a missing file is an error).
    """

    def __init__(self, path: str | os.PathLike, study_uid: str, create: bool = False):
        self.path = Path(path)
        self.study_uid = study_uid
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._pending: list[_Pending] = []  # answers waiting for the next transaction (group commit)
        self._pending_lock = threading.Lock()
        self._lock_file: tuple[int, object] | None = None  # (pid, file) for the cross-process lock
        if not self.path.exists() and not create:
            raise StudyTamperedError(f"{self.path} is missing: the study's answers are gone")
        conn = self._conn()
        migrate(conn)
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT value FROM study_info WHERE key = 'study_uid'").fetchone()
        if row is None:
            conn.execute("INSERT INTO study_info VALUES ('study_uid', ?)", (study_uid,))
        conn.execute("COMMIT")
        if row is not None and row[0] != study_uid:
            raise StudyTamperedError(f"{self.path} holds the answers of study {row[0]}, not of {study_uid}")

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = connect(self.path)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _writer(self):
        """Serialise writers: a thread lock, then an OS file lock shared by all processes.

        SQLite alone would also serialise them (``BEGIN IMMEDIATE`` + busy timeout), but its
        busy handler polls with growing sleeps, which gives multi-second tail latencies under
        20 concurrent writers; waiting on a lock wakes the next writer at once.
        """
        with self._write_lock:
            try:
                import fcntl
            except ImportError:  # not POSIX: rely on SQLite's busy handler
                yield
                return
            if self._lock_file is None or self._lock_file[0] != os.getpid():
                self._lock_file = (os.getpid(), open(self.path.with_name(self.path.name + ".lock"), "a+b"))
            handle = self._lock_file[1]
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- reads -------------------------------------------------------------------------
    def count(self, reader_id: str) -> int:
        """Number of answers stored for ``reader_id``."""
        return int(self._conn().execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0])

    def answers(self, reader_id: str | None = None) -> list[StoredAnswer]:
        """Stored answers (all, or one reader's), ordered by reader and position."""
        sql = f"SELECT {_COLUMNS} FROM answers"
        args: tuple = ()
        if reader_id is not None:
            sql += " WHERE reader_id = ?"
            args = (reader_id,)
        rows = self._conn().execute(sql + " ORDER BY reader_id, position", args).fetchall()
        return [StoredAnswer(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Answers per reader."""
        rows = self._conn().execute("SELECT reader_id, COUNT(*) FROM answers GROUP BY reader_id").fetchall()
        return {r: int(n) for r, n in rows}

    # -- the one write -----------------------------------------------------------------
    def record(
        self,
        reader_id: str,
        case_id: str,
        reading_list: Sequence[str],
        answer: str,
        confidence: int,
        birads: int | None,
        seconds_on_case: float,
        session: str | None = None,
    ) -> tuple[StoredAnswer, bool]:
        """Store one (already validated) answer; returns ``(stored, duplicate)`` once it is committed.

        ``duplicate`` is True when the identical answer was already stored (nothing written).

        Group commit: answers that arrive from other threads while one transaction is being
        committed wait for it, then go into the next transaction together (one fsync for all
        of them, each checked in its own savepoint). Every caller still returns only after the
        transaction holding its answer is committed, and a refused answer refuses only itself.

        Raises:
            AlreadyAnsweredError: the case has a different stored answer.
            OutOfOrderError: the case is not the reader's current case.
        """
        pending = _Pending((reader_id, case_id, reading_list, answer, confidence, birads, seconds_on_case, session))
        with self._pending_lock:
            self._pending.append(pending)
        with self._writer():  # one committer per process at a time (and per database, across processes)
            if not pending.done:  # nobody took it into their transaction: commit everything waiting
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit(batch)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for ``batch``: each answer in its own savepoint, then one COMMIT."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            accepted = []
            for pending in batch:
                conn.execute("SAVEPOINT answer")
                try:
                    pending.result = self._check_and_insert(conn, *pending.args)
                    accepted.append(pending)
                except StudyError as error:  # this answer's policy refusal: undo it alone
                    conn.execute("ROLLBACK TO answer")
                    pending.error = error
                conn.execute("RELEASE answer")
            conn.execute("COMMIT")
        except BaseException as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for pending in batch:  # nothing of this transaction is stored: nobody is acknowledged
                if pending.error is None:
                    pending.result, pending.error = None, error
            if not isinstance(error, Exception):
                raise
        finally:
            for pending in batch:
                pending.done = True

    @staticmethod
    def _check_and_insert(conn, reader_id, case_id, reading_list, answer, confidence, birads, seconds_on_case,
                          session) -> tuple[StoredAnswer, bool]:
        """Inside the open transaction: the policy checks, then the insert (raises StudyError)."""
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM answers WHERE reader_id = ? AND case_id = ?", (reader_id, case_id)
        ).fetchone()
        if row is not None:
            stored = StoredAnswer(*row)
            if (stored.answer, stored.confidence, stored.birads) == (answer, confidence, birads):
                return stored, True
            raise AlreadyAnsweredError(
                f"reader {reader_id!r} already answered case {case_id!r} ({stored.answer}, confidence "
                f"{stored.confidence}); answers are final and were not changed"
            )
        done = int(conn.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0])
        if done >= len(reading_list) or reading_list[done] != case_id:
            current = reading_list[done] if done < len(reading_list) else None
            raise OutOfOrderError(
                f"reader {reader_id!r} is at case {current!r} (position {done + 1}), not at {case_id!r}; "
                "answer the current case first"
            )
        stored = StoredAnswer(reader_id, case_id, done + 1, answer, int(confidence), birads,
                              float(seconds_on_case), datetime.now(timezone.utc).isoformat(), session)
        conn.execute(f"INSERT INTO answers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (stored.reader_id, stored.case_id, stored.position, stored.answer, stored.confidence,
                      stored.birads, stored.seconds_on_case, stored.answered_at, stored.session))
        return stored, False


class _Pending:
    """An answer waiting for a transaction: its arguments, then its result or its error."""

    __slots__ = ("args", "result", "error", "done")

    def __init__(self, args: tuple):
        self.args = args
        self.result: tuple[StoredAnswer, bool] | None = None
        self.error: BaseException | None = None
        self.done = False


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL, full fsync on commit and a 30 s busy wait."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StudyError(f"{path}: SQLite could not switch to WAL mode (got {mode}); use a local disk")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema to version ``target``; returns the version it started at."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        start = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if start > len(migrations):
            raise StudyError(
                f"the response database has schema version {start}, newer than this code "
                f"({len(migrations)}): update mammosynth"
            )
        for version in range(start, target):
            for statement in filter(str.strip, migrations[version].split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        conn.execute("COMMIT")
        return start
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
