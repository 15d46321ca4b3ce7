"""The whole evaluation of a synthetic set against real data: ``mammosynth evaluate``.

:func:`run_evaluation` measures fidelity, utility, condition adherence and realism
(DESIGN §10), merges the privacy audit if there is one, and writes the report with
:func:`mammosynth.evaluation.report.write_report`. Every part is optional (``parts``) so a
user can rerun one.

Fidelity numbers always come with a *real-vs-real floor*: the real test split is cut by
study into two disjoint halves A and B; the floor is metric(A, B) and the comparable
synthetic number is metric(A, synthetic subsample of |B| images). Metrics over the whole
test split vs the whole synthetic set are reported too.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..data.prepared import PreparedData, label_boxes, load_prepared
from .adherence import adherence_scores, compare_adherence
from .classifiers import Recipe, load_inputs, manifest_targets, predict
from .features import InceptionFeatures, describe_extractor, load_fidelity_encoder, train_fidelity_encoder
from .fidelity import fid, kid, prdc
from .realism import c2st_features, c2st_images
from .texture import compare_texture, write_pairs_figure
from .utility import run_utility

__all__ = ["EvaluationConfig", "run_evaluation", "PARTS", "split_by_study", "fidelity_block", "metric_value"]

logger = logging.getLogger(__name__)

#: The parts of an evaluation, in report order.
PARTS = ("fidelity", "utility", "adherence", "realism", "texture", "reconstruction")


@dataclass
class EvaluationConfig:
    """Settings of one evaluation run (all saved in ``metrics.json``).

    Attributes:
        test_split, train_split: real splits for testing and for training classifiers.
        synthetic_split: split of the synthetic set to use (``None`` = all rows).
        parts: which of :data:`PARTS` to run.
        recipe: the classifier recipe for utility and realism.
        seeds: utility training seeds.
        encoder: a fidelity-encoder folder or a checkpoint folder holding ``feature_extractor/``;
            ``None`` trains one on the real training split (saved in the output folder).
        inception_weights: a local TorchScript Inception file for the fidelity features.
        encoder_size, encoder_epochs: used only when the encoder is trained here.
        vae: the generator's VAE (a checkpoint folder, a train-vae run or a VAE folder) for the
            ``reconstruction`` part; ``None`` leaves that part out (noted in the metrics).
        reconstruction_images: real training images reconstructed (``None`` = as many as test images).
        kid_subset_size, prdc_k, n_bootstrap: metric settings.
        max_images: cap on images per set (random subset; ``None`` = all).
        privacy_report: a privacy-audit JSON to merge (``None`` looks beside the output).
        seed: subsampling and split seed.
    """

    test_split: str = "test"
    train_split: str = "training"
    synthetic_split: str | None = None
    parts: tuple[str, ...] = PARTS
    recipe: Recipe = field(default_factory=Recipe)
    seeds: tuple[int, ...] = (0, 1, 2)
    encoder: str | None = None
    inception_weights: str | None = None
    encoder_size: tuple[int, int] = (128, 96)
    encoder_epochs: int = 10
    vae: str | None = None
    reconstruction_images: int | None = None
    kid_subset_size: int = 1000
    prdc_k: int = 5
    n_bootstrap: int = 1000
    max_images: int | None = None
    privacy_report: str | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recipe"] = self.recipe.to_dict()
        return data



#: What the phantom generator writes as Manufacturer (0008,0070); ingestion keeps it in ``extra``.
PHANTOM_MANUFACTURER = "Phantom Imaging Systems"


def describe_source(data: Any) -> dict[str, Any]:
    """Where a prepared dataset came from: ``{"source": ..., "is_phantom": bool}``.

    ``source`` is the dataset's ``meta.json`` source (or the format it was ingested from, e.g.
    ``vindr``); ``is_phantom`` is true when the meta says so or the images carry the phantom
    generator's manufacturer, so reports never present phantom numbers as VinDr-Mammo ones.
    """
    meta = data.meta
    source = meta.get("source") or (f"{meta['source_format']} layout" if meta.get("source_format") else None)
    if not source and "source" in data.manifest:
        source = ",".join(sorted(set(data.manifest["source"].astype(str))))
    extra = data.manifest["extra"].astype(str) if "extra" in data.manifest else None
    phantom = bool(meta.get("phantom")) or "phantom" in str(source or "").lower() or (
        extra is not None and bool(extra.str.contains(PHANTOM_MANUFACTURER, regex=False).any()))
    return {"source": source or "unknown", "is_phantom": phantom}

def split_by_study(rows: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``rows`` in two study-disjoint halves of (about) equal image counts."""
    studies = rows["study_id"].to_numpy()
    unique = np.random.default_rng(seed).permutation(np.unique(studies))
    counts = {s: c for s, c in zip(*np.unique(studies, return_counts=True))}
    half, total, first = len(rows) / 2, 0, set()
    for study in unique:
        if total >= half:
            break
        first.add(study)
        total += counts[study]
    in_first = np.array([s in first for s in studies])
    return np.nonzero(in_first)[0], np.nonzero(~in_first)[0]


def fidelity_block(real: np.ndarray, fake: np.ndarray, kid_subset_size: int = 1000, prdc_k: int = 5,
                   seed: int = 0) -> dict[str, float]:
    """FID, KID, precision, recall, density, coverage and feature C2ST for one pair of sets."""
    block = {"fid": fid(real, fake), "kid": kid(real, fake, subset_size=kid_subset_size, seed=seed)}
    block.update(prdc(real, fake, k=prdc_k))
    block["c2st_features_auc"] = c2st_features(real, fake, seed=seed)
    block["n_real"], block["n_fake"] = int(len(real)), int(len(fake))
    return block


def _cap(rows: Any, limit: int | None, seed: int) -> Any:
    if limit is None or len(rows) <= limit:
        return rows
    return rows.iloc[np.sort(np.random.default_rng(seed).permutation(len(rows))[:limit])]


def _norm_boxes(data: PreparedData, rows: Any) -> list:
    boxes = []
    for _, row in rows.iterrows():
        found = label_boxes(row, data.height, data.width)
        boxes.append(found[0] if found else None)
    return boxes


def _privacy(config: EvaluationConfig, out_dir: Path) -> dict[str, Any] | None:
    candidates = [Path(config.privacy_report)] if config.privacy_report else [
        out_dir / "privacy.json", out_dir.parent / "privacy.json"]
    for path in candidates:
        if path.is_file():
            try:
                report = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                logger.warning("privacy report %s is not valid JSON (%s); left out", path, error)
                return {"path": str(path), "error": f"not valid JSON: {error}"}
            return {"path": str(path), "report": report}
    if config.privacy_report:
        raise FileNotFoundError(f"--privacy-report {config.privacy_report} does not exist")
    return None


@dataclass
class _Sets:
    """The real and synthetic datasets and the rows of each that an evaluation uses."""

    real: PreparedData
    synthetic: PreparedData | None
    test_rows: Any
    train_rows: Any
    synth_rows: Any
    _test_frames: np.ndarray | None = None
    _test_features: dict[int, np.ndarray] = field(default_factory=dict)
    _inception: Any = None

    def test_frames(self) -> np.ndarray:
        """The real test frames, read once for every part that needs them."""
        if self._test_frames is None:
            self._test_frames = self.real.frames(self.test_rows["index"].to_numpy())
        return self._test_frames

    def extractor(self, config: EvaluationConfig, encoder: Any) -> Any:
        """The FID feature extractor: the local Inception file's (loaded once) or the fidelity encoder."""
        if not config.inception_weights:
            return encoder
        if self._inception is None:
            self._inception = InceptionFeatures(config.inception_weights)
        return self._inception

    def test_features(self, extractor: Any) -> np.ndarray:
        """``extractor``'s features of the real test frames, embedded once per extractor."""
        if id(extractor) not in self._test_features:
            self._test_features[id(extractor)] = extractor.embed(self.test_frames())
        return self._test_features[id(extractor)]


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - started


def run_evaluation(real: str | Path | PreparedData, synthetic: str | Path | PreparedData | None, out_dir: str | Path,
                   config: EvaluationConfig | None = None) -> dict[str, Any]:
    """Evaluate a synthetic prepared set against a real one and write the report.

    Args:
        real: the real prepared dataset (with training and test splits).
        synthetic: the synthetic prepared dataset (labels = requested conditions); ``None`` when the
            only part is ``reconstruction`` (an autoencoder's ceiling needs no generated images).
        out_dir: report folder (``metrics.json``, PNG plots, ``summary.md``).
        config: settings (defaults: :class:`EvaluationConfig`).

    Returns:
        the metrics dict written to ``metrics.json``.
    """
    from .report import write_report

    config = config or EvaluationConfig()
    unknown = set(config.parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown evaluation part(s) {sorted(unknown)}; choose from {list(PARTS)}")
    if synthetic is None and set(config.parts) - {"reconstruction"}:
        raise ValueError(f"evaluation part(s) {sorted(set(config.parts) - {'reconstruction'})} need a synthetic set "
                         "(--synthetic); only --parts reconstruction runs without one")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = _load_sets(real, synthetic, config)
    timings: dict[str, float] = {}
    metrics: dict[str, Any] = {
        "real": {"path": str(sets.real.root), **describe_source(sets.real), "test_split": config.test_split,
                 "n_test": int(len(sets.test_rows)), "n_train": int(len(sets.train_rows))},
        "synthetic": None if sets.synthetic is None else {
            "path": str(sets.synthetic.root), "n": int(len(sets.synth_rows)),
            "checkpoint": sets.synthetic.meta.get("checkpoint"), "generation": sets.synthetic.meta.get("generation")},
        "config": config.to_dict(),
    }
    # 1. the feature extractor (ours, loaded or trained here; or a local Inception file)
    with _timed(timings, "feature_extractor"):
        encoder = _feature_encoder(config, sets, out_dir)
    # 2. fidelity with its real-vs-real floor
    if "fidelity" in config.parts:
        with _timed(timings, "fidelity"):
            metrics["fidelity"] = _fidelity(config, sets, encoder)
    # 3. utility: TRTR / TSTR / real + synthetic, tested on the same real test split
    if "utility" in config.parts or "realism" in config.parts:
        with _timed(timings, "load_inputs"):
            size = tuple(config.recipe.size)
            test_inputs = load_inputs(sets.real, sets.test_rows, size)
            synth_inputs = load_inputs(sets.synthetic, sets.synth_rows, size)
    if "utility" in config.parts:
        with _timed(timings, "utility"):
            metrics["utility"] = _utility(config, sets, test_inputs, synth_inputs)
    # 4. condition adherence with the encoder's real-trained heads
    if "adherence" in config.parts:
        with _timed(timings, "adherence"):
            metrics["adherence"] = _adherence(sets, encoder)
    # 5. realism: C2ST on pixels
    if "realism" in config.parts:
        with _timed(timings, "realism"):
            metrics["realism"] = {"c2st_images": c2st_images(test_inputs, synth_inputs, config.recipe,
                                                             seed=config.seed, n_bootstrap=config.n_bootstrap)}
    # 6. the visible tells: background, edge lines, texture spectrum, each beside its floor
    if "texture" in config.parts:
        with _timed(timings, "texture"):
            metrics["texture"] = _texture(config, sets)
    # 7. the autoencoder's ceiling: real training images through the VAE and back
    if "reconstruction" in config.parts:
        with _timed(timings, "reconstruction"):
            metrics["reconstruction"] = _reconstruction(config, sets, encoder, out_dir)
    privacy = _privacy(config, out_dir)
    if privacy is not None:
        metrics["privacy"] = privacy
    metrics["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    metrics["targets"] = check_targets(metrics)
    write_report(metrics, out_dir, real_data=sets.real, real_rows=sets.test_rows, synth_data=sets.synthetic,
                 synth_rows=sets.synth_rows)
    return metrics


def _load_sets(real: str | Path | PreparedData, synthetic: str | Path | PreparedData | None,
               config: EvaluationConfig) -> _Sets:
    """Both datasets and their rows (each capped at ``max_images``); at least 2 test and 2 synthetic."""
    real_data = real if isinstance(real, PreparedData) else load_prepared(real)
    synth_data = synthetic if isinstance(synthetic, PreparedData) or synthetic is None else load_prepared(synthetic)
    sets = _Sets(real_data, synth_data,
                 test_rows=_cap(real_data.split(config.test_split), config.max_images, config.seed),
                 train_rows=_cap(real_data.split(config.train_split), config.max_images, config.seed),
                 synth_rows=None if synth_data is None else _cap(synth_data.split(config.synthetic_split),
                                                                 config.max_images, config.seed))
    for name, rows in (("real test", sets.test_rows), ("synthetic", sets.synth_rows)):
        if rows is not None and len(rows) < 2:
            raise ValueError(f"the {name} set has {len(rows)} images; an evaluation needs at least 2 per set")
    return sets


def _feature_encoder(config: EvaluationConfig, sets: _Sets, out_dir: Path) -> Any:
    """The fidelity encoder when a part needs it: loaded from ``config.encoder`` or trained (and saved) here."""
    features = {"fidelity", "reconstruction"} & set(config.parts)
    needs_encoder = "adherence" in config.parts or (bool(features) and not config.inception_weights)
    if not needs_encoder:
        return None
    if config.encoder:
        return load_fidelity_encoder(config.encoder)
    logger.info("no --encoder given: training the fidelity encoder on %s split %r", sets.real.root, config.train_split)
    encoder = train_fidelity_encoder(sets.real, config.train_split, sample_size=config.encoder_size,
                                     epochs=config.encoder_epochs, seed=config.seed)
    encoder.save_pretrained(out_dir / "feature_extractor")
    return encoder


def _fidelity(config: EvaluationConfig, sets: _Sets, encoder: Any) -> dict[str, Any]:
    """Fidelity of the whole sets, and of study half A vs half B (the floor) and vs as many synthetic images."""
    extractor = sets.extractor(config, encoder)
    real_features = sets.test_features(extractor)
    synth_features = extractor.embed(sets.synthetic.frames(sets.synth_rows["index"].to_numpy()))
    half_a, half_b = split_by_study(sets.test_rows, config.seed)
    rng = np.random.default_rng(config.seed)
    subsample = rng.permutation(len(synth_features))[: len(half_b)]
    settings = dict(kid_subset_size=config.kid_subset_size, prdc_k=config.prdc_k, seed=config.seed)
    floor = fidelity_block(real_features[half_a], real_features[half_b], **settings)
    matched = fidelity_block(real_features[half_a], synth_features[subsample], **settings)
    return {
        "extractor": describe_extractor(extractor),
        "synthetic_vs_real": fidelity_block(real_features, synth_features, **settings),
        "real_vs_real_floor": floor,
        "synthetic_vs_real_at_floor_size": matched,
        "fid_over_floor": matched["fid"] / floor["fid"] if floor["fid"] > 0 else float("nan"),
        "kid_minus_floor": matched["kid"] - floor["kid"],
    }


def _texture(config: EvaluationConfig, sets: _Sets) -> dict[str, Any]:
    """Background, edge lines and band power: synthetic vs all real test images, and study half A vs
    half B of the test images (the floor)."""
    test = sets.test_frames()
    half_a, half_b = split_by_study(sets.test_rows, config.seed)
    return {"synthetic_vs_real": compare_texture(test, sets.synthetic.frames(sets.synth_rows["index"].to_numpy())),
            "real_vs_real_floor": compare_texture(test[half_a], test[half_b])}


def _reconstruction(config: EvaluationConfig, sets: _Sets, encoder: Any, out_dir: Path) -> dict[str, Any]:
    """What the VAE keeps: real training images and their reconstructions, each against the real
    test images (fidelity at the floor's size, pixel C2ST, texture). The training images
    themselves are the floor a reconstruction can reach. ``reconstructions.png`` in ``out_dir`` shows
    the first four: real | reconstructed at 1:1, then both ×3 around the breast's centre."""
    import torch
    from diffusers import AutoencoderKL

    from ..models.autoencoder import reconstruct, resolve_vae_folder
    from ..models.classifier import frames_to_input

    if config.vae is None:
        logger.warning("evaluation part 'reconstruction' left out: no VAE (pass --checkpoint or --vae)")
        return {"skipped": "no VAE given (--checkpoint or --vae)"}
    folder = resolve_vae_folder(config.vae)
    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).eval()
    rows = _cap(sets.train_rows, config.reconstruction_images or len(sets.test_rows), config.seed)
    originals = sets.real.frames(rows["index"].to_numpy())
    test = sets.test_frames()
    half_a, half_b = split_by_study(sets.test_rows, config.seed)
    subsample = np.random.default_rng(config.seed).permutation(len(rows))[: len(half_b)]
    extractor = sets.extractor(config, encoder)
    test_features = sets.test_features(extractor) if extractor is not None else None
    size = tuple(config.recipe.size)
    test_inputs = frames_to_input(test, size)
    settings = dict(kid_subset_size=config.kid_subset_size, prdc_k=config.prdc_k, seed=config.seed)

    def measure(frames: np.ndarray) -> dict[str, Any]:
        block: dict[str, Any] = {}
        if test_features is not None:
            block["fidelity_at_floor_size"] = fidelity_block(test_features[half_a],
                                                             extractor.embed(frames[subsample]), **settings)
        block["c2st_images"] = c2st_images(test_inputs, frames_to_input(frames, size), config.recipe,
                                           seed=config.seed, n_bootstrap=config.n_bootstrap)
        block["texture"] = compare_texture(test, frames)
        return block

    reconstructions = reconstruct(vae, originals)
    result = {"vae": str(folder), "n": int(len(rows)), "real_training": measure(originals),
              "reconstructions": measure(reconstructions),
              "figure": write_pairs_figure(originals[:4], reconstructions[:4], out_dir / "reconstructions.png").name}
    if test_features is not None:
        floor = fidelity_block(test_features[half_a], test_features[half_b], **settings)["fid"]
        result["real_vs_real_floor_fid"] = floor
        result["fid_over_floor"] = (result["reconstructions"]["fidelity_at_floor_size"]["fid"] / floor
                                    if floor > 0 else float("nan"))
    return result


def _utility(config: EvaluationConfig, sets: _Sets, test_inputs: Any, synth_inputs: Any) -> dict[str, Any]:
    train_inputs = load_inputs(sets.real, sets.train_rows, tuple(config.recipe.size))
    return run_utility(
        (train_inputs, manifest_targets(sets.train_rows)), (synth_inputs, manifest_targets(sets.synth_rows)),
        (test_inputs, manifest_targets(sets.test_rows)), config.recipe, seeds=config.seeds,
        n_bootstrap=config.n_bootstrap)


def _adherence(sets: _Sets, encoder: Any) -> dict[str, Any]:
    size = tuple(encoder.config.sample_size)
    scores = {}
    for key, data, rows in (("synthetic", sets.synthetic, sets.synth_rows), ("real", sets.real, sets.test_rows)):
        probs = predict(encoder.net, load_inputs(data, rows, size))
        scores[key] = adherence_scores(probs, manifest_targets(rows), _norm_boxes(data, rows))
    adherence = compare_adherence(scores["synthetic"], scores["real"])
    adherence["classifier"] = "fidelity encoder heads (trained on real data)"
    return adherence


def metric_value(data: Any, *keys: str) -> float | None:
    """``data[keys[0]][keys[1]]...`` as a float, or ``None`` where a key is missing or the value is no number."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, (int, float)) else None


def check_targets(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Each quality bar (issue 19's "this issue's bar" column) with the measured value, the bound and
    whether it is met; a bar whose part was not run is left out."""
    rows = []

    def add(name: str, value: float | None, bound: float | None, higher: bool) -> None:
        if value is None or bound is None or not np.isfinite(value) or not np.isfinite(bound):
            return
        met = value >= bound if higher else value <= bound
        rows.append({"target": name, "value": value, "bound": bound, "met": bool(met)})

    def times(factor: float, value: float | None) -> float | None:
        return None if value is None else factor * value

    def absolute(value: float | None) -> float | None:
        return None if value is None else abs(value)

    matched = ("fidelity", "synthetic_vs_real_at_floor_size")
    add("FID <= 2x real-vs-real floor", metric_value(metrics, *matched, "fid"),
        times(2, metric_value(metrics, "fidelity", "real_vs_real_floor", "fid")), higher=False)
    add("feature C2ST AUC <= 0.78", metric_value(metrics, *matched, "c2st_features_auc"), 0.78, higher=False)
    add("density >= 0.8", metric_value(metrics, *matched, "density"), 0.8, higher=True)
    add("coverage >= 0.85", metric_value(metrics, *matched, "coverage"), 0.85, higher=True)
    trtr = metric_value(metrics, "utility", "trtr", "cancer_auc", "auc")
    add("TSTR AUC >= 0.94 x TRTR AUC", metric_value(metrics, "utility", "tstr", "cancer_auc", "auc"), times(0.94, trtr),
        higher=True)
    add("real+synthetic AUC >= TRTR AUC", metric_value(metrics, "utility", "real_plus_synthetic", "cancer_auc", "auc"),
        trtr, higher=True)
    for task, share in (("density", 0.90), ("lesion", 0.95)):
        add(f"{task} adherence >= {share:.0%} of real", metric_value(metrics, "adherence", "synthetic", f"{task}_accuracy"),
            times(share, metric_value(metrics, "adherence", "real", f"{task}_accuracy")), higher=True)
    add("requested-box hit rate >= 0.8", metric_value(metrics, "adherence", "synthetic", "localisation", "hit_rate"), 0.8, higher=True)
    add("CNN C2ST AUC <= 0.90", metric_value(metrics, "realism", "c2st_images", "auc"), 0.90, higher=False)
    texture = ("texture", "synthetic_vs_real")
    for stat in ("mean", "std"):
        add(f"background {stat} within 1% of the range of real",
            absolute(metric_value(metrics, *texture, f"background_{stat}_diff")), 1.0, higher=False)
    add("band power within 10% of real per octave", metric_value(metrics, *texture, "band_power_max_deviation"), 0.10,
        higher=False)
    add("VAE reconstruction CNN C2ST AUC <= 0.70",
        metric_value(metrics, "reconstruction", "reconstructions", "c2st_images", "auc"), 0.70, higher=False)
    add("VAE reconstruction FID <= 1.5x floor", metric_value(metrics, "reconstruction", "fid_over_floor"), 1.5, higher=False)
    return rows
