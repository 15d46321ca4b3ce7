"""Checkpoint folders of :class:`~mammosynth.pipelines.pipeline_mammo_ldm.MammoLDMPipeline`: the one home.

A checkpoint is a diffusers folder (``model_index.json``, ``vae/``, ``unet/``,
``condition_encoder/``, ``scheduler/``, optionally ``privacy_checker/``). This module owns
what the app, the CLI, recipes and ``generate-set`` need to know about one:

* :data:`DEFAULT_CHECKPOINT` / :data:`BUNDLED_CHECKPOINT` – the bundled demo checkpoint;
* :func:`check_checkpoint_folder` – fail early, in words, when files are missing;
* :func:`register_privacy_checker` – record ``privacy_checker/`` in ``model_index.json``;
* :func:`fingerprint` – SHA-256 over the files that define the model (:func:`fingerprint_files`);
* :func:`checkpoint_image_size` – the image size, read from the configs without loading weights;
* :func:`weights_mb` – megabytes of weights per component (the repository's budget is 60 MB in all).

Loading is :meth:`MammoLDMPipeline.from_pretrained` (and
:func:`~mammosynth.pipelines.pipeline_mammo_ldm.load_pipeline`, which adds a scheduler by name), in
the pipeline's own module: it checks the folder with :func:`check_checkpoint_folder` first, so
this module stays below the pipeline and imports nothing of it.

Nothing here imports torch or diffusers at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = [
    "BUNDLED_CHECKPOINT", "DEFAULT_CHECKPOINT", "REQUIRED_COMPONENTS", "CheckpointError", "check_checkpoint_folder",
    "register_privacy_checker", "fingerprint_files", "fingerprint", "checkpoint_image_size", "weights_mb", "weights_sha256",
]

#: The bundled demo checkpoint as the CLI names it (relative to the repository root).
BUNDLED_CHECKPOINT = "checkpoints/mammosynth-phantom-256"
#: The bundled demo checkpoint, absolute (the app's default).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / BUNDLED_CHECKPOINT

#: Components every checkpoint has; ``privacy_checker`` is optional.
REQUIRED_COMPONENTS = ("vae", "unet", "condition_encoder", "scheduler")
PRIVACY_CHECKER = "privacy_checker"
PRIVACY_CHECKER_ENTRY = ["mammosynth.privacy.checker", "PrivacyChecker"]

#: Files of a component folder that define the model: weights and configs.
MODEL_FILE_NAMES = ("config.json", "scheduler_config.json")
MODEL_FILE_SUFFIXES = (".safetensors", ".bin")


class CheckpointError(ValueError):
    """A checkpoint folder is missing files or its components do not fit together."""


def check_checkpoint_folder(path: str | os.PathLike) -> None:
    """Fail early, in words, when a checkpoint folder is missing files."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint folder {path} does not exist; pass a folder made by `mammosynth train-ldm` "
            "(e.g. checkpoints/mammosynth-phantom-256)"
        )
    entries = _model_index(path)
    for name in REQUIRED_COMPONENTS:
        if name not in entries or entries[name] in (None, [None, None]):
            raise CheckpointError(f"{path / 'model_index.json'} lists no {name!r}; the checkpoint is incomplete")
        folder = path / name
        config = folder / ("scheduler_config.json" if name == "scheduler" else "config.json")
        if not config.is_file():
            raise CheckpointError(f"{path} is missing {config.relative_to(path)}; re-copy or re-train the checkpoint")
        if name != "scheduler" and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise CheckpointError(
                f"{path / name} has no weights (*.safetensors); re-copy or re-train the checkpoint"
            )


def _model_index(path: Path) -> dict:
    """The parsed ``model_index.json`` of a ``MammoLDMPipeline`` folder; raises :class:`CheckpointError`."""
    index = path / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"{path} has no model_index.json: it is not a pipeline checkpoint folder")
    try:
        entries = json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{index} is not valid JSON ({error}); re-copy the checkpoint") from None
    if entries.get("_class_name") != "MammoLDMPipeline":
        raise CheckpointError(f"{index} describes a {entries.get('_class_name')!r}, not a MammoLDMPipeline")
    return entries


def register_privacy_checker(checkpoint: str | os.PathLike) -> bool:
    """Record ``<checkpoint>/privacy_checker/`` in the checkpoint's ``model_index.json``.

    ``mammosynth build-index --out <checkpoint>/privacy_checker`` calls this, so that the
    folder is a complete pipeline with its gate (``requires_privacy_checker: true``). Returns
    ``False`` (and changes nothing) when ``checkpoint`` is not a pipeline folder. The file is
    replaced atomically.
    """
    path = Path(checkpoint)
    index = path / "model_index.json"
    if not index.is_file() or not (path / PRIVACY_CHECKER).is_dir():
        return False
    entries = json.loads(index.read_text())
    if entries.get("_class_name") != "MammoLDMPipeline":
        return False
    entries[PRIVACY_CHECKER] = list(PRIVACY_CHECKER_ENTRY)
    entries["requires_privacy_checker"] = True
    tmp = index.with_name(index.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, index)
    return True


def fingerprint_files(checkpoint: str | os.PathLike) -> list[Path]:
    """The files that define a checkpoint's model, sorted: what :func:`fingerprint` hashes.

    ``model_index.json``, and in the folder of every component it lists (and in
    ``privacy_checker/``, which is loaded whenever it is there) the weights (``*.safetensors``,
    ``*.bin``) and configs (``config.json``, ``scheduler_config.json``). Reports, model cards,
    sample images, build reports and folders the pipeline does not load (``reports/``,
    ``feature_extractor/``) are not part of the model. Empty when ``model_index.json`` is missing
    or unreadable.
    """
    path = Path(checkpoint)
    try:
        entries = json.loads((path / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    components = {name for name, entry in entries.items()
                  if not name.startswith("_") and isinstance(entry, list) and None not in entry}
    components.add(PRIVACY_CHECKER)
    files = [path / "model_index.json"]
    for name in sorted(components):
        folder = path / name
        if folder.is_dir():
            files += [p for p in sorted(folder.iterdir()) if p.is_file() and
                      (p.name in MODEL_FILE_NAMES or p.suffix in MODEL_FILE_SUFFIXES)]
    return files


def fingerprint(checkpoint: str | os.PathLike) -> str | None:
    """SHA-256 (hex) over :func:`fingerprint_files` (relative path, then bytes), or ``None`` for no checkpoint.

    Changes when a weight byte or a config changes; stays when a report or the card is rewritten.
    """
    path = Path(checkpoint)
    files = fingerprint_files(path)
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_image_size(checkpoint: str | os.PathLike, default: tuple[int, int] = (256, 192)) -> tuple[int, int]:
    """``(height, width)`` a checkpoint generates, read from its configs (no weights loaded); ``default`` if unreadable."""
    try:
        unet = json.loads((Path(checkpoint) / "unet" / "config.json").read_text())
        vae = json.loads((Path(checkpoint) / "vae" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return default
    size = unet.get("sample_size")
    factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    h, w = (size, size) if isinstance(size, int) else (size or default)[:2]
    return int(h) * factor, int(w) * factor


def weights_mb(checkpoint: str | os.PathLike) -> dict[str, float]:
    """Megabytes (10⁶ bytes) of weight files per component of :func:`fingerprint_files`, e.g.
    ``{"unet": 5.6, "vae": 2.0, ...}``; empty for no checkpoint."""
    path = Path(checkpoint)
    sizes: dict[str, float] = {}
    for file in fingerprint_files(path):
        if file.suffix in MODEL_FILE_SUFFIXES:
            component = file.relative_to(path).parts[0]
            sizes[component] = sizes.get(component, 0.0) + file.stat().st_size / 1e6
    return sizes


def weights_sha256(folder: Path) -> str:
    """sha256 over the ``*.safetensors`` of a component folder (sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
