"""A tiny, random-initialised :class:`MammoLDMPipeline` for tests and benchmarks (built in a second).

:func:`tiny_pipeline` (and :func:`tiny_modules`, its networks alone) is the one builder the
tests (``tests/conftest.py``), :func:`mammosynth.ui.testing.make_tiny_checkpoint` and the
benchmarks use. The defaults give a 64×48 model (VAE f = 8, ``VAE_PRESETS["tiny"]``,
``UNET_PRESETS["tiny"]``); every call with the same arguments makes the same weights
(``torch.manual_seed(seed)`` first). It makes noise, not mammograms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DModel

    from ..models.conditioning import ConditionEncoder
    from .pipeline_mammo_ldm import MammoLDMPipeline

__all__ = ["tiny_modules", "tiny_pipeline", "add_tiny_student", "add_tiny_decoder"]


def tiny_modules(height: int = 64, width: int = 48, seed: int = 0, *, latent_channels: int = 4,
                 vae: dict[str, Any] | None = None, unet: dict[str, Any] | None = None,
                 embed_dim: int = 8) -> tuple[AutoencoderKL, UNet2DModel, ConditionEncoder]:
    """The VAE, UNet and condition encoder of a tiny pipeline for ``height`` × ``width`` images.

    Args:
        seed: ``torch.manual_seed`` before the networks are made (same seed, same weights).
        latent_channels: latent channels of the VAE (and so of the UNet).
        vae, unet: options that replace those of ``VAE_PRESETS["tiny"]`` / ``UNET_PRESETS["tiny"]``.
        embed_dim: the condition encoder's embedding size.
    """
    import torch

    from ..models.autoencoder import VAE_PRESETS, build_vae
    from ..models.conditioning import ConditionEncoder
    from ..models.unet import UNET_PRESETS, build_unet, time_embed_dim

    torch.manual_seed(seed)
    autoencoder = build_vae(sample_size=height, latent_channels=latent_channels, **{**VAE_PRESETS["tiny"], **(vae or {})})
    factor = 2 ** (len(autoencoder.config.block_out_channels) - 1)
    denoiser = build_unet(sample_size=(height // factor, width // factor), latent_channels=latent_channels,
                          **{**UNET_PRESETS["tiny"], **(unet or {})})
    return autoencoder, denoiser, ConditionEncoder(embed_dim=embed_dim, out_dim=time_embed_dim(denoiser))


def tiny_pipeline(height: int = 64, width: int = 48, seed: int = 0, *, scheduler: SchedulerMixin | None = None,
                  privacy_checker: Any = None, requires_privacy_checker: bool = False,
                  **module_options: Any) -> MammoLDMPipeline:
    """A tiny pipeline (progress bar off); ``module_options`` go to :func:`tiny_modules`.

    Args:
        scheduler: default DPM-Solver++ (:func:`~mammosynth.pipelines.pipeline_mammo_ldm.default_scheduler`).
        privacy_checker: the gate (anything with ``check(frames) -> verdicts``), or none.
        requires_privacy_checker: ``False`` (default) generates without a gate on purpose.
    """
    from .pipeline_mammo_ldm import MammoLDMPipeline, default_scheduler

    vae, unet, encoder = tiny_modules(height, width, seed, **module_options)
    pipe = MammoLDMPipeline(vae, unet, encoder, scheduler if scheduler is not None else default_scheduler(),
                            privacy_checker=privacy_checker, requires_privacy_checker=requires_privacy_checker)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_tiny_student(pipe: MammoLDMPipeline, seed: int = 0, guidance_embed_dim: int = 16) -> MammoLDMPipeline:
    """Give ``pipe`` an untrained "student": a copy of its UNet and condition encoder with a guidance
    embedding (random, so that the guidance scale changes the output) and the student's
    ``LCMScheduler``, as ``mammosynth distill`` would write them. For tests of the plumbing."""
    import copy

    import torch

    from ..models.conditioning import with_guidance_embedding

    torch.manual_seed(seed)
    encoder = with_guidance_embedding(pipe.condition_encoder, dim=guidance_embed_dim)
    for parameter in encoder.guidance_mlp.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    pipe.register_modules(student_unet=copy.deepcopy(pipe.unet).eval(), student_condition_encoder=encoder.eval(),
                          student_scheduler=pipe.scheduler_named("lcm"))
    return pipe


def add_tiny_decoder(pipe: MammoLDMPipeline, seed: int = 0) -> MammoLDMPipeline:
    """Give ``pipe`` an untrained tiny decoder (``tiny_vae``), as ``mammosynth add-fast`` adds one."""
    import torch

    from ..models.tiny_decoder import build_tiny_decoder

    torch.manual_seed(seed)
    tiny = build_tiny_decoder(pipe.vae, widths=8, num_blocks=(1, 1, 1, 0)).eval()
    last = [m for m in tiny.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():   # mid-grey plus what the latents say, not a clipped black frame
        last.bias.fill_(0.5)
        last.weight.mul_(4.0)
    pipe.register_modules(tiny_vae=tiny)
    return pipe
