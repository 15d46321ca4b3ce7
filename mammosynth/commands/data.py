"""``mammosynth phantom`` and ``mammosynth ingest``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..data.phantom.cli import add_phantom_command
    from ..data.ingest_cli import add_ingest_command

    add_phantom_command(subparsers)
    add_ingest_command(subparsers)
