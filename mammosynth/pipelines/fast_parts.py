"""Add the fast parts to a checkpoint: the distilled student and the tiny decoder (``mammosynth add-fast``).

``mammosynth distill`` writes ``RUN/student/`` (``unet/``, ``condition_encoder/``, ``distill.json``);
``mammosynth distill-decoder`` writes ``RUN/tiny_vae/`` (an ``AutoencoderTiny`` and its
``distill.json``). This copies them into a checkpoint folder as the optional pipeline components
``student_unet/``, ``student_condition_encoder/``, ``student_scheduler/`` and ``tiny_vae/`` (fp16 safetensors, like the
rest of a bundled checkpoint), registers them in ``model_index.json`` and keeps each
``distill.json`` under ``reports/``. A student distilled from another teacher is refused: its
``distill.json`` records the sha256 of the teacher's UNet weights.

Every folder is written beside its place and renamed into it, ``model_index.json`` last: an
interrupted run leaves the checkpoint as it was or complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from .checkpoint import CheckpointError, weights_sha256

logger = logging.getLogger(__name__)

__all__ = ["add_fast_parts", "STUDENT_COMPONENTS", "TINY_COMPONENT"]

#: model_index.json entries of the student's two components.
STUDENT_COMPONENTS = {"student_unet": ["diffusers", "UNet2DModel"],
                      "student_condition_encoder": ["mammosynth.models.conditioning", "ConditionEncoder"],
                      "student_scheduler": ["diffusers", "LCMScheduler"]}
#: model_index.json entry of the tiny decoder.
TINY_COMPONENT = {"tiny_vae": ["diffusers", "AutoencoderTiny"]}


def _find(run: Path, name: str, needed: tuple[str, ...]) -> Path:
    """``run/name`` or ``run`` itself, whichever holds all of ``needed``."""
    for folder in (run / name, run):
        if all((folder / n).exists() for n in needed):
            return folder
    raise CheckpointError(f"{run} is not a {name}/ folder or a run folder holding one (it needs "
                          f"{', '.join(needed)})")


def _save(part, target: Path, fp16: bool) -> None:
    """``part.save_pretrained`` beside ``target``, then renamed into it (a model in fp16 if asked)."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if fp16 and isinstance(part, torch.nn.Module):
        part = part.to(torch.float16)
    part.save_pretrained(staging, **({"safe_serialization": True} if isinstance(part, torch.nn.Module) else {}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def _write_json(path: Path, data: dict) -> None:
    from ..data.prepared import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def add_fast_parts(checkpoint: str | os.PathLike, student: str | os.PathLike | None = None,
                   tiny_decoder: str | os.PathLike | None = None, fp16: bool = True,
                   allow_other_teacher: bool = False) -> list[str]:
    """Copy a distilled student and/or tiny decoder into ``checkpoint``; returns the components added.

    Raises:
        CheckpointError: a folder is not what it should be, the parts do not fit the checkpoint's
            VAE, or the student was distilled from a different teacher (unless ``allow_other_teacher``).
    """
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DModel

    from ..models.conditioning import ConditionEncoder
    from .pipeline_mammo_ldm import check_components

    root = Path(checkpoint)
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise CheckpointError(f"{root} is not a checkpoint folder (no model_index.json)")
    if student is None and tiny_decoder is None:
        raise ValueError("give --student and/or --tiny-decoder: there is nothing to add")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    vae = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=torch.float32)
    added: list[str] = []
    if student is not None:
        folder = _find(Path(student), "student", ("unet/config.json", "condition_encoder/config.json"))
        unet = UNet2DModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
        encoder = ConditionEncoder.from_pretrained(folder / "condition_encoder", torch_dtype=torch.float32)
        check_components(vae, unet, encoder)
        if not encoder.config.get("guidance_embed_dim"):
            raise CheckpointError(f"{folder}/condition_encoder has no guidance embedding: not a distilled student")
        info = json.loads((folder / "distill.json").read_text()) if (folder / "distill.json").is_file() else {}
        teacher_sha = weights_sha256(root / "unet")
        recorded = (info.get("teacher") or {}).get("unet_sha256")
        if recorded != teacher_sha and not allow_other_teacher:
            raise CheckpointError(
                f"the student in {folder} was distilled from a UNet with sha256 {recorded}, but {root}/unet has "
                f"{teacher_sha}: distil it from this checkpoint (`mammosynth distill --teacher {root}`), or pass "
                "--allow-other-teacher on purpose")
        from diffusers import LCMScheduler

        scheduler = LCMScheduler.from_pretrained(folder / "scheduler") if (folder / "scheduler").is_dir() else None
        if scheduler is None:
            raise CheckpointError(f"{folder} has no scheduler/ (the student's LCMScheduler): re-run `mammosynth distill`")
        _save(unet, root / "student_unet", fp16)
        _save(encoder, root / "student_condition_encoder", fp16)
        _save(scheduler, root / "student_scheduler", fp16)
        if info:
            _write_json(root / "reports" / "student.json", info)
        index.update(STUDENT_COMPONENTS)
        added += list(STUDENT_COMPONENTS)
    if tiny_decoder is not None:
        folder = _find(Path(tiny_decoder), "tiny_vae", ("config.json",))
        tiny = AutoencoderTiny.from_pretrained(folder, torch_dtype=torch.float32)
        if tiny.config.latent_channels != vae.config.latent_channels:
            raise CheckpointError(f"the tiny decoder in {folder} takes {tiny.config.latent_channels} latent channels; "
                                  f"{root}/vae makes {vae.config.latent_channels}")
        _save(tiny, root / "tiny_vae", fp16)
        if (folder / "distill.json").is_file():
            _write_json(root / "reports" / "tiny_decoder.json", json.loads((folder / "distill.json").read_text()))
        index.update(TINY_COMPONENT)
        added += list(TINY_COMPONENT)
    _write_json(index_path, index)
    logger.info("added %s to %s", ", ".join(added), root)
    return added
