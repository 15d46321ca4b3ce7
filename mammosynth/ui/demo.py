"""The demo reader study that ``python app.py`` serves when no ``--study`` is given.

Built once into ``<work-dir>/demo-study`` (later starts reuse it, so answers survive a
restart), in a background thread so that the page is usable at once:

1. a small phantom dataset (3 studies, 12 images) ingested at the model's size is the
   "real" side (phantom data: no patient is involved);
2. the loaded checkpoint generates one synthetic image per real image with the same
   conditions (privacy-gated when the checkpoint has a checker) as the "synthetic" side;
3. :func:`mammosynth.study.create.create_study` blinds and matches them (24 cases).

If the checkpoint cannot be loaded, the synthetic side falls back to stand-in textures from
:mod:`mammosynth.study.demo` and the study's name says so.

Demo accounts (documented in the README; passwords equal the user names):
``reader1``/``reader1``, ``reader2``/``reader2``, ``reader3``/``reader3`` (readers) and
``admin``/``admin`` (results).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import ModelService

logger = logging.getLogger("mammosynth.app")

__all__ = ["DEMO_ACCOUNTS", "write_demo_accounts", "build_demo_study"]

#: (id, display name, role, password) of the demo study's accounts.
DEMO_ACCOUNTS: tuple[tuple[str, str, str, str], ...] = (
    ("reader1", "Demo reader 1", "reader", "reader1"),
    ("reader2", "Demo reader 2", "reader", "reader2"),
    ("reader3", "Demo reader 3", "reader", "reader3"),
    ("admin", "Demo admin", "admin", "admin"),
)
DEMO_FOLDER = "demo-study"


def write_demo_accounts(path: Path) -> Path:
    """Write the demo ``readers.csv`` (hashed passwords) unless it already exists."""
    from ..study.readers import Reader, Role, hash_password, readers_csv_text

    path = Path(path)
    if path.is_file():
        return path
    readers = [Reader(rid, name, Role(role), hash_password(password)) for rid, name, role, password in DEMO_ACCOUNTS]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(readers_csv_text(readers), encoding="utf-8")
    tmp.replace(path)
    return path


def build_demo_study(work_dir: Path, model: ModelService, readers_csv: Path, studies: int = 3, steps: int = 20,
                     seed: int = 0) -> Path:
    """Build (or reuse) the demo study in ``work_dir/demo-study``; returns its folder."""
    from ..data.phantom import generate_phantom_dataset
    from ..data.prepare import ingest
    from ..study.create import create_study

    work_dir = Path(work_dir)
    out = work_dir / DEMO_FOLDER
    if (out / "study.json").is_file():
        return out
    scratch = work_dir / "demo-build"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = time.perf_counter()
    name = "mammosynth demo study (phantom real vs model synthetic)"
    try:
        pipe = model.pipeline()
        height, width = pipe.default_size
    except Exception as error:  # noqa: BLE001 - any load failure falls back to stand-ins
        logger.warning("demo study: the checkpoint could not be loaded (%s); using stand-in synthetic images", error)
        pipe, (height, width) = None, (256, 192)
    if pipe is None:
        from ..study.demo import make_demo_datasets

        real, synthetic = make_demo_datasets(scratch, n_real=12, n_synthetic=12, height=height, width=width, seed=seed)
        name = "mammosynth demo study (stand-in images: no checkpoint was loaded)"
        real_split = None
    else:
        from ..evaluation.generate_set import GenerationSettings, generate_set

        generate_phantom_dataset(scratch / "phantom", studies=studies, seed=seed, height=max(2 * height, 256),
                                 workers=1, jpeg2000_fraction=0.0, finding_rate=0.5)
        real = scratch / "real"
        ingest(scratch / "phantom", real, size=(height, width), workers=1, quiet=True)
        synthetic = scratch / "synthetic"
        privacy = "resample" if getattr(pipe, "privacy_checker", None) is not None else "off"
        with model._run_lock:  # noqa: SLF001 - share the sampling lock with the Generate tab
            generate_set(pipe, real, synthetic, split=None, as_split="generated",
                         settings=GenerationSettings(num_inference_steps=steps, guidance_scale=3.0, batch_size=4,
                                                     seed=seed, privacy=privacy, max_resamples=2),
                         checkpoint=str(model.checkpoint), progress=False)
        real_split = None
    from ..data.prepared import load_prepared

    n_cases = 2 * min(len(load_prepared(real).manifest), len(load_prepared(synthetic).manifest))
    create_study(out, name=name, real=real, synthetic=synthetic, readers_csv=readers_csv, n_cases=n_cases,
                 real_split=real_split, seed=seed)
    logger.info("demo study ready in %.1f s: %s (%d cases)", time.perf_counter() - started, out, n_cases)
    return out
