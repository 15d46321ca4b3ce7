"""The training side of the size presets: batch, precision, gradient checkpointing, crops, latent shards.

The architecture of each preset lives with its network (``VAE_PRESETS``, ``UNET_PRESETS``,
``SIAMESE_PRESETS``, ``ENCODER_PRESETS``); :data:`TRAINING_PRESETS` says how a preset is trained:

============  ==========  ======  ===============  ============================================
preset        frames      bf16    checkpointing    for
============  ==========  ======  ===============  ============================================
bundled       256x192     no      no               2 CPU cores (the shipped checkpoint)
tiny          any         no      no               tests
device-512    512x384     yes     no               the one-shot GPU job (scripts/device_job.sh)
vindr-512     512x384     yes     no               VinDr-Mammo, one 80 GB GPU per process
vindr-1024    1024x768    yes     VAE + UNet       VinDr-Mammo, one 80 GB GPU per process
vindr-tiny    64x48       yes     VAE + UNet       the GPU scripts at test size, on CPU
============  ==========  ======  ===============  ============================================

Options the user leaves out (``None`` in the parsed arguments) are filled from the preset by
:func:`resolve_training_options`; an option given on the command line always wins. Presets
without a row here (``bundled``, ``tiny`` and any other) keep the trainers' historical defaults
(:data:`FALLBACKS`), so nothing about the shipped checkpoint's recipe changes.

``train_batch_size`` is per process (per GPU). The figures behind the batch sizes are printed by
``mammosynth train-* --preset P --dry-run`` (:mod:`mammosynth.training.dry_run`).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["NETWORKS", "TRAINING_PRESETS", "FALLBACKS", "PRESET_FRAMES", "resolve_training_options", "architecture"]

#: The networks a preset sizes.
NETWORKS = ("vae", "ldm", "siamese", "encoder")

#: Frame size ``(height, width)`` each preset is meant for (what ``ingest --size`` should write).
PRESET_FRAMES: dict[str, tuple[int, int]] = {"bundled": (256, 192), "tiny": (64, 48), "device-512": (512, 384),
                                             "vindr-512": (512, 384), "vindr-1024": (1024, 768),
                                             "vindr-tiny": (64, 48)}

#: What the trainers use when neither the command line nor the preset sets an option.
FALLBACKS: dict[str, dict[str, Any]] = {
    "vae": {"train_batch_size": 8, "mixed_precision": "no", "gradient_checkpointing": False, "crop": "128x96",
            "latent_channels": None},
    "ldm": {"train_batch_size": 16, "mixed_precision": "no", "gradient_checkpointing": False, "latent_shard_size": 0},
    "siamese": {"train_batch_size": 64, "mixed_precision": "no", "gradient_checkpointing": False},
    "encoder": {"batch_size": 64},
}

#: Per preset and network: the options it sets (``argparse`` destinations) and the planned length of a
#: run (``steps`` / ``epochs``, used by ``scripts/train_vindr.sh`` and by the GPU-hour estimate).
TRAINING_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "device-512": {
        "vae": {"train_batch_size": 32, "mixed_precision": "bf16", "gradient_checkpointing": False,
                "crop": "256x192", "latent_channels": 8},
        "ldm": {"train_batch_size": 128, "mixed_precision": "bf16", "gradient_checkpointing": False,
                "latent_shard_size": 1024},
        "siamese": {"train_batch_size": 64, "mixed_precision": "bf16", "gradient_checkpointing": False},
        "encoder": {"batch_size": 64},
    },
    "vindr-512": {
        # crops of 256x192: a quarter of the frame, texture at full resolution
        "vae": {"train_batch_size": 32, "mixed_precision": "bf16", "gradient_checkpointing": False,
                "crop": "256x192", "latent_channels": 8, "steps": 60_000},
        "ldm": {"train_batch_size": 128, "mixed_precision": "bf16", "gradient_checkpointing": False,
                "latent_shard_size": 4096, "steps": 200_000},
        "siamese": {"train_batch_size": 256, "mixed_precision": "bf16", "gradient_checkpointing": False,
                    "steps": 30_000},
        "encoder": {"batch_size": 128, "epochs": 20},
    },
    "vindr-1024": {
        "vae": {"train_batch_size": 24, "mixed_precision": "bf16", "gradient_checkpointing": True,
                "crop": "512x384", "latent_channels": 8, "steps": 80_000},
        "ldm": {"train_batch_size": 192, "mixed_precision": "bf16", "gradient_checkpointing": True,
                "latent_shard_size": 2048, "steps": 250_000},
        "siamese": {"train_batch_size": 192, "mixed_precision": "bf16", "gradient_checkpointing": False,
                    "steps": 30_000},
        "encoder": {"batch_size": 64, "epochs": 20},
    },
    # every switch of the GPU presets (bf16, checkpointing, latent shards) at test size on the CPU
    "vindr-tiny": {
        "vae": {"train_batch_size": 4, "mixed_precision": "bf16", "gradient_checkpointing": True, "crop": "32x24",
                "latent_channels": 8, "steps": 2},
        "ldm": {"train_batch_size": 4, "mixed_precision": "bf16", "gradient_checkpointing": True,
                "latent_shard_size": 8, "steps": 2},
        "siamese": {"train_batch_size": 8, "mixed_precision": "bf16", "gradient_checkpointing": False, "steps": 2},
        "encoder": {"batch_size": 8, "epochs": 1},
    },
}

#: Keys of a :data:`TRAINING_PRESETS` row that are not command-line options.
PLAN_KEYS = ("steps", "epochs")


def architecture(network: str, preset: str) -> dict[str, Any]:
    """The constructor arguments of ``network`` at ``preset`` (from the network's own preset table).

    Raises:
        ValueError: for an unknown network or a preset the network does not have.
    """
    if network == "vae":
        from ..models.autoencoder import VAE_PRESETS as table
    elif network == "ldm":
        from ..models.unet import UNET_PRESETS as table
    elif network == "siamese":
        from ..models.siamese import SIAMESE_PRESETS as table
    elif network == "encoder":
        from ..models.encoder import ENCODER_PRESETS as table
    else:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    if preset not in table:
        raise ValueError(f"--preset must be one of {sorted(table)} for the {network}, got {preset!r}")
    return dict(table[preset])


def training_row(network: str, preset: str) -> dict[str, Any]:
    """The :data:`TRAINING_PRESETS` row of ``network`` at ``preset`` merged over :data:`FALLBACKS`."""
    if network not in FALLBACKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    return {**FALLBACKS[network], **TRAINING_PRESETS.get(preset, {}).get(network, {})}


def resolve_training_options(args: argparse.Namespace, network: str) -> argparse.Namespace:
    """Fill the options left out (``None``) from ``args.preset``'s row, else :data:`FALLBACKS`; returns ``args``.

    Checks that the preset exists for the network (``ValueError`` naming the choices).
    """
    preset = getattr(args, "preset", None) or "bundled"
    architecture(network, preset)
    for key, value in training_row(network, preset).items():
        if key in PLAN_KEYS or (key == "latent_channels" and getattr(args, "init_vae", None)):
            continue   # an --init_vae keeps its own latent channels unless --latent_channels is given
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    """``python -m mammosynth.training.presets PRESET NETWORK KEY``: print one setting (for shell scripts)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print("usage: python -m mammosynth.training.presets PRESET NETWORK KEY  (e.g. vindr-512 ldm steps)",
              file=sys.stderr)
        return 2
    preset, network, key = argv
    if key == "frames":
        if preset not in PRESET_FRAMES:
            print(f"unknown preset {preset!r}; choose one of {sorted(PRESET_FRAMES)}", file=sys.stderr)
            return 2
        print("x".join(str(v) for v in PRESET_FRAMES[preset]))
        return 0
    row = {**architecture(network, preset), **training_row(network, preset)}
    if key not in row:
        print(f"{network} at {preset} has no setting {key!r}; it has {sorted(row)}", file=sys.stderr)
        return 2
    value = row[key]
    print(",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
