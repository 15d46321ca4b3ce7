"""The privacy index at scale (issue 24.3): faiss settings, recall of disguised copies vs exact search, ms/query.

Real embeddings: the training split of a prepared dataset (default ``data/prepared-256``) embedded by the
bundled checker's Siamese network (``load_privacy_checker(checkpoint).embed``, with its zoom views). Disguised
copies of ``--copies`` training images (``mammosynth.privacy.augment.augment_frames``: shift, flips,
contrast/gamma, blur, noise) are the queries. To reach ``--size`` rows the real embeddings are replicated with
noise in embedding space: replica = normalise(e + σ·z), σ chosen so that a replica's cosine similarity to its
source equals the median similarity of a real image to its nearest image of another study: every replica is
as close to its source as real neighbours are to each other, a crowded index (harder than random vectors).
The real rows stay in the index, so each copy's source is there.

For each setting: recall@1 = share of queries whose top-1 equals exact search's top-1 (``IndexFlatIP``);
copy recall = share whose top-1 is the copied image itself; ms per query (batch search over all queries on
``--threads`` threads); build seconds; bytes per vector.

Run::

    python benchmarks/bench_index_scale.py                      # 200,000 rows, one thread, a few minutes
    python benchmarks/bench_index_scale.py --size 1000000       # the 1 M-image index
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def real_embeddings(checkpoint: str, data_root: str, images: int, copies: int, seed: int):
    """``(embeddings (N, D), study ids (N,), queries (C, D), sources (C,))`` of the training split and its copies."""
    from mammosynth.data.prepared import load_prepared
    from mammosynth.privacy.augment import augment_frames
    from mammosynth.privacy.checker import load_privacy_checker

    checker = load_privacy_checker(checkpoint)
    data = load_prepared(data_root)
    rows = data.split("training")
    if images:
        rows = rows.iloc[:images]
    frames = data.frames(rows["index"].to_numpy())
    started = time.perf_counter()
    embeddings = checker.embed(frames)
    sources = np.random.default_rng(seed).choice(len(frames), size=min(copies, len(frames)), replace=False)
    queries = checker.embed(augment_frames(frames[sources], seed=seed))
    print(f"embedded {len(frames)} training images + {len(sources)} disguised copies of {data_root} with "
          f"{checkpoint}'s Siamese network in {time.perf_counter() - started:.0f} s", flush=True)
    return _normalise(embeddings), rows["study_id"].to_numpy(), _normalise(queries), sources


def more_real(checkpoint: str, data_root: str) -> tuple[np.ndarray, np.ndarray]:
    """Every image of another prepared dataset (other phantom patients), embedded as more real rows."""
    from mammosynth.data.prepared import load_prepared
    from mammosynth.privacy.checker import load_privacy_checker

    checker = load_privacy_checker(checkpoint)
    data = load_prepared(data_root)
    rows = data.manifest
    started = time.perf_counter()
    embeddings = np.concatenate([checker.embed(data.frames(rows["index"].to_numpy()[k : k + 2048]))
                                 for k in range(0, len(rows), 2048)])
    print(f"embedded {len(rows)} more real images of {data_root} in {time.perf_counter() - started:.0f} s", flush=True)
    return _normalise(embeddings), ("more:" + rows["study_id"].astype(str)).to_numpy()


def cached(path: str | None, key: str, make):
    """``make()``'s arrays, kept in ``path`` (an .npz) under ``key`` so a rerun skips the embedding."""
    if path and Path(path).is_file():
        stored = np.load(path, allow_pickle=False)
        if str(stored["key"]) == key:
            print(f"embeddings from {path}", flush=True)
            return tuple(stored[f"a{k}"] for k in range(len(stored.files) - 1))
    arrays = make()
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, key=key, **{f"a{k}": a.astype(str) if a.dtype == object else a for k, a in enumerate(arrays)})
    return arrays


def replicate(embeddings: np.ndarray, studies: np.ndarray, size: int, seed: int,
              calibration_rows: int | None = None) -> tuple[np.ndarray, float, float]:
    """``size`` rows: the real ones first, then noisy replicas; returns ``(rows, σ, target similarity)``.

    σ comes from the first ``calibration_rows`` rows (the training split: a bounded similarity matrix)."""
    calibration = embeddings[:calibration_rows]
    sims = calibration @ calibration.T
    studies = studies[:calibration_rows]
    sims[studies[:, None] == studies[None, :]] = -np.inf   # nearest image of another study
    target = float(np.median(sims.max(axis=1)))
    d = embeddings.shape[1]
    sigma = math.sqrt(max(1 / target**2 - 1, 1e-8) / d)
    rng = np.random.default_rng(seed)
    out = np.empty((max(size, len(embeddings)), d), np.float32)
    out[: len(embeddings)] = embeddings
    for start in range(len(embeddings), len(out), len(embeddings)):
        n = min(len(embeddings), len(out) - start)
        out[start : start + n] = _normalise(embeddings[:n] + sigma * rng.standard_normal((n, d), dtype=np.float32))
    return out, sigma, target


def settings(size: int) -> list[tuple[str, str, dict]]:
    """``(label, faiss factory string, search parameters)``; ``nlist`` is the gate's own choice at this size."""
    from mammosynth.privacy.index import default_faiss_factory

    ivf = default_faiss_factory(max(size, 100_000))      # "IVF{nlist},Flat"
    nlist = int(ivf.split(",")[0][3:])
    rows = [("exact (Flat)", "Flat", {})]
    rows += [(f"HNSW32 efSearch {ef}", "HNSW32", {"efSearch": ef}) for ef in (16, 64, 256)]
    rows += [(f"IVF{nlist},Flat nprobe {p}", f"IVF{nlist},Flat", {"nprobe": p}) for p in (4, 16, 64)]
    rows += [(f"IVF{nlist},PQ32 nprobe {p}", f"IVF{nlist},PQ32", {"nprobe": p}) for p in (16, 64)]
    rows += [(f"IVF{nlist},PQ32 nprobe 16 + exact re-rank of 32", f"IVF{nlist},PQ32,RFlat", {"nprobe": 16, "k_factor": 32})]
    return rows


def build(factory: str, rows: np.ndarray, seed: int):
    import faiss

    index = faiss.index_factory(rows.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        sample = np.random.default_rng(seed).choice(len(rows), size=min(len(rows), 100_000), replace=False)
        index.train(rows[np.sort(sample)])
    index.add(rows)
    return index


def search(index, queries: np.ndarray, params: dict, k: int = 1):
    import faiss

    if "efSearch" in params:
        faiss.downcast_index(index).hnsw.efSearch = params["efSearch"]
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]
    if "k_factor" in params:
        faiss.downcast_index(index).k_factor = params["k_factor"]
    index.search(queries[:8], k)   # warm-up
    started = time.perf_counter()
    sims, ids = index.search(queries, k)
    return sims, ids, (time.perf_counter() - started) * 1e3 / len(queries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/mammosynth-phantom-256")
    parser.add_argument("--data", default="data/prepared-256")
    parser.add_argument("--size", type=int, default=200_000, help="index rows (default 200,000; 1000000 for 1 M)")
    parser.add_argument("--copies", type=int, default=500, help="disguised copies = queries (default 500)")
    parser.add_argument("--images", type=int, default=0, help="training images embedded (0 = all)")
    parser.add_argument("--more-real", default=None, metavar="PREPARED",
                        help="a prepared dataset of other phantom patients whose every image is embedded and indexed as "
                             "more real rows (never queried), before any replica")
    parser.add_argument("--cache", default=None, metavar="NPZ", help="keep the embeddings here; a rerun reuses them")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import faiss
    except ImportError:
        print("faiss is not installed: pip install faiss-cpu (requirements.txt pins it)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    key = f"{args.checkpoint}|{args.data}|{args.images}|{args.copies}|{args.seed}|{args.more_real}"

    def embed_all():
        found = real_embeddings(args.checkpoint, args.data, args.images, args.copies, args.seed)
        if args.more_real:
            extra, extra_studies = more_real(args.checkpoint, args.more_real)
            found = (np.concatenate([found[0], extra]), np.concatenate([found[1].astype(str), extra_studies]),
                     *found[2:])
        return found

    embeddings, studies, queries, sources = cached(args.cache, key, embed_all)
    training = len(embeddings) if not args.more_real else int(np.sum(~np.char.startswith(studies.astype(str), "more:")))
    rows, sigma, target = replicate(embeddings, studies, args.size, args.seed, calibration_rows=training)
    print(f"index of {len(rows):,} x {rows.shape[1]} rows: {min(len(embeddings), len(rows)):,} real "
          f"({training:,} training images + {len(embeddings) - training:,} of other patients) + replicas at σ = {sigma:.4f} "
          f"(cosine {target:.4f} to their source = the median nearest-other-study similarity); "
          f"{len(queries)} disguised-copy queries; {args.threads} thread(s)", flush=True)
    exact_ids = None
    print("| setting | recall@1 vs exact | copy recall@1 | ms / query | build s | bytes / vector |")
    print("|---|---|---|---|---|---|")
    index, built_factory, built = None, None, 0.0
    for label, factory, params in settings(len(rows)):
        if factory != built_factory:   # one build per index type, then each search setting on it
            index = None
            started = time.perf_counter()
            index, built_factory = build(factory, rows, args.seed), factory
            built = time.perf_counter() - started
        _, ids, ms = search(index, queries, params)
        if exact_ids is None:
            exact_ids = ids[:, 0]
        recall = float(np.mean(ids[:, 0] == exact_ids))
        copy = float(np.mean(ids[:, 0] == sources))
        per_vector = faiss.serialize_index(index).nbytes / len(rows) if hasattr(faiss, "serialize_index") else float("nan")
        print(f"| {label} | {recall:.3f} | {copy:.3f} | {ms:.3f} | {built:.1f} | {per_vector:.0f} |", flush=True)
    index = None
    # the gate's own path: EmbeddingIndex with backend "auto" at this size, as build-index makes it
    from mammosynth.privacy.index import EmbeddingIndex

    ids = [str(k) for k in range(len(rows))]
    gate = EmbeddingIndex(rows, ids, ids, "bench", (1, 1))
    started = time.perf_counter()
    gate.search(queries[:1])
    built = time.perf_counter() - started
    started = time.perf_counter()
    top = gate.search(queries)[1][:, 0]
    ms = (time.perf_counter() - started) * 1e3 / len(queries)
    label = "EmbeddingIndex auto: " + ", ".join(f"{k} {v}" for k, v in gate.search_settings.items())
    print(f"| {label} | {np.mean(top == exact_ids):.3f} | {np.mean(top == sources):.3f} | {ms:.3f} | {built:.1f} | — |",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
