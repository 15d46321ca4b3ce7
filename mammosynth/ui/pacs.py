"""The Generate tab's *Send to PACS* button (only when the app runs with ``--pacs-url``).

:func:`send_to_pacs` is the pure part: it STOW-RS's the DICOMs of this session's last
generation (one synthetic study) and returns a Markdown verdict. :func:`build_pacs_controls`
lays out the button, optional per-user credentials (used for that one send, never stored or
logged) and the verdict; ``controls.wire(shown)`` connects it to the tab's state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .auth import generator_refusal, username_of
from .services import Services

logger = logging.getLogger("mammosynth.app")

__all__ = ["send_to_pacs", "build_pacs_controls", "PacsControls"]


def generated_dicoms(services: Services, items: list[dict]) -> list[Path]:
    """The DICOM beside each shown 16-bit PNG, only from the app's own ``generated`` folder."""
    root = (Path(services.config.temp_dir) / "generated").resolve()
    paths = [Path(item["png16"]).with_suffix(".dcm").resolve() for item in items or []]
    return [p for p in paths if p.is_relative_to(root) and p.is_file()]


def send_to_pacs(services: Services, items: list[dict], username: str = "", password: str = "") -> str:
    """Send the last generation's DICOM study to ``--pacs-url``; a Markdown line says what happened."""
    from ..pacs.client import PacsClient, PacsError, redact_url

    dicoms = generated_dicoms(services, items)
    if not dicoms:
        return "Generate images first: *Send to PACS* sends the DICOM study of the images shown."
    try:
        report = PacsClient(services.config.pacs_url, username.strip() or None, password or None).send(dicoms)
    except PacsError as error:
        return f"⚠ **Not sent.** {error}"
    logger.info("PACS send to %s: %d of %d file(s)", redact_url(report.url), len(report.sent), len(dicoms))
    if report.ok:
        return f"✓ **Sent** {len(report.sent)} DICOM file(s) (one synthetic study) to `{report.url}`."
    return (f"⚠ **Not (all) sent:** {report.error} {len(report.sent)} of {len(dicoms)} arrived; the downloads "
            "above still hold every file.")


@dataclass
class PacsControls:
    """The components of the PACS row; :meth:`wire` connects the button."""

    services: Services
    username: Any
    password: Any
    button: Any
    status: Any

    def wire(self, shown: Any) -> None:
        """Send the images in ``shown`` (the tab's ``gr.State`` of this session's images) on click."""
        services = self.services

        def send(items: list[dict], username: str, password: str, request: gr.Request) -> str:
            if (refusal := generator_refusal(services, username_of(request))) is not None:  # blinding (DESIGN §11)
                raise gr.Error(refusal, title="Not allowed", print_exception=False)
            return send_to_pacs(services, items, username, password)

        self.button.click(send, [shown, self.username, self.password], self.status, api_visibility="private",
                          concurrency_limit=2, show_progress="minimal")


def build_pacs_controls(services: Services) -> PacsControls | None:
    """The *Send to PACS* row inside the current layout, or ``None`` without ``--pacs-url``."""
    from ..pacs.client import redact_url, split_credentials

    if not services.config.pacs_url:
        return None
    shown_url = redact_url(split_credentials(services.config.pacs_url)[0])
    with gr.Group(elem_id="gen-pacs"):
        with gr.Row():
            username = gr.Textbox("", label="PACS user (optional)", scale=1, elem_id="gen-pacs-user")
            password = gr.Textbox("", label="PACS password (optional; this send only)", type="password", scale=1,
                                  elem_id="gen-pacs-password")
            button = gr.Button("Send to PACS", variant="secondary", scale=1, elem_id="gen-pacs-send")
        status = gr.Markdown(f"Sends the DICOM study of the images shown to `{shown_url}`.", elem_id="gen-pacs-status")
    return PacsControls(services, username, password, button, status)
