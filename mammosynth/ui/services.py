"""What the app's screens stand on: its settings, the lazily loaded model, accounts, the study.

Nothing here imports gradio, and nothing heavy happens at import time or construction:

* :class:`AppConfig` – the command-line settings of ``app.py``;
* :class:`ModelService` – loads the checkpoint on first use (once, behind a lock), swaps
  schedulers, generates one image per seed (so every image's recipe makes it again exactly)
  and writes its PNG / DICOM / JSON;
* :class:`Accounts` – who may log in, with which role (from a ``readers.csv``);
* :class:`StudyService` – the opened study (or the demo study being prepared), and when each
  reader was shown their current case (for ``seconds_on_case``).

Per-user data never lives here in a way one user could see another's: everything keyed by
user is looked up with the name Gradio authenticated (``gr.Request.username``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..conditions import Conditions

logger = logging.getLogger("mammosynth.app")

__all__ = [
    "DEFAULT_CHECKPOINT",
    "AppConfig",
    "GenerationRequest",
    "GeneratedImage",
    "ModelService",
    "Accounts",
    "StudyService",
    "StudyUnavailable",
    "parse_generation_request",
    "checkpoint_reports",
    "Services",
    "create_services",
]

#: The bundled demo checkpoint (relative to the repository root).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "mammosynth-phantom-256"
MAX_SEED = 2**31 - 1


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
    default_steps: int = 20
    reports: Path | None = None
    #: False: load a checkpoint without its privacy checker on purpose (every verdict "not checked")
    privacy_gate: bool = True

    def __post_init__(self) -> None:
        if self.max_concurrent_generations < 1:
            raise ValueError(f"max_concurrent_generations must be at least 1, got {self.max_concurrent_generations}")
        if self.max_images < 1 or self.max_steps < 1:
            raise ValueError("max_images and max_steps must be at least 1")


# ---- generation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request from the Generate tab or the ``generate`` API."""

    conditions: Conditions
    seed: int
    num_images: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str

    def seeds(self) -> list[int]:
        """One seed per image: ``seed, seed + 1, ...`` (image *i* is reproducible on its own)."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.num_images)]


def _as_int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def parse_generation_request(
    birads: Any = None, density: Any = None, view: Any = None, laterality: Any = None, lesion: Any = None,
    box: Any = None, seed: Any = -1, steps: Any = 20, guidance: Any = 3.0, sampler: Any = "dpm",
    num_images: Any = 1, *, max_images: int = 8, max_steps: int = 200, rng: random.Random | None = None,
) -> GenerationRequest:
    """Check every input of a generation; raise ``ValueError`` with a message for a person.

    ``seed`` ``-1`` (or empty / ``"random"``) draws a random seed; the drawn seed is part
    of the request so the result can be made again.
    """
    from ..pipelines.pipeline_mammo_ldm import SCHEDULERS

    conditions = Conditions.create(birads=birads, density=density, view=view, laterality=laterality,
                                   lesion=lesion, box=box)
    if seed is None or (isinstance(seed, str) and seed.strip().lower() in ("", "random", "-1")):
        seed = -1
    seed = _as_int(seed, "seed", -1, MAX_SEED)
    if seed == -1:
        seed = (rng or random.SystemRandom()).randint(0, MAX_SEED)
    steps = _as_int(steps, "steps", 1, max_steps)
    n = _as_int(num_images, "number of images", 1, max_images)
    try:
        guidance = float(guidance)
    except (TypeError, ValueError):
        raise ValueError(f"guidance must be a number ≥ 1, got {guidance!r}") from None
    if not np.isfinite(guidance) or not 1.0 <= guidance <= 20.0:
        raise ValueError(f"guidance must be between 1 (no guidance) and 20, got {guidance!r}")
    sampler = str(sampler or "dpm").strip().lower()
    if sampler not in SCHEDULERS:
        raise ValueError(f"sampler must be one of {', '.join(SCHEDULERS)}, got {sampler!r}")
    return GenerationRequest(conditions, seed, n, steps, guidance, sampler)


@dataclass
class GeneratedImage:
    """One generated image (display orientation), how it was made and the privacy verdict."""

    frame: np.ndarray
    recipe: Any  # mammosynth.data.export.Recipe
    verdict: Any | None  # PrivacyVerdict

    @property
    def stem(self) -> str:
        c = self.recipe.conditions
        side = f"{c.laterality.value if c.laterality else 'X'}{c.view.value if c.view else 'any'}"
        return f"mammosynth_{side}_seed{self.recipe.seed}"


class ModelService:
    """The checkpoint, loaded on first use and shared (read-only) by every user.

    Sampling runs under a lock: a pipeline's scheduler holds per-call state, so two
    generations never interleave in one process (the queue limits how many wait).
    """

    def __init__(self, checkpoint: str | os.PathLike, loader: Callable[[Path], Any] | None = None):
        self.checkpoint = Path(checkpoint)
        self._loader = loader
        self._pipe: Any = None
        self._error: Exception | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._schedulers: dict[str, Any] = {}
        self._base_scheduler_config: Any = None
        self.fingerprint: str | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def pipeline(self) -> Any:
        """The pipeline (loading it the first time); raises ``CheckpointError`` with advice."""
        if self._pipe is not None:
            return self._pipe
        with self._load_lock:
            if self._pipe is None:
                started = time.perf_counter()
                logger.info("loading checkpoint %s", self.checkpoint)
                pipe = (self._loader or _load_pipeline)(self.checkpoint)
                self._base_scheduler_config = pipe.scheduler.config
                self.fingerprint = checkpoint_fingerprint(self.checkpoint)
                self.load_seconds = time.perf_counter() - started
                logger.info("checkpoint loaded in %.1f s (%s)", self.load_seconds, self.fingerprint)
                self._pipe = pipe
        return self._pipe

    @property
    def has_privacy_checker(self) -> bool:
        return self.loaded and getattr(self._pipe, "privacy_checker", None) is not None

    def info(self) -> dict[str, Any]:
        """What the About panel shows (does not load the model)."""
        pipe = self._pipe
        out: dict[str, Any] = {"checkpoint": str(self.checkpoint), "name": self.checkpoint.name,
                               "exists": (self.checkpoint / "model_index.json").is_file(), "loaded": pipe is not None}
        if pipe is not None:
            out.update(size=list(pipe.default_size), fingerprint=self.fingerprint,
                       privacy_checker=pipe.privacy_checker is not None, load_seconds=self.load_seconds)
            if pipe.privacy_checker is not None:
                out["privacy_threshold"] = float(pipe.privacy_checker.threshold)
        return out

    def _scheduler(self, name: str) -> Any:
        from ..pipelines.pipeline_mammo_ldm import scheduler_from_name

        if name not in self._schedulers:
            self._schedulers[name] = scheduler_from_name(name, self._base_scheduler_config)
        return self._schedulers[name]

    def generate(self, request: GenerationRequest, progress: Callable[[int, int], None] | None = None,
                 resample_flagged: int = 0) -> list[GeneratedImage]:
        """Generate ``request.num_images`` images, one pipeline call per seed.

        Args:
            request: validated settings.
            progress: ``progress(done_steps, total_steps)`` over all images.
            resample_flagged: redraw images the privacy checker flags up to this many times.
        """
        import torch

        from ..data.export import Recipe

        pipe = self.pipeline()
        height, width = pipe.default_size
        total = request.num_images * request.num_inference_steps
        results: list[GeneratedImage] = []
        with self._run_lock:
            pipe.scheduler = self._scheduler(request.scheduler)
            for i, seed in enumerate(request.seeds()):
                done_before = i * request.num_inference_steps

                def step(done: int, _total: int, offset: int = done_before) -> None:
                    if progress is not None:
                        progress(offset + done, total)

                generator = torch.Generator(device="cpu").manual_seed(int(seed))
                out = pipe(conditions=request.conditions, num_images=1, num_inference_steps=request.num_inference_steps,
                           guidance_scale=request.guidance_scale, generator=generator, callback=step,
                           resample_flagged=resample_flagged)
                verdict = out.privacy[0] if out.privacy else None
                recipe = Recipe(conditions=out.conditions[0], seed=int(seed),
                                num_inference_steps=request.num_inference_steps,
                                guidance_scale=request.guidance_scale, scheduler=request.scheduler,
                                checkpoint=self.checkpoint.name, checkpoint_sha256=self.fingerprint,
                                height=int(height), width=int(width), resample_flagged=int(resample_flagged),
                                privacy=None if verdict is None else verdict_dict(verdict))
                results.append(GeneratedImage(np.asarray(out.images[0]), recipe, verdict))
        return results

    def training_data(self) -> Path | None:
        """The prepared dataset the privacy index was built from, if it is on this server.

        The index records it as given at indexing time (often relative, ``data/prepared-256``):
        it is looked up from the working directory, then from the checkpoint folder upwards.
        """
        checker = getattr(self.pipeline(), "privacy_checker", None)
        recorded = ((checker.config.index_meta or {}) if checker is not None else {}).get("data")
        if not recorded:
            return None
        recorded = Path(recorded)
        candidates = [recorded] if recorded.is_absolute() else [
            recorded, *(base / recorded for base in [self.checkpoint, *self.checkpoint.resolve().parents])]
        return next((c for c in candidates if (c / "manifest.csv").is_file()), None)

    def neighbour_frames(self, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Training frames (canonical) of the given ids, when the indexed data is on this server."""
        data_root = self.training_data()
        if data_root is None:
            return {}
        from ..data.prepared import load_prepared

        data = load_prepared(data_root)
        rows = data.manifest[data.manifest["image_id"].isin(list(image_ids))]
        return {str(r.image_id): np.asarray(data.images[int(r.index)]) for r in rows.itertuples()}


def verdict_dict(verdict: Any) -> dict[str, Any]:
    """A privacy verdict as JSON-ready dict."""
    if hasattr(verdict, "to_dict"):
        return verdict.to_dict()
    return {"flagged": bool(verdict.flagged), "similarity": float(verdict.similarity),
            "threshold": float(verdict.threshold), "neighbours": [[i, float(s)] for i, s in verdict.neighbours]}


def _load_pipeline(path: Path, privacy_gate: bool = True) -> Any:
    """Load the checkpoint; a checkpoint without a privacy checker is refused unless ``privacy_gate=False``."""
    import torch

    # diffusers loads only components whose modules are imported (see the checkpoint's model_index.json)
    from ..models import conditioning  # noqa: F401
    from ..pipelines.pipeline_mammo_ldm import MammoLDMPipeline
    from ..privacy import checker  # noqa: F401

    pipe = MammoLDMPipeline.from_pretrained(path, privacy_gate=privacy_gate)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def checkpoint_fingerprint(path: Path) -> str | None:
    """SHA-256 (first 16 hex) over the checkpoint's weight files and configs, or ``None``."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"))
    if not files:
        return None
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def write_outputs(image: GeneratedImage, folder: Path) -> dict[str, Path]:
    """Write the 16-bit PNG, the DICOM and the recipe JSON of one image into ``folder``."""
    from ..data.export import write_dicom, write_png16, write_recipe

    folder.mkdir(parents=True, exist_ok=True)
    return {"png": write_png16(image.frame, folder / f"{image.stem}.png"),
            "dicom": write_dicom(image.frame, image.recipe, folder / f"{image.stem}.dcm"),
            "json": write_recipe(image.recipe, folder / f"{image.stem}.json")}


def new_output_folder(temp_dir: Path, kind: str) -> Path:
    """A fresh folder under the app's temp folder for one request's files."""
    folder = Path(temp_dir) / kind / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- accounts ------------------------------------------------------------------------------


class Accounts:
    """Who may log in (a study ``readers.csv``), checked with the stored password hashes."""

    def __init__(self, readers_csv: str | os.PathLike | None):
        self.path = None if readers_csv is None else Path(readers_csv)
        self._readers: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def readers(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        with self._lock:
            if self._readers is None:
                from ..study.readers import read_readers_csv

                self._readers = {r.id: r for r in read_readers_csv(self.path)}
        return self._readers

    def authenticate(self, username: str, password: str) -> bool:
        """Gradio's ``auth=`` callback: True for a listed account with the right password."""
        from ..study.readers import check_password

        reader = self.readers().get(str(username or ""))
        ok = reader is not None and check_password(reader.password_hash, str(password or ""))
        logger.info("login %s for %r", "accepted" if ok else "refused", username)
        return ok

    def role(self, username: str | None) -> str | None:
        """``"reader"``, ``"admin"`` or ``None`` (not logged in / unknown)."""
        reader = self.readers().get(str(username or "")) if username else None
        return None if reader is None else str(reader.role.value)

    def display_name(self, username: str | None) -> str:
        reader = self.readers().get(str(username or "")) if username else None
        return reader.display_name if reader is not None else str(username or "")


# ---- the study -------------------------------------------------------------------------------


class StudyUnavailable(RuntimeError):
    """The study cannot be used now (still being prepared, failed, or none configured)."""


class StudyService:
    """The study the app serves: opened once (or built in the background for the demo)."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = None if folder is None else Path(folder)
        self._study: Any = None
        self._state = "none" if folder is None else "pending"
        self._message = "No reader study is loaded: start the app with --study FOLDER."
        self._lock = threading.Lock()
        self._shown: dict[tuple[str, str], float] = {}

    # state changes (the demo builder calls these)
    def preparing(self, message: str) -> None:
        self._state, self._message = "preparing", message

    def failed(self, message: str) -> None:
        self._state, self._message = "failed", message

    @property
    def state(self) -> str:
        return self._state

    @property
    def message(self) -> str:
        return self._message

    def study(self) -> Any:
        """The opened :class:`~mammosynth.study.Study`; raises :class:`StudyUnavailable`."""
        if self._study is not None:
            return self._study
        if self._state in ("none", "preparing", "failed") or self.folder is None:
            raise StudyUnavailable(self._message)
        with self._lock:
            if self._study is None:
                from ..study import Study, StudyError

                try:
                    self._study = Study.open(self.folder, verify="quick")
                except (StudyError, OSError) as error:
                    self.failed(f"The study at {self.folder} cannot be opened: {error}")
                    raise StudyUnavailable(self._message) from None
                self._state = "ready"
                logger.info("study %r opened (%s)", self._study.name, self.folder)
        return self._study

    def ready(self, folder: Path) -> None:
        """The demo builder finished: open ``folder`` from now on."""
        self.folder = Path(folder)
        self._state = "pending"
        self.study()

    def mark_shown(self, reader_id: str, case_id: str) -> None:
        """Remember when a reader first saw a case (for ``seconds_on_case``)."""
        self._shown.setdefault((reader_id, case_id), time.monotonic())

    def seconds_on(self, reader_id: str, case_id: str) -> float:
        """Seconds since the reader first saw the case in this server's lifetime (0 if unknown)."""
        shown = self._shown.pop((reader_id, case_id), None)
        return 0.0 if shown is None else min(max(time.monotonic() - shown, 0.0), 86399.0)


# ---- checkpoint reports ---------------------------------------------------------------------

_CONFIG_JSON = re.compile(r"^(model_index|config|scheduler_config|.*_config)\.json$")


def checkpoint_reports(checkpoint: Path, extra: Path | None = None) -> dict[str, list[Path]]:
    """Report files of a checkpoint: JSON, Markdown and PNG files in it, ``reports/`` and ``extra``.

    Configs of the model components (``model_index.json``, ``config.json`` ...) are not reports.
    """
    folders = [Path(checkpoint), Path(checkpoint) / "reports"] + ([Path(extra)] if extra else [])
    found: dict[str, list[Path]] = {"json": [], "png": [], "md": []}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower().lstrip(".")
            if path.is_file() and suffix in found and not _CONFIG_JSON.match(path.name):
                found[suffix].append(path)
    return found


def read_json_report(path: Path) -> Any:
    """A report JSON file, or a dict saying why it could not be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        return {"error": f"{path.name} could not be read: {error}"}


# ---- everything together -------------------------------------------------------------------


@dataclass
class Services:
    """The app's shared, read-mostly services (one per server process)."""

    config: AppConfig
    model: ModelService
    accounts: Accounts
    studies: StudyService

    def role(self, username: str | None) -> str | None:
        return self.accounts.role(username)


def create_services(config: AppConfig, loader: Callable[[Path], Any] | None = None) -> Services:
    """Services for ``config``; cheap (no model is loaded, no study is opened).

    Accounts come from ``--auth`` if given, else from the study's ``readers.csv``, else (demo)
    from ``<work-dir>/demo-readers.csv`` (written here, with hashed demo passwords).
    """
    readers = config.auth
    if readers is None and config.study is not None:
        readers = Path(config.study) / "readers.csv"
    if readers is None and config.demo_study:
        from .demo import write_demo_accounts

        readers = write_demo_accounts(Path(config.work_dir) / "demo-readers.csv")
    if readers is not None and not Path(readers).is_file():
        raise FileNotFoundError(f"readers file {readers} does not exist: pass --auth with a readers.csv "
                                "(id,display_name,role,password_hash)")
    Path(config.temp_dir).mkdir(parents=True, exist_ok=True)
    if loader is None and not config.privacy_gate:
        logger.warning("--no-privacy-gate: generated images will NOT be checked against the training set")
        loader = functools.partial(_load_pipeline, privacy_gate=False)
    return Services(config=config, model=ModelService(config.checkpoint, loader=loader),
                    accounts=Accounts(readers), studies=StudyService(config.study))


def checkpoint_image_size(checkpoint: Path, default: tuple[int, int] = (256, 192)) -> tuple[int, int]:
    """``(height, width)`` a checkpoint generates, read from its configs (no weights loaded)."""
    try:
        unet = json.loads((Path(checkpoint) / "unet" / "config.json").read_text())
        vae = json.loads((Path(checkpoint) / "vae" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return default
    size = unet.get("sample_size")
    factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    h, w = (size, size) if isinstance(size, int) else (size or default)[:2]
    return int(h) * factor, int(w) * factor
