"""Study readers: the ``readers.csv`` file and password hashing (never a plain password).

``readers.csv`` columns: ``id``, ``display_name``, ``role`` (``reader`` or ``admin``) and
``password_hash``. Hashes are made with :func:`hash_password` (or ``mammosynth study
hash-password``): ``scrypt$N$r$p$salt$hash`` (salt and hash URL-safe base64). PBKDF2-SHA256
hashes ``pbkdf2_sha256$iterations$salt$hash`` are accepted too. Readers read cases; admins
see results and never get a reading list.
"""

from __future__ import annotations

import base64
import csv
import enum
import hashlib
import hmac
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import StudyError

__all__ = ["Role", "Reader", "hash_password", "check_password", "read_readers_csv", "readers_csv_text"]

READER_COLUMNS = ("id", "display_name", "role", "password_hash")
_ID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class Role(enum.StrEnum):
    """What a study account may do."""

    READER = "reader"
    ADMIN = "admin"


@dataclass(frozen=True)
class Reader:
    """One study account (as listed in ``readers.csv``)."""

    id: str
    display_name: str
    role: Role
    password_hash: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Salted scrypt hash of ``password`` (``scrypt$N$r$p$salt$hash``)."""
    if not password:
        raise StudyError("the password must not be empty")
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=64 * 2**20, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def _valid_hash_format(stored: str) -> bool:
    parts = stored.split("$")
    return (parts[0] == "scrypt" and len(parts) == 6) or (parts[0] == "pbkdf2_sha256" and len(parts) == 4)


def check_password(stored: str, password: str) -> bool:
    """True if ``password`` matches the stored hash (constant-time comparison)."""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            expected = _unb64(parts[5])
            got = hashlib.scrypt(password.encode(), salt=_unb64(parts[4]), n=n, r=r, p=p, dklen=len(expected),
                                 maxmem=256 * 2**20)
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            expected = _unb64(parts[3])
            got = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(parts[2]), int(parts[1]), len(expected))
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def read_readers_csv(path: str | os.PathLike) -> list[Reader]:
    """Read and validate a readers CSV; raises :class:`StudyError` naming the bad row."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"readers file {path} does not exist")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "password" in rows[0]:
        raise StudyError(
            f"{path} has a 'password' column: plain passwords are never stored. Replace it by "
            "'password_hash' made with `mammosynth study hash-password`"
        )
    missing = [c for c in READER_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise StudyError(f"{path} must have the columns {list(READER_COLUMNS)}; missing {missing}")
    readers, seen = [], set()
    for line, row in enumerate(rows, start=2):
        rid = (row["id"] or "").strip()
        if not _ID_RE.match(rid):
            raise StudyError(f"{path} line {line}: reader id {rid!r} must be 1-64 letters, digits or _.@-")
        if rid in seen:
            raise StudyError(f"{path} line {line}: reader id {rid!r} appears twice")
        seen.add(rid)
        role = (row["role"] or "").strip().lower()
        if role not in {r.value for r in Role}:
            raise StudyError(f"{path} line {line}: role {row['role']!r} must be 'reader' or 'admin'")
        stored = (row["password_hash"] or "").strip()
        if not _valid_hash_format(stored):
            raise StudyError(
                f"{path} line {line}: password_hash of {rid!r} is not a scrypt/pbkdf2 hash; "
                "make one with `mammosynth study hash-password`"
            )
        readers.append(Reader(rid, (row["display_name"] or rid).strip(), Role(role), stored))
    if not any(r.role is Role.READER for r in readers):
        raise StudyError(f"{path} lists no account with role 'reader'")
    return readers


def readers_csv_text(readers: list[Reader]) -> str:
    """The CSV text of ``readers`` (the format :func:`read_readers_csv` reads)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(READER_COLUMNS)
    for r in readers:
        writer.writerow([r.id, r.display_name, r.role.value, r.password_hash])
    return buffer.getvalue()
