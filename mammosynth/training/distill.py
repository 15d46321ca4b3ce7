"""Latent consistency distillation (LCD; Luo et al. 2023, "Latent Consistency Models") of a trained checkpoint.

The *teacher* is a saved pipeline (its VAE, UNet, condition encoder and scheduler). The *student*
starts as a copy of the teacher's UNet and of its condition encoder with a guidance embedding added
(:func:`~mammosynth.models.conditioning.with_guidance_embedding`: zero at first, so the student starts as
the teacher's conditional branch), and learns to map any point of the teacher's guided probability-flow
ODE to its end in one call, with the guidance scale ``w`` as an input. It then samples in 1–4 steps
with diffusers' ``LCMScheduler`` and one UNet call per step (the teacher needs two per step for
classifier-free guidance, and 20 steps).

One optimizer step (``lcd_loss``), on a batch of the teacher's training latents ``z0``:

1. a solver index ``n`` of the DDIM solver over the teacher's ᾱ (``--solver_steps`` N = 50, skip
   k = T / N = 20): ``t = (n + 1)·k − 1``, ``s = max(t − k, 0)``; ``w ~ U[--w_min, --w_max]``; the
   conditions dropped at random as in ``train-ldm`` (:func:`~mammosynth.models.conditioning.drop_conditions`);
2. ``x_t = add_noise(z0, ε, t)``;
3. the student's consistency output ``f(x_t, t) = c_skip(t)·x_t + c_out(t)·x̂0`` (LCM boundary scalings,
   :func:`boundary_scalings`: 1 and 0 at t = 0);
4. the teacher (no grad): conditional and unconditional predictions at ``(x_t, t)``, classifier-free
   guidance with ``w`` on x̂0 and ε, one DDIM step to ``x_s`` (:class:`DDIMSolver`);
5. the target network (an EMA of the student, ``--target_ema_decay`` 0.95, no grad): ``f(x_s, s)``;
6. pseudo-Huber loss (``--huber_c`` 0.001) between 3 and 5.

``w`` is the pipeline's ``guidance_scale`` (``uncond + w·(cond − uncond)``, 1 = no guidance); the LCM
paper's ω is ``w − 1``.

The run folder is a training run like the others (``run.json``, ``log.csv``, ``checkpoints/``;
:class:`~mammosynth.training.loop.TrainingLoop`, so ``--max_minutes`` and exact resume work; the target
network is in every checkpoint). The last step writes ``<out>/student/``: ``unet/``,
``condition_encoder/``, ``scheduler/`` (an ``LCMScheduler``) and ``distill.json``; :func:`load_student`
reads it back.

Run::

    mammosynth distill --teacher checkpoints/mammosynth-phantom-256 --data data/prepared-256 --out runs/distill
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

from ..models.denoiser import ConditionalDenoiser, EncodedConditions
from ..pipelines.checkpoint import weights_sha256
from ..pipelines.pipeline_mammo_ldm import student_scheduler
from . import common, options
from .loop import TensorDictDataset, TrainingLoop, TrainingSetup, seeded_dataloader

logger = logging.getLogger(__name__)

__all__ = ["parse_args", "main", "load_student", "load_teacher", "DDIMSolver", "boundary_scalings",
           "to_x0_and_noise", "consistency_output", "pseudo_huber", "guided_teacher_step", "lcd_loss",
           "update_target", "SIGMA_DATA"]

#: σ_data of the LCM boundary scalings (fixed in diffusers' ``LCMScheduler``).
SIGMA_DATA = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return options.distill_parser().parse_args(argv)


# ---- the math of one LCD step ---------------------------------------------------------------


def boundary_scalings(timesteps: torch.Tensor, timestep_scaling: float = 10.0,
                      sigma_data: float = SIGMA_DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out)`` of the consistency parameterisation at integer ``timesteps`` (as
    ``LCMScheduler.get_scalings_for_boundary_condition_discrete``): ``c_skip(0) = 1``, ``c_out(0) = 0``."""
    scaled = timestep_scaling * timesteps.double()
    c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
    c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    return c_skip.float(), c_out.float()


def _per_item(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[timesteps]`` shaped ``(N, 1, 1, 1)`` to broadcast over ``like``."""
    picked = values.to(like.device)[timesteps.to(like.device)]
    return picked.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def to_x0_and_noise(model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor,
                    prediction_type: str, alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The predicted clean sample x̂0 and noise ε̂ of a model output at ``(sample, timesteps)``."""
    alpha = _per_item(alphas_cumprod, timesteps, sample) ** 0.5
    sigma = (1 - _per_item(alphas_cumprod, timesteps, sample)) ** 0.5
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha, model_output
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output, alpha * model_output + sigma * sample
    if prediction_type == "sample":
        return model_output, (sample - alpha * model_output) / sigma
    raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}")


def consistency_output(model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor,
                       prediction_type: str, alphas_cumprod: torch.Tensor,
                       timestep_scaling: float = 10.0) -> torch.Tensor:
    """``f(x_t, t) = c_skip(t)·x_t + c_out(t)·x̂0``: what ``LCMScheduler.step`` calls ``denoised``."""
    x0, _ = to_x0_and_noise(model_output, timesteps, sample, prediction_type, alphas_cumprod)
    c_skip, c_out = (c.to(sample.device).view(-1, *([1] * (sample.dim() - 1)))
                     for c in boundary_scalings(timesteps, timestep_scaling))
    return c_skip * sample + c_out * x0


class DDIMSolver:
    """The DDIM (η = 0) solver of the teacher's ODE on ``solver_steps`` timesteps ``t_n = (n + 1)·k − 1``
    (``k = T // solver_steps``: 19, 39, ..., 999 for T = 1000, N = 50: ``LCMScheduler``'s schedule).

    Args:
        alphas_cumprod: ᾱ of the teacher's noise schedule, ``(T,)``.
        solver_steps: N.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, solver_steps: int = 50):
        total = len(alphas_cumprod)
        if not 1 <= solver_steps <= total:
            raise ValueError(f"--solver_steps must be in 1..{total} (the teacher's timesteps), got {solver_steps}")
        self.alphas_cumprod = alphas_cumprod.float()
        self.num_steps = solver_steps
        self.skip = total // solver_steps
        self.timesteps = torch.arange(1, solver_steps + 1) * self.skip - 1
        self.previous = (self.timesteps - self.skip).clamp(min=0)

    def step(self, x0: torch.Tensor, noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x_s = sqrt(ᾱ_s)·x̂0 + sqrt(1 − ᾱ_s)·ε̂`` at ``s = previous[index]`` (one step back from ``timesteps[index]``)."""
        prev = self.previous[index.cpu()]
        alpha_prev = _per_item(self.alphas_cumprod, prev, x0)
        return alpha_prev ** 0.5 * x0 + (1 - alpha_prev) ** 0.5 * noise


def pseudo_huber(prediction: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """Mean of ``sqrt((a − b)² + c²) − c`` (the LCM reference's Huber loss)."""
    return torch.mean(torch.sqrt((prediction.float() - target.float()) ** 2 + c ** 2) - c)


@torch.no_grad()
def guided_teacher_step(teacher: ConditionalDenoiser, solver: DDIMSolver, noisy: torch.Tensor,
                        index: torch.Tensor, conditions: EncodedConditions, guidance: torch.Tensor,
                        prediction_type: str) -> torch.Tensor:
    """The teacher's classifier-free-guided DDIM step from ``x_t`` (``t = solver.timesteps[index]``) to ``x_s``.

    The unconditional branch has every field unspecified and a zero mask (as the pipeline samples);
    guidance ``uncond + w·(cond − uncond)`` is applied to x̂0 and ε̂ alike.
    """
    from ..models.conditioning import unconditional_codes

    n = len(noisy)
    timesteps = solver.timesteps[index.cpu()].to(noisy.device)
    uncond = unconditional_codes(n, noisy.device)
    codes = {f: torch.cat([uncond[f], conditions.codes[f]]) for f in uncond}
    masks = torch.cat([torch.zeros_like(conditions.masks), conditions.masks])
    both = teacher(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), EncodedConditions(codes, masks))
    x0, eps = to_x0_and_noise(both.float(), torch.cat([timesteps, timesteps]), torch.cat([noisy, noisy]).float(),
                              prediction_type, solver.alphas_cumprod)
    w = guidance.to(noisy.device, torch.float32).view(-1, *([1] * (noisy.dim() - 1)))
    (x0_u, x0_c), (eps_u, eps_c) = x0.chunk(2), eps.chunk(2)
    return solver.step(x0_u + w * (x0_c - x0_u), eps_u + w * (eps_c - eps_u), index)


def lcd_loss(student, teacher: ConditionalDenoiser, target: ConditionalDenoiser, solver: DDIMSolver, noise_scheduler,
             batch: dict, affine: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator,
             args: argparse.Namespace, device, autocast=None) -> tuple[torch.Tensor, dict[str, float]]:
    """One LCD loss on a batch of the latent cache (``mean``, ``std``, ``masks``, the codes; on the CPU).

    Every random number comes from ``generator`` (CPU): the same step draws the same numbers on resume.
    ``autocast`` is a context manager factory for the no-grad teacher and target calls (mixed precision).
    """
    from contextlib import nullcontext

    from ..models.autoencoder import apply_latent_affine
    from ..models.conditioning import CONDITION_FIELDS, drop_conditions

    autocast = autocast or nullcontext
    prediction_type = noise_scheduler.config.prediction_type
    alphas = solver.alphas_cumprod
    # 1. clean latents (a posterior sample, in model space), conditions dropped as in train-ldm
    mean, std = batch["mean"], batch["std"]
    latents = apply_latent_affine(mean + std * torch.randn(mean.shape, generator=generator), affine)
    n = len(latents)
    codes, masks = drop_conditions({f: batch[f] for f in CONDITION_FIELDS}, batch["masks"], args.cond_dropout,
                                   args.cond_drop_all, generator)
    # 2. solver index -> t and s = t - k; noise; guidance scale
    index = torch.randint(0, solver.num_steps, (n,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    guidance = args.w_min + (args.w_max - args.w_min) * torch.rand(n, generator=generator)
    start, end = solver.timesteps[index], solver.previous[index]
    noisy = noise_scheduler.add_noise(latents, noise, start).to(device)
    conditions = EncodedConditions({k: v.to(device) for k, v in codes.items()}, masks.to(device), guidance.to(device))
    start, end = start.to(device), end.to(device)
    # 3. the student's consistency output at (x_t, t)
    prediction = consistency_output(student(noisy, start, conditions).float(), start, noisy, prediction_type, alphas,
                                    args.timestep_scaling)
    with torch.no_grad():
        # 4. the teacher's guided DDIM step x_t -> x_s
        with autocast():
            previous = guided_teacher_step(teacher, solver, noisy, index, conditions, guidance, prediction_type)
            # 5. the target network's consistency output at (x_s, s)
            target_output = target(previous, end, conditions)
        wanted = consistency_output(target_output.float(), end, previous.float(), prediction_type, alphas,
                                    args.timestep_scaling)
    # 6. pseudo-Huber
    return pseudo_huber(prediction, wanted, args.huber_c), {}


@torch.no_grad()
def update_target(target: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """``target ← decay·target + (1 − decay)·student``, parameter by parameter."""
    for t, s in zip(target.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1 - decay)


# ---- teacher and student folders ------------------------------------------------------------


def load_teacher(folder: str | os.PathLike):
    """The VAE, denoiser (UNet + condition encoder) and scheduler config of a saved pipeline (fp32, frozen).

    ``folder`` is a pipeline folder (``checkpoints/mammosynth-phantom-256``) or a ``train-ldm`` run folder.

    Raises:
        ValueError: naming the folder and what it lacks.
    """
    from diffusers import AutoencoderKL, UNet2DModel

    from ..models.conditioning import ConditionEncoder
    from ..pipelines.checkpoint import CheckpointError, check_checkpoint_folder

    root = Path(folder)
    if (root / "pipeline" / "model_index.json").is_file():
        root = root / "pipeline"
    try:
        check_checkpoint_folder(root)
    except CheckpointError as error:
        raise ValueError(f"--teacher {folder} is not a complete pipeline folder: {error}") from None
    vae = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=torch.float32)
    unet = UNet2DModel.from_pretrained(root / "unet", torch_dtype=torch.float32)
    encoder = ConditionEncoder.from_pretrained(root / "condition_encoder", torch_dtype=torch.float32)
    if encoder.config.get("guidance_embed_dim", 0):
        raise ValueError(f"--teacher {folder}: its condition encoder embeds the guidance scale: it is a distilled "
                         "student already; distil a teacher (a train-ldm pipeline)")
    scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    for module in (vae, unet, encoder):
        module.requires_grad_(False).eval()
    return root, vae, ConditionalDenoiser(unet, encoder), scheduler_config


def load_student(folder: str | os.PathLike):
    """``(unet, condition_encoder, scheduler)`` of a distilled student (``<run>/student`` or the run folder), fp32.

    Raises:
        ValueError: naming the folder and what is missing in it.
    """
    from diffusers import LCMScheduler, UNet2DModel

    from ..models.conditioning import ConditionEncoder

    root = Path(folder)
    if (root / "student").is_dir():
        root = root / "student"
    if not root.is_dir():
        raise ValueError(f"student folder {folder} does not exist; `mammosynth distill --out RUN` writes RUN/student")
    needed = {"unet/config.json": "unet", "condition_encoder/config.json": "condition_encoder",
              "scheduler/scheduler_config.json": "scheduler"}
    missing = [p for p in needed if not (root / p).is_file()]
    missing += [f"{name}/*.safetensors" for name in ("unet", "condition_encoder")
                if (root / name).is_dir() and not any((root / name).glob("*.safetensors"))]
    if missing:
        raise ValueError(f"{root} is not a distilled student folder: it lacks {', '.join(missing)} (expected unet/, "
                         "condition_encoder/ and scheduler/ as `mammosynth distill` writes them)")
    unet = UNet2DModel.from_pretrained(root / "unet", torch_dtype=torch.float32)
    encoder = ConditionEncoder.from_pretrained(root / "condition_encoder", torch_dtype=torch.float32)
    if not encoder.config.get("guidance_embed_dim", 0):
        raise ValueError(f"{root / 'condition_encoder'} has no guidance embedding: it is a teacher's encoder, not a "
                         "distilled student's")
    kind = json.loads((root / "scheduler" / "scheduler_config.json").read_text()).get("_class_name")
    if kind != "LCMScheduler":
        raise ValueError(f"{root / 'scheduler'} holds a {kind}, expected the student's LCMScheduler")
    return unet, encoder, LCMScheduler.from_pretrained(root / "scheduler")


# ---- the run --------------------------------------------------------------------------------


def check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the option for inputs that cannot work."""
    if getattr(args, "dry_run", False):
        raise ValueError("distill has no --dry-run: its networks are the teacher's; run a few --max_train_steps")
    missing = [f"--{n}" for n in ("teacher", "data", "out") if not getattr(args, n, None)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    if not args.w_min >= 1:
        raise ValueError(f"--w_min must be >= 1 (the pipeline's guidance_scale: 1 = no guidance), got {args.w_min}")
    if args.w_min > args.w_max:
        raise ValueError(f"--w_min {args.w_min} must not exceed --w_max {args.w_max}")
    if not 0 <= args.target_ema_decay < 1:
        raise ValueError(f"--target_ema_decay must be in [0, 1), got {args.target_ema_decay}")
    if args.guidance_embed_dim < 4 or args.guidance_embed_dim % 2:
        raise ValueError(f"--guidance_embed_dim must be an even number >= 4, got {args.guidance_embed_dim}")


def main(args: argparse.Namespace) -> dict:
    """Distil (or resume distilling) ``--teacher`` into ``<out>/student``; returns final info."""
    from diffusers import DDPMScheduler

    from ..data.dataset import PreparedDataset
    from ..models.autoencoder import latent_affine
    from ..models.conditioning import with_guidance_embedding
    from ..pipelines.checkpoint import fingerprint
    from .train_ldm import _file_sha, _latent_cache, _loss_summary

    check_args(args)
    teacher_root, vae, teacher, scheduler_config = load_teacher(args.teacher)
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    solver = DDIMSolver(noise_scheduler.alphas_cumprod, args.solver_steps)
    out, accelerator, data = common.start_run(args)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = tuple(teacher.unet.config.sample_size)
    if (data.height, data.width) != (size[0] * factor, size[1] * factor):
        raise ValueError(f"--data {args.data} holds {data.height}x{data.width} frames; the teacher {args.teacher} "
                         f"makes {size[0] * factor}x{size[1] * factor}: distil on the teacher's own training data")
    teacher_info = {"folder": str(teacher_root), "unet_sha256": weights_sha256(teacher_root / "unet"),
                    "fingerprint": fingerprint(teacher_root)}
    _check_same_teacher(out, teacher_info)
    device = accelerator.device
    vae.to(device)
    teacher.to(device)

    # 1. the student: the teacher's UNet and its encoder with a (zero) guidance embedding; the target: a copy
    torch.manual_seed(args.seed)
    student = ConditionalDenoiser(copy.deepcopy(teacher.unet).requires_grad_(True),
                                  with_guidance_embedding(teacher.condition_encoder, dim=args.guidance_embed_dim))
    student.requires_grad_(True).train()
    if args.gradient_checkpointing:
        student.unet.enable_gradient_checkpointing()
    target = copy.deepcopy(student).requires_grad_(False).eval().to(device)
    accelerator.register_for_checkpointing(target)   # before the loop's EMA: custom_checkpoint_0 is the target

    if accelerator.is_main_process:
        common.write_run_info(out, args, "distill", {"teacher": teacher_info, "model": {
            "unet": dict(student.unet.config), "condition_encoder": dict(student.condition_encoder.config)}})
    # 2. the teacher's training latents (train-ldm's cache), in the teacher's model space
    vae_folder = teacher_root / "vae"
    cache = _latent_cache(accelerator, vae, PreparedDataset(data, split="training"), out,
                          key=f"{_file_sha(vae_folder)}:{common.manifest_sha256(args.data)}:label-masks",
                          shard_size=args.latent_shard_size)
    affine = latent_affine(vae)

    # 3. the loop
    def loss(models, batch, micro_step: int):
        g = common.step_generator(args.seed, micro_step, accelerator.process_index)
        return lcd_loss(models[0], teacher, target, solver, noise_scheduler, batch, affine, g, args, device,
                        accelerator.autocast)

    optimizer = torch.optim.AdamW(student.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    dataset = cache if isinstance(cache, torch.utils.data.Dataset) else TensorDictDataset(cache)
    setup = TrainingSetup(network=student, models=[student], optimizers=[optimizer], loss=loss,
                          dataloader=seeded_dataloader(dataset, args.train_batch_size, args.seed),
                          after_step=lambda step: update_target(target, student, args.target_ema_decay))
    loop = TrainingLoop(accelerator, args, out, setup, desc="distill")
    state = loop.run()
    if not accelerator.is_main_process:
        return {}

    # 4. the student folder
    losses = _loss_summary(out / "log.csv")
    record = {"teacher": teacher_info, "steps": state.step, "w_min": args.w_min, "w_max": args.w_max,
              "solver_steps": args.solver_steps, "skip": solver.skip, "target_ema_decay": args.target_ema_decay,
              "huber_c": args.huber_c, "timestep_scaling": args.timestep_scaling,
              "guidance_embed_dim": args.guidance_embed_dim, "prediction_type": noise_scheduler.config.prediction_type,
              "train_batch_size": args.train_batch_size, "learning_rate": args.learning_rate,
              "use_ema": bool(args.use_ema), "train_minutes": state.elapsed_s / 60, "device": device.type,
              "fp16": bool(args.save_fp16), "git_sha": common.git_sha(), **losses}
    folder = _save_student(out, loop.trained_model(), student_scheduler(
        scheduler_config, args.solver_steps, args.timestep_scaling, noise_scheduler.config.prediction_type),
        record, args.save_fp16)
    common.update_run_info(out, metrics=record, finished=True)
    print(f"distilled {state.step} steps in {state.elapsed_s / 60:.1f} min; final loss {losses.get('final_loss')}; "
          f"saved {folder}")
    return record


def _check_same_teacher(out: Path, teacher_info: dict) -> None:
    """A resumed run must distil the teacher it began with."""
    path = out / "run.json"
    if not path.is_file():
        return
    before = json.loads(path.read_text()).get("teacher", {})
    if before.get("unet_sha256") not in (None, teacher_info["unet_sha256"]):
        raise ValueError(f"{out} distils the teacher {before.get('folder')} (unet sha256 {before['unet_sha256'][:12]}…); "
                         f"--teacher {teacher_info['folder']} has {teacher_info['unet_sha256'][:12]}…: use a new --out")


def _save_student(out: Path, model: ConditionalDenoiser, scheduler, record: dict, fp16: bool) -> Path:
    """Write ``<out>/student`` (through a temporary folder and a rename)."""
    from ..data.prepared import atomic_write_text

    folder, tmp = out / "student", out / ".student.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if fp16:
        model.to(torch.float16)
    model.unet.save_pretrained(tmp / "unet", safe_serialization=True)
    model.condition_encoder.save_pretrained(tmp / "condition_encoder", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    atomic_write_text(tmp / "distill.json", json.dumps(record, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
    sys.exit(0)
