"""What the app's screens stand on: its settings and its shared services, put together.

* :class:`AppConfig` – the command-line settings of ``app.py``;
* :class:`Services` – the model (:mod:`.model`), the accounts (:mod:`.accounts`) and the
  study (:mod:`.studies`) of one server process; :func:`create_services` builds them cheaply;
* :func:`new_output_folder` – a fresh folder for one request's files.

Nothing here imports gradio, and nothing heavy happens at import time or construction.
Per-user data never lives here in a way one user could see another's: everything keyed by
user is looked up with the name Gradio authenticated (``gr.Request.username``).
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..pipelines.checkpoint import DEFAULT_CHECKPOINT
from .accounts import Accounts
from .demo import DEMO_FOLDER, build_demo_study, write_demo_accounts
from .model import ModelService
from .studies import StudyService

if TYPE_CHECKING:
    from ..pipelines.pipeline_mammo_ldm import MammoLDMPipeline

logger = logging.getLogger("mammosynth.app")

__all__ = ["AppConfig", "Services", "create_services", "new_output_folder", "start_demo_study"]


@dataclass(frozen=True)
class AppConfig:
    """Settings of one app instance (see ``python app.py --help``)."""

    checkpoint: Path = DEFAULT_CHECKPOINT
    study: Path | None = None
    auth: Path | None = None
    work_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "mammosynth")
    temp_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "mammosynth" / "tmp")
    show_neighbours: bool = False
    demo_study: bool = True
    max_concurrent_generations: int = 1
    max_images: int = 8
    max_steps: int = 200
    default_steps: int = 8   # pipeline_mammo_ldm.DEFAULT_TEACHER_STEPS (measured)
    #: the Generate tab's live preview (student + tiny decoder when the checkpoint has them)
    live_preview: bool = True
    reports: Path | None = None
    #: False: load a checkpoint without its privacy checker on purpose (every verdict "not checked")
    privacy_gate: bool = True
    #: True: reader accounts may generate while a study runs (unblinds them to the model; pilots only)
    readers_may_generate: bool = False
    #: DICOMweb endpoint for the Generate tab's *Send to PACS* button (None: no button). May hold
    #: user:password@; it is never shown or logged (see :func:`mammosynth.pacs.client.redact_url`)
    pacs_url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_concurrent_generations < 1:
            raise ValueError(f"max_concurrent_generations must be at least 1, got {self.max_concurrent_generations}")
        if self.max_images < 1 or self.max_steps < 1:
            raise ValueError("max_images and max_steps must be at least 1")
        if self.pacs_url:
            from ..pacs.client import split_credentials

            split_credentials(self.pacs_url)  # a clear error at start, not at the first send


@dataclass
class Services:
    """The app's shared, read-mostly services (one per server process)."""

    config: AppConfig
    model: ModelService
    accounts: Accounts
    studies: StudyService

    def role(self, username: str | None) -> str | None:
        return self.accounts.role(username)


def create_services(config: AppConfig, loader: Callable[[Path], MammoLDMPipeline] | None = None) -> Services:
    """Services for ``config``; cheap (no model is loaded, no study is opened).

    Accounts come from ``--auth`` if given, else from the study's ``readers.csv``, else (demo)
    from ``<work-dir>/demo-readers.csv`` (written here, with hashed demo passwords).
    """
    readers = config.auth
    if readers is None and config.study is not None:
        readers = Path(config.study) / "readers.csv"
    if readers is None and config.demo_study:
        readers = write_demo_accounts(Path(config.work_dir) / "demo-readers.csv")
    if readers is not None and not Path(readers).is_file():
        raise FileNotFoundError(f"readers file {readers} does not exist: pass --auth with a readers.csv "
                                "(id,display_name,role,password_hash)")
    Path(config.temp_dir).mkdir(parents=True, exist_ok=True)
    if loader is None and not config.privacy_gate:
        logger.warning("--no-privacy-gate: generated images will NOT be checked against the training set")
        from ..pipelines.pipeline_mammo_ldm import load_pipeline

        loader = functools.partial(load_pipeline, privacy_gate=False)
    return Services(config=config, model=ModelService(config.checkpoint, loader=loader),
                    accounts=Accounts(readers), studies=StudyService(config.study))


def new_output_folder(temp_dir: Path, kind: str) -> Path:
    """A fresh folder under the app's temp folder for one request's files."""
    folder = Path(temp_dir) / kind / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_demo_study(services: Services, studies: int = 3, steps: int = 20) -> threading.Thread | None:
    """Build the demo study in a daemon thread and hand it to ``services.studies`` when ready."""
    config = services.config
    target = Path(config.work_dir) / DEMO_FOLDER
    if (target / "study.json").is_file():
        services.studies.ready(target)
        return None
    services.studies.preparing("Preparing the demo study… (a few phantom images and as many generated ones; "
                               "this page updates when it is ready)")

    def run() -> None:
        try:
            folder = build_demo_study(Path(config.work_dir), services.model, services.accounts.path,
                                      studies=studies, steps=steps)
            services.studies.ready(folder)
        except Exception as error:  # noqa: BLE001 - reported in the UI, logged with traceback
            logger.exception("the demo study could not be built")
            services.studies.failed(f"The demo study could not be prepared: {error}")

    thread = threading.Thread(target=run, name="demo-study", daemon=True)
    thread.start()
    return thread
