"""API-only endpoints: :func:`api_endpoint` registers one with ``gr.api``; files go out as ``FileData``.

``gr.api`` takes the endpoint's inputs and outputs from the function's type hints: one output
per element of a ``tuple[...]`` return annotation. It runs no component's post-processing, so
a file goes out as the ``FileData`` wire form (a dict, :func:`file_payload`); Gradio serves it
(a static file as it is, anything else from its cache) and ``gradio_client`` downloads it
under its own name, as it does for an ``Image`` or ``File`` output.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from gradio.data_classes import FileData

__all__ = ["FileData", "api_endpoint", "file_payload"]


def api_endpoint(fn: Callable[..., Any], **options: Any) -> None:
    """``gr.api(fn, api_name=fn.__name__, **options)`` with ``fn``'s type hints evaluated.

    Gradio reads the outputs from ``inspect.signature(fn).return_annotation``, which
    ``from __future__ import annotations`` leaves a string (one output instead of one per
    tuple element); the evaluated hints give it the real types.
    """
    fn.__annotations__ = typing.get_type_hints(fn)
    gr.api(fn, api_name=fn.__name__, **options)


def file_payload(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The ``FileData`` wire form of the file at ``path`` (``None`` for no file)."""
    if path is None:
        return None
    return FileData(path=str(path), orig_name=Path(path).name).model_dump()
