"""``mammosynth ingest``: DICOMs (VinDr-Mammo layout or any folder) → prepared dataset."""

from __future__ import annotations

import argparse

from .cli_types import fraction, positive_int

__all__ = ["add_ingest_command"]

_DESCRIPTION = """\
Turn mammograms into a prepared dataset (DESIGN §6) for training and evaluation.

Each image goes through the DICOM display pipeline (modality LUT, VOI LUT or window,
MONOCHROME1 inverted, pixel padding masked), is cropped to the breast, mirrored so that
the chest wall is at the left edge (right breasts), resized with its aspect ratio kept and
padded to HEIGHTxWIDTH. Lesion boxes go through the same crop, flip and scale.

The output folder holds images.u16 (uint16 frames, memory-mapped), manifest.csv (ids,
split, labels, boxes), meta.json and report.json (what was skipped and why). Nothing
that identifies a person is written: ids are the dataset's pseudonymous study/image ids
(VinDr) or hashes of the DICOM UIDs (dicom-folder).

Bad files and rows (not DICOM, truncated, not MG, FOR PROCESSING, RGB, unknown BI-RADS,
missing files, boxes outside the image, ...) are skipped and reported; the batch goes on.
An ingest that was stopped continues where it stopped when run again with the same --out.
"""

_EPILOG = """\
formats:
  vindr         ROOT/images/<study_id>/<image_id>.dicom with breast-level_annotations.csv,
                finding_annotations.csv (and optional metadata.csv) as published on
                PhysioNet; also what `mammosynth phantom` writes. Splits are kept.
  dicom-folder  any folder of MG DICOMs (searched recursively). Optional --labels CSV with
                columns: file (path relative to ROOT) or sop_instance_uid; and any of
                study_id, laterality (L/R), view (CC/MLO), birads (1-5), density (A-D),
                split (training/test), lesion (mass, calcification, architectural_distortion,
                asymmetry, none, or VinDr categories), xmin, ymin, xmax, ymax (lesion box
                in stored-image pixels; one row per finding). Studies without a split are
                assigned by a hash of the study (--test-fraction to test).

examples:
  mammosynth ingest --root data/phantom --out data/prepared-256
  mammosynth ingest --root /data/vindr-mammo-1.0.0 --out data/vindr-512 --size 512x384
  mammosynth ingest --format dicom-folder --root /data/cmmd --labels labels.csv --out data/cmmd-256
"""


def _size(text: str) -> tuple[int, int]:
    from .prepare import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run(args: argparse.Namespace) -> int:
    from .prepare import ingest

    report = ingest(
        args.root, args.out, source=args.format, labels=args.labels, size=args.size, workers=args.workers,
        limit=args.limit, test_fraction=args.test_fraction, quiet=False,
    )
    return 0 if report.ingested > 0 else 1


def add_ingest_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``ingest`` to the ``mammosynth`` subcommands."""
    parser = subparsers.add_parser(
        "ingest",
        help="DICOM mammograms (VinDr-Mammo layout or any folder) -> prepared dataset",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", required=True, metavar="ROOT",
                        help="dataset root: a VinDr-Mammo layout folder (real or phantom) or, with "
                        "--format dicom-folder, any folder of MG DICOM files")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="prepared-dataset folder to write (created; rerun with the same OUT to resume)")
    parser.add_argument("--format", choices=("vindr", "dicom-folder"), default="vindr",
                        help="layout of ROOT (default: %(default)s)")
    parser.add_argument("--labels", metavar="CSV", default=None,
                        help="labels CSV for --format dicom-folder (columns above); without it the images "
                        "are ingested unlabelled")
    parser.add_argument("--size", type=_size, default=(256, 192), metavar="HxW",
                        help="frame size HEIGHTxWIDTH, multiples of 8 (default: 256x192; 512x384 and "
                        "1024x768 for GPU work)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="K",
                        help="processes decoding images in parallel (default: all cores); one process writes")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="ingest at most N images (the first in study/image order), e.g. for a quick try")
    parser.add_argument("--test-fraction", type=fraction, default=0.2, metavar="F",
                        help="dicom-folder only: share of studies without a labelled split put in 'test' "
                        "(default: %(default)s)")
    parser.set_defaults(handler=_run)
    return parser
