"""Lesion insertion into one image, with its recipe: what ``mammosynth edit`` and the app's Edit tab run.

:func:`edit_source` takes an :class:`~mammosynth.data.upload.EditSource` (a generated image, or an
uploaded PNG / DICOM brought to the model's size by the ingest's steps), the lesion type and box,
and returns an :class:`EditResult`: the edited frame, its :class:`~mammosynth.data.export.EditRecipe`
and the privacy verdict. :func:`edit_to_folder` does that for the CLI and writes a 16-bit PNG, the
recipe JSON, the input frame as the edit saw it and, with ``--dicom``, a DICOM.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..conditions import Conditions

if TYPE_CHECKING:
    from ..data.export import EditRecipe
    from ..data.upload import EditSource
    from .pipeline_mammo_ldm import MammoLDMPipeline

logger = logging.getLogger(__name__)

__all__ = ["EditResult", "edit_conditions", "edit_source", "edit_to_folder"]


@dataclass
class EditResult:
    """One edited image (display orientation), how it was made, its verdict and where it may differ."""

    frame: np.ndarray
    recipe: EditRecipe
    verdict: Any
    mask: np.ndarray


def edit_conditions(source: EditSource, lesion: Any, box: Any, birads: Any = None, density: Any = None) -> Conditions:
    """The edit's conditions: what is known about the image, the given fields, the lesion and its box on the frame.

    A BI-RADS 1 (negative) image that gets a lesion has no BI-RADS any more unless one is given.
    """
    known = source.conditions
    frame_box = source.frame_box(box)
    if birads is None:
        birads = known.birads if known.birads != 1 else None
    return Conditions.create(birads=birads, density=density if density is not None else known.density,
                             view=source.view, laterality=source.laterality, lesion=lesion,
                             box=frame_box)


def edit_source(pipe: MammoLDMPipeline, source: EditSource, lesion: Any, box: Any, *, seed: int = 0,
                num_inference_steps: int = 20, guidance_scale: float = 3.0, scheduler: str = "dpm",
                checkpoint: str = "", checkpoint_sha256: str | None = None, birads: Any = None, density: Any = None,
                margin: int | None = None, callback: Callable[[int, int], None] | None = None,
                include_neighbours: bool = False) -> EditResult:
    """Insert ``lesion`` at ``box`` (normalised, of the input file as displayed) into ``source``.

    Raises ``ValueError`` (``ConditionError``) for a bad lesion or box, naming what was expected.
    """
    import torch

    from ..data.export import EditRecipe
    from .inpainting import EDIT_METHOD, default_margin
    from .sampling import verdict_dict

    conditions = edit_conditions(source, lesion, box, birads, density)
    height, width = pipe.default_size
    margin = default_margin(height) if margin is None else int(margin)
    out = pipe.edit(source.frame, conditions=conditions, num_inference_steps=int(num_inference_steps),
                    guidance_scale=float(guidance_scale), generator=torch.Generator().manual_seed(int(seed)),
                    margin=margin, callback=callback)
    verdict = out.privacy[0] if out.privacy else None
    given = None
    if source.transform is not None:
        from ..conditions import parse_box

        given = list(parse_box(box).as_tuple())
    recipe = EditRecipe(conditions=conditions, seed=int(seed), num_inference_steps=int(num_inference_steps),
                        guidance_scale=float(guidance_scale), scheduler=scheduler, checkpoint=str(checkpoint),
                        height=int(height), width=int(width), checkpoint_sha256=checkpoint_sha256,
                        privacy=verdict_dict(verdict, include_neighbours=include_neighbours), source=source.kind,
                        method=EDIT_METHOD, margin=margin, box_in_input=given)
    return EditResult(np.asarray(out.images[0]), recipe, verdict, out.masks[0])


def edit_to_folder(args: argparse.Namespace) -> dict[str, Path]:
    """``mammosynth edit``: edit ``args.image`` and write ``edit_seed<seed>.png/.json`` (+ ``.dcm``) into ``args.out``.

    Also writes ``input.png``: the input as the edit saw it (at the model's size, display
    orientation), so that ``edit == input`` outside the box + margin can be checked.
    """
    import torch

    from ..data.export import write_dicom, write_png16, write_recipe
    from ..data.upload import load_for_edit
    from .checkpoint import fingerprint
    from .pipeline_mammo_ldm import load_pipeline

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    pipe = load_pipeline(args.checkpoint, args.scheduler, privacy_gate=args.privacy_gate)
    source = load_for_edit(args.image, pipe.default_size, laterality=args.laterality, view=args.view)
    logger.info("editing %s (%s, side %s, view %s)", args.image, source.kind, source.laterality or "unknown",
                source.view or "unknown")
    result = edit_source(pipe, source, args.lesion, args.box, seed=args.seed, num_inference_steps=args.steps,
                         guidance_scale=args.guidance, scheduler=args.scheduler, checkpoint=str(args.checkpoint),
                         checkpoint_sha256=fingerprint(args.checkpoint), birads=args.birads, density=args.density,
                         margin=args.margin)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"edit_seed{int(args.seed):06d}"
    written = {"png": write_png16(result.frame, stem.with_suffix(".png")),
               "json": write_recipe(result.recipe, stem.with_suffix(".json")),
               "input": write_png16(source.frame, out / "input.png")}
    if args.dicom:
        written["dicom"] = write_dicom(result.frame, result.recipe, stem.with_suffix(".dcm"))
    if result.verdict is not None and result.verdict.flagged:
        logger.warning("the privacy gate FLAGGED the edited image (similarity %.3f > threshold %.3f): it is too close "
                       "to a training image; do not share it", result.verdict.similarity, result.verdict.threshold)
    return written
