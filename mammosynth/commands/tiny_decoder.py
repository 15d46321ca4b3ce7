"""``mammosynth distill-decoder``: distil a checkpoint's VAE decoder into a tiny ``AutoencoderTiny`` decoder."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..training.options import TINY_DECODER_DESCRIPTION, tiny_decoder_parser

    parser = subparsers.add_parser(
        "distill-decoder", help="distil the VAE decoder into a tiny decoder (~0.6 GFLOP per image) for previews",
        description=TINY_DECODER_DESCRIPTION + " Resumes from the run folder; `mammosynth add-fast --tiny-decoder "
        "RUN` puts it into a checkpoint.")
    tiny_decoder_parser(parser)
    parser.set_defaults(handler=_distill_decoder)


def _distill_decoder(args: argparse.Namespace) -> int:
    from ..training import train_tiny_decoder

    train_tiny_decoder.main(args)
    return 0
