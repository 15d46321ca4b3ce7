"""mammosynth's Gradio app: generate synthetic mammograms, run a blinded reader study, see results.

    python app.py                                  # 127.0.0.1:7860, bundled checkpoint, demo study
    python app.py --checkpoint DIR --study studies/pilot --auth readers.csv --host 0.0.0.0 --port 7860

The screens are built by :mod:`mammosynth.ui`; this file only parses, wires and launches.
No model is loaded at import time: the checkpoint loads on first use.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Before gradio is imported: no telemetry unless the operator asks for it.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from mammosynth.pipelines.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402 - light (no torch, no gradio)

DEFAULT_WORK_DIR = Path(os.environ.get("MAMMOSYNTH_HOME", Path.home() / ".cache" / "mammosynth"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="mammosynth app: generate synthetic mammograms with a privacy verdict, export DICOM, "
                    "run a blinded real-vs-synthetic reader study and see its results.",
        epilog="Without --study, a small demo study is prepared on first start (accounts reader1/reader1, "
               "reader2/reader2, reader3/reader3 and admin/admin).",
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="MammoLDMPipeline checkpoint folder (default: %(default)s)")
    parser.add_argument("--study", type=Path, default=None,
                        help="reader-study folder made by `mammosynth study create` (default: the demo study)")
    parser.add_argument("--auth", type=Path, default=None,
                        help="readers.csv (id,display_name,role,password_hash) for logging in "
                             "(default: the study's readers.csv)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; "
                        "0.0.0.0 = every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--show-neighbours", action="store_true",
                        help="show thumbnails of the nearest training images next to privacy verdicts "
                             "(only where the operator may show training images)")
    parser.add_argument("--no-privacy-gate", dest="privacy_gate", action="store_false",
                        help="serve a checkpoint that has no privacy checker on purpose: images are NOT checked "
                             "against the training set (each verdict says so). Without this flag such a "
                             "checkpoint is refused at the first generation with advice")
    parser.add_argument("--readers-may-generate", action="store_true",
                        help="let reader accounts use Generate (tab and API) while a study runs. By default they "
                             "see only the Reader study and About tabs then: the generator's images would "
                             "unblind them. Use only for pilots or unblinded studies")
    parser.add_argument("--temp-dir", type=Path, default=None,
                        help="folder for generated files and Gradio's cache (default: WORK_DIR/tmp)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="folder for the demo study and caches (default: %(default)s)")
    parser.add_argument("--no-demo-study", action="store_true",
                        help="without --study, serve no study (and ask for no login unless --auth is given)")
    parser.add_argument("--max-concurrent-generations", type=int, default=1,
                        help="generations that may run at the same time; others queue (default: %(default)s)")
    parser.add_argument("--max-images", type=int, default=8, help="most images per request (default: %(default)s)")
    parser.add_argument("--reports", type=Path, default=None,
                        help="extra folder of privacy/evaluation reports (JSON/PNG/MD) for the Results tab")
    parser.add_argument("--pacs-url", default=None,
                        help="DICOMweb endpoint (e.g. http://127.0.0.1:8042/dicom-web, see `mammosynth pacs serve`): "
                             "adds a Send to PACS button to Generate. Server-wide credentials come from "
                             "MAMMOSYNTH_PACS_USERNAME / MAMMOSYNTH_PACS_PASSWORD (or user:password@ in the URL); "
                             "users may type their own. They are never logged")
    parser.add_argument("--no-live-preview", dest="live_preview", action="store_false",
                        help="no live preview on the Generate tab (it runs the fast student on every change of "
                             "the conditions)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level; logs go to stderr (default: %(default)s)")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    from mammosynth.ui.services import AppConfig

    temp_dir = args.temp_dir or args.work_dir / "tmp"
    return AppConfig(checkpoint=args.checkpoint, study=args.study, auth=args.auth, work_dir=args.work_dir,
                     temp_dir=temp_dir, show_neighbours=args.show_neighbours,
                     demo_study=not args.no_demo_study, max_concurrent_generations=args.max_concurrent_generations,
                     max_images=args.max_images, reports=args.reports, privacy_gate=args.privacy_gate,
                     readers_may_generate=args.readers_may_generate, pacs_url=args.pacs_url,
                     live_preview=args.live_preview)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    temp_dir = (args.temp_dir or args.work_dir / "tmp").resolve()
    os.environ.setdefault("GRADIO_TEMP_DIR", str(temp_dir / "gradio"))

    from mammosynth.ui.app import create_app

    try:
        demo, options, services = create_app(config_from_args(args), start_demo=False)
    except (OSError, ValueError) as error:
        sys.exit(f"app.py: {error}")
    logging.getLogger("mammosynth.app").info("serving on http://%s:%d", args.host, args.port)
    # quiet: the address is logged above; stdout stays empty (logs go to stderr through logging)
    demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True, **options)
    if services.config.study is None and services.config.demo_study:
        from mammosynth.ui.services import start_demo_study

        start_demo_study(services)  # after the server is up, so the page is usable at once
    demo.block_thread()


if __name__ == "__main__":
    main()
