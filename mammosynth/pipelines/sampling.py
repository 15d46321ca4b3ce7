"""Batch sampling to a folder: what ``mammosynth sample`` does (16-bit PNG + JSON recipe each).

With ``--dicom`` the batch is also ONE synthetic DICOM study (:class:`~mammosynth.data.study.SyntheticStudy`):
a ``.dcm`` beside each PNG and ``dicom-study.zip`` of them all.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import BUNDLED_CHECKPOINT, fingerprint

if TYPE_CHECKING:
    from ..privacy.checker import PrivacyVerdict

logger = logging.getLogger(__name__)

__all__ = ["sample_to_folder", "verdict_dict"]


def sample_to_folder(args: argparse.Namespace) -> list[Path]:
    """Generate ``args.num`` images (or the one in ``args.recipe``) into ``args.out``.

    Image ``i`` uses ``torch.Generator().manual_seed(seed + i)``; its recipe JSON records
    that seed, so ``--recipe`` (or ``--num 1 --seed <seed>``) makes the same image again.
    """
    import torch

    from ..conditions import Conditions
    from ..data.export import Recipe, read_recipe, write_png16, write_recipe
    from ..data.study import SyntheticStudy, zip_study

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.recipe:
        recipe = read_recipe(args.recipe)
        conditions = recipe.conditions
        seeds = [recipe.seed]
        steps, guidance, scheduler = recipe.num_inference_steps, recipe.guidance_scale, recipe.scheduler
        decoder = recipe.decoder
        checkpoint = args.checkpoint if args.checkpoint != BUNDLED_CHECKPOINT else recipe.checkpoint
    else:
        if args.num < 1:
            raise ValueError(f"--num must be at least 1, got {args.num}")
        conditions = Conditions.create(birads=args.birads, density=args.density, view=args.view,
                                       laterality=args.laterality, lesion=args.lesion, box=args.box)
        seeds = [args.seed + i for i in range(args.num)]
        steps, guidance, scheduler, checkpoint = args.steps, args.guidance, args.scheduler, args.checkpoint
        decoder = getattr(args, "decoder", "full")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")
    from .pipeline_mammo_ldm import load_pipeline

    from .pipeline_mammo_ldm import default_steps

    pipe = load_pipeline(checkpoint, scheduler, privacy_gate=getattr(args, "privacy_gate", True))
    pipe.check_sampler(decoder)
    if steps is None:
        steps = default_steps(scheduler)
    name_neighbours = bool(getattr(args, "name_neighbours", False))
    if name_neighbours:
        logger.warning("--name-training-neighbours: every recipe and DICOM written to %s names the nearest "
                       "training images (members of the training set); do not share these files outside "
                       "the institution", args.out)
    height, width = pipe.default_size
    checkpoint_sha256 = fingerprint(checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    study, dicoms = (SyntheticStudy(), []) if getattr(args, "dicom", False) else (None, [])
    for start in range(0, len(seeds), args.batch_size):
        chunk = seeds[start:start + args.batch_size]
        result = pipe(conditions=[conditions] * len(chunk), num_inference_steps=steps, guidance_scale=guidance,
                      generator=[torch.Generator().manual_seed(s) for s in chunk], decoder=decoder)
        for seed, image, verdict in zip(chunk, result.images, result.privacy or [None] * len(chunk)):
            recipe = Recipe(conditions=conditions, seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                            scheduler=scheduler, checkpoint=str(checkpoint), height=height, width=width,
                            decoder=decoder,
                            checkpoint_sha256=checkpoint_sha256,
                            privacy=verdict_dict(verdict, include_neighbours=name_neighbours))
            stem = out / f"sample_seed{seed:06d}"
            written.append(write_png16(image, stem.with_suffix(".png")))
            write_recipe(recipe, stem.with_suffix(".json"))
            if study is not None:
                dicoms.append(study.write(image, recipe, out, name=stem.with_suffix(".dcm").name))
            logger.info("wrote %s", stem.with_suffix(".png"))
    if study is not None:
        logger.info("DICOM study %s (patient %s): %s", study.study_uid, study.patient_id,
                    zip_study(dicoms, out / "dicom-study.zip"))
    return written


def verdict_dict(verdict: PrivacyVerdict | None, include_neighbours: bool = False) -> dict[str, Any] | None:
    """A privacy verdict as the JSON-ready dict a recipe records (``None`` for no verdict).

    Without ``include_neighbours`` it names no training image (pass/flagged, similarity,
    threshold, checker fingerprint): recipes travel with exported images.
    """
    if verdict is None:
        return None
    if hasattr(verdict, "to_dict"):
        return verdict.to_dict(include_neighbours=include_neighbours)
    data = {"flagged": bool(verdict.flagged), "similarity": float(verdict.similarity),
            "threshold": float(verdict.threshold), "checker": str(getattr(verdict, "checker", ""))}
    if include_neighbours:
        data["neighbours"] = [[i, float(s)] for i, s in (getattr(verdict, "neighbours", None) or [])]
    return data
