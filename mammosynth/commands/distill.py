"""``mammosynth distill``: latent consistency distillation of a checkpoint into a few-step student."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..training.options import DISTILL_DESCRIPTION, distill_parser

    parser = subparsers.add_parser(
        "distill", help="distil a trained checkpoint into a 1-4-step student (latent consistency distillation)",
        description=DISTILL_DESCRIPTION + " Resumes from the run folder.")
    distill_parser(parser)
    parser.set_defaults(handler=_distill)


def _distill(args: argparse.Namespace) -> int:
    from ..training import distill

    distill.main(args)
    return 0
