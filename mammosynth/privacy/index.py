"""The embedding index over a training split (DESIGN §9).

An :class:`EmbeddingIndex` holds the unit-length Siamese embeddings of every training image
with the ids they cover (``image_ids``, ``study_ids``) and where they came from (the
embedder's fingerprint and the image size), so an index can never be used with another
network or another resolution by mistake.

Search is exact cosine similarity (the rows are unit length, so cosine = inner product).
Backends: ``"exact"`` (one torch matrix product + ``topk``), ``"sklearn"``
(``NearestNeighbors(metric="cosine", algorithm="brute")``, same results) and ``"faiss"``
(any faiss index: ``faiss_factory`` is a faiss factory string, ``"Flat"`` = exact ``IndexFlatIP``,
``"IVF4096,Flat"`` = inverted lists searched ``nprobe`` at a time, ``"HNSW32"``, ``"IVF4096,PQ32,RFlat"``;
optional package ``faiss-cpu``). ``"auto"`` (the default) uses faiss when it is installed and the
index holds at least :data:`FAISS_MIN_SIZE` rows, with :func:`default_faiss_factory` (``IVF{4√N},Flat``
at ``nprobe`` 64, which returned exact search's top-1 for every disguised-copy query in a 1,000,000-row
index holding 43,172 real phantom embeddings, where nprobe 16 missed 1.2 % of them;
``benchmarks/bench_index_scale.py``), else ``"exact"``: on a
busy 2-core machine scikit-learn's brute-force search costs ~25 ms per query against 4,000 rows where
the plain matrix product costs ~0.2 ms (``benchmarks/bench_privacy.py``).

On disk (:meth:`EmbeddingIndex.save`): ``index.json`` (ids + provenance) and
``embeddings.npy`` (float32 ``(N, D)``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["FAISS_MIN_SIZE", "DEFAULT_NPROBE", "IndexMismatchError", "EmbeddingIndex", "build_index",
           "check_faiss_factory", "default_faiss_factory", "faiss_available", "make_faiss_index"]

#: With ``backend="auto"``, faiss is used from this many rows on (when installed).
FAISS_MIN_SIZE = 100_000
#: Inverted lists an IVF index searches per query unless told otherwise.
DEFAULT_NPROBE = 64
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"


class IndexMismatchError(ValueError):
    """An index does not belong to the network or the images it is used with."""


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package (``pip install faiss-cpu``) is importable."""
    return importlib.util.find_spec("faiss") is not None


def default_faiss_factory(rows: int) -> str:
    """The faiss index for ``rows`` vectors: exact ``"Flat"`` below :data:`FAISS_MIN_SIZE`, else
    ``"IVF{nlist},Flat"`` with ``nlist`` the power of two nearest 4·√rows (4096 at a million)."""
    if rows < FAISS_MIN_SIZE:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(rows)))
    return f"IVF{nlist},Flat"


def check_faiss_factory(factory: str, dim: int) -> None:
    """Raise ``ValueError`` naming ``factory`` unless faiss can make an index of ``dim``-vectors from it."""
    import faiss

    try:
        faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1].rsplit(": ", 1)[-1]
        raise ValueError(f"faiss_factory {factory!r} is not a faiss factory string for {dim}-number embeddings "
                         f"(e.g. 'Flat', 'IVF4096,Flat', 'HNSW32', 'IVF4096,PQ32,RFlat'): {reason}") from None


def make_faiss_index(factory: str, embeddings: np.ndarray, nprobe: int = DEFAULT_NPROBE, seed: int = 0) -> Any:
    """A faiss inner-product index of ``embeddings`` built from a factory string.

    Indexes that need training (IVF, PQ) are trained on at most 100,000 rows drawn with ``seed``
    (k-means is seeded too, so the same rows give the same index).

    Raises:
        ValueError: faiss does not understand ``factory``, or the index needs more rows to train.
    """
    import faiss

    dim = int(embeddings.shape[1])
    check_faiss_factory(factory, dim)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and len(embeddings) < ivf.nlist:
            raise ValueError(f"faiss_factory {factory!r} has {ivf.nlist} inverted lists but the index holds only "
                             f"{len(embeddings)} rows: use fewer lists or 'Flat'")
        if ivf is not None:
            ivf.cp.seed = seed
        rows = np.random.default_rng(seed).choice(len(embeddings), size=min(len(embeddings), 100_000), replace=False)
        index.train(embeddings[np.sort(rows)])
    index.add(embeddings)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)
    return index


@dataclass
class EmbeddingIndex:
    """Unit-length embeddings with the ids they cover and their provenance.

    Attributes:
        embeddings: float32 ``(N, D)``, rows of L2 norm 1.
        image_ids, study_ids: one per row.
        embedder_fingerprint: :meth:`SiameseEmbedder.fingerprint` of the network that made them.
        image_size: ``(height, width)`` of the frames that were embedded.
        backend: ``"exact"``, ``"sklearn"``, ``"faiss"`` or ``"auto"``.
        meta: free provenance (data folder, split, ...).
        faiss_factory: the faiss index to search with (a factory string); ``None`` =
            :func:`default_faiss_factory` of the row count. Only with backend ``"faiss"`` or ``"auto"``.
        nprobe: inverted lists searched per query by an IVF index (more = closer to exact, slower).
    """

    embeddings: np.ndarray
    image_ids: list[str]
    study_ids: list[str]
    embedder_fingerprint: str
    image_size: tuple[int, int]
    backend: str = "auto"
    meta: dict[str, Any] = field(default_factory=dict)
    faiss_factory: str | None = None
    nprobe: int = DEFAULT_NPROBE

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        self.image_ids = [str(i) for i in self.image_ids]
        self.study_ids = [str(s) for s in self.study_ids]
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        n = len(self.embeddings)
        if self.embeddings.ndim != 2 or len(self.image_ids) != n or len(self.study_ids) != n:
            raise ValueError(
                f"an index needs (N, D) embeddings with N image ids and N study ids; got "
                f"{self.embeddings.shape}, {len(self.image_ids)} and {len(self.study_ids)}"
            )
        if self.backend not in ("auto", "exact", "sklearn", "faiss"):
            raise ValueError(f"backend has to be 'auto', 'exact', 'sklearn' or 'faiss', not {self.backend!r}")
        if self.backend == "faiss" and not faiss_available():
            raise ValueError("backend 'faiss' needs the faiss package: pip install faiss-cpu")
        if self.faiss_factory is not None:
            if self.backend not in ("auto", "faiss"):
                raise ValueError(f"faiss_factory {self.faiss_factory!r} needs backend 'faiss' or 'auto', "
                                 f"not {self.backend!r}")
            if not isinstance(self.faiss_factory, str) or not self.faiss_factory.strip():
                raise ValueError(f"faiss_factory has to be a faiss factory string such as 'IVF4096,Flat', "
                                 f"not {self.faiss_factory!r}")
            if faiss_available():
                check_faiss_factory(self.faiss_factory, self.dim)
        if isinstance(self.nprobe, bool) or not isinstance(self.nprobe, (int, np.integer)) or self.nprobe < 1:
            raise ValueError(f"nprobe has to be a whole number ≥ 1, not {self.nprobe!r}")
        self.nprobe = int(self.nprobe)
        self._searcher: Any = None

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def active_backend(self) -> str:
        """The backend a search uses now."""
        if self.backend == "auto":
            return "faiss" if len(self) >= FAISS_MIN_SIZE and faiss_available() else "exact"
        return self.backend

    @property
    def active_factory(self) -> str | None:
        """The faiss factory string a search uses now (``None`` when the backend is not faiss)."""
        if self.active_backend != "faiss":
            return None
        return self.faiss_factory or default_faiss_factory(len(self))

    @property
    def search_settings(self) -> dict[str, Any]:
        """What decides how the index is searched: backend, faiss factory and nprobe."""
        settings: dict[str, Any] = {"backend": self.active_backend}
        if self.active_backend == "faiss":
            settings["faiss_factory"] = self.active_factory
            if "IVF" in self.active_factory:
                settings["nprobe"] = self.nprobe
        return settings

    def _build_searcher(self) -> Any:
        if self.active_backend == "faiss":
            return make_faiss_index(self.active_factory, self.embeddings, nprobe=self.nprobe)
        if self.active_backend == "exact":
            return self.embeddings
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(metric="cosine", algorithm="brute").fit(self.embeddings)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar rows of each query.

        Args:
            queries: float ``(M, D)`` embeddings (unit length).
            k: neighbours per query (at most ``len(self)``).

        Returns:
            ``(similarities, indices)``, both ``(M, k)``, most similar first; similarity is
            the cosine similarity in [-1, 1].
        """
        if len(self) == 0:
            raise ValueError("the index is empty: build it from a split that has images")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries have to be (M, {self.dim}) embeddings but are {queries.shape}")
        k = int(min(max(k, 1), len(self)))
        if self._searcher is None:
            self._searcher = self._build_searcher()
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self.active_backend == "faiss":
            sims, idx = self._searcher.search(queries, k)
            return sims.astype(np.float32), idx.astype(np.int64)
        if self.active_backend == "exact":
            return _exact_search(self.embeddings, queries, k)
        dist, idx = self._searcher.kneighbors(queries, n_neighbors=k)
        return (1.0 - dist).astype(np.float32), idx.astype(np.int64)

    def max_similarity(self, queries: np.ndarray) -> np.ndarray:
        """Similarity of each query to its nearest index row, ``(M,)``."""
        return self.search(queries, 1)[0][:, 0]

    def check_compatible(self, embedder_fingerprint: str, image_size: Sequence[int]) -> None:
        """Raise :class:`IndexMismatchError` unless the index was made by this network at this size."""
        if embedder_fingerprint != self.embedder_fingerprint:
            raise IndexMismatchError(
                f"the index was built with the Siamese network {self.embedder_fingerprint}, not with "
                f"the one given ({embedder_fingerprint}): rebuild it with `mammosynth build-index`"
            )
        if tuple(int(s) for s in image_size) != self.image_size:
            raise IndexMismatchError(
                f"the index was built from {self.image_size[0]}x{self.image_size[1]} images, not "
                f"{image_size[0]}x{image_size[1]}: rebuild it from data at that resolution"
            )

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``index.json`` and ``embeddings.npy`` into ``folder``."""
        from ..data.prepared import atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / EMBEDDINGS_FILE, self.embeddings)
        info = {
            "image_ids": self.image_ids,
            "study_ids": self.study_ids,
            "embedder_fingerprint": self.embedder_fingerprint,
            "image_size": list(self.image_size),
            "backend": self.backend,
            "faiss_factory": self.faiss_factory,
            "nprobe": self.nprobe,
            "meta": self.meta,
        }
        atomic_write_text(folder / INDEX_FILE, json.dumps(info, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> EmbeddingIndex:
        """Read an index written by :meth:`save`."""
        folder = Path(folder)
        for name in (INDEX_FILE, EMBEDDINGS_FILE):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{folder} has no {name}: it is not an embedding index")
        info = json.loads((folder / INDEX_FILE).read_text())
        return cls(embeddings=np.load(folder / EMBEDDINGS_FILE), image_ids=info["image_ids"],
                   study_ids=info["study_ids"], embedder_fingerprint=info["embedder_fingerprint"],
                   image_size=tuple(info["image_size"]), backend=info.get("backend", "auto"),
                   meta=info.get("meta", {}), faiss_factory=info.get("faiss_factory"),
                   nprobe=info.get("nprobe", DEFAULT_NPROBE))


def _exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int, chunk: int = 1024):
    """Exact top-``k`` inner products (torch matmul + topk, in query chunks: bounded memory).

    torch rather than numpy: it follows ``torch.set_num_threads``, while numpy's BLAS threads
    stall badly on a busy 2-core machine (12 ms instead of 0.2 ms per query at 4,000 rows).
    """
    import torch

    reference = torch.from_numpy(embeddings)
    q = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(queries)), dim=1)
    sims_out = np.empty((len(queries), k), np.float32)
    idx_out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        top = torch.topk(q[start : start + chunk] @ reference.T, k, dim=1)
        sims_out[start : start + chunk] = top.values.float().numpy()
        idx_out[start : start + chunk] = top.indices.numpy()
    return sims_out, idx_out


def build_index(embedder: Any, frames: np.ndarray, image_ids: Sequence[str], study_ids: Sequence[str],
                backend: str = "auto", batch_size: int = 64, meta: dict[str, Any] | None = None,
                faiss_factory: str | None = None, nprobe: int = DEFAULT_NPROBE) -> EmbeddingIndex:
    """Embed uint16 frames ``(N, H, W)`` with a :class:`SiameseEmbedder` into an index."""
    if len(frames) == 0:
        raise ValueError("no images to index: the split is empty")
    embeddings = embedder.embed_frames(frames, batch_size=batch_size)
    return EmbeddingIndex(embeddings=embeddings, image_ids=list(image_ids), study_ids=list(study_ids),
                          embedder_fingerprint=embedder.fingerprint(), image_size=tuple(frames.shape[1:]),
                          backend=backend, meta=dict(meta or {}), faiss_factory=faiss_factory, nprobe=nprobe)
