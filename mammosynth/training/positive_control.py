"""The audit's positive control: a generator made to memorise, which the audit must catch (issue 20).

A "low risk" verdict means something only if the same audit says "high risk" to a model that
does copy. :func:`run_positive_control` makes such a model on purpose and measures it beside
the real one, on the same images and with the same gate:

1. a **member set**: ``images`` training images (whole studies, seeded) and ``test_images``
   unseen test images, written as a small prepared dataset;
2. the **memoriser**: the checkpoint's own denoiser fine-tuned on the member set alone, with no
   condition dropout and no EMA, for ``steps`` steps at a constant learning rate (``train-ldm
   --init_pipeline``): the same recipe, pushed to overfit;
3. samples of both models with the members' conditions (ungated: the gate is what is measured);
4. for both models: the share the checkpoint's gate flags, re-identification of the samples'
   source studies against the whole training index (mAP@R, P@1), and the membership attacks
   (members = the member set, non-members = the unseen images).

The control is **caught** when the memoriser's samples are flagged far more often than the real
model's, its re-ID mAP@R is far above the real model's, and its membership AUC is far above 0.5
(:data:`CAUGHT_WHEN`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..privacy.membership import AttackConfig

__all__ = ["ControlConfig", "CAUGHT_WHEN", "member_subset", "run_positive_control"]

logger = logging.getLogger(__name__)

#: What "caught" means: the memoriser's figures against the real model's.
CAUGHT_WHEN = {"flagged_rate_min": 0.5, "flagged_rate_over_real_min": 5.0, "map_at_r_over_real_min": 5.0,
               "membership_auc_min": 0.75}


@dataclass
class ControlConfig:
    """How the positive control is made.

    Attributes:
        images: training images in the member set (rounded to whole studies).
        test_images: unseen test images (the membership attacks' non-members).
        steps, learning_rate, batch_size: the memoriser's fine-tune.
        sample_steps, guidance: sampling of both models.
        attack: the membership attacks' settings.
        bootstrap: resamples for the attacks' CIs.
        seed: choice of images, training, sampling.
        num_threads: torch threads of the fine-tune.
    """

    images: int = 32
    test_images: int = 64
    steps: int = 600
    learning_rate: float = 2e-4
    batch_size: int = 8
    sample_steps: int = 20
    guidance: float = 3.0
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(timesteps=(50, 100, 200), noise_draws=2))
    bootstrap: int = 500
    seed: int = 0
    num_threads: int | None = None


def member_subset(data: Any, out: Path, images: int, test_images: int, seed: int = 0) -> Any:
    """A prepared dataset of whole training studies (about ``images`` images) and ``test_images`` test images."""
    from ..data.prepared import PreparedWriter, load_prepared

    rng = np.random.default_rng(seed)
    train, test = data.split("training"), data.split("test")
    if len(train) == 0 or len(test) < 2:
        raise ValueError(f"{data.root} needs a training split and at least 2 test images for the positive control")
    studies = list(dict.fromkeys(train["study_id"]))
    chosen, rows = set(), []
    for study in rng.permutation(studies):
        if len(rows) >= images:
            break
        chosen.add(study)
        rows.extend(train.index[train["study_id"] == study])
    members = train.loc[rows]
    unseen = test.iloc[np.sort(rng.choice(len(test), min(test_images, len(test)), replace=False))]
    out = Path(out)
    if (out / "manifest.csv").is_file():
        return load_prepared(out)
    with PreparedWriter(out, data.height, data.width, meta={"source": f"positive-control subset of {data.root}"}) as writer:
        for part in (members, unseen):
            frames = data.frames(part["index"].to_numpy())
            for frame, (_, row) in zip(frames, part.iterrows()):
                writer.add(frame, {k: v for k, v in row.items() if k != "index"})
        writer.finalize()
    return load_prepared(out)


def _train_memoriser(checkpoint: Path, subset: Path, out: Path, config: ControlConfig) -> Path:
    from . import train_ldm

    vae_config = json.loads((checkpoint / "vae" / "config.json").read_text())
    # the warm-started UNet's latent scale: per-channel statistics stay the checkpoint's own
    latents = ["--keep_latent_stats"] if vae_config.get("latents_mean") is not None else []
    argv = ["--data", str(subset), "--vae", str(checkpoint / "vae"), "--init_pipeline", str(checkpoint),
            "--out", str(out), *latents, "--cond_dropout", "0", "--cond_drop_all", "0", "--no-use_ema",
            "--train_batch_size", str(config.batch_size), "--learning_rate", str(config.learning_rate),
            "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--max_train_steps", str(config.steps),
            "--checkpointing_steps", "100", "--checkpoints_total_limit", "1", "--validation_steps", "1000000",
            "--num_validation_images", "1", "--validation_inference_steps", "2", "--logging_steps", "10",
            "--no_progress", "--seed", str(config.seed), "--resume_from_checkpoint", "latest"]
    if config.num_threads:
        argv += ["--num_threads", str(config.num_threads)]
    if not (out / "pipeline" / "model_index.json").is_file():
        train_ldm.main(train_ldm.parse_args(argv))
    return out / "pipeline"


def _measure(pipe: Any, checker: Any, subset: Any, out: Path, config: ControlConfig) -> dict[str, Any]:
    """Sample ``pipe`` with the member set's conditions; the gate's flags, re-ID and membership."""
    from ..data.prepared import load_prepared
    from ..evaluation.generate_set import GenerationSettings, generate_set, read_training_sources
    from ..privacy.membership import run_membership
    from ..privacy.reid import retrieval_metrics

    settings = GenerationSettings(num_inference_steps=config.sample_steps, guidance_scale=config.guidance,
                                  batch_size=8, seed=config.seed, privacy="off")
    generate_set(pipe, subset, out, split="training", settings=settings, progress=False)
    samples = load_prepared(out)
    frames = samples.frames(samples.manifest["index"].to_numpy())
    verdicts = checker.check(frames)
    flagged = np.array([v.flagged for v in verdicts])
    sources = read_training_sources(out)
    labels = [sources[i][0] for i in samples.manifest["image_id"]]
    reid = retrieval_metrics(checker.embed(frames), labels, checker.index.embeddings, list(checker.index.study_ids))
    membership = run_membership(pipe, subset, None, None, config.attack, n_bootstrap=config.bootstrap,
                                seed=config.seed)
    loss = membership["attacks"]["loss"]["members_vs_nonmembers"]
    return {"samples": int(len(frames)), "flagged_rate": float(flagged.mean()),
            "similarity_median": float(np.median([v.similarity for v in verdicts])),
            "reid_map_at_r": float(reid["mean_average_precision_at_r"]), "reid_p_at_1": float(reid["precision_at_1"]),
            "membership_auc": float(loss["auc"]["value"]), "membership_auc_ci95": loss["auc"]["ci95"],
            "membership_tpr_at_1pct_fpr": float(loss["tpr_at_1pct_fpr"]["value"]),
            "membership_control_auc": float(membership["attacks"]["loss"]["control_nonmember_halves"]["auc"]["value"]),
            "membership_secmi_auc": float(membership["attacks"]["secmi"]["members_vs_nonmembers"]["auc"]["value"])}


def run_positive_control(checkpoint: str | Path, data: Any, out: str | Path,
                         config: ControlConfig = ControlConfig()) -> dict[str, Any]:
    """Make the memoriser, measure it and the real model, and write ``out/positive_control.json``.

    Resumable: the subset, the fine-tune (from its last checkpoint) and each sample set are kept
    in ``out`` and reused.
    """
    import torch

    from ..data.prepared import atomic_write_text
    from ..pipelines.pipeline_mammo_ldm import MammoLDMPipeline
    from ..privacy.checker import load_privacy_checker

    checkpoint, out = Path(checkpoint), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checker = load_privacy_checker(checkpoint)
    subset_data = member_subset(data, out / "subset", config.images, config.test_images, config.seed)
    memoriser = _train_memoriser(checkpoint, out / "subset", out / "memoriser", config)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    results = {}
    for name, folder in (("memorising", memoriser), ("real", checkpoint)):
        pipe = MammoLDMPipeline.from_pretrained(folder, privacy_gate=False)
        torch.manual_seed(config.seed)  # whatever the attacks draw from the global generator: the same each run
        results[name] = _measure(pipe, checker, subset_data, out / f"samples-{name}", config)
    mem, real = results["memorising"], results["real"]
    def ratio(a: float, b: float) -> float:
        if b > 0:
            return a / b
        return float("inf") if a > 0 else 0.0

    checks = {
        "memoriser_flagged": mem["flagged_rate"] >= CAUGHT_WHEN["flagged_rate_min"],
        "flagged_far_above_real": ratio(mem["flagged_rate"], real["flagged_rate"]) >= CAUGHT_WHEN["flagged_rate_over_real_min"],
        "reid_far_above_real": ratio(mem["reid_map_at_r"], real["reid_map_at_r"]) >= CAUGHT_WHEN["map_at_r_over_real_min"],
        "membership_far_above_chance": mem["membership_auc"] >= CAUGHT_WHEN["membership_auc_min"],
    }
    report = {"checkpoint": str(checkpoint), "member_images": int(len(subset_data.split("training"))),
              "member_studies": int(subset_data.split("training")["study_id"].nunique()),
              "unseen_images": int(len(subset_data.split("test"))), "config": asdict(config),
              "caught_when": CAUGHT_WHEN, "memorising": mem, "real": real, "checks": checks,
              "caught": bool(all(checks.values()))}
    atomic_write_text(out / "positive_control.json", json.dumps(report, indent=2, default=str))
    return report
