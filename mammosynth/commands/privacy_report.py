"""``mammosynth privacy-report``: the privacy audit as one HTML page for sign-off (DESIGN §9, issue 20.5)."""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "privacy-report", help="write the privacy audit as one self-contained HTML page for sign-off",
        description="Render <checkpoint>/reports/privacy.json (from `mammosynth privacy-audit`), the gate's "
        "build report and calibration, the audit's plots and the checkpoint's and gate's fingerprints as one "
        "self-contained HTML page (inline CSS, embedded PNGs, no external requests) that names no training image.")
    p.add_argument("--checkpoint", required=True, help="pipeline folder with privacy_checker/ and reports/privacy.json")
    p.add_argument("--audit", default=None, help="the audit JSON (default: <checkpoint>/reports/privacy.json)")
    p.add_argument("--out", required=True, help="the HTML file to write (e.g. privacy-report.html)")
    p.set_defaults(handler=_privacy_report)


def _privacy_report(args: argparse.Namespace) -> int:
    from ..pipelines.checkpoint import fingerprint
    from ..privacy.report import write_privacy_report

    command = "mammosynth " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["privacy-report"] else (
        f"mammosynth privacy-report --checkpoint {shlex.quote(str(args.checkpoint))}"
        + (f" --audit {shlex.quote(str(args.audit))}" if args.audit else "") + f" --out {shlex.quote(str(args.out))}")
    out = write_privacy_report(args.checkpoint, args.out, audit=args.audit,
                               checkpoint_fingerprint=fingerprint(args.checkpoint), command=command)
    print(f"wrote {out}")
    return 0
