"""The ``mammosynth`` command line: parse, wire, launch (floor 6).

Each area registers its own subcommands from a module in ``mammosynth/commands/`` so that
this file stays an index. Heavy imports happen inside the handlers, never at parse time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Modules with a ``register(subparsers)`` function, in the order they appear in --help.
#: The command modules live in ``mammosynth/commands/`` (floor 6, like this file).
COMMAND_MODULES = (
    "mammosynth.commands.data",        # phantom, ingest
    "mammosynth.commands.generation",  # train-vae, swap-decoder, train-ldm, sample
    "mammosynth.commands.edit",        # edit (lesion insertion)
    "mammosynth.commands.distill",     # distill (few-step student)
    "mammosynth.commands.tiny_decoder",  # distill-decoder (tiny decoder)
    "mammosynth.commands.privacy",     # train-siamese, build-index, privacy-audit
    "mammosynth.commands.privacy_report",  # privacy-report
    "mammosynth.commands.evaluation",  # generate-set, evaluate, paper-table
    "mammosynth.commands.study",       # study create|status|analyse|export
    "mammosynth.commands.pacs",        # export-study, pacs send|list|serve
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammosynth",
        description="Privacy-preserving synthetic mammograms: data, training, sampling, "
        "privacy, evaluation and reader studies.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # area not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        # Our input errors are ValueError subclasses with a message written for a person.
        print(f"mammosynth {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
