"""What the API-only endpoints (``gr.api``) send: files as Gradio ``FileData``.

``gr.api`` runs no component's post-processing, so a file goes out as the ``FileData`` wire
form (a dict); Gradio serves it (a static file as it is, anything else from its cache) and
``gradio_client`` downloads it under its own name, as it does for an ``Image`` or ``File`` output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gradio.data_classes import FileData

__all__ = ["FileData", "file_payload"]


def file_payload(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The ``FileData`` wire form of the file at ``path`` (``None`` for no file)."""
    if path is None:
        return None
    return FileData(path=str(path), orig_name=Path(path).name).model_dump()
