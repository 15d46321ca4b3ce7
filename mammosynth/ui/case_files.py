"""Serve the study's blinded case files without Gradio's per-file overhead (issue 23.7).

A reader's image is fetched after every ``study_next`` / ``study_answer`` (and after every
answer in the browser). Gradio's ``/gradio_api/file=`` route costs several milliseconds of
server CPU per image: FastAPI routing, the login check run in a worker thread, path checks
against every allowed and blocked folder, and a ``FileResponse`` that stats, opens, reads
and closes the file in four more worker-thread hops. Under 20 readers clicking as fast as
they can, that was a third of the server's time.

:class:`CaseFileMiddleware` is a plain ASGI middleware that answers exactly one kind of
request itself: a ``GET /gradio_api/file=<study>/cases/<case>.png`` by a logged-in user
(Gradio's own session cookie). It sends the file's bytes from a small in-memory cache (case
files never change: the study manifest pins their hashes). Anything else — another path, a
``HEAD`` or ``Range`` request, no or an unknown login, a custom auth dependency — goes on to
Gradio unchanged, so refusals and every other file are exactly Gradio's.

Blinding: the URL is the one Gradio hands out (the opaque case id), and the reply carries the
file's bytes and the same headers for every case: no modification time or ETag (file times
could tell the order in which real and synthetic cases were written).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

__all__ = ["CaseFileMiddleware", "FILE_ROUTE"]

#: Gradio's file route (``gradio.route_utils.API_PREFIX`` + ``/file=``).
FILE_ROUTE = "/gradio_api/file="

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class CaseFileMiddleware:
    """Answer logged-in ``GET``s of the study's case PNGs from memory; pass everything else on.

    Args:
        app: the ASGI app (Gradio's FastAPI app and its inner middleware).
        cases: the study's ``cases`` folder.
        max_cache_bytes: most bytes of case files kept in memory (least recently used go first).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], cases: str | os.PathLike,
                 max_cache_bytes: int = 64 * 2**20):
        self.app = app
        self.cases = Path(cases).resolve()
        self._folders: dict[str, bool] = {str(self.cases): True}  # folder as written in a URL -> is it cases/
        self.max_cache_bytes = int(max_cache_bytes)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self._case_name(scope)
        if name is None or not self._logged_in(scope):
            await self.app(scope, receive, send)
            return
        body = self._cached(name)
        if body is None:
            import anyio

            body = await anyio.to_thread.run_sync(self._load, name)
            if body is None:  # not a case file after all (a folder, a missing file): Gradio answers
                await self.app(scope, receive, send)
                return
        headers = [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode()),
                   (b"content-disposition", f'inline; filename="{name}"'.encode()),
                   (b"cache-control", b"private, no-transform")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- which requests are ours ---------------------------------------------------------------
    def _case_name(self, scope: Scope) -> str | None:
        """The case file name of a plain ``GET`` of a case file, else None."""
        if scope.get("type") != "http" or scope.get("method") != "GET":
            return None
        path = scope.get("path", "")
        if not path.startswith(FILE_ROUTE):
            return None
        folder, _, name = unquote(path[len(FILE_ROUTE):]).rpartition("/")
        if not name.endswith(".png") or "\\" in name or name.startswith(".") or not self._is_cases(folder):
            return None
        for key, _ in scope.get("headers", ()):
            if key == b"range":  # partial content: Gradio's ranged response
                return None
        return name

    def _is_cases(self, folder: str) -> bool:
        """True if ``folder`` (as the URL spells it: absolute or relative to the working folder) is cases/."""
        known = self._folders.get(folder)
        if known is None:
            known = bool(folder) and Path(os.path.abspath(folder)).resolve() == self.cases
            if len(self._folders) < 64:
                self._folders[folder] = known
        return known

    @staticmethod
    def _logged_in(scope: Scope) -> bool:
        """True if Gradio's session cookie names a logged-in user, or the app asks for no login.

        Mirrors ``get_current_user`` / ``login_check`` in ``gradio.routes``; an app with a custom
        ``auth_dependency`` is left to Gradio.
        """
        app = scope.get("app")
        if app is None or getattr(app, "auth_dependency", None) is not None or not hasattr(app, "tokens"):
            return False
        if getattr(app, "auth", None) is None:
            return True
        cookie_header = b"; ".join(value for key, value in scope.get("headers", ()) if key == b"cookie")
        if not cookie_header:
            return False
        cookies = SimpleCookie()
        try:
            cookies.load(cookie_header.decode("latin-1"))
        except Exception:  # noqa: BLE001 - a malformed cookie is Gradio's to refuse
            return False
        for key in (f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}"):
            if key in cookies and app.tokens.get(cookies[key].value) is not None:
                return True
        return False

    # -- the cache -------------------------------------------------------------------------------
    def _cached(self, name: str) -> bytes | None:
        with self._lock:
            body = self._cache.get(name)
            if body is not None:
                self._cache.move_to_end(name)
            return body

    def _load(self, name: str) -> bytes | None:
        path = self.cases / name
        try:
            if not path.is_file() or path.resolve().parent != self.cases:
                return None
            body = path.read_bytes()
        except OSError:
            return None
        if len(body) <= self.max_cache_bytes:
            with self._lock:
                if name not in self._cache:
                    self._cache[name] = body
                    self._cached_bytes += len(body)
                while self._cached_bytes > self.max_cache_bytes and self._cache:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached_bytes -= len(dropped)
        return body
