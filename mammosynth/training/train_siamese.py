"""Train the Siamese re-identification network (DESIGN §9) on a prepared dataset.

Identity = study. Each batch holds ``train_batch_size / (images_per_study + copies_per_study)``
training studies (each epoch deals every study once, :class:`StudyBatchSampler`) with (up to)
``images_per_study`` images each, plus
``copies_per_study`` of them a second time; every image is independently disguised by
:func:`mammosynth.privacy.augment.augment` (shift, flips, contrast/gamma, blur, noise).
Positives are the other images of the same study (other view, other breast) and the
disguised twin of the same image; negatives are all other studies. Loss: pytorch-metric-learning ``MultiSimilarityLoss`` with its miner
(``--loss triplet`` for ``TripletMarginLoss`` + semihard ``TripletMarginMiner``).

The training frames are resized once to the network's ``--input_size`` and kept in memory,
which is what makes CPU training quick. Every ``--validation_steps`` the retrieval metrics
of up to ``--monitor_images`` test images are logged (monitoring only: nothing is selected
on them). At the end the network is saved with ``save_pretrained`` to ``<out>/siamese`` and
P@1, R-precision, mAP@R and verification ROC-AUC on the held-out test studies go to
``<out>/metrics.json``.

Run::

    mammosynth train-siamese --data data/prepared-256 --out runs/siamese --max_minutes 18
    accelerate launch -m mammosynth.training.train_siamese --data ... --out ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..privacy.reid import study_labels
from . import common, options, presets
from .loop import TensorDictDataset, TrainingLoop, TrainingSetup, seeded_dataloader

logger = logging.getLogger(__name__)

__all__ = ["build_parser", "parse_args", "main", "load_frames", "study_groups", "StudyBatchSampler",
           "siamese_architecture"]

MODEL_FOLDER = "siamese"


def _pair(text: str, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"{name} must be HxW (e.g. 128x96), got {text!r}") from None
    return h, w


def siamese_architecture(args: argparse.Namespace) -> dict:
    """``SiameseEmbedder`` arguments: ``--preset``'s (``models.siamese.SIAMESE_PRESETS``) with ``--input_size``,
    ``--embedding_dim``, ``--block_inplanes`` and ``--layers`` where given."""
    arch = presets.architecture("siamese", getattr(args, "preset", None) or "bundled")
    if args.input_size is not None:
        arch["input_size"] = _pair(args.input_size, "--input_size")
    if args.embedding_dim is not None:
        arch["embedding_dim"] = args.embedding_dim
    if args.block_inplanes is not None:
        arch["block_inplanes"] = options.int_list(args.block_inplanes, "--block_inplanes", 4)
    if args.layers is not None:
        arch["layers"] = options.int_list(args.layers, "--layers", 4)
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in arch.items()}


def augment_settings(args: argparse.Namespace):
    """The :class:`~mammosynth.privacy.augment.AugmentConfig` of ``--max_shift`` / ``--max_scale`` /
    ``--max_rotation_deg`` (the defaults where not given)."""
    from ..privacy.augment import AugmentConfig

    given = {"max_shift": args.max_shift, "max_scale": args.max_scale, "max_rotation_deg": args.max_rotation_deg}
    try:
        return AugmentConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as error:
        raise ValueError(f"--{str(error)}") from None


def warm_start(path: str, args: argparse.Namespace, augment_config):
    """The network of ``--init_siamese`` with its weights, ready to train (zoom views off: ``build-index``
    sets them again), recording the disguise ranges of this run."""
    from ..models.siamese import SiameseEmbedder
    from ..privacy.checker import load_embedder

    resized = [f"--{k}" for k in ("input_size", "embedding_dim", "block_inplanes", "layers") if getattr(args, k) is not None]
    if resized:
        raise ValueError(f"--init_siamese keeps that network's architecture; leave out {', '.join(resized)}")
    source = load_embedder(path)
    config = {k: v for k, v in dict(source.config).items() if not k.startswith("_")}
    config.update(zoom_tta=(), trained_augment=augment_config.to_dict())
    model = SiameseEmbedder(**config)
    model.load_state_dict(source.state_dict())
    logger.info("warm start from %s (Siamese network %s)", path, source.fingerprint())
    return model


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return options.siamese_parser(parser, description=__doc__.split("\n\n")[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load_frames(data, rows, size: tuple[int, int], batch_size: int = 256) -> torch.Tensor:
    """Frames of manifest ``rows`` as float ``(N, 1, h, w)`` in [-1, 1], resized to ``size``."""
    import torch.nn.functional as F

    from ..data.dataset import to_unit_range

    indices = rows["index"].to_numpy()
    out = torch.empty((len(indices), 1, *size), dtype=torch.float32)
    for start in range(0, len(indices), batch_size):
        x = to_unit_range(data.frames(indices[start : start + batch_size])[:, None])
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[start : start + len(x)] = x
    return out


def study_groups(study_ids) -> list[np.ndarray]:
    """Row positions of each study that has at least two images (one positive pair)."""
    labels = study_labels(list(study_ids))
    groups = [np.flatnonzero(labels == k) for k in range(labels.max() + 1)] if len(labels) else []
    return [g for g in groups if len(g) >= 2]


class StudyBatchSampler(Sampler[list[int]]):
    """Batches of whole studies: each epoch deals every study (with two or more images) into batches
    of at most ``batch_size / (per_study + copies)`` studies, up to ``per_study`` images of each.

    ``copies`` images of each study appear twice (each draw gets its own augmentation), so the
    network also learns that a disguised copy is the same image. The batches of epoch ``e`` are
    a function of ``(seed, e)`` only, so a resumed run sees the same batches.
    """

    def __init__(self, groups: list[np.ndarray], batch_size: int, per_study: int, seed: int, copies: int = 1):
        if len(groups) < 2:
            raise ValueError(f"a batch needs at least 2 studies with two or more images; got {len(groups)}")
        self.groups, self.per_study, self.seed, self.copies = groups, per_study, seed, max(0, copies)
        self.studies_per_batch = min(max(2, batch_size // (per_study + self.copies)), len(groups))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        # as many batches as it takes to hold every study, each with two or more studies (negatives)
        return max(1, min(-(-len(self.groups) // self.studies_per_batch), len(self.groups) // 2))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for studies in np.array_split(rng.permutation(len(self.groups)), len(self)):
            positions: list[int] = []
            for k in studies:
                members = self.groups[k]
                if len(members) > self.per_study:
                    members = rng.choice(members, self.per_study, replace=False)
                positions.extend(np.r_[members, members[: self.copies]].tolist())
            yield positions


def _evaluate(model, images: torch.Tensor, study_ids, batch_size: int = 256) -> dict[str, float]:
    from ..privacy.reid import evaluate_embeddings

    was_training = model.training
    model.eval()
    with torch.no_grad():
        emb = torch.cat([model(images[i : i + batch_size].to(model.device)).float().cpu()
                         for i in range(0, len(images), batch_size)]).numpy()
    model.train(was_training)
    return evaluate_embeddings(emb, list(study_ids))


def main(args: argparse.Namespace) -> dict:
    """Train (or resume) a Siamese run; returns the final test metrics (with ``--dry-run``: the measured figures)."""
    from ..models.siamese import SiameseEmbedder

    presets.resolve_training_options(args, "siamese")
    arch = siamese_architecture(args)
    if args.dry_run:
        from .dry_run import dry_run

        return dry_run(args, "siamese").to_dict()
    options.require_run_folders(args)
    out, accelerator, data = common.start_run(args)
    if args.use_ema:
        logger.warning("--use_ema is not used by train-siamese (BatchNorm statistics are not averaged); ignoring it")
    size = arch["input_size"]
    if args.images_per_study < 2:
        raise ValueError(f"--images_per_study must be at least 2 (an anchor and a positive), got {args.images_per_study}")
    train_rows = data.split("training").reset_index(drop=True)
    groups = study_groups(train_rows["study_id"])
    if len(groups) < 2:
        raise ValueError(f"{args.data} has {len(groups)} training studies with two or more images; "
                         "metric learning needs at least 2")
    test_rows = data.split("test").reset_index(drop=True) if "test" in set(data.manifest["split"]) else None

    torch.manual_seed(args.seed)
    augment_config = augment_settings(args)
    if args.init_siamese:
        model = warm_start(args.init_siamese, args, augment_config)
    else:
        model = SiameseEmbedder(**arch, trained_augment=augment_config.to_dict())
    if accelerator.is_main_process:
        common.write_run_info(out, args, "siamese", {"model": {"siamese": dict(model.config)}})
    logger.info("loading %d training frames at %dx%d", len(train_rows), *size)
    train = TensorDictDataset({"image": load_frames(data, train_rows, size),
                               "label": torch.as_tensor(study_labels(train_rows["study_id"].tolist()))})
    monitor = None
    if test_rows is not None and args.monitor_images:
        m_rows = test_rows.iloc[: args.monitor_images]
        monitor = (load_frames(data, m_rows, size), m_rows["study_id"].tolist())
    loop = TrainingLoop(accelerator, args, out, _training_setup(accelerator, model, train, groups, monitor, args),
                        desc="train-siamese")
    state = loop.run()
    if not accelerator.is_main_process:
        return {}
    return _finish(loop.trained_model(), data, test_rows, size, out, state)


def _training_setup(accelerator, model, train: TensorDictDataset, groups: list[np.ndarray], monitor,
                    args: argparse.Namespace) -> TrainingSetup:
    """Metric learning on study batches of disguised images; validation scores the monitor images."""
    from ..privacy.augment import AugmentConfig, augment
    from ..privacy.reid import build_loss

    loss_fn, miner = build_loss(args.loss)
    augment_config = AugmentConfig.from_dict(model.config.trained_augment)

    def loss(models, batch, micro_step: int):
        images = batch["image"]
        if not args.no_augment:
            images = augment(images, common.step_generator(args.seed, micro_step, 1 + accelerator.process_index),
                             augment_config)
        embeddings = models[0](images.to(accelerator.device))
        labels = batch["label"].to(embeddings.device)
        pairs = miner(embeddings, labels)
        return loss_fn(embeddings, labels, pairs), {"mined": float(sum(len(p) for p in pairs)
                                                                   if isinstance(pairs, tuple) else 0)}

    def validate(step: int, trained) -> dict[str, float]:
        metrics = _evaluate(trained, *monitor)
        logger.info("step %d: monitor mAP@R %.4f P@1 %.4f", step, metrics["mean_average_precision_at_r"],
                    metrics["precision_at_1"])
        return {f"test_{k}": metrics[k] for k in ("precision_at_1", "mean_average_precision_at_r", "verification_auc")}

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    sampler = StudyBatchSampler(groups, args.train_batch_size, args.images_per_study, args.seed, args.copies_per_study)
    return TrainingSetup(network=model, models=[model], optimizers=[optimizer], loss=loss,
                         dataloader=seeded_dataloader(train, None, args.seed, batch_sampler=sampler),
                         validate=validate if monitor is not None else None, validate_last=True,
                         reserve_fraction=0.15, average=False)


def _finish(model, data, test_rows, size: tuple[int, int], out: Path, state) -> dict:
    """Save ``<out>/siamese`` and its retrieval metrics on the held-out test studies."""
    from ..data.prepared import atomic_write_text

    model.eval()
    model.save_pretrained(out / MODEL_FOLDER)
    metrics: dict = {"steps": state.step, "elapsed_min": state.elapsed_s / 60, "input_size": list(size),
                     "fingerprint": model.fingerprint()}
    if test_rows is not None and len(test_rows):
        test = _evaluate(model, load_frames(data, test_rows, size), test_rows["study_id"].tolist())
        metrics.update({"split": "test", **test})
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    common.update_run_info(out, metrics=metrics, finished=True)
    if "mean_average_precision_at_r" in metrics:
        print(f"Siamese re-ID on {metrics['n_images']} test images of {metrics['n_studies']} held-out studies: "
              f"mAP@R {metrics['mean_average_precision_at_r']:.4f}, P@1 {metrics['precision_at_1']:.4f}, "
              f"R-precision {metrics['r_precision']:.4f}, verification ROC-AUC {metrics['verification_auc']:.4f}; "
              f"saved {out / MODEL_FOLDER}")
    else:
        print(f"no test split: saved {out / MODEL_FOLDER} without held-out metrics")
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
    sys.exit(0)
