"""The 1-channel ``AutoencoderKL`` (f = 8) and its latent helpers.

A 256×192 frame in [-1, 1] becomes a 4×32×24 latent. ``vae.config.scaling_factor`` is
measured from data (:func:`measure_scaling_factor`: 1 / std of the latents) so that the
scaled latents the diffusion model sees have unit variance. Per-channel standardisation
(``latents_mean`` / ``latents_std`` in the config, :func:`latent_affine`) replaces it when
the channels' spreads differ a lot: with one global scale, a channel with a quarter of the
spread of the others is drowned by the diffusion noise early, the denoiser recovers it badly,
and the generated latents keep noise in it that the decoder draws as a grid texture.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL

__all__ = ["VAE_PRESETS", "build_vae", "encode", "decode", "measure_scaling_factor", "downsample_factor",
           "latent_affine", "apply_latent_affine", "to_model_space", "from_model_space", "channel_stats",
           "has_channel_stats", "swap_decoder", "resolve_vae_folder", "widen_latent", "LATENT_SPACE_KEYS",
           "reconstruct"]

#: Named sizes. ``bundled`` is the 2-CPU demo model; ``tiny`` is for tests; ``vindr-512`` / ``vindr-1024`` are for
#: VinDr-Mammo on GPUs (f = 8; the same fully convolutional network, trained on larger crops at 1024) and
#: ``device-512`` is the one-shot GPU job's. The mid block's self-attention runs at the latent size (diffusers
#: SDPA); the training side (crop, batch, bf16, checkpointing) is
#: :data:`mammosynth.training.presets.TRAINING_PRESETS`.
VAE_PRESETS: dict[str, dict] = {
    # Sized for 2 CPU cores: ~2 s per step of 8 crops of 96x72 on one thread.
    "bundled": {"block_out_channels": (16, 32, 64, 64), "layers_per_block": 1, "norm_num_groups": 16},
    "tiny": {"block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},
    "vindr-512": {"block_out_channels": (64, 128, 256, 256), "layers_per_block": 2, "norm_num_groups": 32},
    "vindr-1024": {"block_out_channels": (64, 128, 256, 256), "layers_per_block": 2, "norm_num_groups": 32},
    "device-512": {"block_out_channels": (32, 64, 128, 128), "layers_per_block": 1, "norm_num_groups": 32},
}
VAE_PRESETS["vindr-tiny"] = VAE_PRESETS["tiny"]   # the GPU scripts at test size (tests/test_train_vindr.py)



def build_vae(
    block_out_channels: Sequence[int] = (32, 64, 128, 128),
    layers_per_block: int = 1,
    latent_channels: int = 4,
    norm_num_groups: int = 32,
    sample_size: int = 256,
) -> AutoencoderKL:
    """A fresh 1-channel ``AutoencoderKL``; ``len(block_out_channels)`` blocks → f = 2^(n-1).

    Raises:
        ValueError: if a block width is not divisible by ``norm_num_groups``.
    """
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"block_out_channels {tuple(block_out_channels)} must be divisible by norm_num_groups={norm_num_groups}")
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=1.0,
        force_upcast=False,
    )


def downsample_factor(vae: AutoencoderKL) -> int:
    """Spatial down-sampling factor of the VAE (8 for four blocks)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def has_channel_stats(config) -> bool:
    """Whether a VAE config carries per-channel ``latents_mean`` / ``latents_std``.

    Both or neither: a config with only one of them is malformed (``ValueError``).
    """
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if (mean is None) != (std is None):
        raise ValueError(f"the VAE config has latents_mean {mean} but latents_std {std}: per-channel "
                         "standardisation needs both (or neither, for the global scaling_factor)")
    return mean is not None


def latent_affine(vae: AutoencoderKL) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shift, scale)``, one value per latent channel: the diffusion model sees ``(z − shift) · scale``.

    With ``latents_mean`` / ``latents_std`` in the VAE config (per-channel standardisation,
    set by ``train-ldm --latent_norm channel``) that is ``(mean, 1 / std)``; otherwise
    ``(0, scaling_factor)``, the single global scale of Stable Diffusion.
    """
    config = vae.config
    channels = config.latent_channels
    if has_channel_stats(config):
        mean = torch.tensor(config.latents_mean, dtype=torch.float32)
        std = torch.tensor(config.latents_std, dtype=torch.float32)
        if mean.shape != (channels,) or std.shape != (channels,) or not bool((std > 0).all()):
            raise ValueError(f"the VAE config's latents_mean {config.latents_mean} / latents_std {config.latents_std} "
                             f"must hold {channels} values each, with every std > 0")
        return mean, 1.0 / std
    return torch.zeros(channels), torch.full((channels,), float(config.scaling_factor))


def apply_latent_affine(latents: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor],
                        inverse: bool = False) -> torch.Tensor:
    """``(latents − shift) · scale`` per channel of ``(N,C,h,w)`` latents, or its inverse."""
    shift, scale = (v.to(latents.device, latents.dtype).view(1, -1, 1, 1) for v in affine)
    return latents / scale + shift if inverse else (latents - shift) * scale


def to_model_space(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Unscaled VAE latents ``(N,C,h,w)`` → the latents the diffusion model works on."""
    return apply_latent_affine(latents, latent_affine(vae))


def from_model_space(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_model_space`."""
    return apply_latent_affine(latents, latent_affine(vae), inverse=True)


def channel_stats(latents: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of unscaled latents ``(N,C,h,w)`` (for
    ``latents_mean`` / ``latents_std``)."""
    if latents.dim() != 4 or len(latents) == 0:
        raise ValueError(f"channel_stats needs latents of shape (N, C, h, w) with N > 0, got {tuple(latents.shape)}")
    values = latents.double().transpose(0, 1).flatten(1)
    std = values.std(dim=1)
    if not bool((std > 0).all()):
        raise ValueError(f"a latent channel is constant (std {std.tolist()}); is the VAE trained?")
    return [float(v) for v in values.mean(dim=1)], [float(v) for v in std]


def encode(vae: AutoencoderKL, images: torch.Tensor, sample: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Images ``(N,1,H,W)`` in [-1, 1] → *scaled* latents ``(N,C,H/f,W/f)``.

    Uses the posterior mean unless ``sample`` is true.
    """
    dist = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = dist.sample(generator) if sample else dist.mode()
    return to_model_space(vae, latents)


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → images ``(N,1,H,W)``, roughly in [-1, 1] (not clipped)."""
    latents = from_model_space(vae, latents.to(device=vae.device, dtype=vae.dtype))
    return vae.decode(latents).sample


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKL, batches: Iterable[torch.Tensor]) -> float:
    """``1 / std`` of the unscaled posterior means over the given image batches."""
    values = []
    for images in batches:
        values.append(vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode().float().flatten())
    if not values:
        raise ValueError("measure_scaling_factor needs at least one batch of images")
    std = torch.cat(values).std().item()
    if not std > 0:
        raise ValueError(f"the latents have standard deviation {std}; is the VAE trained?")
    return 1.0 / std


def resolve_vae_folder(path: str | os.PathLike) -> Path:
    """A VAE model folder from a train-vae run folder (``<run>/vae``) or the folder itself."""
    path = Path(path)
    for candidate in (path / "vae", path):
        if (candidate / "config.json").is_file() and any(candidate.glob("*.safetensors")):
            return candidate
    raise FileNotFoundError(
        f"no trained VAE in {path} (looked for {path / 'vae' / 'config.json'}); run `mammosynth train-vae` first"
    )


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, frames: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """uint16 frames ``(N, H, W)`` through the VAE and back (posterior mean): uint16 ``(N, H, W)``.

    What the autoencoder keeps of an image: the ceiling of any denoiser that works in its latents.
    """
    from ..data.dataset import from_unit_range, to_unit_range

    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint16:
        raise ValueError(f"frames must be uint16 (N, H, W), got {frames.dtype} {frames.shape}")
    out = np.empty_like(frames)
    for start in range(0, len(frames), batch_size):
        x = to_unit_range(frames[start:start + batch_size][:, None]).to(vae.device, vae.dtype)
        out[start:start + batch_size] = from_unit_range(vae.decode(vae.encode(x).latent_dist.mode()).sample[:, 0])
    return out


#: Config fields that define the latent space: a decoder can only replace another if they match.
LATENT_SPACE_KEYS = ("in_channels", "latent_channels", "block_out_channels", "down_block_types",
                     "layers_per_block", "norm_num_groups", "act_fn", "use_quant_conv",
                     "scaling_factor", "shift_factor", "latents_mean", "latents_std")


def swap_decoder(checkpoint: str | os.PathLike, vae_folder: str | os.PathLike) -> Path:
    """Put the decoder of ``vae_folder`` into the pipeline folder ``checkpoint``.

    ``vae_folder`` is a VAE trained with ``train-vae --init_vae <checkpoint>/vae
    --freeze_encoder``: same encoder, so same latents, and the checkpoint's diffusion model
    stays valid. That is checked: the latent-space config fields
    (:data:`LATENT_SPACE_KEYS`) and every encoder / ``quant_conv`` weight must equal the
    checkpoint's (in the checkpoint's dtype), or ``ValueError`` says which differs. The new
    VAE is saved in the checkpoint's dtype (fp16 for the bundled one) and replaces
    ``<checkpoint>/vae`` atomically. Returns that folder.
    """
    target = Path(checkpoint) / "vae"
    if not (target / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} has no vae/config.json; pass a pipeline folder (e.g. "
                                "checkpoints/mammosynth-phantom-256)")
    vae_folder = resolve_vae_folder(vae_folder)
    from safetensors import safe_open

    weights = sorted(target.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{target} has no .safetensors weights")
    with safe_open(str(weights[0]), framework="pt") as handle:   # keep the checkpoint's stored dtype
        dtype = handle.get_tensor(next(iter(handle.keys()))).dtype
    old = AutoencoderKL.from_pretrained(target, dtype=dtype)
    new = AutoencoderKL.from_pretrained(vae_folder, dtype=dtype)   # compared and saved in the checkpoint's dtype
    for key in LATENT_SPACE_KEYS:
        a, b = old.config.get(key), new.config.get(key)
        if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            raise ValueError(f"{vae_folder} has {key}={b!r} but {target} has {a!r}: not the same latent space. "
                             f"Train the decoder with `mammosynth train-vae --init_vae {target} --freeze_encoder`")
    new_state = new.state_dict()
    for name, tensor in old.state_dict().items():
        if not name.startswith(("encoder.", "quant_conv.")):
            continue
        if name not in new_state or not torch.equal(new_state[name], tensor):
            raise ValueError(f"{vae_folder}: encoder weight {name} differs from {target}'s, so its latents would "
                             "too; train the decoder with --freeze_encoder from this checkpoint's VAE")
    tmp = target.with_name("vae.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    new.save_pretrained(tmp)
    backup = target.with_name("vae.old")
    shutil.rmtree(backup, ignore_errors=True)
    os.replace(target, backup)
    os.replace(tmp, target)
    shutil.rmtree(backup)
    return target


def rebuilt_with(model, **overrides):
    """A freshly initialised model of ``model``'s class and dtype, with its config but for ``overrides``."""
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    fresh = type(model).from_config({**config, **overrides})
    return fresh if fresh.dtype == model.dtype else fresh.to(model.dtype)


def widen_latent(vae: AutoencoderKL, latent_channels: int) -> AutoencoderKL:
    """The same VAE with ``latent_channels`` latent channels instead of its own, as a start for training.

    Function-preserving (Net2Net-style): the old channels keep their weights, the encoder's new mean
    channels start from the layer's fresh initialisation, their log-variance from the old channels'
    mean bias (with zero weights), ``quant_conv`` / ``post_quant_conv`` map the new channels through
    unchanged, and the decoder's first convolution gives them zero weights. So before any training the
    widened VAE encodes the old channels and decodes exactly as before; training then teaches it to
    put more detail (calcification specks, spicules) into the new channels. The scaling and any
    ``latents_mean`` / ``latents_std`` are dropped: the latent space changes, measure them again.

    Raises:
        ValueError: if ``latent_channels`` is not larger than the VAE's own.
    """
    old = vae.config.latent_channels
    if latent_channels <= old:
        raise ValueError(f"latent_channels must be larger than the VAE's own {old} to widen it, got {latent_channels}")
    wide = rebuilt_with(vae, latent_channels=latent_channels, scaling_factor=1.0, latents_mean=None, latents_std=None)
    src = vae.state_dict()
    dst = wide.state_dict()
    n, L = latent_channels, old
    moments_new = [*range(L), *range(n, n + L)]   # the old (mean, logvar) rows in the wide encoder output
    with torch.no_grad():
        for key, value in src.items():
            target = dst[key]
            if target.shape == value.shape:
                target.copy_(value)
            elif key.startswith("encoder.conv_out."):
                target[moments_new] = value
                if key.endswith("bias"):              # new log-variances: the old channels' typical value
                    target[n + L:] = value[L:].mean()
                else:
                    target[n + L:] = 0
            elif key.startswith(("quant_conv.", "post_quant_conv.")):   # 1x1 convs: old block + identity
                pos = torch.tensor(moments_new if key.startswith("quant_conv.") else list(range(L)))
                target.zero_()
                if key.endswith("bias"):
                    target[pos] = value
                else:
                    target[:, :, 0, 0] = torch.eye(target.shape[0], dtype=target.dtype)
                    target[pos[:, None], pos[None, :]] = value
            elif key == "decoder.conv_in.weight":
                target.zero_()
                target[:, :L] = value
            else:
                raise ValueError(f"cannot widen {key}: shape {tuple(value.shape)} -> {tuple(target.shape)}")
    wide.load_state_dict(dst)
    return wide
