"""Who is asking: the user Gradio authenticated for a request, and role checks.

:func:`generator_refusal` holds the blinding rule of DESIGN §11: while a reader study is served
(or being prepared), reader accounts may not use the generator — its images would teach them
the model's look before they read — unless the operator lifts it (``--readers-may-generate``).

Identity comes only from ``gr.Request.username`` (set by Gradio's login, for the browser and
for ``gradio_client.Client(url, auth=(user, password))`` alike); nothing about a user is kept
in module globals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .services import Services

__all__ = ["AccessDenied", "username_of", "require_role", "generator_refusal", "may_generate"]


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


def generator_refusal(services: Services, username: str | None) -> str | None:
    """Why ``username`` may not use the generator now, or ``None`` if they may.

    Only reader accounts are refused, and only while a study is served or being prepared,
    unless the app was started with ``--readers-may-generate`` (``AppConfig.readers_may_generate``).
    """
    if services.role(username) != "reader" or not services.studies.active:
        return None
    if services.config.readers_may_generate:
        return None
    return (f"{username!r} is a reader account and a blinded reader study is running: readers may not "
            "use the generator until it ends (its images would show them what the model's images look like "
            "before they read). A study admin can allow it by starting the app with --readers-may-generate.")


def may_generate(services: Services, username: str | None) -> bool:
    """True if ``username`` may see the Generate tab and call ``generate`` (see :func:`generator_refusal`)."""
    return generator_refusal(services, username) is None
