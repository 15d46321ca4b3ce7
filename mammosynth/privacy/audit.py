"""The privacy audit of a synthetic set (``mammosynth privacy-audit``, DESIGN §9).

:func:`run_audit` measures, against the training set the model saw:

1. **the re-ID network itself** on held-out real studies (P@1, R-precision, mAP@R,
   verification AUC): privacy claims rest on it, so it is reported first;
2. **re-identification of the synthetic set**: each synthetic image's nearest-training
   similarity beside the same for unseen real patients (real test → train), the share
   above the gate's threshold, and — when synthetic rows name the training study whose
   conditions they were made from (the set's ``training_sources.csv``) —
   P@1 and mAP@R of synthetic queries against the training set;
3. **planted copies**: training images disguised with :mod:`~mammosynth.privacy.augment`
   and mixed into the synthetic set; the gate's recall on them (target ≥ 99 %), and its
   false-flag rate on the fresh synthetic images and on unseen real images;
4. **membership inference** (:mod:`~mammosynth.privacy.membership`), when a pipeline is given;
5. **pixel-space nearest-neighbour distances**, a model-free second view of copying.

The report is a JSON-serialisable dict; :func:`write_report` writes it with PNG plots.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import clopper_pearson
from .checker import PrivacyChecker
from .index import IndexMismatchError
from .membership import AttackConfig, plot_roc, run_membership, two_sample_auc
from .reid import evaluate_embeddings, retrieval_metrics

__all__ = ["AuditConfig", "EmptySyntheticSetError", "load_synthetic", "run_audit", "write_report", "pixel_nn_distances",
           "audit_summary"]

logger = logging.getLogger(__name__)

TARGETS = {"gate_recall_min": 0.99, "false_flag_unseen_real_max": 0.01, "siamese_map_at_r_min": 0.9,
           # the disguise battery (issue 20): every geometric / photometric family, and partial copies
           "family_recall_min": 0.99, "partial_recall_min": 0.95}


class EmptySyntheticSetError(ValueError):
    """The synthetic folder holds no images."""


@dataclass
class AuditConfig:
    """What the audit does.

    Attributes:
        planted_copies: disguised training images mixed into the synthetic set.
        membership: run the membership-inference attacks (needs a pipeline).
        mia_members, mia_nonmembers: images per group for the attacks (``None`` = all).
        attack: attack settings.
        mia_bootstrap: bootstrap resamples for the attack CIs.
        pixel_size: ``(h, w)`` the pixel-space comparison downsamples to.
        seed: seed of the copies and samples.
        battery_copies: disguised copies per family of the disguise battery
            (:mod:`~mammosynth.privacy.disguises`; 0 skips it).
        name_training_ids: list the training image nearest to each of the most similar synthetic
            images by id. Off by default: the report ships with the model card, and an id there
            says "this patient was in the training set".
    """

    planted_copies: int = 200
    membership: bool = True
    mia_members: int | None = 200
    mia_nonmembers: int | None = 200
    attack: AttackConfig = field(default_factory=AttackConfig)
    mia_bootstrap: int = 1000
    pixel_size: tuple[int, int] = (64, 48)
    seed: int = 0
    battery_copies: int = 100
    name_training_ids: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {}
    qs = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
    return {"mean": float(values.mean()), **{f"q{q:g}": float(np.quantile(values, q)) for q in qs}, "n": int(len(values))}


def _rate(flags: np.ndarray) -> dict[str, Any]:
    flags = np.asarray(flags, dtype=bool)
    low, high = clopper_pearson(int(flags.sum()), len(flags))
    return {"rate": float(flags.mean()) if len(flags) else float("nan"), "flagged": int(flags.sum()),
            "n": int(len(flags)), "ci95": [low, high]}


def _pixel_vectors(frames: np.ndarray, size: tuple[int, int], batch: int = 256) -> np.ndarray:
    """Downsampled frames as zero-mean unit-norm vectors (so L2 distance² = 2 − 2·correlation)."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(frames), batch):
        x = torch.from_numpy(np.asarray(frames[start : start + batch], dtype=np.float32)[:, None] / 65535.0)
        x = F.interpolate(x, size=size, mode="area").flatten(1)
        x = x - x.mean(1, keepdim=True)
        out.append(F.normalize(x, dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, size[0] * size[1]), np.float32)


def pixel_nn_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-reference L2 distance of each query vector and the reference position (exact)."""
    import torch

    dists = np.empty(len(queries), np.float32)
    where = np.empty(len(queries), np.int64)
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    for start in range(0, len(queries), chunk):  # torch matmul: follows torch.set_num_threads
        best = (torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32)) @ ref.T).max(1)
        where[start : start + chunk] = best.indices.numpy()
        dists[start : start + chunk] = np.sqrt(np.clip(2.0 - 2.0 * best.values.numpy(), 0, None))
    return dists, where


def _source_studies(synthetic: Any, train_rows: Any) -> list[str] | None:
    """The training study each synthetic row was conditioned on: from the set's
    ``training_sources.csv`` (``generate-set`` writes it), or from the rows' ``extra`` in sets
    made before it; ``None`` when some row has no known source."""
    from ..data.prepared import read_training_sources

    image_to_study = dict(zip(train_rows["image_id"], train_rows["study_id"]))
    sources = read_training_sources(synthetic.root) or {}
    out = []
    for image_id, extra in zip(synthetic.manifest["image_id"], synthetic.manifest["extra"]):
        if image_id in sources:
            study = sources[image_id][0] or image_to_study.get(sources[image_id][1])
        else:
            try:
                info = json.loads(extra) if extra else {}
            except ValueError:
                info = {}
            study = info.get("source_study_id") or image_to_study.get(info.get("source_image_id"))
        if study is None:
            return None
        out.append(str(study))
    return out


def load_synthetic(root: str | Path) -> Any:
    """Open a synthetic prepared dataset; :class:`EmptySyntheticSetError` if it holds no images."""
    from ..data.prepared import MANIFEST_FILE, load_prepared

    root = Path(root)
    manifest = root / MANIFEST_FILE
    if manifest.exists() and len(manifest.read_text().strip().splitlines()) <= 1:
        raise EmptySyntheticSetError(f"{root} holds no images: generate a set first (mammosynth generate-set)")
    return load_prepared(root)


def _check_inputs(checker: PrivacyChecker, data: Any, synthetic: Any) -> None:
    if synthetic is None or len(synthetic.manifest) == 0:
        where = getattr(synthetic, "root", "the synthetic set")
        raise EmptySyntheticSetError(f"{where} holds no images: generate a set first (mammosynth generate-set)")
    for name, d in (("--data", data), ("--synthetic", synthetic)):
        try:
            checker.check_image_size(d.height, d.width)
        except IndexMismatchError as error:
            raise IndexMismatchError(f"{name} {d.root}: {error}") from None
    train_ids = set(data.split("training")["image_id"])
    index_ids = set(checker.config.index_image_ids)
    if train_ids != index_ids:
        raise IndexMismatchError(
            f"the privacy checker's index covers {len(index_ids)} images, {len(index_ids & train_ids)} of "
            f"which are among the {len(train_ids)} training images of {data.root}: it was built from "
            "other data; rebuild it with `mammosynth build-index --data` on this dataset"
        )


@dataclass
class _AuditSets:
    """What the audit compares: training rows in index order, unseen real, synthetic, planted copies."""

    train_rows: Any
    test_rows: Any
    copy_rows: Any
    test_frames: np.ndarray
    synth_frames: np.ndarray
    copies: np.ndarray

    @property
    def n_copies(self) -> int:
        return len(self.copy_rows)


@dataclass
class _Neighbours:
    """Embeddings of each set and the similarity (and position) of its nearest training image."""

    test_emb: np.ndarray
    synth_emb: np.ndarray
    copy_emb: np.ndarray
    test_sim: np.ndarray
    synth_sim: np.ndarray
    synth_nn: np.ndarray
    copy_sim: np.ndarray
    copy_nn: np.ndarray
    # the copy detector's local sketch similarities (None for a checker without one)
    test_copy: np.ndarray | None = None
    synth_copy: np.ndarray | None = None
    copy_copy: np.ndarray | None = None


def run_audit(checker: PrivacyChecker, data: Any, synthetic: Any, pipe: Any = None,
              config: AuditConfig = AuditConfig()) -> dict[str, Any]:
    """Run the whole audit (see the module docstring) and return the report.

    Args:
        checker: the privacy checker whose index covers ``data``'s training split.
        data: the real prepared dataset (training and test splits).
        synthetic: the synthetic prepared dataset (same image size).
        pipe: the diffusion pipeline for membership inference (``None`` skips it).
        config: what to run.
    """
    _check_inputs(checker, data, synthetic)
    timings: dict[str, float] = {}
    # 1. embeddings of unseen real, synthetic and planted copies
    clock = time.perf_counter()
    sets = _audit_sets(checker, data, synthetic, config)
    test_emb, synth_emb = checker.embed(sets.test_frames), checker.embed(sets.synth_frames)
    copy_emb = checker.embed(sets.copies) if sets.n_copies else np.zeros((0, checker.index.dim), np.float32)
    timings["embedding_s"] = time.perf_counter() - clock
    # 2. nearest training neighbours
    clock = time.perf_counter()
    near = _nearest(checker.index, test_emb, synth_emb, copy_emb)
    if checker.has_sketch:
        def copy_scores(frames: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
            return checker.copy_similarity(frames, checker.nearest(embeddings)[1])

        near.test_copy = copy_scores(sets.test_frames, test_emb)
        near.synth_copy = copy_scores(sets.synth_frames, synth_emb)
        near.copy_copy = copy_scores(sets.copies, copy_emb) if sets.n_copies else np.zeros(0)
    timings["search_s"] = time.perf_counter() - clock
    # 3. re-identification, planted copies mixed into the synthetic set, false flags
    clock = time.perf_counter()
    report: dict[str, Any] = {
        "threshold": checker.threshold,
        "calibration": checker.config.calibration,
        "embedder_fingerprint": checker.config.embedder_fingerprint,
        "counts": {"training": len(sets.train_rows), "test": len(sets.test_rows), "synthetic": len(sets.synth_frames),
                   "planted_copies": sets.n_copies},
        "config": config.to_dict(),
        "siamese_verification": {"split": "test", **evaluate_embeddings(test_emb, sets.test_rows["study_id"].tolist())},
        "reid": _reid(checker, synthetic, sets, near, config.name_training_ids),
    }
    if sets.n_copies:
        report["planted_copies"] = _planted_copies(checker, sets, near)
    report["false_flags"] = _false_flags(checker, near)
    timings["reid_s"] = time.perf_counter() - clock
    if config.battery_copies:
        from .disguises import run_battery

        clock = time.perf_counter()
        report["disguise_battery"] = run_battery(checker, data, config.battery_copies, config.seed)
        timings["battery_s"] = time.perf_counter() - clock
    # 4. pixel-space nearest neighbours
    clock = time.perf_counter()
    report["pixel_nn"], pixel = _pixel_nn(data, sets, tuple(config.pixel_size))
    timings["pixel_s"] = time.perf_counter() - clock
    # 5. membership inference
    clock = time.perf_counter()
    if config.membership and pipe is not None:
        report["membership"] = run_membership(pipe, data, config.mia_members, config.mia_nonmembers, config.attack,
                                              n_bootstrap=config.mia_bootstrap, seed=config.seed)
    else:
        report["membership"] = {"skipped": "no pipeline given" if config.membership else "disabled"}
    timings["membership_s"] = time.perf_counter() - clock

    report["targets"] = _targets(report)
    report["timings"] = timings
    report["_arrays"] = {"test_sim": near.test_sim, "synth_sim": near.synth_sim, "copy_sim": near.copy_sim, **pixel}
    return report


def _audit_sets(checker: PrivacyChecker, data: Any, synthetic: Any, config: AuditConfig) -> _AuditSets:
    """The frames to audit and ``config.planted_copies`` augmented copies of random training images."""
    from .augment import augment_frames

    rng = np.random.default_rng(config.seed)
    train_rows = checker.index_rows(data)
    test_rows = data.split("test")
    test_frames = data.frames(test_rows["index"].to_numpy())
    synth_frames = synthetic.frames(synthetic.manifest["index"].to_numpy())
    n_copies = min(int(config.planted_copies), len(train_rows))
    copy_rows = train_rows.iloc[np.sort(rng.choice(len(train_rows), n_copies, replace=False))]
    copies = augment_frames(data.frames(copy_rows["index"].to_numpy()), seed=config.seed)
    return _AuditSets(train_rows, test_rows, copy_rows, test_frames, synth_frames, copies)


def _nearest(index: Any, test_emb: np.ndarray, synth_emb: np.ndarray, copy_emb: np.ndarray) -> _Neighbours:
    test_sim, _ = index.search(test_emb, 1)
    synth_sim, synth_nn = index.search(synth_emb, 1)
    copy_sim, copy_nn = index.search(copy_emb, 1) if len(copy_emb) else (np.zeros((0, 1)), np.zeros((0, 1), int))
    return _Neighbours(test_emb, synth_emb, copy_emb, test_sim[:, 0], synth_sim[:, 0], synth_nn, copy_sim[:, 0],
                       copy_nn)


def _reid(checker: PrivacyChecker, synthetic: Any, sets: _AuditSets, near: _Neighbours,
          name_training_ids: bool = False) -> dict[str, Any]:
    """How close synthetic images come to training images, against unseen real ones."""
    index = checker.index
    source = _source_studies(synthetic, sets.train_rows)
    if source is not None:
        synth_reid = retrieval_metrics(near.synth_emb, source, index.embeddings, sets.train_rows["study_id"].tolist())
    else:
        synth_reid = {"note": "the synthetic set names no source training study (no training_sources.csv); "
                              "mAP@R/P@1 are undefined, see the similarity distributions"}
    return {
        "synthetic_to_train_similarity": _quantiles(near.synth_sim),
        "real_test_to_train_similarity": _quantiles(near.test_sim),
        # P(synthetic similarity > unseen-real similarity): 0.5 = synthetic no closer than unseen real
        "synthetic_closer_than_real_auc": two_sample_auc(near.synth_sim, near.test_sim),
        "synthetic_flagged": _rate(checker.flags(near.synth_sim, near.synth_copy)),
        "synthetic_vs_train_retrieval": synth_reid,
        "most_similar_synthetic": [
            {"synthetic_id": str(synthetic.manifest["image_id"].iloc[k]), "similarity": float(near.synth_sim[k]),
             **({"training_id": index.image_ids[int(near.synth_nn[k, 0])]} if name_training_ids else {})}
            for k in np.argsort(-near.synth_sim)[:10]
        ],
    }


def _planted_copies(checker: PrivacyChecker, sets: _AuditSets, near: _Neighbours) -> dict[str, Any]:
    """Whether the gate flags disguised training copies and traces them to their source."""
    index = checker.index
    copy_flags = checker.flags(near.copy_sim, near.copy_copy)
    mixed_flags = np.r_[checker.flags(near.synth_sim, near.synth_copy), copy_flags]
    is_copy = np.r_[np.zeros(len(near.synth_sim), bool), np.ones(sets.n_copies, bool)]
    found = np.array([index.image_ids[int(j)] for j in near.copy_nn[:, 0]]) == sets.copy_rows["image_id"].to_numpy()
    return {
        "n": sets.n_copies,
        "gate_recall": _rate(copy_flags),
        "source_found_at_rank1": float(np.mean(found)),
        "copy_to_train_similarity": _quantiles(near.copy_sim),
        "copies_vs_train_retrieval": retrieval_metrics(near.copy_emb, sets.copy_rows["study_id"].tolist(),
                                                       index.embeddings, sets.train_rows["study_id"].tolist()),
        "mixed_set": {"n": int(len(mixed_flags)), "flagged": int(mixed_flags.sum()),
                      "flag_precision": float(is_copy[mixed_flags].mean()) if mixed_flags.any() else float("nan")},
    }


def _cv_rate(checker: PrivacyChecker) -> float | None:
    """The calibration's cross-validated false-flag rate (with a sketch: an upper bound, the
    detectors' rates added, since each was cross-validated on its own)."""
    rate = (checker.config.calibration or {}).get("cv_false_flag_rate")
    if rate is not None and checker.has_sketch:
        for key in ("calibration", "local_calibration"):
            rate += (checker.config.sketch.get(key) or {}).get("cv_false_flag_rate", 0.0)
    return rate


def _false_flags(checker: PrivacyChecker, near: _Neighbours) -> dict[str, Any]:
    return {
        "fresh_synthetic": _rate(checker.flags(near.synth_sim, near.synth_copy)),
        "unseen_real_test": _rate(checker.flags(near.test_sim, near.test_copy)),
        "unseen_real_cross_validated": _cv_rate(checker),
        "note": "the test split is also the calibration set, so its rate is in-sample (≤ target by "
                "construction); the cross-validated rate is the out-of-sample estimate",
    }


def _pixel_nn(data: Any, sets: _AuditSets, size: tuple[int, int]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Nearest training image in downsampled pixel space: the report section and the distances."""
    train_px = _pixel_vectors(data.frames(sets.train_rows["index"].to_numpy()), size)
    synth_d, _ = pixel_nn_distances(_pixel_vectors(sets.synth_frames, size), train_px)
    test_d, _ = pixel_nn_distances(_pixel_vectors(sets.test_frames, size), train_px)
    copy_d, _ = (pixel_nn_distances(_pixel_vectors(sets.copies, size), train_px) if sets.n_copies
                 else (np.zeros(0), None))
    real_q01 = float(np.quantile(test_d, 0.01)) if len(test_d) else float("nan")
    section = {
        "space": f"{size[0]}x{size[1]} area-downsampled, zero-mean unit-norm (distance² = 2 − 2·correlation)",
        "synthetic_to_train": _quantiles(synth_d),
        "real_test_to_train": _quantiles(test_d),
        "planted_copies_to_train": _quantiles(copy_d),
        "synthetic_below_real_q01": _rate(synth_d < real_q01) if len(test_d) else None,
    }
    return section, {"test_pixel": test_d, "synth_pixel": synth_d, "copy_pixel": copy_d}


def _targets(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "planted_copies" in report:
        recall = report["planted_copies"]["gate_recall"]["rate"]
        out["gate_recall"] = {"value": recall, "target": f">= {TARGETS['gate_recall_min']}",
                              "met": bool(recall >= TARGETS["gate_recall_min"])}
    ff = report["false_flags"]["unseen_real_cross_validated"]
    if ff is not None and ff == ff:
        out["false_flag_unseen_real"] = {"value": ff, "target": f"<= {TARGETS['false_flag_unseen_real_max']}",
                                         "met": bool(ff <= TARGETS["false_flag_unseen_real_max"])}
    for name, family in report.get("disguise_battery", {}).get("families", {}).items():
        key = "partial_recall_min" if family["kind"] == "partial" else "family_recall_min"
        recall = family["gate_recall"]["rate"]
        out[f"battery_{name}"] = {"value": recall, "target": f">= {TARGETS[key]}", "group": family["group"],
                                  "met": bool(recall >= TARGETS[key])}
    m = report["siamese_verification"].get("mean_average_precision_at_r")
    if m == m and m is not None:
        out["siamese_map_at_r"] = {"value": m, "target": f">= {TARGETS['siamese_map_at_r_min']}",
                                   "met": bool(m >= TARGETS["siamese_map_at_r_min"])}
    return out


def _plot_similarities(arrays: dict[str, np.ndarray], threshold: float, path: Path, pixel: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("test_pixel", "synth_pixel", "copy_pixel") if pixel else ("test_sim", "synth_sim", "copy_sim")
    labels = ("unseen real (test) → train", "synthetic → train", "planted copies → train")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = [arrays[k] for k in keys if len(arrays[k])]
    lo, hi = (min(v.min() for v in values), max(v.max() for v in values)) if values else (0, 1)
    bins = np.linspace(lo, hi + 1e-6, 60)
    for key, label in zip(keys, labels):
        if len(arrays[key]):
            ax.hist(arrays[key], bins=bins, alpha=0.5, density=True, label=f"{label} (n={len(arrays[key])})")
    if not pixel:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"gate threshold {threshold:.3f}")
    ax.set(xlabel="pixel-space NN distance (lower = closer)" if pixel else "cosine similarity to nearest training image",
           ylabel="density", title="pixel-space nearest neighbours" if pixel else "re-identification similarity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write the report JSON to ``out`` and its plots next to it; returns the files written."""
    from ..data.prepared import atomic_write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = report.get("_arrays", {})
    stem = out.with_suffix("")
    written = []
    plots: dict[str, str] = {}
    if arrays:
        path = Path(f"{stem}_similarity.png")
        _plot_similarities(arrays, report["threshold"], path)
        plots["similarity"] = path.name
        path = Path(f"{stem}_pixel_nn.png")
        _plot_similarities(arrays, report["threshold"], path, pixel=True)
        plots["pixel_nn"] = path.name
    if "attacks" in report.get("membership", {}):
        path = Path(f"{stem}_membership_roc.png")
        plot_roc(report["membership"], path)
        plots["membership_roc"] = path.name
    body = {k: v for k, v in report.items() if k != "_arrays"}
    body["plots"] = plots
    atomic_write_text(out, json.dumps(_finite(body), indent=2, default=_json_default, allow_nan=False))
    written.append(out)
    written.extend(out.parent / name for name in plots.values())
    return written


def _finite(value: Any) -> Any:
    """Replace nan/inf by None (strict JSON) in nested dicts and lists."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def audit_summary(report: dict) -> str:
    """The audit's headline numbers, one line each (printed by privacy-audit, quoted in model cards)."""
    lines = []
    ver = report["siamese_verification"]
    lines.append(f"Siamese re-ID on held-out studies: mAP@R {ver['mean_average_precision_at_r']:.4f}, "
                 f"P@1 {ver['precision_at_1']:.4f}, verification AUC {ver['verification_auc']:.4f}")
    reid = report["reid"]
    lines.append(f"nearest-training similarity: synthetic median {reid['synthetic_to_train_similarity']['q0.5']:.4f}, "
                 f"unseen real median {reid['real_test_to_train_similarity']['q0.5']:.4f}; "
                 f"synthetic flagged {reid['synthetic_flagged']['rate']:.2%} (threshold {report['threshold']:.4f})")
    retrieval = reid["synthetic_vs_train_retrieval"]
    if "mean_average_precision_at_r" in retrieval:
        lines.append(f"synthetic → train re-ID: mAP@R {retrieval['mean_average_precision_at_r']:.4f}, "
                     f"P@1 {retrieval['precision_at_1']:.4f}")
    if "planted_copies" in report:
        pc = report["planted_copies"]
        lines.append(f"planted copies: gate recall {pc['gate_recall']['rate']:.2%} of {pc['n']}; "
                     f"false flags: fresh synthetic {report['false_flags']['fresh_synthetic']['rate']:.2%}, "
                     f"unseen real {report['false_flags']['unseen_real_test']['rate']:.2%} "
                     f"(cross-validated {report['false_flags'].get('unseen_real_cross_validated', float('nan')):.2%})")
    battery = report.get("disguise_battery")
    if battery:
        for group in ("seen", "held_out"):
            if group in battery:
                g = battery[group]
                lines.append(f"disguise battery, families {'seen in' if group == 'seen' else 'held out from'} the "
                             f"Siamese training: gate recall {g['rate']:.2%} [{g['ci95'][0]:.2%}, {g['ci95'][1]:.2%}] "
                             f"of {g['n']}")
        weakest = battery["weakest"]
        lines.append(f"weakest family: {weakest} ({battery['families'][weakest]['gate_recall']['rate']:.2%})")
    positive = report.get("positive_control")
    if positive:
        mem, real = positive["memorising"], positive["real"]
        lines.append(f"positive control ({positive['member_images']} memorised images): flagged {mem['flagged_rate']:.0%} "
                     f"(real model {real['flagged_rate']:.0%}), re-ID mAP@R {mem['reid_map_at_r']:.3f} "
                     f"({real['reid_map_at_r']:.3f}), membership AUC {mem['membership_auc']:.3f} "
                     f"({real['membership_auc']:.3f}): {'caught' if positive['caught'] else 'NOT caught'}")
    for name, res in report.get("membership", {}).get("attacks", {}).items():
        main, control = res["members_vs_nonmembers"], res["control_nonmember_halves"]
        low, high = main["auc"]["ci95"]
        lines.append(f"membership ({name}): AUC {main['auc']['value']:.3f} [{low:.2f}, {high:.2f}], "
                     f"TPR@1%FPR {main['tpr_at_1pct_fpr']['value']:.3f}; control AUC {control['auc']['value']:.3f}")
    return "\n".join(lines)
