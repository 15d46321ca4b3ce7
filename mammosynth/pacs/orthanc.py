"""A local Orthanc PACS for looking at synthetic studies: loopback only, its own storage.

:class:`OrthancServer` starts the Debian ``Orthanc`` binary (``apt-get install orthanc
orthanc-dicomweb``; ``orthanc-webviewer`` adds a viewer) with a configuration written here:

* HTTP on ``127.0.0.1`` only — ``RemoteAccessAllowed: false`` makes Orthanc answer loopback
  clients only (Orthanc 1.10 has no bind-address option), and its DICOM (DIMSE) server is
  off: images come in through DICOMweb STOW-RS;
* everything in one folder of yours (a temporary one by default, removed at stop): ``db/``
  (Orthanc's storage and index), ``orthanc.json`` (the configuration) and ``orthanc.log``;
* the DICOMweb plugin at ``/dicom-web/`` (QIDO-RS, WADO-RS, STOW-RS), Orthanc Explorer at
  ``/app/explorer.html`` and, when installed, the Orthanc Web Viewer;
* optional HTTP basic authentication (one user), never written to the log.

Used by ``mammosynth pacs serve`` (for people) and by the tests (a fresh server per module).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["OrthancError", "OrthancServer", "find_orthanc", "free_port"]

#: Where Debian's packages put the binary and the plugins (Orthanc loads each .so named here).
BINARY_CANDIDATES = ("Orthanc", "/usr/sbin/Orthanc")
PLUGIN_FOLDERS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
OPTIONAL_PLUGINS = ("libOrthancWebViewer.so",)
INSTALL_HINT = "install it with `apt-get install orthanc orthanc-dicomweb` (Debian/Ubuntu)"


class OrthancError(RuntimeError):
    """Orthanc is missing, or did not start; the message says why and what to do."""


def find_orthanc() -> str | None:
    """Path of the ``Orthanc`` executable, or ``None`` when it is not installed."""
    for candidate in BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _plugin(name: str) -> Path | None:
    for folder in PLUGIN_FOLDERS:
        matches = sorted(folder.glob(name + "*")) if folder.is_dir() else []
        if matches:
            return matches[0]
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OrthancServer:
    """One Orthanc process; use as a context manager (``with OrthancServer() as pacs:``).

    Attributes:
        folder: where Orthanc keeps its files (``None``: a temporary folder, removed at stop).
        http_port: HTTP port on 127.0.0.1 (``None``: a free one).
        username, password: enable HTTP basic authentication for this one user.
        name: the server's name shown in Orthanc Explorer.
        startup_timeout: seconds to wait for the REST API to answer.
    """

    folder: Path | None = None
    http_port: int | None = None
    username: str | None = None
    password: str | None = None
    name: str = "mammosynth synthetic PACS"
    startup_timeout: float = 90.0

    def __post_init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._temporary: Path | None = None
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password for the PACS, or neither")

    @property
    def url(self) -> str:
        """The server's root URL (Orthanc Explorer is at ``url + '/app/explorer.html'``)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb endpoint (what ``mammosynth pacs send --url`` takes)."""
        return f"{self.url}/dicom-web"

    def configuration(self) -> dict[str, Any]:
        """The JSON configuration Orthanc is started with."""
        plugin = _plugin(DICOMWEB_PLUGIN)
        if plugin is None:
            raise OrthancError(f"the Orthanc DICOMweb plugin ({DICOMWEB_PLUGIN}) is not installed: "
                               "`apt-get install orthanc-dicomweb`")
        plugins = [str(plugin)] + [str(p) for p in map(_plugin, OPTIONAL_PLUGINS) if p is not None]
        storage = str(self.folder / "db")
        config: dict[str, Any] = {
            "Name": self.name, "StorageDirectory": storage, "IndexDirectory": storage,
            "HttpServerEnabled": True, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "OrthancExplorerEnabled": True, "HttpDescribeErrors": True,
            "DicomServerEnabled": False, "DicomPort": 0,  # DIMSE off: DICOMweb only
            "AuthenticationEnabled": self.username is not None,
            "Plugins": plugins, "ConcurrentJobs": 1, "SaveJobs": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                         "Host": "127.0.0.1", "Ssl": False},
            "WebViewer": {"CachePath": str(Path(storage) / "webviewer-cache")},
        }
        if self.username is not None:
            config["RegisteredUsers"] = {self.username: self.password}
        return config

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until its REST API answers; raises :class:`OrthancError`."""
        binary = find_orthanc()
        if binary is None:
            raise OrthancError(f"the Orthanc PACS is not installed: {INSTALL_HINT}")
        if self.folder is None:
            self._temporary = self.folder = Path(tempfile.mkdtemp(prefix="mammosynth-orthanc-"))
        self.folder = Path(self.folder).resolve()
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        self.http_port = self.http_port or free_port()
        config_path = self.folder / "orthanc.json"
        _write_private(config_path, json.dumps(self.configuration(), indent=2))
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - handed to the child
        self._process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        log.close()  # the child has its own handle
        self._wait_until_ready(Path(log.name))
        logger.info("Orthanc is up at %s (files in %s)", self.url, self.folder)
        return self

    def _wait_until_ready(self, log: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                self.stop()
                raise OrthancError(f"Orthanc exited at start (status {self._process.returncode if self._process else '?'}); "
                                   f"its log {log} ends:\n{tail}")
            if self._answers():
                return
            time.sleep(0.3)
        self.stop()
        raise OrthancError(f"Orthanc did not answer on {self.url} within {self.startup_timeout:.0f} s; see {log}")

    def _answers(self) -> bool:
        import requests

        auth = (self.username, self.password) if self.username is not None else None
        try:
            return requests.get(f"{self.url}/system", auth=auth, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 20 s) and remove a temporary storage."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (the configuration may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
