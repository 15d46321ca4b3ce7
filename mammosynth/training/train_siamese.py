"""Train the Siamese re-identification network (DESIGN §9) on a prepared dataset.

Identity = study. Each batch holds ``train_batch_size / (images_per_study + copies_per_study)``
random training studies with (up to) ``images_per_study`` images each, plus
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
import copy
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from . import common, options

logger = logging.getLogger(__name__)

__all__ = ["build_parser", "parse_args", "main", "load_frames", "sample_batch"]

MODEL_FOLDER = "siamese"


def _pair(text: str, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"{name} must be HxW (e.g. 128x96), got {text!r}") from None
    return h, w


def _ints(text: str, name: str, count: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{name} must be {count} comma-separated integers, got {text!r}") from None
    if len(values) != count:
        raise ValueError(f"{name} must have {count} values, got {len(values)} ({text!r})")
    return values


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
    from ..privacy.reid import study_labels

    labels = study_labels(list(study_ids))
    groups = [np.flatnonzero(labels == k) for k in range(labels.max() + 1)] if len(labels) else []
    return [g for g in groups if len(g) >= 2]


def sample_batch(groups: list[np.ndarray], batch_size: int, per_study: int, seed: int, step: int,
                 process_index: int = 0, copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, labels)`` of one batch: random studies with up to ``per_study`` images each.

    ``copies`` images of each study appear twice (each draw gets its own augmentation), so
    the network also learns that a disguised copy is the same image.
    A pure function of ``(seed, step, process_index)``, so a resumed run sees the same batches.
    """
    rng = np.random.default_rng([seed, step, process_index])
    n_studies = max(2, batch_size // (per_study + copies))
    chosen = rng.choice(len(groups), size=min(n_studies, len(groups)), replace=False)
    positions, labels = [], []
    for label, k in enumerate(chosen):
        members = groups[k]
        if len(members) > per_study:
            members = rng.choice(members, per_study, replace=False)
        members = np.r_[members, members[: max(0, copies)]]
        positions.extend(members.tolist())
        labels.extend([label] * len(members))
    return np.asarray(positions), np.asarray(labels)


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
    """Train (or resume) a Siamese run; returns the final test metrics."""

    from ..data.prepared import atomic_write_text, load_prepared
    from ..models.siamese import SiameseEmbedder
    from ..privacy.augment import augment
    from ..privacy.reid import build_loss

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = common.make_accelerator(args, out)
    if args.use_ema:
        logger.warning("--use_ema is not used by train-siamese (BatchNorm statistics are not averaged); ignoring it")
    size = _pair(args.input_size, "--input_size")
    if args.images_per_study < 2:
        raise ValueError(f"--images_per_study must be at least 2 (an anchor and a positive), got {args.images_per_study}")
    data = load_prepared(args.data)
    train_rows = data.split("training").reset_index(drop=True)
    groups = study_groups(train_rows["study_id"])
    if len(groups) < 2:
        raise ValueError(f"{args.data} has {len(groups)} training studies with two or more images; "
                         "metric learning needs at least 2")
    test_rows = data.split("test").reset_index(drop=True) if "test" in set(data.manifest["split"]) else None

    torch.manual_seed(args.seed)
    model = SiameseEmbedder(embedding_dim=args.embedding_dim, input_size=size,
                            block_inplanes=_ints(args.block_inplanes, "--block_inplanes", 4),
                            layers=_ints(args.layers, "--layers", 4))
    if accelerator.is_main_process:
        common.write_run_info(out, args, "siamese", {"model": {"siamese": dict(model.config)}})
    logger.info("loading %d training frames at %dx%d", len(train_rows), *size)
    train_images = load_frames(data, train_rows, size)
    monitor = None
    if test_rows is not None and args.monitor_images:
        m_rows = test_rows.iloc[: args.monitor_images]
        monitor = (load_frames(data, m_rows, size), m_rows["study_id"].tolist())

    loss_fn, miner = build_loss(args.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    state, resume = common.resume_state(out, args.resume_from_checkpoint)

    def step_loss(net, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        positions, labels = sample_batch(groups, args.train_batch_size, args.images_per_study, args.seed,
                                         step, accelerator.process_index, args.copies_per_study)
        images = train_images[positions]
        if not args.no_augment:
            images = augment(images, common.step_generator(args.seed, step, 1 + accelerator.process_index))
        embeddings = net(images.to(accelerator.device))
        labels_t = torch.as_tensor(labels, device=embeddings.device)
        pairs = miner(embeddings, labels_t)
        loss = loss_fn(embeddings, labels_t, pairs)
        return loss, {"mined": float(sum(len(p) for p in pairs) if isinstance(pairs, tuple) else 0)}

    def calibrate() -> int:
        probe = copy.deepcopy(model)
        sec = common.measure_sec_per_step(lambda i: step_loss(probe, 10_000_000 + i)[0].backward(), warmup=1, steps=3)
        logger.info("measured %.2f s/step", sec)
        return common.steps_for_budget(args.max_minutes, sec, reserve_fraction=0.15)

    common.plan_steps(state, args, calibrate)

    lr_scheduler = common.make_lr_scheduler(optimizer, args.lr_scheduler, args.lr_warmup_steps,
                                            state.max_train_steps, accelerator.num_processes)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    log, clock, progress = common.begin_loop(accelerator, out, state, resume, args, "train-siamese")
    model.train()
    window: list[float] = []
    tic = clock.update()
    while state.step < state.max_train_steps and not state.done:
        for micro in range(args.gradient_accumulation_steps):
            micro_step = state.step * args.gradient_accumulation_steps + micro
            with accelerator.accumulate(model):
                loss, parts = step_loss(model, micro_step)
                common.optimizer_step(accelerator, model, loss, optimizer, lr_scheduler, args.max_grad_norm)
        state.step += 1
        state.done = state.step >= state.max_train_steps
        progress.update(1)
        elapsed = clock.update()
        window.append(loss.item())
        values: dict[str, float] = {}
        if state.step % args.logging_steps == 0 or state.step == state.max_train_steps:
            values.update({"loss": float(np.mean(window)), **parts, "lr": lr_scheduler.get_last_lr()[0],
                           "sec_per_step": (elapsed - tic) / max(len(window), 1), "elapsed_min": elapsed / 60})
            progress.set_postfix(loss=f"{np.mean(window):.4f}")
            window, tic = [], elapsed
        if monitor is not None and accelerator.is_main_process and (
                state.step % args.validation_steps == 0 or state.step == state.max_train_steps):
            metrics = _evaluate(unwrapped, *monitor)
            values.update({f"test_{k}": metrics[k] for k in ("precision_at_1", "mean_average_precision_at_r",
                                                             "verification_auc")})
            logger.info("step %d: monitor mAP@R %.4f P@1 %.4f", state.step,
                        metrics["mean_average_precision_at_r"], metrics["precision_at_1"])
        if values:
            log.log(state.step, values)
        common.stop_if_out_of_time(state, args, elapsed)
        if state.step % args.checkpointing_steps == 0 or state.done:
            common.save_checkpoint(accelerator, out, state.step, args.checkpoints_total_limit, state)
    progress.close()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    unwrapped.eval()
    unwrapped.save_pretrained(out / MODEL_FOLDER)
    metrics: dict = {"steps": state.step, "elapsed_min": state.elapsed_s / 60, "input_size": list(size),
                     "fingerprint": unwrapped.fingerprint()}
    if test_rows is not None and len(test_rows):
        test = _evaluate(unwrapped, load_frames(data, test_rows, size), test_rows["study_id"].tolist())
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
