"""Speed of the privacy gate and the privacy audit (DESIGN §9); prints the figures.

1. gate: embedding + nearest-neighbour search per generated image against a 4,000-image
   index (target ≤ 50 ms on 2 cores), batch 1 and batch 16;
2. search alone against 4k / 100k / 1M random unit embeddings: scikit-learn (the default
   backend), the exact torch matrix product (default), and faiss ``IndexFlatIP`` when installed — the
   1M figure is measured, not extrapolated;
3. full audit: 1,000 synthetic vs 4,000 training images (+ 800 test) at 256x192 with
   200 planted copies and membership inference (200 + 200 images) on a
   ``MammoLDMPipeline`` with the bundled VAE/UNet sizes (random weights: speed does not
   depend on them). Target ≤ 5 minutes on 2 cores.

Run::

    python benchmarks/bench_privacy.py                 # everything
    python benchmarks/bench_privacy.py --skip-audit    # gate and search only
    python benchmarks/bench_privacy.py --siamese runs/siamese   # time a trained network
    python benchmarks/bench_privacy.py --siamese runs/siamese --zoom-tta 0.9,1.1   # with zoom views
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timeit(fn, repeat: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _random_frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.normal(size=(n, h // 4, w // 4)), (0, 2, 2))
    frames = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2) + 0.1 * rng.normal(size=(n, h, w))
    return np.clip((frames - frames.min()) / np.ptp(frames) * 65535, 0, 65535).astype(np.uint16)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_gate(embedder, index_size: int = 4000, size=(256, 192)) -> dict:
    from mammosynth.privacy.calibration import calibrate_threshold
    from mammosynth.privacy.checker import PrivacyChecker
    from mammosynth.privacy.index import EmbeddingIndex

    dim = int(embedder.config.embedding_dim)
    index = EmbeddingIndex(_unit(index_size, dim, 0), [f"i{k}" for k in range(index_size)],
                           [f"s{k // 4}" for k in range(index_size)], embedder.fingerprint(), size)
    checker = PrivacyChecker.from_index(embedder, index, calibrate_threshold(np.linspace(0, 1, 1000)))
    frames = _random_frames(16, *size, seed=1)
    one = _timeit(lambda: checker.check(frames[:1]), repeat=20)
    batch = _timeit(lambda: checker.check(frames), repeat=3) / len(frames)
    emb = checker.embed(frames[:1])
    search = _timeit(lambda: checker.nearest(emb), repeat=50)
    return {"index_size": index_size, "per_image_batch1_ms": one * 1e3, "per_image_batch16_ms": batch * 1e3,
            "search_only_ms": search * 1e3}


def bench_search(dim: int = 128, sizes=(4_000, 100_000, 1_000_000)) -> list[dict]:
    from mammosynth.privacy.index import EmbeddingIndex, faiss_available

    rows = []
    q1, q16 = _unit(1, dim, 7), _unit(16, dim, 8)
    for n in sizes:
        emb = _unit(n, dim, n)
        row = {"n": n, "memory_mb": emb.nbytes / 2**20}
        index = EmbeddingIndex(emb, [str(k) for k in range(n)], [str(k) for k in range(n)], "x", (1, 1),
                               backend="sklearn")
        row["sklearn_ms_per_query"] = _timeit(lambda: index.search(q1, 3), repeat=5 if n < 10**6 else 2) * 1e3
        npi = EmbeddingIndex(emb, index.image_ids, index.study_ids, "x", (1, 1), backend="exact")
        row["exact_ms_per_query"] = _timeit(lambda: npi.search(q1, 3), repeat=5 if n < 10**6 else 3) * 1e3
        row["exact_ms_per_query_batch16"] = _timeit(lambda: npi.search(q16, 3), repeat=3, warmup=1) * 1e3 / 16
        if faiss_available():
            fi = EmbeddingIndex(emb, [str(k) for k in range(n)], [str(k) for k in range(n)], "x", (1, 1),
                                backend="faiss")
            row["faiss_flat_ms_per_query"] = _timeit(lambda: fi.search(q1, 3), repeat=5) * 1e3
            if n >= 100_000:
                row.update(bench_faiss_ivf(emb))
        rows.append(row)
        del emb, index
    return rows


def bench_faiss_ivf(emb: np.ndarray, nprobe: int = 16, queries: int = 200) -> dict:
    """Projection for very large indexes: faiss IVF (inverted lists, inner product).

    Queries are disguised copies of indexed embeddings (the vector plus noise, cosine ≈ 0.9),
    which is what the gate must find; recall@1 is against the exact nearest neighbour.
    """
    import faiss

    n, dim = emb.shape
    nlist = int(4 * np.sqrt(n))
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    ivf.train(emb[rng.choice(n, size=min(n, 40 * nlist), replace=False)])
    ivf.add(emb)
    build_s = time.perf_counter() - started
    ivf.nprobe = nprobe
    targets = rng.choice(n, size=queries, replace=False)
    q = emb[targets] + rng.normal(scale=0.04, size=(queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _, found = ivf.search(q, 1)
    exact = np.argmax(q @ emb.T, axis=1)
    per_query = _timeit(lambda: ivf.search(q[:1], 3), repeat=20) * 1e3
    return {"faiss_ivf_nlist": nlist, "faiss_ivf_nprobe": nprobe, "faiss_ivf_build_s": build_s,
            "faiss_ivf_ms_per_query": per_query, "faiss_ivf_recall_at_1": float(np.mean(found[:, 0] == exact)),
            "copy_cosine": float(np.mean(np.sum(q * emb[targets], axis=1)))}


def bench_audit(embedder, n_train: int = 4000, n_test: int = 800, n_synth: int = 1000, size=(256, 192),
                membership: int = 200) -> dict:
    from diffusers import DDIMScheduler

    from mammosynth.data.prepared import PreparedWriter, load_prepared
    from mammosynth.models.autoencoder import VAE_PRESETS, build_vae
    from mammosynth.models.conditioning import ConditionEncoder
    from mammosynth.models.unet import UNET_PRESETS, build_unet, time_embed_dim
    from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline
    from mammosynth.privacy.audit import AuditConfig, run_audit, write_report
    from mammosynth.privacy.checker import build_privacy_checker

    tmp = Path(tempfile.mkdtemp(prefix="bench_privacy_"))

    def write(root: Path, splits: list[tuple[str, int]], seed: int) -> Path:
        with PreparedWriter(root, *size) as writer:
            k = 0
            for split, n in splits:
                for start in range(0, n, 200):
                    frames = _random_frames(min(200, n - start), *size, seed=seed + k)
                    for frame in frames:
                        writer.add(frame, {"study_id": f"{seed:04d}{k // 4:028x}", "image_id": f"{seed:04d}{k:028x}",
                                           "split": split, "laterality": "L", "view": "CC", "birads": 1,
                                           "density": "C", "lesion": "none", "cancer": 0, "findings": "[]",
                                           "source": "bench", "extra": "{}"})
                        k += 1
            writer.finalize()
        return root

    t0 = time.perf_counter()
    data = load_prepared(write(tmp / "real", [("training", n_train), ("test", n_test)], 1))
    synthetic = load_prepared(write(tmp / "synth", [("synthetic", n_synth)], 2))
    prep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    checker, _ = build_privacy_checker(embedder, data)
    build_s = time.perf_counter() - t0
    torch.manual_seed(0)
    vae = build_vae(sample_size=size[0], **VAE_PRESETS["bundled"])
    unet = build_unet(sample_size=(size[0] // 8, size[1] // 8), **UNET_PRESETS["bundled"])
    pipe = MammoLDMPipeline(vae=vae, unet=unet, condition_encoder=ConditionEncoder(out_dim=time_embed_dim(unet)),
                            scheduler=DDIMScheduler(num_train_timesteps=1000), privacy_checker=checker)
    config = AuditConfig(planted_copies=200, mia_members=membership, mia_nonmembers=membership)
    t0 = time.perf_counter()
    report = run_audit(checker, data, synthetic, pipe if membership else None, config)
    write_report(report, tmp / "report" / "privacy.json")
    audit_s = time.perf_counter() - t0
    return {"training": n_train, "test": n_test, "synthetic": n_synth, "membership_images_per_group": membership,
            "write_datasets_s": prep_s, "build_index_s": build_s, "audit_s": audit_s,
            "audit_sections_s": {k: round(v, 1) for k, v in report["timings"].items()}, "folder": str(tmp)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--siamese", help="a trained Siamese folder (default: random weights, default size)")
    parser.add_argument("--zoom-tta", default=None, help="test-time zoom factors, as build-index --zoom-tta (e.g. 0.9,1.1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-audit", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--membership", type=int, default=200, help="images per group for the attacks (0 = skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mammosynth.models.siamese import SiameseEmbedder
    from mammosynth.privacy.checker import load_embedder
    from mammosynth.privacy.index import faiss_available

    embedder = load_embedder(args.siamese) if args.siamese else SiameseEmbedder().eval()
    if args.zoom_tta is not None:
        from mammosynth.commands.privacy import zoom_factors

        embedder.register_to_config(zoom_tta=zoom_factors(args.zoom_tta))
    print(f"torch threads {torch.get_num_threads()}; embedder {dict(embedder.config)}")
    result: dict = {"threads": torch.get_num_threads(), "faiss_installed": faiss_available()}
    result["gate"] = bench_gate(embedder)
    g = result["gate"]
    print(f"gate vs {g['index_size']} images: {g['per_image_batch1_ms']:.1f} ms/image (batch 1), "
          f"{g['per_image_batch16_ms']:.1f} ms/image (batch 16), search alone {g['search_only_ms']:.2f} ms "
          f"[target ≤ 50 ms]")
    if not args.skip_search:
        result["search"] = bench_search(int(embedder.config.embedding_dim))
        for row in result["search"]:
            print("search n={n:>9,}: sklearn {sklearn_ms_per_query:.2f} ms/query, exact {exact_ms_per_query:.2f} "
                  "ms/query ({exact_ms_per_query_batch16:.2f} in batches of 16), {memory_mb:.0f} MiB"
                  .format(**row) + (f", faiss flat {row['faiss_flat_ms_per_query']:.2f} ms" if "faiss_flat_ms_per_query" in row else "")
                  + (" , faiss IVF{faiss_ivf_nlist} nprobe {faiss_ivf_nprobe}: {faiss_ivf_ms_per_query:.2f} ms/query, "
                     "recall@1 {faiss_ivf_recall_at_1:.3f} for copies (cos {copy_cosine:.2f}), built in {faiss_ivf_build_s:.0f} s"
                     .format(**row) if "faiss_ivf_ms_per_query" in row else ""))
        if not faiss_available():
            print("faiss is not installed (pip install faiss-cpu): the 1M figures above are exact brute force")
    if not args.skip_audit:
        result["audit"] = bench_audit(embedder, membership=args.membership)
        a = result["audit"]
        print(f"audit {a['synthetic']} synthetic vs {a['training']} training (+{a['test']} test): "
              f"{a['audit_s'] / 60:.2f} min (sections {a['audit_sections_s']}); build-index {a['build_index_s']:.0f} s "
              f"[target ≤ 5 min]")
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
