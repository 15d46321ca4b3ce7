"""``mammosynth export-study`` and ``mammosynth pacs send|list|serve`` (issue 22)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export-study", help="turn generated images (16-bit PNG + recipe) into ONE synthetic DICOM study",
        description="Write the images `mammosynth sample` made as one synthetic DICOM study: one Study "
        "Instance UID, a synthetic patient pseudonym, one series per side and view; as a folder and/or a "
        "zip without DICOMDIR.")
    export.add_argument("inputs", nargs="+", help="PNG files or folders of them, each with its .json recipe beside it")
    export.add_argument("--out", default=None, help="new (or empty) folder for the study's DICOM files")
    export.add_argument("--zip", default=None, help="also (or only) write the study as this .zip")
    export.set_defaults(handler=_export_study)

    pacs = subparsers.add_parser("pacs", help="send synthetic DICOMs to a PACS (DICOMweb), list its studies, "
                                 "or run a local Orthanc", description="Talk to a PACS over DICOMweb.")
    actions = pacs.add_subparsers(dest="pacs_command", metavar="ACTION")
    send = actions.add_parser("send", help="STOW-RS DICOM files to a DICOMweb endpoint",
                              description="Send DICOM files (or folders of .dcm) with STOW-RS. A failure names "
                              "the URL and the files not sent; no file is moved or deleted.")
    _url_arguments(send)
    send.add_argument("files", nargs="+", help="DICOM files or folders of .dcm files")
    send.set_defaults(handler=_send)
    listing = actions.add_parser("list", help="list the studies on a DICOMweb endpoint (QIDO-RS)")
    _url_arguments(listing)
    listing.set_defaults(handler=_list)
    serve = actions.add_parser(
        "serve", help="run a local Orthanc PACS (loopback only) until Ctrl-C",
        description="Start Orthanc (apt-get install orthanc orthanc-dicomweb [orthanc-webviewer]) on 127.0.0.1 "
        "with DICOMweb at /dicom-web and Orthanc Explorer at /app/explorer.html.")
    serve.add_argument("--port", type=int, default=8042, help="HTTP port on 127.0.0.1 (default: %(default)s)")
    serve.add_argument("--folder", default=None,
                       help="where Orthanc keeps its files (default: a temporary folder, removed at exit)")
    serve.add_argument("--username", default=None, help="require HTTP basic authentication with this user "
                       "(password from MAMMOSYNTH_PACS_PASSWORD)")
    serve.set_defaults(handler=_serve)
    pacs.set_defaults(handler=lambda args: _usage(pacs))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _url_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="DICOMweb endpoint, e.g. http://127.0.0.1:8042/dicom-web")
    parser.add_argument("--username", default=None, help="user name (default: from the URL or "
                        "MAMMOSYNTH_PACS_USERNAME); the password comes from MAMMOSYNTH_PACS_PASSWORD, never "
                        "from the command line")


def _export_study(args: argparse.Namespace) -> int:
    from ..data.study import export_study, read_generated

    if args.out is None and args.zip is None:
        raise ValueError("give --out FOLDER, --zip FILE or both")
    result = export_study(read_generated(args.inputs), args.out, args.zip)
    where = " and ".join(str(p) for p in (result.folder, result.zip) if p is not None)
    print(f"wrote {len(result.files)} image(s) as study {result.study_uid} (patient {result.patient_id}) to {where}")
    return 0


def _dicom_files(items: list[str]) -> list:
    from pathlib import Path

    files = []
    for item in map(Path, items):
        if item.is_dir():
            files += sorted(item.rglob("*.dcm"))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not files:
        raise ValueError(f"no .dcm files in {', '.join(items)}")
    return files


def _client(args: argparse.Namespace):
    from ..pacs.client import PacsClient

    return PacsClient(args.url, username=args.username)


def _send(args: argparse.Namespace) -> int:
    report = _client(args).send(_dicom_files(args.files))
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _list(args: argparse.Namespace) -> int:
    from ..pacs.client import value

    studies = _client(args).studies()
    print("study_instance_uid\tpatient_id\tstudy_date\tmodalities\tinstances\tdescription")
    for study in studies:
        modalities = "/".join((study.get("00080061") or {}).get("Value") or [])
        print("\t".join(str(v or "") for v in (value(study, "0020000D"), value(study, "00100020"),
                                                 value(study, "00080020"), modalities, value(study, "00201208"),
                                                 value(study, "00081030"))))
    print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os
    import threading

    from ..pacs.client import PASSWORD_VARIABLE
    from ..pacs.orthanc import OrthancError, OrthancServer

    password = os.environ.get(PASSWORD_VARIABLE) if args.username else None
    if args.username and not password:
        raise ValueError(f"--username needs the password in the environment variable {PASSWORD_VARIABLE}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = OrthancServer(folder=args.folder, http_port=args.port, username=args.username, password=password)
    try:
        server.start()
    except OrthancError as error:
        print(f"mammosynth pacs serve: error: {error}", file=sys.stderr)
        return 1
    try:
        print(f"Orthanc is running (Ctrl-C stops it).\n  Orthanc Explorer: {server.url}/app/explorer.html\n"
              f"  DICOMweb:         {server.dicomweb_url}\n"
              f"  send a study:     mammosynth pacs send --url {server.dicomweb_url} FOLDER", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
