"""Tiny, random-initialised stand-ins for tests and benchmarks of the app (seconds to build).

* :func:`make_tiny_checkpoint` – a complete ``MammoLDMPipeline`` folder at 64×48
  (:func:`mammosynth.pipelines.testing.tiny_pipeline`, saved) with a
  privacy checker whose index covers a few random frames (or, with ``training_data``, the
  frames of a small prepared dataset it writes, so neighbour thumbnails can be shown);
* :func:`make_tiny_study` – a reader study (real and synthetic demo sets) with the demo
  accounts (``reader1``/``reader1`` … ``admin``/``admin``).

They make noise, not mammograms: they exercise the app's wiring, never its quality.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["make_tiny_checkpoint", "make_tiny_study", "serve_app"]


def serve_app(config, start_demo: bool = True):
    """Launch the app of an :class:`~mammosynth.ui.services.AppConfig` in this process on a free port of
    127.0.0.1, without blocking (tests and benchmarks); returns ``(demo, url, services)``. Stop it with
    ``demo.close()``."""
    from ..pacs.orthanc import free_port
    from .app import create_app

    demo, options, services = create_app(config, start_demo=start_demo)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    return demo, f"http://127.0.0.1:{port}/", services


def make_tiny_checkpoint(path: str | os.PathLike, height: int = 64, width: int = 48, privacy: bool = True,
                         threshold: float | None = 1.0, seed: int = 0,
                         training_data: str | os.PathLike | None = None, fast: bool = False) -> Path:
    """Write a tiny random pipeline checkpoint to ``path`` and return it.

    Args:
        privacy: include a privacy checker (index over 6 random frames). Without one the saved
            pipeline still requires a gate (as `train-ldm` output does): loading it generates
            only with ``requires_privacy_checker=False`` (the app's ``--no-privacy-gate``).
        threshold: the checker's threshold (default 1.0: nothing is flagged; ``None`` keeps the
            calibrated one, which random networks exceed: everything is flagged).
        training_data: write the 6 indexed frames as a prepared dataset to this folder and
            record it in the index (as a real checkpoint records its training data), so the
            app can load the nearest training images (``--show-neighbours``).
        fast: also an (untrained) distilled student and tiny decoder, as ``mammosynth add-fast``
            adds them (:func:`mammosynth.pipelines.testing.add_tiny_student`, ``add_tiny_decoder``).
    """
    import numpy as np

    from ..pipelines.testing import tiny_pipeline

    pipe = tiny_pipeline(height, width, seed, requires_privacy_checker=True)
    if privacy:
        from ..models.siamese import SiameseEmbedder
        from ..privacy.calibration import calibrate_threshold
        from ..privacy.checker import PrivacyChecker
        from ..privacy.index import build_index

        embedder = SiameseEmbedder(embedding_dim=8, input_size=(32, 32), block_inplanes=(4, 4, 8, 8),
                                   layers=(1, 1, 1, 1)).eval()
        rng = np.random.default_rng(seed)
        frames = (rng.random((6, height, width)) * 65535).astype(np.uint16)
        ids = [f"train{i:02d}{'0' * 24}" for i in range(6)]
        studies = [f"study{i // 2}" for i in range(6)]
        data = "" if training_data is None else str(_write_training_data(training_data, frames, ids, studies))
        index = build_index(embedder, frames, ids, studies, backend="sklearn", meta={"data": data, "split": "training"})
        held = (rng.random((12, height, width)) * 65535).astype(np.uint16)
        calibration = calibrate_threshold(index.max_similarity(embedder.embed_frames(held)), 0.1,
                                          source="random frames (test)")
        checker = PrivacyChecker.from_index(embedder, index, calibration, num_neighbours=3)
        if threshold is not None:
            checker.register_to_config(threshold=float(threshold))
        pipe.register_modules(privacy_checker=checker)
    if fast:
        from ..pipelines.testing import add_tiny_decoder, add_tiny_student

        add_tiny_decoder(add_tiny_student(pipe, seed), seed)
    path = Path(path)
    pipe.save_pretrained(path)
    return path


def _write_training_data(folder: str | os.PathLike, frames, ids: list[str], studies: list[str]) -> Path:
    """The frames as a prepared dataset (``training`` split) at ``folder``."""
    from ..data.prepared import PreparedWriter

    folder = Path(folder).resolve()
    height, width = frames.shape[1:]
    with PreparedWriter(folder, height, width, meta={"source": "random frames (test)"}) as writer:
        for frame, image_id, study_id in zip(frames, ids, studies):
            writer.add(frame, {"study_id": study_id, "image_id": image_id, "split": "training",
                               "laterality": "L", "view": "CC", "birads": 1, "density": "B", "lesion": "none",
                               "cancer": 0, "findings": [], "source": "phantom", "extra": {}})
        writer.finalize()
    return folder


def make_tiny_study(path: str | os.PathLike, work: str | os.PathLike, n_real: int = 8, n_synthetic: int = 8,
                    height: int = 64, width: int = 48, ask_birads: bool = False, confidence_scale: str = "1-5") -> Path:
    """A small reader study at ``path`` (demo accounts; ``work`` holds the source datasets).

    ``confidence_scale``: ``"1-5"`` or ``"0-100"`` (see :data:`mammosynth.study.CONFIDENCE_SCALES`).
    """
    from ..study.create import create_study
    from ..study.demo import make_demo_datasets
    from ..study.study import StudySettings
    from .demo import write_demo_accounts

    work = Path(work)
    real, synthetic = make_demo_datasets(work / "sets", n_real=n_real, n_synthetic=n_synthetic, height=height,
                                         width=width, seed=0)
    readers = write_demo_accounts(work / "readers.csv")
    create_study(path, name="tiny test study", real=real, synthetic=synthetic, readers_csv=readers,
                 n_cases=min(n_real, n_synthetic) * 2, real_split=None, seed=0,
                 settings=StudySettings(confidence_scale=confidence_scale, ask_birads=ask_birads))
    return Path(path)
