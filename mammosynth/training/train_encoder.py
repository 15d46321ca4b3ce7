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

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"--sample-size must be HxW (e.g. 128x96), got {text!r}") from None
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", required=True, help="prepared dataset of real images")
    parser.add_argument("--out", required=True, help="folder to save the encoder in (save_pretrained)")
    parser.add_argument("--split", default="training", help="split to train on (default training)")
    parser.add_argument("--validation-split", default="test", help="split to report accuracies on ('' = none)")
    parser.add_argument("--sample-size", default="128x96", help="HxW the frames are downsampled to (default 128x96)")
    parser.add_argument("--channels", default="16,32,64,128", help="CNN widths (default 16,32,64,128)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="train_encoder", description=__doc__.split("\n\n")[0]))


def main(args: argparse.Namespace) -> int:
    import torch

    from ..data.prepared import load_prepared
    from ..evaluation.features import train_fidelity_encoder

    channels = int_list(args.channels, "--channels")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_prepared(args.data)
    encoder = train_fidelity_encoder(
        data, args.split, sample_size=_size(args.sample_size), block_out_channels=channels, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, validation_split=args.validation_split or None)
    out = Path(args.out)
    encoder.save_pretrained(out)
    info = encoder.config.training_info
    print(json.dumps({"out": str(out), "seconds": info.get("seconds"), "validation": info.get("validation")}, indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(build_parser().parse_args()))
