"""A DICOMweb client for PACS round-trips: STOW-RS send, QIDO-RS search, WADO-RS retrieve.

:class:`PacsClient` wraps ``dicomweb_client.DICOMwebClient`` and turns every failure into a
:class:`PacsError` that names the (credential-free) URL and says what to check: the server
is down, it refused the credentials, the URL is not a DICOMweb endpoint, or it rejected an
instance. Credentials come from the URL (``http://user:pass@host/dicom-web``), the
arguments, or ``MAMMOSYNTH_PACS_USERNAME`` / ``MAMMOSYNTH_PACS_PASSWORD``; they travel in
the HTTP basic-auth header only and are never logged or shown (:func:`redact_url`).

Sending reads the files and never moves or deletes them: after a failure every file is
still where it was, and :class:`SendReport` says which ones arrived.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

__all__ = ["PacsError", "PacsClient", "SendReport", "redact_url", "split_credentials", "value"]

USERNAME_VARIABLE = "MAMMOSYNTH_PACS_USERNAME"
PASSWORD_VARIABLE = "MAMMOSYNTH_PACS_PASSWORD"
#: What a study search asks for beyond the QIDO-RS defaults.
STUDY_FIELDS = ("StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                "ModalitiesInStudy")


class PacsError(ValueError):
    """A PACS request failed; the message names the URL (without credentials) and the cause."""


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without user:password@, username, password)``; refuses what is not http(s)."""
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"the PACS URL {redact_url(url)!r} is not an http(s) URL, e.g. "
                        "http://127.0.0.1:8042/dicom-web")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))
    return clean, parts.username, parts.password


def redact_url(url: str) -> str:
    """The URL as it may be shown or logged: any ``user:password@`` replaced by ``***@``."""
    parts = urlsplit(str(url))
    if parts.username is None and parts.password is None:
        return str(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


@dataclass
class SendReport:
    """What :meth:`PacsClient.send` did: the files that arrived, and the first failure."""

    url: str
    sent: list[Path] = field(default_factory=list)
    not_sent: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.not_sent

    def summary(self) -> str:
        """One paragraph for a person."""
        if self.ok:
            return f"sent {len(self.sent)} DICOM file(s) to {self.url}"
        return (f"sent {len(self.sent)} of {len(self.sent) + len(self.not_sent)} DICOM file(s) to {self.url}: "
                f"{self.error} — nothing was lost: the {len(self.not_sent)} file(s) not sent are still on disk "
                f"({', '.join(str(p) for p in self.not_sent[:3])}{' …' if len(self.not_sent) > 3 else ''}).")


class PacsClient:
    """DICOMweb requests to one PACS endpoint (e.g. ``http://127.0.0.1:8042/dicom-web``)."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout: float = 30.0):
        import requests
        from dicomweb_client import DICOMwebClient

        self.url, url_user, url_password = split_credentials(url)
        username = username or url_user or os.environ.get(USERNAME_VARIABLE) or None
        password = password or url_password or os.environ.get(PASSWORD_VARIABLE) or None
        session = requests.Session()
        if username is not None:
            session.auth = (username, password or "")
        self._client = DICOMwebClient(self.url, session=session, timeout=timeout)
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one dicomweb-client request; every failure becomes a :class:`PacsError`."""
        import requests

        try:
            return function(*args, **kwargs)
        except requests.ConnectionError:
            raise PacsError(f"cannot reach the PACS at {self.url} ({what}): nothing answers there. Is the server "
                            "running (`mammosynth pacs serve`) and is the host and port right?") from None
        except requests.Timeout:
            raise PacsError(f"the PACS at {self.url} did not answer in time ({what})") from None
        except requests.HTTPError as error:
            raise PacsError(self._http_message(what, error.response)) from None
        except requests.RequestException as error:
            raise PacsError(f"the request to the PACS at {self.url} failed ({what}): {type(error).__name__}") from None

    def _http_message(self, what: str, response: Any) -> str:
        status = getattr(response, "status_code", "?")
        if status in (401, 403):
            return (f"the PACS at {self.url} refused the request ({what}: HTTP {status}): wrong or missing user "
                    f"name or password (set {USERNAME_VARIABLE} / {PASSWORD_VARIABLE}, or pass --username)")
        if status in (404, 405):
            return (f"{self.url} is not a DICOMweb endpoint ({what}: HTTP {status}); for Orthanc it is "
                    "http://HOST:PORT/dicom-web")
        return f"the PACS at {self.url} answered HTTP {status} to {what}"

    def send(self, paths: Sequence[str | os.PathLike]) -> SendReport:
        """STOW-RS each DICOM file (one request per file, so a failure says exactly what arrived)."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        paths = [Path(p) for p in paths]
        report = SendReport(self.url, not_sent=list(paths))
        for path in paths:
            try:
                dataset = pydicom.dcmread(path)
                response = self._call(f"STOW-RS of {path.name}", self._client.store_instances, [dataset])
                _check_stored(response, path, self.url)
            except (PacsError, OSError, InvalidDicomError) as error:
                report.error = str(error) if isinstance(error, PacsError) else f"cannot read {path}: {error}"
                return report
            report.sent.append(path)
            report.not_sent.remove(path)
            logger.info("sent %s to %s", path.name, self.url)
        return report

    def studies(self) -> list[dict[str, Any]]:
        """QIDO-RS: every study (DICOM JSON, one dict per study, with :data:`STUDY_FIELDS`)."""
        return self._call("QIDO-RS study search", self._client.search_for_studies, fields=STUDY_FIELDS,
                          get_remaining=True)

    def instances(self, study_uid: str) -> list[dict[str, Any]]:
        """QIDO-RS: the instances of one study."""
        return self._call("QIDO-RS instance search", self._client.search_for_instances,
                          study_instance_uid=study_uid, get_remaining=True)

    def retrieve(self, study_uid: str, series_uid: str, sop_uid: str) -> Any:
        """WADO-RS: one instance as a ``pydicom.Dataset``."""
        return self._call("WADO-RS retrieve", self._client.retrieve_instance, study_uid, series_uid, sop_uid)


def _check_stored(response: Any, path: Path, url: str) -> None:
    failed = getattr(response, "FailedSOPSequence", None) if response is not None else None
    if failed:
        reason = getattr(failed[0], "FailureReason", "?")
        raise PacsError(f"the PACS at {url} rejected {path.name} (STOW-RS failure reason {reason})")


def value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` (8 hex digits) in a DICOM JSON item, or ``None``."""
    values = item.get(tag, {}).get("Value") or [None]
    first = values[0]
    return first.get("Alphabetic") if isinstance(first, dict) else first
