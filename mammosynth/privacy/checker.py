"""The privacy gate: is a generated image too close to a training image? (DESIGN §9)

:class:`PrivacyChecker` is a diffusers model (``ModelMixin, ConfigMixin``) so it lives in a
checkpoint folder as ``privacy_checker/`` and loads with ``from_pretrained`` like any other
pipeline component. It holds

* the Siamese embedder (a submodule, its config nested in the checker's config),
* the embeddings of every training image (the registered buffer ``index_embeddings``),
* in its config: the ids those embeddings cover, the embedder's fingerprint, the image
  size the index was built at, the calibrated threshold and the calibration evidence;
* optionally a second detector for partial and re-shaped copies (blends, pasted regions, warps):
  the pixel-structure sketches of the same training images (:mod:`~mammosynth.privacy.sketch`;
  the buffers ``sketch_embeddings``, whole-frame, and ``block_sketch_embeddings``, local, int8;
  its settings, thresholds and calibrations in ``config.sketch``). It has two scores, each with its
  own threshold: the whole-frame sketch's best similarity (blends, pasted regions, near-copies in
  place) and the local similarity to the image's candidates, its Siamese neighbours and the
  whole-frame sketch's nearest (copies moved or bent by a few pixels).

``check(frames)`` embeds uint16 canonical frames, finds their nearest training images and
returns one :class:`PrivacyVerdict` each: ``flagged`` when the best similarity is above the
threshold, or (with a sketch) when either sketch score is above its own threshold. Mismatches are refused, never worked around: an embedder whose weights are not
the ones the index was built with, or frames of another size, raise an error.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..models.siamese import SiameseEmbedder
from .calibration import Calibration
from .index import EmbeddingIndex, IndexMismatchError

__all__ = [
    "CHECKER_FOLDER",
    "PrivacyVerdict",
    "PrivacyChecker",
    "PrivacyFilesMissingError",
    "load_privacy_checker",
]

logger = logging.getLogger(__name__)

#: The folder of a pipeline checkpoint that holds the checker.
CHECKER_FOLDER = "privacy_checker"


class PrivacyFilesMissingError(FileNotFoundError):
    """A checkpoint has no privacy checker; the pipeline must not run silently without it."""


@dataclass
class PrivacyVerdict:
    """The gate's verdict on one generated image.

    Attributes:
        flagged: ``similarity > threshold``: the image is too close to a training image.
        similarity: cosine similarity to the nearest training image (higher = closer).
        threshold: the calibrated threshold it was compared with.
        neighbours: ``(image_id, similarity)`` of the nearest training images, closest first.
            They name members of the training set: they stay on the server unless an operator
            asks for them (:meth:`to_dict` leaves them out by default).
        checker: :meth:`PrivacyChecker.fingerprint` of the checker that judged (``""`` if unknown).
        copy_similarity, copy_threshold: the whole-frame sketch's best similarity to a training
            image and its threshold (``None`` for a checker without a sketch).
        local_similarity, local_threshold: the local sketch similarity to the image's candidate
            training images and its threshold (``None`` for a checker without a sketch).
    """

    flagged: bool
    similarity: float
    threshold: float
    neighbours: list[tuple[str, float]] = field(default_factory=list)
    checker: str = ""
    copy_similarity: float | None = None
    copy_threshold: float | None = None
    local_similarity: float | None = None
    local_threshold: float | None = None

    def to_dict(self, include_neighbours: bool = False) -> dict[str, Any]:
        """The verdict for a recipe or an export: pass/flagged, similarity, threshold, checker.

        ``include_neighbours=True`` adds the nearest training ids: that states "these images were
        in the training set", so only an operator's explicit option may ask for it.
        """
        data = {"flagged": bool(self.flagged), "similarity": float(self.similarity),
                "threshold": float(self.threshold), "checker": self.checker}
        if self.copy_similarity is not None:
            data.update(copy_similarity=float(self.copy_similarity), copy_threshold=float(self.copy_threshold),
                        local_similarity=float(self.local_similarity), local_threshold=float(self.local_threshold))
        if include_neighbours:
            data["neighbours"] = [[i, float(s)] for i, s in self.neighbours]
        return data


def _index_search(index: EmbeddingIndex) -> dict[str, Any] | None:
    """An index's search settings for the checker's config; ``None`` when they are all the defaults."""
    from .index import DEFAULT_NPROBE

    settings = {"backend": index.backend, "faiss_factory": index.faiss_factory, "nprobe": index.nprobe}
    if settings == {"backend": "auto", "faiss_factory": None, "nprobe": DEFAULT_NPROBE}:
        return None
    return settings


def _plain_config(config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


class PrivacyChecker(ModelMixin, ConfigMixin):
    """Siamese embedder + training-set index + calibrated threshold.

    Build one with :meth:`from_index` (what ``mammosynth build-index`` does); load one with
    ``PrivacyChecker.from_pretrained(folder)``.

    Args:
        embedder_config: the :class:`SiameseEmbedder` config.
        image_size: ``(height, width)`` of the frames the index was built from; ``check``
            only accepts frames of this size.
        index_image_ids, index_study_ids: ids of the indexed training images.
        embedder_fingerprint: fingerprint of the embedder the index was built with.
        threshold: flag when the nearest similarity is above it.
        calibration: :meth:`Calibration.to_dict` of how the threshold was chosen.
        num_neighbours: neighbours reported per verdict.
        index_meta: provenance of the index (data folder, split, ...).
        sketch: settings and threshold of the copy detector (``None``: Siamese gate alone).
        index_search: how the index is searched, ``{"backend", "faiss_factory", "nprobe"}`` of
            :class:`~mammosynth.privacy.index.EmbeddingIndex` (``None``: the defaults, exact search
            below 100,000 rows and ``IVF{4√N},Flat`` at nprobe 64 from there on when faiss is installed).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        embedder_config: dict[str, Any] | None = None,
        image_size: Sequence[int] = (256, 192),
        index_image_ids: Sequence[str] = (),
        index_study_ids: Sequence[str] = (),
        embedder_fingerprint: str = "",
        threshold: float = 1.0,
        calibration: dict[str, Any] | None = None,
        num_neighbours: int = 3,
        index_meta: dict[str, Any] | None = None,
        sketch: dict[str, Any] | None = None,
        index_search: dict[str, Any] | None = None,
    ):
        super().__init__()
        unknown = set(index_search or {}) - {"backend", "faiss_factory", "nprobe"}
        if unknown:
            raise ValueError(f"index_search has unknown keys {sorted(unknown)}: expected backend, faiss_factory, nprobe")
        self.embedder = SiameseEmbedder(**(embedder_config or {}))
        if len(index_image_ids) != len(index_study_ids):
            raise ValueError(
                f"index_image_ids ({len(index_image_ids)}) and index_study_ids ({len(index_study_ids)}) "
                "have to be the same length"
            )
        dim = int(self.embedder.config.embedding_dim)
        self.register_buffer("index_embeddings", torch.zeros(len(index_image_ids), dim))
        if sketch is not None:
            for key in ("size", "kernel", "dim", "seed", "threshold", "local_threshold"):
                if key not in sketch:
                    raise ValueError(f"the sketch settings lack {key!r}: rebuild the checker with `mammosynth build-index`")
            from .sketch import SketchConfig

            settings = SketchConfig.from_dict(sketch)  # refuses sketches made by another version of the code
            # float16: the whole-frame sketch only nominates a candidate, the local score decides
            self.register_buffer("sketch_embeddings", torch.zeros((len(index_image_ids), settings.dim), dtype=torch.float16))
            self.register_buffer("block_sketch_embeddings", torch.zeros(
                (len(index_image_ids), settings.blocks[0] * settings.blocks[1], settings.block_dim), dtype=torch.int8))
        self._index: EmbeddingIndex | None = None
        self._index_key: tuple | None = None

    # -- building and loading -------------------------------------------------------------

    @classmethod
    def from_index(cls, embedder: SiameseEmbedder, index: EmbeddingIndex, calibration: Calibration,
                   num_neighbours: int = 3, sketches: tuple[np.ndarray, np.ndarray] | None = None,
                   sketch: dict[str, Any] | None = None) -> PrivacyChecker:
        """A checker from a trained embedder, its index over a training split and a calibration.

        ``sketches`` (``(whole, blocks)``, one row per indexed image, from
        :func:`~mammosynth.privacy.sketch.sketch_frames` and :func:`~mammosynth.privacy.sketch.block_sketches`)
        and ``sketch`` (its :class:`~mammosynth.privacy.sketch.SketchConfig` dict plus ``threshold``
        and ``calibration``) add the copy detector.

        Raises:
            IndexMismatchError: the index was built with another embedder.
        """
        index.check_compatible(embedder.fingerprint(), index.image_size)
        checker = cls(
            embedder_config=_plain_config(embedder.config),
            image_size=list(index.image_size),
            index_image_ids=list(index.image_ids),
            index_study_ids=list(index.study_ids),
            embedder_fingerprint=index.embedder_fingerprint,
            threshold=float(calibration.threshold),
            calibration=calibration.to_dict(),
            num_neighbours=int(num_neighbours),
            index_meta=dict(index.meta),
            sketch=None if sketch is None else dict(sketch),
            index_search=_index_search(index),
        )
        checker.embedder.load_state_dict(embedder.state_dict())
        with torch.no_grad():
            checker.index_embeddings.copy_(torch.from_numpy(index.embeddings))
            if sketch is not None:
                whole, blocks = sketches if sketches is not None else (None, None)
                for name, value in (("sketch_embeddings", whole), ("block_sketch_embeddings", blocks)):
                    buffer = getattr(checker, name)
                    if value is None or value.shape != tuple(buffer.shape):
                        raise ValueError(f"sketches must be {tuple(checker.sketch_embeddings.shape)} and "
                                         f"{tuple(checker.block_sketch_embeddings.shape)}, got "
                                         f"{None if value is None else value.shape} for {name}")
                    buffer.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(buffer.dtype))
        checker.eval()
        checker.verify()
        return checker

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> PrivacyChecker:
        """Load with diffusers' ``ModelMixin.from_pretrained``, then :meth:`verify` the parts agree."""
        checker = super().from_pretrained(*args, **kwargs)
        checker.eval()
        checker.verify()
        return checker

    def verify(self) -> None:
        """Raise :class:`IndexMismatchError` if the embedder is not the one the index was built with."""
        found = self.embedder.fingerprint()
        if found != self.config.embedder_fingerprint:
            raise IndexMismatchError(
                f"the privacy checker's index was built with the Siamese network "
                f"{self.config.embedder_fingerprint}, but its embedder weights are {found}: the "
                f"folder was altered or mixed; rebuild it with `mammosynth build-index`"
            )

    # -- the index ----------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.config.image_size[0]), int(self.config.image_size[1])

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)

    @property
    def calibration(self) -> Calibration | None:
        return Calibration.from_dict(self.config.calibration) if self.config.calibration else None

    @property
    def index(self) -> EmbeddingIndex:
        """The buffer as an :class:`EmbeddingIndex` (rebuilt when the buffer changes)."""
        buffer = self.index_embeddings
        key = (buffer.data_ptr(), buffer._version, tuple(buffer.shape))
        if self._index is None or self._index_key != key:
            self._index = EmbeddingIndex(
                embeddings=buffer.detach().float().cpu().numpy(),
                image_ids=list(self.config.index_image_ids),
                study_ids=list(self.config.index_study_ids),
                embedder_fingerprint=self.config.embedder_fingerprint,
                image_size=self.image_size,
                meta=dict(self.config.index_meta or {}),
                **dict(self.config.get("index_search") or {}),
            )
            self._index_key = key
        return self._index

    def fingerprint(self) -> str:
        """SHA-256 of what decides a verdict: the embedder, the threshold and the indexed embeddings.

        Recorded in every verdict, so an exported image names the gate that passed it without
        naming any training image.
        """
        import hashlib

        buffer = self.index_embeddings
        key = (self.config.embedder_fingerprint, self.threshold, buffer.data_ptr(), buffer._version,
               tuple(buffer.shape), json.dumps(self.config.get("sketch"), sort_keys=True, default=str),
               (self.sketch_embeddings._version, self.block_sketch_embeddings._version) if self.has_sketch else None,
               json.dumps(self.config.get("index_search"), sort_keys=True))
        if getattr(self, "_fingerprint_key", None) != key:
            digest = hashlib.sha256()
            digest.update(f"{self.config.embedder_fingerprint}:{self.threshold!r}:".encode())
            if self.config.get("index_search"):   # an approximate search can give other verdicts
                digest.update(json.dumps(self.config.index_search, sort_keys=True).encode())
            digest.update(buffer.detach().float().cpu().contiguous().numpy().tobytes())
            if self.has_sketch:
                digest.update(json.dumps(self.config.sketch, sort_keys=True, default=str).encode())
                digest.update(self.sketch_embeddings.detach().float().cpu().contiguous().numpy().tobytes())
                digest.update(self.block_sketch_embeddings.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint, self._fingerprint_key = digest.hexdigest(), key
        return self._fingerprint

    def index_rows(self, data: Any) -> Any:
        """``data``'s training rows in the order of the index (row ``k`` is indexed embedding ``k``)."""
        rows = data.split("training")
        position = {image_id: k for k, image_id in enumerate(self.index.image_ids)}
        return rows.iloc[np.argsort([position[i] for i in rows["image_id"]])]

    @property
    def has_sketch(self) -> bool:
        """Whether the checker has the copy detector (the sketch)."""
        return self.config.get("sketch") is not None

    @property
    def copy_threshold(self) -> float | None:
        """The whole-frame sketch's threshold (``None`` without a sketch)."""
        return float(self.config.sketch["threshold"]) if self.has_sketch else None

    @property
    def local_threshold(self) -> float | None:
        """The local sketch's threshold (``None`` without a sketch)."""
        return float(self.config.sketch["local_threshold"]) if self.has_sketch else None

    def copy_similarity(self, frames: np.ndarray, neighbours: np.ndarray | None = None) -> np.ndarray | None:
        """The copy detector's two scores ``(N, 2)`` for each frame (``None`` without a sketch): its best
        whole-frame sketch similarity to a training image, and its local sketch similarity
        (:func:`~mammosynth.privacy.sketch.local_similarity`) to its candidate training images, the
        rows ``neighbours`` ``(N, k)`` of its Siamese search (searched here when ``None``) and its
        nearest by the whole-frame sketch."""
        if not self.has_sketch:
            return None
        from .sketch import SketchConfig, sketch_scores

        frames = self._check_frames(frames)
        if neighbours is None:
            neighbours = self.nearest(self.embed(frames))[1]
        return sketch_scores(frames, self.sketch_embeddings.detach().cpu(), self.block_sketch_embeddings.detach().cpu(),
                             neighbours, SketchConfig.from_dict(self.config.sketch))

    def copy_flags(self, copy_similarities: np.ndarray) -> np.ndarray:
        """Which frames the sketch alone flags, from their :meth:`copy_similarity` ``(N, 2)``."""
        copy = np.asarray(copy_similarities).reshape(-1, 2)
        return (copy[:, 0] > self.copy_threshold) | (copy[:, 1] > self.local_threshold)

    def flags(self, similarities: np.ndarray, copy_similarities: np.ndarray | None = None) -> np.ndarray:
        """The gate's decision for nearest similarities ``(N,)`` (and sketch similarities, if it has a sketch)."""
        flagged = np.asarray(similarities) > self.threshold
        if copy_similarities is not None and self.has_sketch:
            flagged = flagged | self.copy_flags(copy_similarities)
        return flagged

    def check_image_size(self, height: int, width: int) -> None:
        """Raise :class:`IndexMismatchError` unless images of ``height x width`` can be checked."""
        if (int(height), int(width)) != self.image_size:
            raise IndexMismatchError(
                f"images are {height}x{width} but the privacy checker's index was built from "
                f"{self.image_size[0]}x{self.image_size[1]} images: use a checker built at that "
                f"resolution (`mammosynth build-index --data <prepared data at {height}x{width}>`)"
            )

    def _check_frames(self, frames: Any) -> np.ndarray:
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint16 or frames.ndim != 3:
            got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise ValueError(f"frames have to be a uint16 numpy array (N, H, W) in canonical orientation, got {got}")
        self.check_image_size(*frames.shape[1:])
        return frames

    # -- the gate -----------------------------------------------------------------------

    def embed(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Embeddings ``(N, D)`` of uint16 frames ``(N, H, W)`` of the checker's size."""
        return self.embedder.embed_frames(self._check_frames(frames), batch_size=batch_size)

    def nearest(self, embeddings: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, indices)`` ``(N, k)`` of the nearest indexed training images."""
        return self.index.search(embeddings, k or int(self.config.num_neighbours))

    def verdicts(self, similarities: np.ndarray, indices: np.ndarray,
                 copy_similarities: np.ndarray | None = None) -> list[PrivacyVerdict]:
        """Verdicts from a search result (:meth:`nearest`) and, with a sketch, :meth:`copy_similarity`."""
        ids = self.config.index_image_ids
        threshold, checker = self.threshold, self.fingerprint()
        flagged = self.flags(similarities[:, 0], copy_similarities)
        copies = [(None, None)] * len(similarities) if copy_similarities is None else \
            [(float(c[0]), float(c[1])) for c in copy_similarities]
        sketch = copy_similarities is not None
        return [
            PrivacyVerdict(flagged=bool(f), similarity=float(s[0]), threshold=threshold,
                           neighbours=[(str(ids[j]), float(v)) for v, j in zip(s, i)], checker=checker,
                           copy_similarity=c[0], copy_threshold=self.copy_threshold if sketch else None,
                           local_similarity=c[1], local_threshold=self.local_threshold if sketch else None)
            for s, i, f, c in zip(similarities, indices, flagged, copies)
        ]

    def check(self, frames: np.ndarray) -> list[PrivacyVerdict]:
        """The verdict on each generated frame.

        Args:
            frames: uint16 ``(N, H, W)`` in canonical orientation, ``(H, W)`` = :attr:`image_size`.

        Returns:
            One :class:`PrivacyVerdict` per frame.
        """
        import torch

        # The threshold was calibrated on float32 similarities: never judge under a caller's
        # autocast (e.g. a pipeline run in bf16).
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            similarities, indices = self.nearest(self.embed(frames))
            return self.verdicts(similarities, indices, self.copy_similarity(frames, indices))


def _is_checker_folder(path: Path) -> bool:
    import json

    try:
        return json.loads((path / "config.json").read_text()).get("_class_name") == "PrivacyChecker"
    except (OSError, ValueError):
        return False


def load_privacy_checker(checkpoint: str | os.PathLike, **kwargs: Any) -> PrivacyChecker:
    """The checker of a pipeline checkpoint (``<checkpoint>/privacy_checker``), or of a checker folder.

    Raises:
        PrivacyFilesMissingError: the folder has no privacy checker. The pipeline must not
            silently run without its gate: build one or opt out explicitly.
    """
    path = Path(checkpoint)
    folder = path if _is_checker_folder(path) else path / CHECKER_FOLDER
    if not (folder / "config.json").exists():
        raise PrivacyFilesMissingError(
            f"{path} has no privacy checker ({CHECKER_FOLDER}/ with config.json and weights): build one "
            f"with `mammosynth build-index --siamese <siamese run> --data <prepared data> --out "
            f"{path / CHECKER_FOLDER}`, or disable the gate explicitly (privacy_checker=None, "
            "requires_privacy_checker=False)"
        )
    return PrivacyChecker.from_pretrained(folder, **kwargs)


def load_embedder(path: str | os.PathLike) -> SiameseEmbedder:
    """A trained :class:`SiameseEmbedder` from a model folder, a ``train-siamese`` run folder, or
    a privacy checker folder (its embedder: to rebuild an index with other settings)."""
    path = Path(path)
    if _is_checker_folder(path):
        return PrivacyChecker.from_pretrained(path).embedder.eval()
    for folder in (path, path / "siamese"):
        if (folder / "config.json").exists():
            return SiameseEmbedder.from_pretrained(folder).eval()
    raise FileNotFoundError(
        f"{path} holds no Siamese network (config.json + weights, or a run folder with siamese/): "
        "train one with `mammosynth train-siamese`"
    )


def build_privacy_checker(embedder: SiameseEmbedder, data: Any, split: str = "training",
                          calibration_split: str = "test", target: float = 0.01, num_neighbours: int = 3,
                          backend: str = "auto", sketch: Any = None, sketch_share: float = 0.3,
                          faiss_factory: str | None = None,
                          nprobe: int | None = None) -> tuple[PrivacyChecker, dict[str, Any]]:
    """Index a split, calibrate the threshold on another, and make the checker.

    With ``sketch`` (a :class:`~mammosynth.privacy.sketch.SketchConfig`) the checker also gets the
    copy detector (partial and re-shaped copies). The two detectors share the false-flag budget: the Siamese threshold is
    calibrated at ``target * (1 - sketch_share)`` and the sketch's two scores (whole-frame and local)
    at half of ``target * sketch_share`` each, so an unseen patient is flagged by any of them with
    probability at most ``target`` (union bound).

    Args:
        embedder: the trained Siamese network.
        data: a :class:`~mammosynth.data.prepared.PreparedData`.
        split: the split to index (the images the generator was trained on).
        calibration_split: unseen real patients for the threshold (must share no study with ``split``).
        target: false-flag rate allowed on unseen patients (both detectors together).
        num_neighbours: neighbours per verdict.
        backend: index search backend (kept by the checker).
        faiss_factory, nprobe: the faiss index to search with and its inverted lists per query (see
            :class:`~mammosynth.privacy.index.EmbeddingIndex`; kept by the checker).
        sketch: settings of the copy detector, or ``None`` for the Siamese gate alone.
        sketch_share: the sketch's share of ``target``.

    Returns:
        ``(checker, report)``; the report holds the calibration and the re-ID metrics of the
        embedder on the calibration split.
    """
    from .calibration import calibrate_threshold
    from .index import DEFAULT_NPROBE, EmbeddingIndex, build_index
    from .reid import evaluate_embeddings, relation_breakdown

    rows = data.split(split)
    held = data.split(calibration_split)
    if len(rows) == 0:
        raise ValueError(f"split {split!r} of {data.root} has no images to index")
    if len(held) == 0:
        raise ValueError(f"split {calibration_split!r} of {data.root} has no images to calibrate on")
    shared = set(rows["study_id"]) & set(held["study_id"])
    if shared:
        raise ValueError(
            f"{len(shared)} studies are in both {split!r} and {calibration_split!r}: the calibration "
            "images have to be patients the index does not contain"
        )
    nprobe = DEFAULT_NPROBE if nprobe is None else nprobe
    # the search settings are refused before hours of embedding, not after
    EmbeddingIndex(np.zeros((0, int(embedder.config.embedding_dim)), np.float32), [], [], "", (1, 1),
                   backend=backend, faiss_factory=faiss_factory, nprobe=nprobe)
    meta = {"data": str(data.root), "split": split, "data_meta_count": int(data.meta.get("count", len(data.manifest)))}
    index = build_index(embedder, data.frames(rows["index"].to_numpy()), rows["image_id"].tolist(),
                        rows["study_id"].tolist(), backend=backend, meta=meta, faiss_factory=faiss_factory,
                        nprobe=nprobe)
    held_frames = data.frames(held["index"].to_numpy())
    held_emb = embedder.embed_frames(held_frames)
    held_sim = index.max_similarity(held_emb)
    if sketch is not None and not 0.0 < sketch_share < 1.0:
        raise ValueError(f"sketch_share has to be between 0 and 1, got {sketch_share}")
    siamese_target = target * (1 - sketch_share) if sketch is not None else target
    source = f"{calibration_split} split of {data.root}"
    groups = held["study_id"].tolist()
    calibration = calibrate_threshold(held_sim, siamese_target, groups=groups, source=source)
    sketches, sketch_settings, held_copy = None, None, None
    if sketch is not None:
        from .sketch import block_sketches, sketch_frames, sketch_scores

        train_frames = data.frames(rows["index"].to_numpy())
        sketches = (sketch_frames(train_frames, sketch), block_sketches(train_frames, sketch))
        held_copy = sketch_scores(held_frames, torch.from_numpy(sketches[0]), torch.from_numpy(sketches[1]),
                                  index.search(held_emb, num_neighbours)[1], sketch)
        whole_calibration = calibrate_threshold(held_copy[:, 0], target * sketch_share / 2, groups=groups, source=source)
        local_calibration = calibrate_threshold(held_copy[:, 1], target * sketch_share / 2, groups=groups, source=source)
        sketch_settings = {**sketch.to_dict(), "threshold": float(whole_calibration.threshold),
                           "calibration": whole_calibration.to_dict(),
                           "local_threshold": float(local_calibration.threshold),
                           "local_calibration": local_calibration.to_dict()}
    checker = PrivacyChecker.from_index(embedder, index, calibration, num_neighbours=num_neighbours,
                                        sketches=sketches, sketch=sketch_settings)
    report = {
        "index": {"images": len(index), "studies": len(set(index.study_ids)), "split": split,
                  "image_size": list(index.image_size), "embedder_fingerprint": index.embedder_fingerprint,
                  **index.search_settings},
        "calibration": calibration.to_dict(),
        "siamese_verification": {"split": calibration_split,
                                 **evaluate_embeddings(held_emb, held["study_id"].tolist())},
        "embedder": {k: embedder.config[k] for k in ("input_size", "flip_invariant", "zoom_tta")},
    }
    if sketch is not None:
        union = checker.flags(held_sim, held_copy)
        report["sketch"] = {**sketch_settings, "unseen_flagged_by_either": float(union.mean()),
                            "unseen_images": int(len(union))}
    if {"laterality", "view"} <= set(held.columns):
        report["siamese_relations"] = relation_breakdown(held_emb, held["study_id"].tolist(),
                                                         held["laterality"].tolist(), held["view"].tolist())
    return checker, report
