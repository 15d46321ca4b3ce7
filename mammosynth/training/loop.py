"""The one training loop every network's trainer runs (VAE, LDM, Siamese, and what comes next).

A trainer builds its networks, its optimizer(s), a ``DataLoader`` and a loss function, and
hands them over as a :class:`TrainingSetup`; :class:`TrainingLoop` does the rest: the step
count (``--max_train_steps``, or the steps that fit ``--max_minutes``, measured), the LR
schedule, ``accelerator.prepare``, micro-steps with gradient accumulation and clipping, EMA,
``log.csv``, validation and checkpoint hooks, the time cap and resume.

Resume is exact. Batches come from a ``DataLoader`` whose sampler's order in epoch ``e`` is
a function of ``(seed, e)`` only (:class:`EpochSampler`, or a batch sampler with ``set_epoch``);
a resumed run sets the epoch and skips the batches already trained on
(``accelerator.skip_first_batches``). Per-step randomness (crops, noise, timesteps, condition
dropout, augmentations) is drawn by the loss function from :func:`common.step_generator`
seeded by ``(seed, micro_step)``. Everything else (weights, optimizers, LR schedule, EMA) is
``accelerator.save_state`` / ``load_state``.

Usage::

    setup = TrainingSetup(network=model, models=[model], optimizers=[optimizer],
                          dataloader=seeded_dataloader(dataset, args.train_batch_size, args.seed),
                          loss=lambda models, batch, micro_step: (models[0](batch).mean(), {}))
    loop = TrainingLoop(accelerator, args, out, setup, desc="train-x")
    state = loop.run()
    if accelerator.is_main_process:
        loop.trained_model().save_pretrained(out / "x")
"""

from __future__ import annotations

import argparse
import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import common

logger = logging.getLogger(__name__)

__all__ = ["TrainingSetup", "TrainingLoop", "EpochSampler", "TensorDictDataset", "seeded_dataloader"]

#: ``loss(models, batch, micro_step) -> (loss, logs)``: ``models`` are the prepared ``setup.models`` (or, while
#: ``--max_minutes`` is calibrated, throwaway copies of them); ``logs`` are floats for ``log.csv``.
LossFn = Callable[[Sequence[torch.nn.Module], Any, int], "tuple[torch.Tensor, dict[str, float]]"]

#: Non-finite updates in a row after which a run stops (one is skipped with a warning).
MAX_NONFINITE_STEPS = 20

#: Micro-steps the ``--max_minutes`` calibration draws its random numbers for (far from any real step).
CALIBRATION_MICRO_STEP = 10_000_000


class EpochSampler(Sampler[int]):
    """Every index once per epoch, in an order that is a function of ``(seed, epoch)`` only."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        yield from np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items).tolist()


class TensorDictDataset(Dataset):
    """Items ``{name: tensor[i]}`` of equally long tensors (non-tensor entries are left out)."""

    def __init__(self, tensors: Mapping[str, Any]):
        self.tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        lengths = {len(v) for v in self.tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"the tensors must be equally long, got lengths {sorted(lengths)}")
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}


def seeded_dataloader(dataset: Dataset, batch_size: int | None, seed: int, batch_sampler: Sampler | None = None,
                      collate_fn: Callable | None = None) -> DataLoader:
    """A ``DataLoader`` whose order is a function of ``(seed, epoch)``: an :class:`EpochSampler` over
    ``dataset`` in batches of ``batch_size``, or ``batch_sampler`` (it must have ``set_epoch``)."""
    if len(dataset) == 0:
        raise ValueError("the training split is empty")
    generator = torch.Generator().manual_seed(seed)   # the loader's own: iterating it leaves torch's RNG alone
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed),
                      collate_fn=collate_fn, generator=generator)


@dataclass
class TrainingSetup:
    """What a trainer hands to :class:`TrainingLoop`.

    Attributes:
        network: the network being trained, unwrapped: EMA (``--use_ema`` and ``average``) follows its
            parameters and :meth:`TrainingLoop.trained_model` copies it.
        models: the modules to prepare, in this order (``model.safetensors``, ``model_1.safetensors``...);
            frozen ones (a teacher, a VAE) stay out and are moved to the device by the trainer.
        optimizers: the first gets the LR schedule and gradient clipping; any others (a discriminator's)
            step at their own constant rate after the same backward.
        dataloader: from :func:`seeded_dataloader`; the loop prepares it (batches stay on the CPU, the
            loss function moves them).
        loss: see :data:`LossFn`; a ``"loss"`` entry in its logs is what gets logged when the backward
            loss also holds other networks' terms.
        validate: ``validate(step, model) -> logs`` on the main process every ``--validation_steps``,
            with ``model`` = :meth:`TrainingLoop.trained_model`.
        validate_last: validate at the last step too.
        reserve_fraction: share of ``--max_minutes`` kept for validation and the final save.
        average: keep an EMA of ``network`` when ``--use_ema``.
        postfix: log keys shown on the progress bar beside the loss.
        after_step: ``after_step(step)`` after every optimizer step (``step`` counted from 1, right after the
            EMA step): what a trainer updates outside the optimizer (a distillation's target network).
    """

    network: torch.nn.Module
    models: list[torch.nn.Module]
    optimizers: list[torch.optim.Optimizer]
    dataloader: DataLoader
    loss: LossFn
    validate: Callable[[int, torch.nn.Module], Mapping[str, float]] | None = None
    validate_last: bool = False
    reserve_fraction: float = 0.1
    average: bool = True
    postfix: tuple[str, ...] = ()
    after_step: Callable[[int], None] | None = None


class TrainingLoop:
    """Plan, prepare and run the optimizer steps of a :class:`TrainingSetup` in a run folder.

    Constructing it reads the checkpoint to resume from (``--resume_from_checkpoint``), fixes the
    step count, builds the LR schedule and the EMA and prepares everything with ``accelerator``;
    :meth:`run` trains until the step count or ``--max_minutes`` is reached, saving checkpoints.
    """

    def __init__(self, accelerator, args: argparse.Namespace, out: Path, setup: TrainingSetup, desc: str):
        self.accelerator, self.args, self.out, self.setup, self.desc = accelerator, args, out, setup, desc
        self.accumulation = args.gradient_accumulation_steps
        self.state, self._resume = common.resume_state(out, args.resume_from_checkpoint)
        common.plan_steps(self.state, args, self._calibrate)
        scheduler = common.make_lr_scheduler(setup.optimizers[0], args.lr_scheduler, args.lr_warmup_steps,
                                             self.state.max_train_steps, accelerator.num_processes)
        n_models, n_optimizers = len(setup.models), len(setup.optimizers)
        prepared = accelerator.prepare(*setup.models, *setup.optimizers, scheduler)
        self.models = list(prepared[:n_models])
        self.optimizers = list(prepared[n_models:n_models + n_optimizers])
        self.lr_scheduler = prepared[-1]
        self.dataloader = accelerator.prepare_data_loader(setup.dataloader, device_placement=False)
        self._clipped = [p for group in setup.optimizers[0].param_groups for p in group["params"]]
        self.ema = None
        self._nonfinite = 0   # updates skipped in a row (see _check_finite)
        if args.use_ema and setup.average:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(setup.network.parameters(), decay=args.ema_decay, use_ema_warmup=True, power=3 / 4)
            self.ema.to(accelerator.device)
            accelerator.register_for_checkpointing(self.ema)

    def run(self) -> common.TrainState:
        """Train from the current step to the end; returns the final :class:`~common.TrainState`."""
        state, args = self.state, self.args
        log, clock, progress = common.begin_loop(self.accelerator, self.out, state, self._resume, args, self.desc)
        batches = self._batches()
        for model in self.models:
            model.train()
        window: list[float] = []
        tic = clock.update()
        while state.step < state.max_train_steps and not state.done:
            loss, logs = self._optimizer_step(batches)
            if self.ema is not None:
                self.ema.step(self.setup.network.parameters())
            if self.setup.after_step is not None:
                self.setup.after_step(state.step + 1)
            state.step += 1
            state.done = state.step >= state.max_train_steps
            progress.update(1)
            elapsed = clock.update()
            window.append(loss)
            values: dict[str, float] = {}
            if state.step % args.logging_steps == 0 or state.step == state.max_train_steps:
                values.update({"loss": float(np.mean(window)), **logs, "lr": self.lr_scheduler.get_last_lr()[0],
                               "sec_per_step": (elapsed - tic) / max(len(window), 1), "elapsed_min": elapsed / 60})
                progress.set_postfix(loss=f"{np.mean(window):.4f}",
                                     **{k: f"{logs[k]:.3f}" for k in self.setup.postfix if k in logs})
                window, tic = [], elapsed
            values.update(self._validate())
            if values:
                log.log(state.step, values)
            common.stop_if_out_of_time(state, args, elapsed)
            if state.step % args.checkpointing_steps == 0 or state.done:
                common.save_checkpoint(self.accelerator, self.out, state.step, args.checkpoints_total_limit, state)
        progress.close()
        state.done = True
        self.accelerator.wait_for_everyone()
        return state

    def trained_model(self) -> torch.nn.Module:
        """A copy of ``setup.network`` with the EMA weights if there is an EMA (what validation and saving use)."""
        model = copy.deepcopy(self.setup.network)
        if self.ema is not None:
            self.ema.copy_to(model.parameters())
        return model

    def _optimizer_step(self, batches: Iterator) -> tuple[float, dict[str, float]]:
        """``--gradient_accumulation_steps`` micro-steps; returns the last one's loss and logs."""
        accelerator = self.accelerator
        for micro in range(self.accumulation):
            with accelerator.accumulate(*self.models):
                loss, logs = self.setup.loss(self.models, next(batches), self.state.step * self.accumulation + micro)
                accelerator.backward(loss)
                finite = True
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(self._clipped, self.args.max_grad_norm)
                    finite = self._check_finite(norm)
                for optimizer in self.optimizers:
                    if finite:
                        optimizer.step()
                self.lr_scheduler.step()
                for optimizer in self.optimizers:
                    optimizer.zero_grad(set_to_none=True)
        logs = dict(logs)
        return float(logs.pop("loss", loss.item())), logs

    def _check_finite(self, grad_norm) -> bool:
        """False (skip this update) when the gradient norm is inf/NaN; raise after
        :data:`MAX_NONFINITE_STEPS` such updates in a row. The norm is taken after the gradients
        are all-reduced, so every process decides alike. With fp16 the grad scaler skips such
        steps itself (and lowers its scale): nothing is skipped here."""
        if self.accelerator.scaler is not None or torch.isfinite(torch.as_tensor(grad_norm)).all():
            self._nonfinite = 0
            return True
        self._nonfinite += 1
        logger.warning("step %d: the gradient norm is %s; this update is skipped (%d in a row)",
                       self.state.step + 1, float(grad_norm), self._nonfinite)
        if self._nonfinite >= MAX_NONFINITE_STEPS:
            raise RuntimeError(f"training diverged: {self._nonfinite} updates in a row had a non-finite gradient "
                               f"(step {self.state.step + 1}); the last checkpoint is intact; resume it with a lower "
                               f"--learning_rate or --mixed_precision no")
        return False

    def _batches(self) -> Iterator:
        """Batches from the run's current micro-step on, epoch after epoch."""
        per_epoch = len(self.dataloader)
        if per_epoch == 0:
            raise ValueError("the training data give no batch: fewer items than --train_batch_size?")
        epoch, skip = divmod(self.state.step * self.accumulation, per_epoch)
        while True:
            self._set_epoch(epoch)
            loader = self.accelerator.skip_first_batches(self.dataloader, skip) if skip else self.dataloader
            yield from loader
            epoch, skip = epoch + 1, 0

    def _set_epoch(self, epoch: int) -> None:
        self.dataloader.set_epoch(epoch)   # the prepared loader's counter, which it passes on when iterated
        raw = self.setup.dataloader
        for sampler in (raw.batch_sampler, raw.sampler):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def _validate(self) -> dict[str, float]:
        step, setup = self.state.step, self.setup
        due = step % self.args.validation_steps == 0 or (setup.validate_last and step == self.state.max_train_steps)
        if setup.validate is None or not due or not self.accelerator.is_main_process:
            return {}
        return dict(setup.validate(step, self.trained_model()) or {})

    def _calibrate(self) -> int:
        """Steps that fit ``--max_minutes``, from the measured time of an optimizer step on throwaway copies."""
        probes = copy.deepcopy(self.setup.models)
        optimizer = torch.optim.AdamW([p for m in probes for p in m.parameters() if p.requires_grad], lr=0.0)
        batches = self._calibration_batches()

        def step(i: int) -> None:
            for micro in range(self.accumulation):
                micro_step = CALIBRATION_MICRO_STEP + i * self.accumulation + micro
                self.setup.loss(probes, next(batches), micro_step)[0].backward()
            optimizer.step()
            optimizer.zero_grad()

        sec = common.measure_sec_per_step(step, warmup=1, steps=3)
        logger.info("measured %.2f s/step", sec)
        return common.steps_for_budget(self.args.max_minutes, sec, reserve_fraction=self.setup.reserve_fraction)

    def _calibration_batches(self) -> Iterator:
        while True:
            yield from self.setup.dataloader
