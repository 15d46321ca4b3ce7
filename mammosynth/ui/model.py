"""The model behind the Generate tab: validated requests, the lazily loaded checkpoint, outputs.

* :func:`parse_generation_request` → :class:`GenerationRequest` – every input checked, with
  messages for a person;
* :class:`ModelService` – loads the checkpoint on first use (once, behind a lock), swaps
  schedulers, generates one image per seed (so every image's recipe makes it again exactly),
  and edits (inserts a lesion into) an uploaded or generated image;
* :func:`write_outputs` – the 16-bit PNG, DICOM and JSON recipe of a :class:`GeneratedImage`;
  :func:`write_batch_outputs` – those of a whole generation, its DICOMs ONE synthetic study
  (one series per side and view) and zipped.

Nothing here imports gradio or torch at import time.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..conditions import Conditions
from ..pipelines.checkpoint import fingerprint

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

    from ..data.export import Recipe
    from ..pipelines.pipeline_mammo_ldm import MammoLDMPipeline
    from ..privacy.checker import PrivacyVerdict

logger = logging.getLogger("mammosynth.app")

__all__ = ["MAX_SEED", "GenerationRequest", "parse_generation_request", "GeneratedImage", "ModelService", "Preview",
           "write_outputs", "write_batch_outputs", "BatchOutputs"]

MAX_SEED = 2**31 - 1


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
    recipe: Recipe
    verdict: PrivacyVerdict | None

    @property
    def stem(self) -> str:
        c = self.recipe.conditions
        side = f"{c.laterality.value if c.laterality else 'X'}{c.view.value if c.view else 'any'}"
        from ..data.export import EditRecipe

        kind = "edit_seed" if isinstance(self.recipe, EditRecipe) else "seed"
        return f"mammosynth_{side}_{kind}{self.recipe.seed}"


#: Student steps of a live preview (the fewest that show the conditions; see bench_sampling.py).
PREVIEW_STUDENT_STEPS = 1
#: Teacher steps of a live preview when the checkpoint has no student.
PREVIEW_TEACHER_STEPS = 4


@dataclass
class Preview:
    """A live-preview image (display orientation) and how it was made."""

    frame: np.ndarray
    verdict: PrivacyVerdict | None
    scheduler: str
    steps: int
    decoder: str
    seconds: float


class ModelService:
    """The checkpoint, loaded on first use and shared (read-only) by every user.

    Sampling runs under a lock: a pipeline's scheduler holds per-call state, so two
    generations never interleave in one process (the queue limits how many wait). Each call
    takes :func:`mammosynth.runtime.sampling_threads` threads (the cores no other process is
    busy on, at most the torch threads the process started with): a training job beside the
    app slows a generation by less than half instead of several times.
    """

    def __init__(self, checkpoint: str | os.PathLike,
                 loader: Callable[[Path], MammoLDMPipeline] | None = None, adaptive_threads: bool = True):
        self.checkpoint = Path(checkpoint)
        self._loader = loader
        self.adaptive_threads = adaptive_threads
        self._max_threads: int | None = None
        self._pipe: MammoLDMPipeline | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._schedulers: dict[str, SchedulerMixin] = {}
        self.fingerprint: str | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def pipeline(self) -> MammoLDMPipeline:
        """The pipeline (loading it the first time); raises ``CheckpointError`` with advice."""
        if self._pipe is not None:
            return self._pipe
        with self._load_lock:
            if self._pipe is None:
                started = time.perf_counter()
                logger.info("loading checkpoint %s", self.checkpoint)
                from ..pipelines.pipeline_mammo_ldm import load_pipeline

                pipe = (self._loader or load_pipeline)(self.checkpoint)
                self.fingerprint = fingerprint(self.checkpoint)
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

    def _set_threads(self) -> None:
        """Give the next sampling call the cores nobody else is busy on (see the class doc)."""
        import torch

        if not self.adaptive_threads:
            return
        from ..runtime import sampling_threads

        if self._max_threads is None:
            self._max_threads = torch.get_num_threads()
        torch.set_num_threads(sampling_threads(self._max_threads))

    def _scheduler(self, name: str) -> SchedulerMixin:
        if name not in self._schedulers:
            self._schedulers[name] = self.pipeline().scheduler_named(name)
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
        from ..pipelines.sampling import verdict_dict

        pipe = self.pipeline()
        height, width = pipe.default_size
        total = request.num_images * request.num_inference_steps
        results: list[GeneratedImage] = []
        with self._run_lock:
            self._set_threads()
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
                                privacy=verdict_dict(verdict))
                results.append(GeneratedImage(np.asarray(out.images[0]), recipe, verdict))
        return results

    def preview(self, conditions: Conditions, seed: int, guidance_scale: float = 3.0) -> Preview:
        """One fast, privacy-gated preview image of ``conditions`` (the live preview of the Generate tab).

        With the distilled student it is :data:`PREVIEW_STUDENT_STEPS` student steps and, if the
        checkpoint has it, the tiny decoder; without the student, :data:`PREVIEW_TEACHER_STEPS`
        teacher steps. Runs under the same lock as :meth:`generate`.
        """
        import torch

        pipe = self.pipeline()
        student = pipe.has_student
        scheduler = "lcm" if student else "dpm"
        steps = PREVIEW_STUDENT_STEPS if student else PREVIEW_TEACHER_STEPS
        decoder = "tiny" if pipe.has_tiny_decoder else "full"
        with self._run_lock:
            started = time.perf_counter()
            self._set_threads()
            pipe.scheduler = self._scheduler(scheduler)
            out = pipe(conditions=conditions, num_images=1, num_inference_steps=steps, guidance_scale=guidance_scale,
                       generator=torch.Generator(device="cpu").manual_seed(int(seed)), decoder=decoder)
            seconds = time.perf_counter() - started
        verdict = out.privacy[0] if out.privacy else None
        return Preview(np.asarray(out.images[0]), verdict, scheduler, steps, decoder, seconds)

    def edit(self, source: Any, lesion: Any, box: Any, seed: int, num_inference_steps: int, guidance_scale: float,
             scheduler: str = "dpm", birads: Any = None, density: Any = None,
             progress: Callable[[int, int], None] | None = None) -> GeneratedImage:
        """Insert ``lesion`` at ``box`` into an :class:`~mammosynth.data.upload.EditSource` (privacy-gated).

        Raises ``ValueError`` (``ConditionError``) for a bad lesion or box.
        """
        from ..pipelines.editing import edit_source

        pipe = self.pipeline()
        with self._run_lock:
            self._set_threads()
            pipe.scheduler = self._scheduler(scheduler)
            result = edit_source(pipe, source, lesion, box, seed=seed, num_inference_steps=num_inference_steps,
                                 guidance_scale=guidance_scale, scheduler=scheduler, checkpoint=self.checkpoint.name,
                                 checkpoint_sha256=self.fingerprint, birads=birads, density=density, callback=progress)
        return GeneratedImage(result.frame, result.recipe, result.verdict)

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


def write_outputs(image: GeneratedImage, folder: Path, study: Any = None) -> dict[str, Path]:
    """Write the 16-bit PNG, the DICOM and the recipe JSON of one image into ``folder``.

    ``study``: the :class:`~mammosynth.data.study.SyntheticStudy` the DICOM belongs to (default: its own).
    """
    from ..data.export import write_png16, write_recipe
    from ..data.study import SyntheticStudy

    folder.mkdir(parents=True, exist_ok=True)
    study = study or SyntheticStudy()
    return {"png": write_png16(image.frame, folder / f"{image.stem}.png"),
            "dicom": study.write(image.frame, image.recipe, folder, name=f"{image.stem}.dcm"),
            "json": write_recipe(image.recipe, folder / f"{image.stem}.json")}


@dataclass(frozen=True)
class BatchOutputs:
    """The files of one generation: per image (png, dicom, json) and the study's zip."""

    images: list[dict[str, Path]]
    zip: Path


def write_batch_outputs(images: Sequence[GeneratedImage], folder: Path) -> BatchOutputs:
    """Every image's files, the DICOMs as ONE synthetic study, plus ``mammosynth_study.zip`` of the DICOMs."""
    from ..data.study import SyntheticStudy, zip_study

    study = SyntheticStudy()
    written = [write_outputs(image, folder, study) for image in images]
    return BatchOutputs(written, zip_study([paths["dicom"] for paths in written], folder / "mammosynth_study.zip"))
