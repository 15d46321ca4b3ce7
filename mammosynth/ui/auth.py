"""Who is asking: the user Gradio authenticated for a request, and role checks.

Identity comes only from ``gr.Request.username`` (set by Gradio's login, for the browser and
for ``gradio_client.Client(url, auth=(user, password))`` alike); nothing about a user is kept
in module globals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .services import Services

__all__ = ["AccessDenied", "username_of", "require_role"]


class AccessDenied(PermissionError):
    """The logged-in user may not do this (message says why and what to do)."""


def username_of(request: Any) -> str | None:
    """The authenticated user of a Gradio request, or ``None`` (no login / no request)."""
    name = getattr(request, "username", None) if request is not None else None
    return str(name) if name else None


def require_role(services: Services, username: str | None, role: str, action: str) -> str:
    """Return ``username`` if it has ``role``; raise :class:`AccessDenied` otherwise."""
    if not username:
        raise AccessDenied(f"Log in to {action}.")
    actual = services.role(username)
    if actual != role:
        if role == "admin":
            raise AccessDenied(f"Only study admins may {action}; {username!r} is "
                               f"{'a ' + actual if actual else 'not a study'} account.")
        raise AccessDenied(f"Only study readers may {action}; {username!r} is "
                           f"{'an ' + actual if actual else 'not a study'} account.")
    return username
