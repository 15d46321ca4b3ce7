"""``mammosynth phantom``: write a procedural phantom dataset in the VinDr-Mammo layout."""

from __future__ import annotations

import argparse
import json
import os

from ..cli_types import fraction, positive_int

DESCRIPTION = """\
Generate procedural phantom mammograms in the exact VinDr-Mammo layout:

  OUT/images/<study_id>/<image_id>.dicom    MG "For Presentation" DICOM, 4 per study
  OUT/breast-level_annotations.csv          BI-RADS and density per image
  OUT/finding_annotations.csv               one row per finding box (or 'No Finding')
  OUT/metadata.csv                          DICOM attributes per image
  OUT/phantom_truth.csv                     everything the generator knows
  OUT/phantom_summary.json                  counts and speed

Every study is one phantom patient (L-CC, L-MLO, R-CC, R-MLO) with a persistent tissue
pattern, a density A-D, and findings (mass, suspicious calcification, architectural
distortion, focal asymmetry, asymmetry) seen in both views of the breast. The output is a
pure function of the options except --workers: the same seed gives the same bytes.
Files carry FAKE identifiers (PatientName PHANTOM^P000001, ...) so that ingest can be tested
for de-identification; they are never real data.
"""

EPILOG = """\
examples:
  mammosynth phantom --out data/phantom --studies 1000 --seed 0
  mammosynth phantom --out data/phantom-vindr-size --studies 5 --height 3518
  mammosynth phantom --out data/fatty --studies 50 --density-prevalence 0.5,0.5,0,0
"""


def _prevalence(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected four comma-separated numbers for A,B,C,D, got {text!r}") from None
    if len(values) != 4 or min(values) < 0 or abs(sum(values) - 1) > 0.01:
        raise argparse.ArgumentTypeError(
            f"expected four non-negative shares for A,B,C,D that sum to 1, got {text!r}")
    return values  # type: ignore[return-value]


#: The options that take a share or a probability in [0, 1]: flag, metavar, default, help.
_SHARE_OPTIONS = (
    ("--finding-rate", "F", 0.4, "share of breasts with at least one boxed finding (default: 0.4)"),
    ("--jpeg2000-fraction", "F", 0.1, "share of files stored JPEG 2000 lossless (default: 0.1)"),
    ("--test-fraction", "F", 0.2, "share of studies in the 'test' split (default: 0.2, VinDr's 4:1)"),
    ("--birads-noise", "P", 0.08, "per-finding probability of a one-step BI-RADS label error (default: 0.08)"),
)


def add_phantom_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``phantom`` to a CLI's subcommands and return its parser."""
    parser = subparsers.add_parser(
        "phantom", help="generate a phantom mammogram dataset in the VinDr-Mammo layout",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created; must not hold a dataset unless --overwrite)")
    parser.add_argument("--studies", type=positive_int, required=True, metavar="N",
                        help="number of studies (phantom patients); 4 images each")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="master seed; same seed, same bytes (default: 0)")
    parser.add_argument("--height", type=int, default=1024, metavar="PX",
                        help="image rows; width is height x 2800/3518 like VinDr-Mammo "
                             "(default: 1024; 3518 gives VinDr-size 3518x2800 images)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="K",
                        help=f"worker processes (default: all {os.cpu_count()} cores); "
                             "does not change the output")
    parser.add_argument("--density-prevalence", type=_prevalence, default=None,
                        metavar="A,B,C,D",
                        help="share of density A,B,C,D (default: 0.01,0.10,0.76,0.13, like "
                             "VinDr-Mammo)")
    for flag, metavar, default, text in _SHARE_OPTIONS:
        parser.add_argument(flag, type=fraction, default=default, metavar=metavar, help=text)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already in --out")
    parser.set_defaults(handler=run_phantom)
    return parser


def run_phantom(args: argparse.Namespace) -> int:
    """Handler of ``mammosynth phantom``."""
    from .generator import DEFAULT_DENSITY_PREVALENCE, generate_phantom_dataset

    summary = generate_phantom_dataset(
        args.out, args.studies, seed=args.seed, height=args.height, workers=args.workers,
        density_prevalence=args.density_prevalence or DEFAULT_DENSITY_PREVALENCE,
        jpeg2000_fraction=args.jpeg2000_fraction, finding_rate=args.finding_rate,
        test_fraction=args.test_fraction, birads_noise=args.birads_noise,
        overwrite=args.overwrite)
    print(json.dumps(summary.to_dict(), indent=2))
    return 0
