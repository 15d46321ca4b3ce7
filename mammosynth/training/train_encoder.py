"""Train the fidelity feature extractor (:class:`~mammosynth.FidelityEncoder`) on real labels.

A small CNN trained supervised on the *real training split* of a prepared dataset, four
tasks at once — density (A–D), lesion type (5 classes), view (CC/MLO), cancer (BI-RADS ≥ 4)
— plus a lesion heat map from the lesion boxes. Its pooled features are what FID, KID and
precision/recall/density/coverage are computed on (Inception weights are not available
here); its heads score condition adherence. Accuracies on ``--validation_split`` go into
the saved config (``training_info``), so every report can say what produced its features.

Run::

    mammosynth train-encoder --data data/prepared-256 --out checkpoints/mammosynth-phantom-256/feature_extractor
    python -m mammosynth.training.train_encoder --data ... --out ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .options import int_list

__all__ = ["build_parser", "main", "encoder_architecture"]

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"--sample-size must be HxW (e.g. 128x96), got {text!r}") from None
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", default=None, help="prepared dataset of real images (required unless --dry-run)")
    parser.add_argument("--out", default=None, help="folder to save the encoder in (save_pretrained; required "
                        "unless --dry-run)")
    parser.add_argument("--preset", default="bundled",
                        help="size preset (bundled, tiny, device-512, vindr-512, vindr-1024: "
                             "models.encoder.ENCODER_PRESETS); --sample-size / --channels / --batch-size override it")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="build the preset's network, run one optimiser step on a tiny batch and print its "
                             "parameters, GFLOP per image and expected memory; trains nothing, writes nothing")
    parser.add_argument("--split", default="training", help="split to train on (default training)")
    parser.add_argument("--validation-split", default="test", help="split to report accuracies on ('' = none)")
    parser.add_argument("--sample-size", default=None, help="HxW the frames are downsampled to (bundled: 128x96)")
    parser.add_argument("--channels", default=None, help="CNN widths (bundled: 16,32,64,128)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None, help="(default: the preset's; 64 for bundled)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="train_encoder", description=__doc__.split("\n\n")[0]))


def encoder_architecture(args: argparse.Namespace) -> dict:
    """``sample_size`` and ``block_out_channels``: ``--preset``'s with ``--sample-size`` / ``--channels`` where given."""
    from .presets import architecture

    arch = architecture("encoder", getattr(args, "preset", None) or "bundled")
    if getattr(args, "sample_size", None):
        arch["sample_size"] = _size(args.sample_size)
    if getattr(args, "channels", None):
        arch["block_out_channels"] = int_list(args.channels, "--channels")
    return {"sample_size": tuple(arch["sample_size"]), "block_out_channels": tuple(arch["block_out_channels"])}


def main(args: argparse.Namespace) -> int:
    import torch

    from ..data.prepared import load_prepared
    from ..evaluation.features import train_fidelity_encoder
    from .options import require_run_folders
    from .presets import resolve_training_options

    resolve_training_options(args, "encoder")
    arch = encoder_architecture(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dry_run:
        from .dry_run import dry_run

        dry_run(args, "encoder")
        return 0
    require_run_folders(args)
    data = load_prepared(args.data)
    encoder = train_fidelity_encoder(
        data, args.split, sample_size=arch["sample_size"], block_out_channels=arch["block_out_channels"],
        epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, validation_split=args.validation_split or None)
    out = Path(args.out)
    encoder.save_pretrained(out)
    info = encoder.config.training_info
    print(json.dumps({"out": str(out), "seconds": info.get("seconds"), "validation": info.get("validation")}, indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(build_parser().parse_args()))
