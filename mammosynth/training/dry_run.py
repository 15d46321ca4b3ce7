"""``mammosynth train-* --preset P --dry-run``: what a preset costs, measured, before any data or GPU is there.

:func:`dry_run` builds the preset's network(s) exactly as the trainer would, runs ONE optimiser
step on a tiny batch (random inputs at the preset's full training size) on whatever device there is
(CPU or GPU), and prints

* parameter counts (trainable, and frozen ones that sit on the device, e.g. the LDM's VAE);
* GFLOP per image of a training step (forward + backward, + the recompute when checkpointing),
  counted by ``torch.utils.flop_counter.FlopCounterMode`` on that step, and of the forward pass alone;
* the expected memory per process at the preset's batch size:

  ``16 B × trainable params`` (fp32 weights, gradients, AdamW's two moments)
  ``+ 4 B × params`` of the EMA copy (when ``--use_ema``) ``+ 4 B × frozen params``
  ``+ activations × (batch / measured batch)``, where the activations are the bytes of every tensor
  autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``, parameters
  excluded; bf16 where autocast makes them bf16), measured on the tiny batch and scaled linearly.

  Not included: the CUDA context and allocator slack (~1-3 GB) and, with gradient checkpointing,
  the activations of the one block being recomputed at a time; on a GPU the step's measured peak
  (``torch.cuda.max_memory_allocated``) is printed beside the estimate.

It trains nothing and writes nothing. :func:`plan` counts the same FLOPs on the ``meta`` device
(no memory, no compute: instant) for the GPU-hour estimate ``scripts/train_vindr.sh`` prints.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import presets

__all__ = ["DryRun", "dry_run", "flops_per_image", "plan", "format_plan", "main"]

#: Images in the measured step (per network): the smallest batch its loss is defined on.
MEASURED_BATCH = {"vae": 1, "ldm": 1, "siamese": 4, "encoder": 2}
GPU_MEMORY_GB = 80.0


@dataclass
class DryRun:
    """What one dry run measured (all per process)."""

    network: str
    preset: str
    device: str
    precision: str
    gradient_checkpointing: bool
    input_shape: tuple[int, ...]
    trainable_params: int
    frozen_params: int
    ema: bool
    train_gflop_per_image: float
    forward_gflop_per_image: float
    measured_batch: int
    activation_bytes_per_image: float
    batch_size: int
    step_seconds: float
    loss: float
    peak_measured_bytes: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def state_bytes(self) -> float:
        return 16.0 * self.trainable_params

    @property
    def ema_bytes(self) -> float:
        return 4.0 * self.trainable_params if self.ema else 0.0

    @property
    def frozen_bytes(self) -> float:
        return 4.0 * self.frozen_params

    @property
    def activation_bytes(self) -> float:
        return self.activation_bytes_per_image * self.batch_size

    @property
    def expected_bytes(self) -> float:
        return self.state_bytes + self.ema_bytes + self.frozen_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out.update(expected_gb=self.expected_bytes / 1e9, activations_gb=self.activation_bytes / 1e9)
        return out

    def report(self) -> str:
        gb = 1e9
        precision = {"no": "fp32"}.get(self.precision, self.precision)
        lines = [
            f"{self.network} --preset {self.preset} --dry-run on {self.device} ({precision}, gradient "
            f"checkpointing {'on' if self.gradient_checkpointing else 'off'}); input per image "
            f"{'x'.join(str(s) for s in self.input_shape)}",
            f"  parameters: {self.trainable_params / 1e6:.4g} M trainable"
            + (f", {self.frozen_params / 1e6:.4g} M frozen on the device" if self.frozen_params else ""),
            f"  GFLOP per image: {self.forward_gflop_per_image:.4g} forward, {self.train_gflop_per_image:.4g} per "
            "training step (forward + backward" + (" + recompute" if self.gradient_checkpointing else "") + ")",
            f"  one optimiser step on a batch of {self.measured_batch}: {self.step_seconds:.1f} s, loss {self.loss:.4f}",
            f"  activations saved for backward: {self.activation_bytes_per_image / 1e6:.4g} MB per image "
            f"(measured at batch {self.measured_batch})",
            f"  expected memory per GPU at batch {self.batch_size}: weights+grads+AdamW {self.state_bytes / gb:.3g} GB"
            + (f" + EMA {self.ema_bytes / gb:.3g} GB" if self.ema else "")
            + (f" + frozen {self.frozen_bytes / gb:.3g} GB" if self.frozen_params else "")
            + f" + activations {self.activation_bytes / gb:.3g} GB = {self.expected_bytes / gb:.3g} GB "
            f"(of {GPU_MEMORY_GB:.0f} GB; CUDA context and allocator slack not included)",
        ]
        if self.peak_measured_bytes is not None:
            lines.append(f"  measured peak of the step on {self.device}: {self.peak_measured_bytes / gb:.2f} GB "
                         f"at batch {self.measured_batch}")
        for key, value in self.notes.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)


def _pair(text: str, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"{name} must be HxW (e.g. 256x192), got {text!r}") from None
    return h, w


def _frames(args: argparse.Namespace) -> tuple[int, int]:
    """The frame size: ``--data``'s when given, else the preset's (:data:`presets.PRESET_FRAMES`)."""
    if getattr(args, "data", None):
        from ..data.prepared import load_prepared

        data = load_prepared(args.data)
        return data.height, data.width
    if args.preset not in presets.PRESET_FRAMES:
        raise ValueError(f"--preset {args.preset} has no frame size; pass --data (a prepared dataset) with --dry-run")
    return presets.PRESET_FRAMES[args.preset]


def _count(modules, trainable: bool) -> int:
    seen: set[int] = set()
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen and p.requires_grad == trainable:
                seen.add(id(p))
                total += p.numel()
    return total


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("--mixed_precision fp16 needs a GPU; on CPU use bf16 or no")
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def _measure(step: Callable[[], torch.Tensor], modules: list[torch.nn.Module], device: torch.device,
             precision: str) -> tuple[float, float, float, int | None]:
    """Run ``step`` (forward → loss) + backward + one AdamW step; returns ``(FLOPs, bytes saved for backward,
    loss, measured peak bytes on a GPU)``."""
    from torch.utils.flop_counter import FlopCounterMode

    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    param_storages = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in param_storages:
                saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with _autocast(device, precision):
                loss = step()
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return float(counter.get_total_flops()), float(sum(saved.values())), float(loss.detach().float()), peak


def _forward_flops(forward: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------------------
# One builder per network: (trainable modules, frozen modules, step() -> loss, forward(), input shape, notes)


def _vae_setup(args, device, batch: int, frames: tuple[int, int]):
    from ..models.autoencoder import build_vae
    from .train_vae import VAEWithLoss, _parse_crop, build_discriminator, discriminator_loss

    arch = presets.architecture("vae", args.preset)
    if getattr(args, "block_out_channels", None):
        arch["block_out_channels"] = tuple(int(v) for v in args.block_out_channels.split(","))
    vae = build_vae(sample_size=frames[0], **arch, latent_channels=args.latent_channels or 4).to(device)
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    crop = _parse_crop(args.crop, *frames) or frames
    wrapper = VAEWithLoss(vae, ssim_weight=args.ssim_weight, kl_weight=args.kl_weight,
                          lesion_weight=args.lesion_weight, adv_weight=args.adv_weight, adv_adaptive=args.adv_adaptive)
    modules: list[torch.nn.Module] = [wrapper]
    discriminator = build_discriminator(args.disc_channels).to(device) if args.adv_weight > 0 else None
    if discriminator is not None:
        modules.append(discriminator)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand((batch, 1, *crop), generator=g) * 2 - 1).to(device)
    masks = torch.zeros_like(images) if args.lesion_weight else None

    def step():
        value, _, recon = wrapper(images, generator=torch.Generator().manual_seed(1), masks=masks,
                                  discriminator=discriminator)
        return value + discriminator_loss(discriminator, images, recon) if discriminator is not None else value

    def forward():
        return vae(images[:1]).sample

    f = 2 ** (len(arch["block_out_channels"]) - 1)
    notes = {"latents": f"{vae.config.latent_channels}x{frames[0] // f}x{frames[1] // f} per {frames[0]}x{frames[1]} "
                        f"frame (f = {f}); training crops {crop[0]}x{crop[1]}"}
    if discriminator is not None:
        notes["discriminator"] = "patch-GAN included (--adv_weight > 0)"
    return modules, [], step, forward, (1, *crop), notes


def _ldm_latents(args, frames: tuple[int, int]) -> tuple[int, int, list[torch.nn.Module], str]:
    """Latent channels, factor, the frozen VAE (empty: none built) and where they came from."""
    from diffusers import AutoencoderKL

    if getattr(args, "vae", None):
        from ..models.autoencoder import resolve_vae_folder

        folder = resolve_vae_folder(args.vae)
        vae = AutoencoderKL.from_pretrained(folder, dtype=torch.float32)
        return vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1), [vae], str(folder)
    from ..models.autoencoder import build_vae

    vae = build_vae(**presets.architecture("vae", args.preset),
                    latent_channels=presets.training_row("vae", args.preset)["latent_channels"] or 4)
    return (vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1), [vae],
            f"the {args.preset} VAE preset")


def _ldm_setup(args, device, batch: int, frames: tuple[int, int]):
    from ..models.conditioning import CONDITION_FIELDS
    from ..pipelines.pipeline_mammo_ldm import default_scheduler
    from .train_ldm import _build_denoiser, _training_step
    from diffusers import DDPMScheduler

    channels, f, frozen, source = _ldm_latents(args, frames)
    if frames[0] % f or frames[1] % f:
        raise ValueError(f"frames {frames[0]}x{frames[1]} are not divisible by the VAE factor {f}")
    size = (frames[0] // f, frames[1] // f)
    denoiser = _build_denoiser(args, channels, size).to(device)
    if args.gradient_checkpointing:
        denoiser.unet.enable_gradient_checkpointing()
    for vae in frozen:
        vae.requires_grad_(False).to(device)
    with torch.device("cpu"):   # the noise schedule lives on the CPU (also when the plan counts on "meta")
        scheduler = DDPMScheduler.from_config(default_scheduler(args.num_train_timesteps).config)
    g = torch.Generator().manual_seed(0)
    cache = {"mean": torch.randn((batch, channels, *size), generator=g), "std": torch.full((batch, channels, *size), 0.1),
             "masks": torch.zeros((batch, 1, *size)), **{k: torch.zeros(batch, dtype=torch.long) for k in CONDITION_FIELDS}}
    affine = (torch.zeros(channels), torch.ones(channels))

    def step():
        return _training_step(denoiser, scheduler, cache, affine, torch.Generator().manual_seed(1), args, device)

    def forward():   # the UNet alone (the condition embedding costs nothing beside it)
        from ..models.unet import time_embed_dim

        unet = denoiser.unet
        x = torch.zeros((1, unet.config.in_channels, *size), device=device)
        emb = torch.zeros((1, time_embed_dim(unet)), device=device)
        return unet(x, torch.full((1,), 500, device=device), class_labels=emb).sample

    notes = {"latents": f"{channels}x{size[0]}x{size[1]} (VAE factor {f}, from {source})"}
    return [denoiser], frozen, step, forward, (channels, *size), notes


def _siamese_setup(args, device, batch: int, frames: tuple[int, int]):
    from ..models.siamese import SiameseEmbedder
    from ..privacy.reid import build_loss
    from .train_siamese import siamese_architecture

    model = SiameseEmbedder(**siamese_architecture(args)).to(device)
    size = tuple(model.config.input_size)
    loss_fn, miner = build_loss(args.loss)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand((batch, 1, *size), generator=g) * 2 - 1).to(device)
    labels = torch.arange(batch, device=device) // 2

    def step():
        embeddings = model(images)
        return loss_fn(embeddings.float(), labels, miner(embeddings.float(), labels))

    def forward():
        return model(images[:1])

    views = 4 if model.config.flip_invariant else 1
    notes = {"views": f"{views} flip views per image (flip_invariant); frames resized from {frames[0]}x{frames[1]}"}
    return [model], [], step, forward, (1, *size), notes


def _encoder_setup(args, device, batch: int, frames: tuple[int, int]):
    import torch.nn.functional as F

    from ..models.classifier import MammoCNN
    from ..models.encoder import ENCODER_TASKS
    from .train_encoder import encoder_architecture

    arch = encoder_architecture(args)
    size = tuple(arch["sample_size"])
    net = MammoCNN(dict(ENCODER_TASKS), arch["block_out_channels"], localisation=True).to(device)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand((batch, 1, *size), generator=g) * 2 - 1).to(device)

    def step():
        out = net(images)
        loss = sum(F.cross_entropy(out[t].float(), torch.zeros(batch, dtype=torch.long, device=device))
                   for t in ENCODER_TASKS)
        return loss + F.binary_cross_entropy_with_logits(out["heatmap"].float(), torch.zeros_like(out["heatmap"]).float())

    def forward():
        net.eval()
        try:
            return net(images[:1])
        finally:
            net.train()

    notes = {"loop": "trained by evaluation.classifiers.fit (one process, fp32)"}
    return [net], [], step, forward, (1, *size), notes


SETUPS = {"vae": _vae_setup, "ldm": _ldm_setup, "siamese": _siamese_setup, "encoder": _encoder_setup}


def dry_run(args: argparse.Namespace, network: str, device: str | torch.device | None = None,
            echo: bool = True) -> DryRun:
    """Build ``network`` at ``args.preset`` (options already resolved), run one optimiser step, print the figures."""
    if network not in SETUPS:
        raise ValueError(f"network must be one of {sorted(SETUPS)}, got {network!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if getattr(args, "num_threads", None):
        torch.set_num_threads(args.num_threads)
    precision = getattr(args, "mixed_precision", None) or "no"
    batch = MEASURED_BATCH[network]
    torch.manual_seed(getattr(args, "seed", 0))
    frames = _frames(args)
    modules, frozen, step, forward, shape, notes = SETUPS[network](args, device, batch, frames)
    for module in modules:
        module.train()
    started = time.perf_counter()
    flops, saved, loss, peak = _measure(step, modules, device, precision)
    seconds = time.perf_counter() - started
    with _autocast(device, precision):
        forward_flops = _forward_flops(forward)
    batch_size = int(getattr(args, "train_batch_size", None) or getattr(args, "batch_size", None) or batch)
    result = DryRun(network=network, preset=args.preset, device=str(device), precision=precision,
                    gradient_checkpointing=bool(getattr(args, "gradient_checkpointing", False)),
                    input_shape=tuple(int(s) for s in shape), trainable_params=_count(modules, True),
                    frozen_params=_count(modules, False) + _count(frozen, False) + _count(frozen, True),
                    ema=bool(getattr(args, "use_ema", False)) and network in ("vae", "ldm"),
                    train_gflop_per_image=flops / batch / 1e9, forward_gflop_per_image=forward_flops / 1e9,
                    measured_batch=batch, activation_bytes_per_image=saved / batch, batch_size=batch_size,
                    step_seconds=seconds, loss=loss, peak_measured_bytes=peak, notes=notes)
    if not math.isfinite(loss):
        raise ValueError(f"the dry-run step of the {network} gave a non-finite loss ({loss})")
    if echo:
        print(result.report(), flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# The GPU-hour plan (FLOPs counted on the meta device: no memory, no compute)


def flops_per_image(network: str, preset: str) -> dict[str, float]:
    """Per-image GFLOP of the work each stage does, counted on the ``meta`` device."""
    from torch.utils.flop_counter import FlopCounterMode

    args = _plan_args(network, preset)
    frames = presets.PRESET_FRAMES[preset]
    out: dict[str, float] = {}
    with torch.device("meta"):
        modules, frozen, step, forward, _, _ = SETUPS[network](args, torch.device("meta"), MEASURED_BATCH[network],
                                                             frames)
        with FlopCounterMode(display=False) as counter:   # the network's forward + backward (the loss is small)
            outputs = forward()
            outputs = list(outputs.values()) if isinstance(outputs, dict) else [outputs]
            sum(o.float().sum() for o in outputs).backward()
        out["train"] = counter.get_total_flops() / 1e9
        out["forward"] = _forward_flops(forward) / 1e9
        if network == "vae":   # whole frames: encoding the latent cache and decoding generated images
            vae = modules[0].vae
            x = torch.zeros((1, 1, *frames))
            out["encode_frame"] = _forward_flops(lambda: vae.encode(x).latent_dist.mode()) / 1e9
            f = 2 ** (len(vae.config.block_out_channels) - 1)
            z = torch.zeros((1, vae.config.latent_channels, frames[0] // f, frames[1] // f))
            out["decode_frame"] = _forward_flops(lambda: vae.decode(z).sample) / 1e9
    return out


def _plan_args(network: str, preset: str) -> argparse.Namespace:
    from .options import ldm_parser, siamese_parser, vae_parser

    if network == "encoder":
        from .train_encoder import build_parser

        args = build_parser().parse_args(["--preset", preset, "--dry-run"])
        return presets.resolve_training_options(args, "encoder")
    parser = {"vae": vae_parser, "ldm": ldm_parser, "siamese": siamese_parser}[network]()
    args = parser.parse_args(["--preset", preset, "--dry-run"])
    presets.resolve_training_options(args, network)
    args.gradient_checkpointing = False   # FLOPs of the plain step; the recompute is added below
    return args


def plan(preset: str, train_images: int, processes: int = 1, peak_tflops: float = 989.0, utilisation: float = 0.35,
         generate_images: int | None = None, inference_steps: int = 50, guidance: bool = True,
         test_images: int | None = None, steps: dict[str, int] | None = None,
         encoder_epochs: int | None = None) -> list[dict[str, Any]]:
    """GPU-hours per stage of ``scripts/train_vindr.sh`` at ``preset`` from FLOPs counted on the meta device.

    ``hours = GFLOP of the stage / (peak_tflops · utilisation) / 3600`` (summed over all processes, so it is
    GPU-hours; wall-clock ≈ hours / processes). Steps and epochs are the preset's
    (:data:`presets.TRAINING_PRESETS`) unless ``steps`` (``{"vae": n, "ldm": n, "siamese": n}``) /
    ``encoder_epochs`` say otherwise; the batch is global (per-process batch × ``processes``). With gradient
    checkpointing a training step costs one more forward pass.
    """
    if preset not in presets.TRAINING_PRESETS:
        raise ValueError(f"plan needs a GPU preset ({sorted(presets.TRAINING_PRESETS)}), got {preset!r}")
    if train_images < 1:
        raise ValueError(f"train_images must be >= 1, got {train_images}")
    generate_images = train_images if generate_images is None else generate_images
    test_images = max(train_images // 4, 1) if test_images is None else test_images
    rate = peak_tflops * 1e3 * utilisation   # GFLOP/s
    flops = {n: flops_per_image(n, preset) for n in presets.NETWORKS}
    rows = []

    def add(stage: str, gflop: float, work: str, parallel: bool):
        rows.append({"stage": stage, "gflop": gflop, "gpu_hours": gflop / rate / 3600, "work": work,
                     "data_parallel": parallel})

    for network, stage in (("vae", "train-vae"), ("ldm", "train-ldm"), ("siamese", "train-siamese")):
        row = {**presets.training_row(network, preset), **({"steps": steps[network]} if steps and network in steps else {})}
        per_image = flops[network]["train"] + (flops[network]["forward"] if row["gradient_checkpointing"] else 0.0)
        images = row["steps"] * row["train_batch_size"] * processes
        add(stage, per_image * images, f"{row['steps']:,} steps x {row['train_batch_size'] * processes} images "
            f"({per_image:.1f} GFLOP each)", True)
        if network == "ldm":
            add("latent cache", flops["vae"]["encode_frame"] * train_images,
                f"{train_images:,} frames through the VAE encoder", True)
    index = flops["siamese"]["forward"] * (train_images + test_images)
    add("build-index", index, f"{train_images + test_images:,} frames through the Siamese network", False)
    enc = {**presets.training_row("encoder", preset), **({"epochs": encoder_epochs} if encoder_epochs else {})}
    add("train-encoder", flops["encoder"]["train"] * train_images * enc["epochs"],
        f"{enc['epochs']} epochs x {train_images:,} images", False)
    per_image = flops["ldm"]["forward"] * inference_steps * (2 if guidance else 1) + flops["vae"]["decode_frame"]
    add("generate-set", per_image * generate_images, f"{generate_images:,} images x {inference_steps} steps"
        + (" x 2 (CFG)" if guidance else ""), True)
    audit = (flops["siamese"]["forward"] * generate_images + 50 * flops["ldm"]["forward"] * 400)
    add("privacy-audit", audit, "synthetic set through the Siamese network + membership attacks", False)
    add("evaluate", flops["encoder"]["forward"] * (generate_images + train_images + test_images)
        + flops["encoder"]["train"] * 8 * 3 * train_images, "features + utility classifiers (8 epochs x 3 seeds)",
        False)
    return rows


def format_plan(rows: list[dict[str, Any]], preset: str, processes: int, peak_tflops: float,
                utilisation: float) -> str:
    lines = [f"GPU-hour estimate for --preset {preset} on {processes} process(es), from FLOPs counted with "
             f"FlopCounterMode at {peak_tflops:.0f} TFLOP/s bf16 peak x {utilisation:.0%} utilisation:",
             f"  {'stage':<15} {'GPU-hours':>10} {'wall h':>8}  work"]
    for row in rows:
        wall = row["gpu_hours"] / (processes if row["data_parallel"] else 1)
        lines.append(f"  {row['stage']:<15} {row['gpu_hours']:>10.2f} {wall:>8.2f}  {row['work']}")
    total = sum(r["gpu_hours"] for r in rows)
    lines.append(f"  {'total':<15} {total:>10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammosynth.training.dry_run",
                                     description="GPU-hour estimate per stage of scripts/train_vindr.sh.")
    parser.add_argument("--preset", required=True, choices=sorted(presets.TRAINING_PRESETS))
    parser.add_argument("--train-images", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1, help="GPUs over all nodes")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="bf16 dense peak per GPU (989 H100/H200 SXM, 312 A100)")
    parser.add_argument("--utilisation", type=float, default=0.35, help="share of the peak reached (MFU)")
    parser.add_argument("--inference-steps", type=int, default=50)
    for network in ("vae", "ldm", "siamese"):
        parser.add_argument(f"--{network}-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--encoder-epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    steps = {n: getattr(args, f"{n}_steps") for n in ("vae", "ldm", "siamese") if getattr(args, f"{n}_steps")}
    rows = plan(args.preset, args.train_images, args.processes, args.peak_tflops, args.utilisation,
                inference_steps=args.inference_steps, steps=steps, encoder_epochs=args.encoder_epochs)
    print(format_plan(rows, args.preset, args.processes, args.peak_tflops, args.utilisation))
    if args.json:
        from ..data.prepared import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
