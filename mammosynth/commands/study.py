"""``mammosynth study create|status|analyse|export|hash-password`` (reader studies)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("study", help="blinded real-vs-synthetic reader studies",
                                   description="Create, follow, analyse and export blinded reader studies.")
    sub = parser.add_subparsers(dest="study_command", metavar="STUDY_COMMAND")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])

    create = sub.add_parser("create", help="build a blinded study folder from a real and a synthetic prepared set")
    create.add_argument("--name", required=True, help="study name shown in reports")
    create.add_argument("--real", required=True, help="prepared dataset of real images")
    create.add_argument("--real-split", default="test", help="split of --real to draw from (default test; 'all' = every split)")
    create.add_argument("--synthetic", required=True, help="prepared dataset of synthetic images (source=synthetic)")
    create.add_argument("--synthetic-split", default="all", help="split of --synthetic to draw from (default all)")
    create.add_argument("--cases", type=int, default=100, help="distinct cases (default 100)")
    create.add_argument("--synthetic-fraction", type=float, default=0.5, help="share of synthetic cases (default 0.5)")
    create.add_argument("--repeats", type=int, default=0, help="cases shown twice for intra-reader agreement (default 0)")
    create.add_argument("--readers", required=True, help="CSV: id,display_name,role,password_hash")
    create.add_argument("--confidence-scale", choices=("1-5", "0-100"), default="1-5")
    create.add_argument("--ask-birads", action="store_true", help="also ask readers for a BI-RADS assessment")
    create.add_argument("--seed", type=int, default=0, help="seeds case selection and reading orders (default 0)")
    create.add_argument("--out", required=True, help="new study folder")
    create.set_defaults(handler=_create)

    status = sub.add_parser("status", help="progress per reader")
    status.add_argument("study", help="study folder")
    status.set_defaults(handler=_status)

    analyse = sub.add_parser("analyse", aliases=["analyze"], help="statistics: JSON + plots + Markdown")
    analyse.add_argument("study", help="study folder")
    analyse.add_argument("--out", help="report folder (default STUDY/report)")
    analyse.set_defaults(handler=_analyse)

    export = sub.add_parser("export", help="export answers as CSV or iMRMC input")
    export.add_argument("study", help="study folder")
    export.add_argument("--format", choices=("csv", "imrmc"), default="csv")
    export.add_argument("--out", help="output file (default STUDY/export/answers.csv|.imrmc)")
    export.set_defaults(handler=_export)

    hashpw = sub.add_parser("hash-password", help="print a salted scrypt hash for readers.csv")
    hashpw.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hashpw.set_defaults(handler=_hash_password)


def _split(value: str | None) -> str | None:
    return None if value in (None, "", "all") else value


def _create(args: argparse.Namespace) -> int:
    from ..study.create import create_study
    from ..study.study import StudySettings

    study = create_study(
        args.out, name=args.name, real=args.real, synthetic=args.synthetic, readers_csv=args.readers,
        n_cases=args.cases, synthetic_fraction=args.synthetic_fraction, real_split=_split(args.real_split),
        synthetic_split=_split(args.synthetic_split), repeats=args.repeats, seed=args.seed,
        settings=StudySettings(confidence_scale=args.confidence_scale, ask_birads=args.ask_birads),
    )
    key = study.key()
    print(f"created study {study.name!r} in {study.root}: {study.info['n_cases']} cases "
          f"({study.info['n_served']} served with repeats), {len(study.status())} readers; "
          f"label matching max proportion difference {key['matching']['max_proportion_difference']:.3f}")
    print(f"the truth key is {study.root / 'key' / 'truth.json'}: keep it away from readers")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..study.study import Study

    study = Study.open(args.study, verify="quick")
    rows = study.status()
    width = max([len(r["reader_id"]) for r in rows] + [6])
    print(f"study {study.name!r} ({study.root})")
    for r in rows:
        print(f"  {r['reader_id']:<{width}}  {r['answered']:>4} / {r['total']:<4}  {r['display_name']}")
    done = sum(r["answered"] for r in rows)
    total = sum(r["total"] for r in rows)
    print(f"  {'all':<{width}}  {done:>4} / {total:<4}")
    return 0


def _analyse(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..study.report import write_report
    from ..study.study import Study

    study = Study.open(args.study)
    out = Path(args.out) if args.out else study.root / "report"
    result = write_report(study, out)
    m = result.get("mrmc", {})
    if m.get("available"):
        print(f"MRMC AUC {m['auc']:.3f} (95% CI {m['ci_low']:.3f}-{m['ci_high']:.3f}), p vs 0.5 = {m['p_vs_chance']:.4f}")
    print(f"wrote {out / 'report.json'}, {out / 'report.md'} and plots")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..study.export import export_csv, export_imrmc
    from ..study.study import Study

    study = Study.open(args.study)
    suffix = "csv" if args.format == "csv" else "imrmc"
    out = Path(args.out) if args.out else study.root / "export" / f"answers.{suffix}"
    (export_csv if args.format == "csv" else export_imrmc)(study, out)
    print(f"wrote {out}")
    return 0


def _hash_password(args: argparse.Namespace) -> int:
    import getpass

    from ..study.readers import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 2
    print(hash_password(password))
    return 0
