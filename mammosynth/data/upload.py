"""An image brought in to be edited: a 16-bit PNG or an MG DICOM, through the ingest's steps (DESIGN §5, §6).

:func:`load_for_edit` turns a file into an :class:`EditSource`: a uint16 frame at the model's
size in the *display* orientation (as the pipeline takes and returns images), its side and view,
and the way a box drawn on the file maps onto that frame.

* **DICOM** (an ``.dcm`` / ``.dicom`` file, or any file with the ``DICM`` marker): read by
  :func:`mammosynth.data.dicom.read_mammogram` — the same display pipeline and PHI rules as the
  ingest (modality MG, FOR PRESENTATION, MONOCHROME1 inverted, padding masked; only the
  non-identifying header leaves it: no names, ids, dates or places, and nothing of the header
  reaches the outputs except laterality and view) — then cropped to the breast, flipped,
  resized and padded by :func:`mammosynth.data.prepare.prepare_image`, exactly as ingested
  training data are. Synthetic DICOMs (Conversion Type SYN) are refused there; edit the 16-bit
  PNG written beside them.
* **16-bit grayscale PNG** at the model's size: taken as it is (a generated image, or a frame
  of a prepared dataset); the recipe JSON beside a generated PNG, when there is one, gives its
  conditions. A larger 16-bit PNG is a mammogram: it goes through ``prepare_image`` like a
  DICOM's display pixels. 8-bit, colour or smaller images are refused, naming what came and
  what was expected.

Boxes are normalised ``(x0, y0, x1, y1)`` of the file as displayed (a DICOM as stored);
:meth:`EditSource.frame_box` moves one through the crop, flip and resize onto the frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..conditions import Box, ConditionError, Conditions, Laterality, parse_box, parse_laterality, parse_view

__all__ = ["EditSource", "EditInputError", "load_for_edit", "SOURCE_KINDS"]

#: What an edit's input was: a generated image (PNG with its recipe), or an uploaded PNG / DICOM.
SOURCE_KINDS = ("generated", "uploaded-png", "uploaded-dicom")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class EditInputError(ValueError):
    """The file cannot be edited; the message names it and says what was expected."""


@dataclass(frozen=True)
class EditSource:
    """An image ready for :meth:`MammoLDMPipeline.edit`.

    Attributes:
        frame: uint16 ``(H, W)`` at the model's size, display orientation.
        kind: one of :data:`SOURCE_KINDS`.
        laterality, view: ``"L"``/``"R"``, ``"CC"``/``"MLO"`` or ``None``.
        conditions: the conditions known about the image (from a generated image's recipe;
            for others side and view only); the lesion and box are the edit's, not these.
        transform: how file pixels map onto the frame (``None``: the file *is* the frame).
    """

    frame: np.ndarray
    kind: str
    laterality: str | None
    view: str | None
    conditions: Conditions = field(default_factory=Conditions)
    transform: dict[str, Any] | None = None

    def frame_box(self, box: Any, name: str = "box") -> Box:
        """A normalised box of the file as displayed → the same anatomy on :attr:`frame` (normalised).

        Raises ``ConditionError`` when the box is malformed, outside [0, 1] or outside the
        part of the image the ingest keeps (the breast's bounding box).
        """
        parsed = parse_box(box)
        if parsed is None:
            raise ConditionError(f"{name}: an edit needs a lesion box x0,y0,x1,y1 in [0, 1]")
        if self.transform is None:
            return parsed
        from .prepare import Crop, transform_box

        t = self.transform
        h, w = t["shape"]
        pixels = (parsed.x0 * w, parsed.y0 * h, parsed.x1 * w, parsed.y1 * h)
        moved = transform_box(pixels, Crop(*t["crop"]), t["flipped"], tuple(t["content"]))
        if moved is None:
            raise ConditionError(
                f"{name} {','.join(f'{v:.3f}' for v in parsed.as_tuple())} lies outside the breast: the ingest "
                "crops the image to the breast and the box is entirely outside that crop"
            )
        height, width = self.frame.shape
        canonical = Box.from_pixels(moved, height, width)
        return canonical.mirrored() if self.laterality == Laterality.R.value else canonical


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM"


def load_for_edit(path: str | os.PathLike, size: tuple[int, int], laterality: Any = None,
                  view: Any = None) -> EditSource:
    """Read ``path`` (16-bit PNG or MG DICOM) and bring it to ``size`` ``(height, width)`` as the ingest does.

    Args:
        path: the file.
        size: the model's ``(height, width)``.
        laterality, view: override what the file says (a PNG says nothing: its recipe, else
            the side the breast touches, decides the laterality).

    Raises:
        EditInputError: (a ``ValueError``) naming the file and what was expected;
        ``DicomReadError`` subclasses for DICOMs the ingest would skip (not MG, FOR
        PROCESSING, synthetic, truncated, ...); ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a 16-bit PNG or an MG DICOM to edit)")
    laterality, view = parse_laterality(laterality), parse_view(view)
    if _is_dicom(path):
        return _from_dicom(path, size, laterality, view)
    with open(path, "rb") as handle:
        if handle.read(8) != _PNG_MAGIC:
            raise EditInputError(f"{path}: not a PNG or DICOM file; expected a 16-bit grayscale PNG or an MG DICOM")
    return _from_png(path, size, laterality, view)


def _from_dicom(path: Path, size: tuple[int, int], laterality: Any, view: Any) -> EditSource:
    from .dicom import SyntheticImageError, read_mammogram

    try:
        image = read_mammogram(path)
    except SyntheticImageError as error:
        raise SyntheticImageError(path, f"{error.detail}; to edit a generated image, give its 16-bit PNG "
                                        "(written beside the DICOM)") from None
    side = (laterality.value if laterality else None) or image.header.laterality
    shown_view = (view.value if view else None) or image.header.view
    return _prepared(image.pixels, size, side, shown_view, "uploaded-dicom", path)


def _from_png(path: Path, size: tuple[int, int], laterality: Any, view: Any) -> EditSource:
    from PIL import Image

    height, width = size
    with Image.open(path) as opened:
        mode, (w, h) = opened.mode, opened.size
        if mode not in ("I;16", "I;16B", "I;16L", "I"):
            depth = {"1": "1-bit", "L": "8-bit grayscale", "LA": "8-bit grayscale with alpha", "P": "8-bit palette",
                     "RGB": "8-bit RGB", "RGBA": "8-bit RGBA"}.get(mode, f"mode {mode}")
            raise EditInputError(f"{path}: a {depth} PNG; expected a 16-bit grayscale PNG (mode I;16), such as "
                                 "the images mammosynth writes, or an MG DICOM")
        pixels = np.asarray(opened).astype(np.uint16) if mode == "I" else np.asarray(opened, dtype=np.uint16).copy()
    if (h, w) == (height, width):
        recipe = _recipe_beside(path)
        conditions = recipe.conditions if recipe is not None else Conditions()
        side = (laterality.value if laterality else None) or (conditions.laterality.value if conditions.laterality
                                                              else _side_of(pixels))
        shown_view = (view.value if view else None) or (conditions.view.value if conditions.view else None)
        kind = "generated" if recipe is not None else "uploaded-png"
        known = Conditions.create(birads=conditions.birads, density=conditions.density, view=shown_view,
                                  laterality=side)
        return EditSource(pixels, kind, side, shown_view, known)
    if h < height or w < width:
        raise EditInputError(
            f"{path}: the image is {h}x{w} pixels; expected {height}x{width} (the model's size: a generated image "
            f"or a prepared frame) or a larger 16-bit mammogram to crop and resize"
        )
    return _prepared(pixels, size, laterality.value if laterality else None, view.value if view else None,
                     "uploaded-png", path)


def _prepared(pixels: np.ndarray, size: tuple[int, int], laterality: str | None, view: str | None, kind: str,
              path: Path) -> EditSource:
    """The ingest's crop, flip, resize and pad, then back to the display orientation."""
    from .prepare import prepare_image

    prepared = prepare_image(pixels, size, laterality, trust_laterality=laterality is not None)
    side = laterality or ("R" if prepared.flipped else "L")
    frame = prepared.frame[:, ::-1].copy() if side == "R" else prepared.frame
    transform = {"shape": list(pixels.shape), "crop": [prepared.crop.y0, prepared.crop.y1, prepared.crop.x0,
                                                       prepared.crop.x1],
                 "flipped": bool(prepared.flipped), "content": list(prepared.content)}
    if not (frame > 0).any():
        raise EditInputError(f"{path}: the image is black after the display pipeline; nothing to edit")
    return EditSource(frame, kind, side, view, Conditions.create(laterality=side, view=view), transform)


def _side_of(frame: np.ndarray) -> str | None:
    """``"L"`` when the breast touches the left edge of a displayed frame, ``"R"`` the right, else ``None``."""
    from .prepare import chest_wall_side

    side = chest_wall_side(frame)
    return None if side is None else ("L" if side == "left" else "R")


def _recipe_beside(path: Path) -> Any:
    """The generation recipe ``<stem>.json`` beside a PNG, if there is a valid one."""
    from .export import read_recipe

    candidate = path.with_suffix(".json")
    if not candidate.is_file():
        return None
    try:
        return read_recipe(candidate)
    except ValueError:
        return None
