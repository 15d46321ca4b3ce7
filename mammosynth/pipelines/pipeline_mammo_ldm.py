"""``MammoLDMPipeline``: conditional latent diffusion for synthetic mammograms (DESIGN §8).

Components (a diffusers folder: ``model_index.json``, ``vae/``, ``unet/``,
``condition_encoder/``, ``scheduler/``, optionally ``privacy_checker/``):

* ``vae`` – 1-channel ``AutoencoderKL`` (f = 8), ``config.scaling_factor`` (or per-channel
  ``latents_mean`` / ``latents_std``) measured from data
* ``unet`` – ``UNet2DModel`` over ``latents ⊕ lesion mask`` with ``class_embed_type="identity"``
* ``condition_encoder`` – :class:`~mammosynth.models.conditioning.ConditionEncoder`
* ``scheduler`` – any diffusers scheduler (DPM-Solver++ by default)
* ``student_unet`` / ``student_condition_encoder`` – optional: the few-step student distilled from
  ``unet`` by latent consistency distillation (``mammosynth distill``), with the guidance scale as an
  input instead of a second (unconditional) UNet call. Choosing the scheduler ``"lcm"``
  (``scheduler_from_name("lcm", ...)``, CLI ``--scheduler lcm``) samples with it in 1–4 steps.
* ``tiny_vae`` – optional: a tiny ``AutoencoderTiny`` decoder distilled from ``vae``'s
  (``mammosynth distill-decoder``), for previews and fast sets (``decoder="tiny"``).
* ``privacy_checker`` – :class:`mammosynth.privacy.checker.PrivacyChecker`, the privacy gate.
  It is on by default: a pipeline without one **refuses to generate** (``PrivacyGateMissingError``)
  unless it was built or loaded with ``requires_privacy_checker=False`` on purpose, which logs a
  loud warning; ``out.privacy`` is then ``None``.

The model works in the canonical orientation (chest wall left). Boxes are given in the
displayed frame and moved to the canonical frame here; right-breast images are mirrored
back for display before they are returned.

:meth:`MammoLDMPipeline.edit` inserts a lesion into an existing image (masked latent inpainting
by latent blending, then a feathered paste; :mod:`mammosynth.pipelines.inpainting` says how and
why); its results pass the same privacy gate.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..conditions import ConditionError, Conditions, Laterality
from ..models.conditioning import CONDITION_FIELDS, unconditional_codes
from ..models.autoencoder import from_model_space, latent_affine, to_model_space
from ..models.denoiser import ConditionalDenoiser, EncodedConditions
from .checkpoint import CheckpointError, check_checkpoint_folder, register_privacy_checker

logger = logging.getLogger(__name__)

__all__ = ["MammoLDMPipeline", "MammoLDMPipelineOutput", "MammoLDMEditOutput", "CheckpointError", "PrivacyGateMissingError",
           "default_scheduler", "register_privacy_checker", "load_pipeline", "SCHEDULERS", "DECODERS",
           "DEFAULT_STEPS", "default_steps", "is_student_scheduler", "student_scheduler"]

OUTPUT_TYPES = ("uint16", "float", "pil", "latent")

#: Short names of the schedulers the CLI and app offer → diffusers class names.
SCHEDULERS: dict[str, str] = {
    "dpm": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddpm": "DDPMScheduler",
    "lcm": "LCMScheduler",   # the distilled student (student_unet), not the teacher
}

#: The decoders :meth:`MammoLDMPipeline.__call__` offers: the VAE's, or the distilled tiny one.
DECODERS = ("full", "tiny")

#: Default denoising steps per scheduler short name (see :func:`default_steps`).
DEFAULT_STEPS: dict[str, int] = {"lcm": 2}

#: Default steps of the teacher's multistep schedulers (DPM-Solver++ and the like), from measurement
#: (``benchmarks/bench_sampling.py --quality 800``, bundled checkpoint, 2 December 2026): 8 DPM-Solver++
#: steps gave FID 4.44 against 4.82 at 20, lesion / density adherence 0.816 / 0.748 against 0.799 / 0.729
#: and box hit 0.936 against 0.939, in 0.26 s instead of 0.58 s an image.
DEFAULT_TEACHER_STEPS = 8


class PrivacyGateMissingError(ValueError):
    """The pipeline has no privacy checker and was not told to run without one."""


def default_scheduler(num_train_timesteps: int = 1000) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2M) over the noise schedule the LDM is trained with."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
    )


def default_steps(scheduler: str | Any | None) -> int:
    """The default number of denoising steps for a scheduler short name (or scheduler object)."""
    if scheduler is not None and not isinstance(scheduler, str):
        scheduler = "lcm" if type(scheduler).__name__ == "LCMScheduler" else type(scheduler).__name__
    return DEFAULT_STEPS.get(str(scheduler or "dpm").lower(), DEFAULT_TEACHER_STEPS)


def is_student_scheduler(scheduler: Any) -> bool:
    """True for the scheduler that samples with the distilled student (diffusers' ``LCMScheduler``)."""
    return type(scheduler).__name__ == "LCMScheduler"


def student_scheduler(teacher_config: dict, solver_steps: int, timestep_scaling: float, prediction_type: str):
    """The student's ``LCMScheduler``: the teacher's noise schedule; its skip schedule ``original_inference_steps``
    = the solver's N; ``trailing`` spacing (1–4 steps start at t = T − 1: 999; 999, 499; ...)."""
    import inspect

    from diffusers import LCMScheduler

    known = set(inspect.signature(LCMScheduler.__init__).parameters) - {"self"}
    schedule = {k: v for k, v in teacher_config.items() if k in known}   # not the teacher sampler's own options
    return LCMScheduler(**{**schedule, "original_inference_steps": solver_steps, "timestep_scaling": timestep_scaling,
                           "prediction_type": prediction_type, "timestep_spacing": "trailing", "clip_sample": False})


def scheduler_from_name(name: str, config: Any):
    """Build scheduler ``name`` (a key of :data:`SCHEDULERS` or a diffusers class name) from ``config``."""
    import diffusers

    class_name = SCHEDULERS.get(name.lower(), name)
    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    return cls.from_config(config)


@dataclass
class MammoLDMPipelineOutput(BaseOutput):
    """Output of :class:`MammoLDMPipeline`.

    Args:
        images: one array per image: ``uint16`` ``(H, W)`` in the display orientation
            (``output_type="uint16"``); float32 in [0, 1] for ``"float"``; PIL ``I;16``
            images for ``"pil"``; a latent tensor ``(N, C, h, w)`` for ``"latent"``.
        conditions: the validated conditions of each image.
        privacy: one ``PrivacyVerdict`` per image when a privacy checker ran, else ``None``.
    """

    images: Any
    conditions: list[Conditions]
    privacy: list | None = None


@dataclass
class MammoLDMEditOutput(MammoLDMPipelineOutput):
    """Output of :meth:`MammoLDMPipeline.edit`: the edited images, and where they may differ.

    Args:
        masks: one float32 ``(H, W)`` array per image (display orientation): the paste
            weight, 1 in the box, a ramp to 0 across the margin, 0 where the output is the
            input exactly.
    """

    masks: list | None = None


class MammoLDMPipeline(DiffusionPipeline):
    """Generate 16-bit mammograms from §7 conditions with classifier-free guidance.

    Args:
        vae: 1-channel ``AutoencoderKL``.
        unet: ``UNet2DModel`` taking ``latent_channels + 1`` channels (latents + lesion mask).
        condition_encoder: :class:`~mammosynth.models.conditioning.ConditionEncoder`.
        scheduler: a diffusers scheduler.
        privacy_checker: the privacy gate (``check(frames) -> list[PrivacyVerdict]``).
        requires_privacy_checker: with no ``privacy_checker``, ``True`` (default) makes every
            call refuse with :class:`PrivacyGateMissingError`; ``False`` runs ungated on
            purpose and logs a loud warning.
    """

    model_cpu_offload_seq = "condition_encoder->unet->vae"
    _optional_components = ["privacy_checker", "student_unet", "student_condition_encoder", "student_scheduler",
                            "tiny_vae"]

    def __init__(self, vae, unet, condition_encoder, scheduler, privacy_checker=None,
                 requires_privacy_checker: bool = True, student_unet=None, student_condition_encoder=None,
                 student_scheduler=None, tiny_vae=None):
        super().__init__()
        check_components(vae, unet, condition_encoder)
        if (student_unet is None) != (student_condition_encoder is None):
            raise CheckpointError("the student needs both student_unet and student_condition_encoder; got only one")
        if student_unet is not None:
            check_components(vae, student_unet, student_condition_encoder)
        if tiny_vae is not None and tiny_vae.config.latent_channels != vae.config.latent_channels:
            raise CheckpointError(f"the tiny decoder takes {tiny_vae.config.latent_channels} latent channels, the "
                                  f"VAE makes {vae.config.latent_channels}")
        self.register_modules(vae=vae, unet=unet, condition_encoder=condition_encoder, scheduler=scheduler,
                              privacy_checker=privacy_checker, student_unet=student_unet,
                              student_condition_encoder=student_condition_encoder,
                              student_scheduler=student_scheduler, tiny_vae=tiny_vae)
        self.register_to_config(requires_privacy_checker=requires_privacy_checker)
        #: the noise schedule the models were trained with (what :meth:`scheduler_named` builds from)
        self.teacher_scheduler_config = dict(scheduler.config)
        for module in (vae, unet, condition_encoder, student_unet, student_condition_encoder, tiny_vae):
            if module is not None:
                module.eval()  # sampling is deterministic only in eval mode
        if privacy_checker is None and not requires_privacy_checker:
            logger.warning(
                "You have disabled the privacy checker for %s (requires_privacy_checker=False). Generated images "
                "will NOT be checked against the training set for re-identification risk, and `out.privacy` will "
                "be None. Do not share such images outside your institution.",
                self.__class__.__name__,
            )

    def check_privacy_gate(self) -> None:
        """Raise :class:`PrivacyGateMissingError` unless the gate is present or disabled on purpose."""
        if self.privacy_checker is None and self.config.get("requires_privacy_checker", True):
            raise PrivacyGateMissingError(
                "this pipeline has no privacy checker, so its images would not be checked against the training "
                "set. Build one with `mammosynth build-index --siamese RUN --data DATA --out "
                "<checkpoint>/privacy_checker` (it registers itself in the checkpoint), or load the pipeline "
                "with `requires_privacy_checker=False` (CLI: --no-privacy-gate) to generate ungated images on "
                "purpose"
            )

    # ---- geometry -----------------------------------------------------------------------

    @property
    def _execution_device(self) -> torch.device:
        """Where the pipeline runs its models: the UNet's device, unless accelerate's offloading hooks
        say otherwise. diffusers' own property first walks every submodule of every component for
        group-offloading hooks, about 12 ms a call on this pipeline (a fifth of a 1-step image on
        the CPU); that walk is only needed once offloading is on, which sets ``_hf_hook`` (accelerate) or
        ``_diffusers_hook`` (group offloading) on the components. Leaf-level group offloading hooks only
        the leaves: after ``enable_group_offload(..., offload_type="leaf_level")`` on a component, also
        register a hook on it or move the pipeline with ``.to(device)``."""
        if any(hasattr(module, "_hf_hook") or hasattr(module, "_diffusers_hook")
               for module in self.components.values() if isinstance(module, torch.nn.Module)):
            return super()._execution_device
        return self.unet.device

    @property
    def has_student(self) -> bool:
        """Whether the checkpoint ships a distilled few-step student (scheduler ``"lcm"``)."""
        return getattr(self, "student_unet", None) is not None

    @property
    def has_tiny_decoder(self) -> bool:
        """Whether the checkpoint ships the tiny decoder (``decoder="tiny"``)."""
        return getattr(self, "tiny_vae", None) is not None

    def scheduler_named(self, name: str):
        """A fresh scheduler by short name (:data:`SCHEDULERS`): the teacher's noise schedule for dpm,
        ddim, ...; for ``"lcm"`` the student's own ``LCMScheduler`` (``student_scheduler/``, the
        settings it was distilled with), or one made from the teacher's schedule with the defaults
        of ``mammosynth distill`` when the checkpoint has none."""
        if name.lower() == "lcm":
            own = getattr(self, "student_scheduler", None)
            if own is not None:
                return type(own).from_config(own.config)
            config = self.teacher_scheduler_config
            return student_scheduler(config, 50, 10.0, config.get("prediction_type", "epsilon"))
        return scheduler_from_name(name, self.teacher_scheduler_config)

    def check_sampler(self, decoder: str = "full") -> None:
        """Raise ``ValueError`` when the scheduler or ``decoder`` asks for a part this checkpoint lacks."""
        if decoder not in DECODERS:
            raise ValueError(f"`decoder` has to be one of {DECODERS} but is {decoder!r}.")
        if decoder == "tiny" and not self.has_tiny_decoder:
            raise ValueError("`decoder='tiny'` needs the tiny decoder (tiny_vae/), which this checkpoint lacks: "
                             "make one with `mammosynth distill-decoder` and add it with `mammosynth add-fast`")
        if is_student_scheduler(self.scheduler) and not self.has_student:
            raise ValueError("the scheduler 'lcm' samples with the distilled student (student_unet/), which this "
                             "checkpoint lacks: make one with `mammosynth distill` and add it with "
                             "`mammosynth add-fast`, or choose a teacher scheduler (dpm, ddim, ...)")

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (VAE factor × UNet down-sampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def default_size(self) -> tuple[int, int]:
        """``(height, width)`` the model was trained at."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        return h * self.vae_scale_factor, w * self.vae_scale_factor

    # ---- inputs -------------------------------------------------------------------------

    def check_inputs(self, conditions: Sequence[Conditions], num_images: int, num_inference_steps: int,
                     guidance_scale: float, height: int, width: int, output_type: str,
                     resample_flagged: int = 0) -> None:
        """Raise ``ValueError`` with a message saying what was expected and what came."""
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"`num_images` has to be a positive integer but is {num_images!r}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps <= 0:
            raise ValueError(f"`num_inference_steps` has to be a positive integer but is {num_inference_steps!r}.")
        if guidance_scale < 1:
            raise ValueError(
                f"`guidance_scale` has to be >= 1 (1 = no guidance) but is {guidance_scale}."
            )
        multiple = self.size_multiple
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise ValueError(
                f"`height` and `width` have to be positive multiples of {multiple} but are {height} and {width}."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` has to be one of {OUTPUT_TYPES} but is {output_type!r}.")
        if not isinstance(resample_flagged, int) or resample_flagged < 0:
            raise ValueError(f"`resample_flagged` has to be an integer >= 0 but is {resample_flagged!r}.")
        for c in conditions:
            if not isinstance(c, Conditions):
                raise ValueError(f"`conditions` must hold Conditions objects, got {type(c).__name__}")

    def resolve_conditions(self, birads=None, density=None, view=None, laterality=None, lesion=None, box=None,
                           conditions: Conditions | Sequence[Conditions] | None = None,
                           num_images: int = 1) -> list[Conditions]:
        """One validated :class:`Conditions` per image (raises ``ConditionError`` naming the field)."""
        fields = dict(birads=birads, density=density, view=view, laterality=laterality, lesion=lesion, box=box)
        if conditions is not None:
            given = [k for k, v in fields.items() if v is not None]
            if given:
                raise ConditionError(f"pass either `conditions` or the fields {given}, not both")
            if isinstance(conditions, Conditions):
                return [conditions] * num_images
            conditions = list(conditions)
            if not conditions:
                raise ConditionError("`conditions` is an empty list")
            if num_images not in (1, len(conditions)):
                raise ConditionError(
                    f"`conditions` has {len(conditions)} entries (one image each) but num_images={num_images}"
                )
            return [c if isinstance(c, Conditions) else Conditions.from_dict(c) for c in conditions]
        return [Conditions.create(**fields)] * num_images

    def prepare_conditions(self, conditions: Sequence[Conditions], height: int, width: int,
                           device: torch.device | str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Codes ``{field: LongTensor (N,)}`` and lesion masks ``(N, 1, H, W)`` (canonical frame)."""
        device = device or self._execution_device
        encoded = [c.encode() for c in conditions]
        codes = {f: torch.tensor([e[f] for e in encoded], dtype=torch.long, device=device) for f in CONDITION_FIELDS}
        masks = torch.from_numpy(np.stack([c.mask(height, width) for c in conditions])[:, None]).to(device)
        return codes, masks

    # ---- model helpers (used by training, privacy audit and evaluation) -------------------

    @property
    def student_denoiser(self) -> ConditionalDenoiser:
        """The distilled student as a :class:`ConditionalDenoiser` (its conditions carry the guidance scale)."""
        return ConditionalDenoiser(self.student_unet, self.student_condition_encoder)

    @property
    def denoiser(self) -> ConditionalDenoiser:
        """The UNet and condition encoder as one :class:`~mammosynth.models.denoiser.ConditionalDenoiser`
        (the same modules, not a copy): the only way this pipeline, and anything that attacks or
        distils it, calls the UNet."""
        return ConditionalDenoiser(self.unet, self.condition_encoder)

    @torch.no_grad()
    def encode_images(self, frames: np.ndarray) -> torch.Tensor:
        """uint16 frames ``(N, H, W)`` (canonical) → scaled latents (posterior mean)."""
        from ..data.dataset import to_unit_range

        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.dtype != np.uint16:
            raise ValueError(f"frames must be uint16 (N, H, W), got {frames.dtype} {frames.shape}")
        x = to_unit_range(frames[:, None]).to(self._execution_device, self.vae.dtype)
        return to_model_space(self.vae, self.vae.encode(x).latent_dist.mode())

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, decoder: str = "full") -> torch.Tensor:
        """Scaled latents → float images ``(N, H, W)`` in [0, 1] (canonical), by the VAE's decoder
        (``"full"``) or the distilled tiny one (``"tiny"``)."""
        if decoder == "tiny":
            from ..models.tiny_decoder import tiny_decode

            return tiny_decode(self.tiny_vae, latents)
        images = self.vae.decode(from_model_space(self.vae, latents.to(self.vae.dtype))).sample
        return ((images.float()[:, 0] + 1) / 2).clamp(0, 1)

    def _step_kwargs(self, generator, eta: float = 0.0) -> dict[str, Any]:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "generator" in params:
            kwargs["generator"] = generator
        if "eta" in params:
            kwargs["eta"] = eta
        return kwargs

    # ---- sampling -----------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        birads: int | str | None = None,
        density: str | None = None,
        view: str | None = None,
        laterality: str | None = None,
        lesion: str | None = None,
        box: Sequence[float] | str | None = None,
        conditions: Conditions | Sequence[Conditions] | None = None,
        num_images: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float = 3.0,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        callback: Callable[[int, int], None] | None = None,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        output_type: str = "uint16",
        return_dict: bool = True,
        resample_flagged: int = 0,
        decoder: str = "full",
    ) -> MammoLDMPipelineOutput | tuple:
        """Generate images.

        Args:
            birads, density, view, laterality, lesion, box: §7 conditions (``None`` =
                unspecified); ``box`` is ``(x0, y0, x1, y1)`` in [0, 1] in the displayed image.
            conditions: instead of the fields, one :class:`Conditions` (for all images) or a
                list (one image each).
            num_images: images to generate (per :class:`Conditions` if one was given).
            num_inference_steps: denoising steps (default :func:`default_steps` of the scheduler: 8
                for the teacher's, 2 for ``"lcm"``, the distilled student).
            guidance_scale: classifier-free guidance weight; 1 disables guidance. The student takes
                it as an input (one UNet call per step instead of two).
            height, width: output size (default: the training size).
            generator: ``torch.Generator`` (or one per image) for determinism.
            latents: optional initial noise ``(N, C, h, w)``.
            callback: ``callback(step, total)`` after every step (progress bars).
            callback_on_step_end: diffusers-style ``fn(pipe, i, t, {"latents": ...}) -> dict``;
                a returned ``"latents"`` replaces the current latents.
            output_type: ``"uint16"``, ``"float"``, ``"pil"`` or ``"latent"``.
            return_dict: return a :class:`MammoLDMPipelineOutput` (else a tuple).
            resample_flagged: regenerate images the privacy checker flags, up to this many times.
            decoder: ``"full"`` (the VAE's) or ``"tiny"`` (the distilled tiny decoder: previews and
                fast sets; its images pass the same privacy gate).

        Returns:
            :class:`MammoLDMPipelineOutput` ``(images, conditions, privacy)``.
        """
        height = height or self.default_size[0]
        width = width or self.default_size[1]
        conds = self.resolve_conditions(birads, density, view, laterality, lesion, box, conditions, num_images)
        if num_inference_steps is None:
            num_inference_steps = default_steps(self.scheduler)
        self.check_sampler(decoder)
        self.check_inputs(conds, num_images, num_inference_steps, guidance_scale, height, width, output_type,
                          resample_flagged)
        self.check_privacy_gate()
        if isinstance(generator, list) and len(generator) != len(conds):
            raise ValueError(f"got {len(generator)} generators for {len(conds)} images; pass one per image or one")
        if latents is not None and latents.shape[0] != len(conds):
            raise ValueError(f"`latents` has batch size {latents.shape[0]} but {len(conds)} images were asked for")

        latents = self._sample(conds, num_inference_steps, guidance_scale, height, width, generator, latents,
                               callback, callback_on_step_end)
        if output_type == "latent":
            return MammoLDMPipelineOutput(images=latents, conditions=conds) if return_dict else (latents, conds, None)

        # 5. latents -> canonical uint16 frames
        images = self.decode_latents(latents, decoder)
        frames = np.rint(images.cpu().numpy() * 65535).astype(np.uint16)

        # 6. privacy gate on canonical frames; regenerate flagged images if asked
        privacy = None
        if self.privacy_checker is not None:
            privacy = list(self.privacy_checker.check(frames))
            for _ in range(resample_flagged):
                flagged = [i for i, v in enumerate(privacy) if v.flagged]
                if not flagged:
                    break
                logger.info("privacy checker flagged %d image(s); regenerating them", len(flagged))
                gens = [generator[i] for i in flagged] if isinstance(generator, list) else generator
                redo = self._sample([conds[i] for i in flagged], num_inference_steps, guidance_scale, height, width,
                                    gens, None, None, None)
                redo_frames = np.rint(self.decode_latents(redo, decoder).cpu().numpy() * 65535).astype(np.uint16)
                for j, verdict in zip(flagged, self.privacy_checker.check(redo_frames)):
                    frames[j] = redo_frames[flagged.index(j)]
                    privacy[j] = verdict

        # 7. canonical -> display orientation (mirror right breasts back)
        shown = [np.ascontiguousarray(f[:, ::-1]) if c.laterality is Laterality.R else f for f, c in zip(frames, conds)]
        if output_type == "float":
            shown = [f.astype(np.float32) / 65535.0 for f in shown]
        elif output_type == "pil":
            from PIL import Image

            shown = [Image.fromarray(f) for f in shown]
        self.maybe_free_model_hooks()
        if not return_dict:
            return shown, conds, privacy
        return MammoLDMPipelineOutput(images=shown, conditions=conds, privacy=privacy)

    @torch.no_grad()
    def edit(
        self,
        image: np.ndarray,
        lesion: str | None = None,
        box: Sequence[float] | str | None = None,
        birads: int | str | None = None,
        density: str | None = None,
        view: str | None = None,
        laterality: str | None = None,
        conditions: Conditions | None = None,
        num_images: int = 1,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        margin: int | None = None,
        min_breast_fraction: float = 0.5,
        callback: Callable[[int, int], None] | None = None,
        output_type: str = "uint16",
        return_dict: bool = True,
        paste: bool = True,
    ) -> MammoLDMEditOutput | tuple:
        """Insert a lesion of type ``lesion`` into ``box`` of ``image``; the rest of the breast is kept.

        Masked latent inpainting by **latent blending** (see :mod:`mammosynth.pipelines.inpainting`):
        the image is encoded with the VAE; the reverse diffusion runs with the requested
        conditions (the lesion type, and the box as the UNet's mask channel), and after every step
        the latents outside the box (dilated by ``margin`` and one latent cell) are replaced by
        the original's, forward-noised to that step; the result is decoded and pasted into the
        input with a feathered margin, so that outside box + margin the output is the input bit
        for bit. It costs what a generation costs (one UNet call per step, two with guidance).

        The privacy gate judges each result as it judges a generated image. A flagged edit is
        not redrawn: the kept pixels come from the input, so a new seed would not help — an
        input that is itself close to a training image stays flagged.

        Args:
            image: uint16 ``(H, W)`` in the display orientation, at the model's size
                (:attr:`default_size`); a generated image, or a mammogram brought to that size by
                :func:`mammosynth.data.upload.load_for_edit` (the ingest's crop, flip and resize).
            lesion, box: the lesion type to insert (not ``none``) and its box ``(x0, y0, x1, y1)``
                in [0, 1] of the displayed image; at least ``min_breast_fraction`` of the box
                must lie on breast tissue.
            birads, density, view, laterality: the image's other §7 conditions (``None`` =
                unspecified); ``laterality`` decides the canonical flip (unspecified: left).
            conditions: instead of the fields, one :class:`Conditions`.
            num_images: how many edits (one per generator or seed) of the same image.
            num_inference_steps, guidance_scale, generator: as for :meth:`__call__`.
            margin: feathered margin in pixels (default :func:`~.inpainting.default_margin`).
            min_breast_fraction: refuse a box with less of its area on breast tissue.
            callback: ``callback(step, total)`` after every step.
            output_type: ``"uint16"``, ``"float"`` or ``"pil"``.
            return_dict: return a :class:`MammoLDMEditOutput` (else a tuple).
            paste: ``False`` returns the decoded latents without the pixel paste (to measure
                what latent blending alone keeps; never for use).

        Returns:
            :class:`MammoLDMEditOutput` ``(images, conditions, privacy, masks)``.
        """
        from .inpainting import LatentBlend, breast_fraction, default_margin, edit_region, paste_back

        height, width = self.default_size
        fields = dict(birads=birads, density=density, view=view, laterality=laterality, lesion=lesion, box=box)
        cond = self.resolve_conditions(**fields, conditions=conditions)[0]
        frame = self.check_edit_inputs(image, cond, num_images, num_inference_steps, guidance_scale, output_type)
        self.check_privacy_gate()
        if isinstance(generator, list) and len(generator) != num_images:
            raise ValueError(f"got {len(generator)} generators for {num_images} images; pass one per image or one")
        margin = default_margin(height) if margin is None else int(margin)

        # 1. display -> canonical frame; the region the edit may change
        right = cond.laterality is Laterality.R
        canonical = np.ascontiguousarray(frame[:, ::-1]) if right else frame
        region = edit_region(cond.canonical_box(), height, width, margin, self.vae_scale_factor)
        share = breast_fraction(canonical, cond.canonical_box())
        if share < min_breast_fraction:
            raise ConditionError(
                f"the lesion box {','.join(f'{v:.3f}' for v in cond.box.as_tuple())} lies outside the breast: "
                f"{share:.0%} of it is on breast tissue, at least {min_breast_fraction:.0%} must be; draw it on "
                "the breast"
            )

        # 2. the original's latents, the starting noise and the latent mask
        device = self._execution_device
        original = self.encode_images(canonical[None]).repeat(num_images, 1, 1, 1)
        noise = randn_tensor(original.shape, generator=generator, device=device, dtype=self.unet.dtype)
        latent_mask = torch.from_numpy(region.latent_mask)[None, None].to(device, original.dtype)
        blend = LatentBlend(original.to(self.unet.dtype), noise, latent_mask)

        # 3. reverse diffusion with the known latents blended in after every step
        latents = self._sample([cond] * num_images, num_inference_steps, guidance_scale, height, width, generator,
                               noise, callback, blend)

        # 4. decode, paste the input back outside box + margin
        decoded = self.decode_latents(latents).cpu().numpy()
        if paste:
            frames = np.stack([paste_back(canonical, d, region.weights) for d in decoded])
        else:
            frames = np.rint(decoded * 65535).astype(np.uint16)

        # 5. the privacy gate on the canonical results
        privacy = list(self.privacy_checker.check(frames)) if self.privacy_checker is not None else None

        # 6. canonical -> display orientation
        masks = [region.weights[:, ::-1].copy() if right else region.weights.copy() for _ in frames]
        shown = [np.ascontiguousarray(f[:, ::-1]) if right else f for f in frames]
        if output_type == "float":
            shown = [f.astype(np.float32) / 65535.0 for f in shown]
        elif output_type == "pil":
            from PIL import Image

            shown = [Image.fromarray(f) for f in shown]
        self.maybe_free_model_hooks()
        conds = [cond] * num_images
        if not return_dict:
            return shown, conds, privacy
        return MammoLDMEditOutput(images=shown, conditions=conds, privacy=privacy, masks=masks)

    def check_edit_inputs(self, image: Any, conditions: Conditions, num_images: int, num_inference_steps: int,
                          guidance_scale: float, output_type: str) -> np.ndarray:
        """The image as a uint16 ``(H, W)`` array; ``ValueError`` saying what was expected and what came."""
        from ..conditions import Lesion

        if output_type == "latent":
            raise ValueError("`output_type` 'latent' is not offered by edit: the paste works on pixels; use "
                             "'uint16', 'float' or 'pil'.")
        if is_student_scheduler(self.scheduler):
            raise ValueError("edit runs the teacher (latent blending re-noises the original at every step); the "
                             "scheduler 'lcm' (the distilled student) is for generation: choose dpm, ddim, ...")
        height, width = self.default_size
        self.check_inputs([conditions], num_images, num_inference_steps, guidance_scale, height, width, output_type)
        if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
            if image.mode not in ("I;16", "I;16B", "I;16L"):
                raise ValueError(f"`image` has to be a 16-bit grayscale image (mode I;16) but is a PIL image of "
                                 f"mode {image.mode!r}.")
            image = np.asarray(image, dtype=np.uint16)
        if not isinstance(image, np.ndarray):
            raise ValueError(f"`image` has to be a uint16 numpy array (H, W) but is a {type(image).__name__}.")
        if image.dtype != np.uint16 or image.ndim != 2:
            raise ValueError(f"`image` has to be a 16-bit (uint16) grayscale array (H, W) but is {image.dtype} of "
                             f"shape {image.shape}.")
        if image.shape != (height, width):
            raise ValueError(
                f"`image` has to be {height}x{width} (the model's size) but is {image.shape[0]}x{image.shape[1]}; "
                "bring a mammogram to this size with mammosynth.data.upload.load_for_edit (the ingest's crop, "
                "flip and resize)."
            )
        if conditions.lesion in (None, Lesion.NONE):
            kinds = ", ".join(repr(k.value) for k in Lesion if k is not Lesion.NONE)
            raise ConditionError(f"an edit inserts a lesion: `lesion` has to be one of {kinds} but is "
                                 f"{None if conditions.lesion is None else conditions.lesion.value!r}")
        return np.ascontiguousarray(image)

    def _sample(self, conds, num_inference_steps, guidance_scale, height, width, generator, latents,
                callback, callback_on_step_end) -> torch.Tensor:
        if is_student_scheduler(self.scheduler):
            return self._sample_student(conds, num_inference_steps, guidance_scale, height, width, generator,
                                        latents, callback, callback_on_step_end)
        device = self._execution_device
        n = len(conds)
        do_cfg = guidance_scale > 1.0

        # 1. conditions -> codes and lesion masks (canonical frame); CFG adds an unconditional copy
        codes, masks = self.prepare_conditions(conds, height, width, device)
        if do_cfg:
            uncond = unconditional_codes(n, device)
            codes = {f: torch.cat([uncond[f], codes[f]]) for f in CONDITION_FIELDS}
            masks = torch.cat([torch.zeros_like(masks), masks])
        conditions = EncodedConditions(codes, masks)
        denoiser = self.denoiser

        # 2. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 3. initial noise
        shape = (n, self.unet.config.out_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        latents = latents.to(device) * self.scheduler.init_noise_sigma
        extra = self._step_kwargs(generator if not isinstance(generator, list) else None)

        # 4. denoising loop
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                # 4a. duplicate the latents for the unconditional and conditional branch
                model_input = torch.cat([latents] * 2) if do_cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                # 4b. predict the noise
                noise = denoiser(model_input, t, conditions)
                # 4c. classifier-free guidance
                if do_cfg:
                    uncond_noise, cond_noise = noise.chunk(2)
                    noise = uncond_noise + guidance_scale * (cond_noise - uncond_noise)
                # 4d. x_t -> x_t-1
                latents = self.scheduler.step(noise, t, latents, **extra).prev_sample
                # 4e. hooks
                latents = self._after_step(i, t, latents, len(timesteps), callback, callback_on_step_end, bar)
        return latents

    def _after_step(self, i, t, latents, total, callback, callback_on_step_end, bar) -> torch.Tensor:
        """The per-step hooks of both samplers: ``callback_on_step_end`` may replace the latents."""
        if callback_on_step_end is not None:
            result = callback_on_step_end(self, i, t, {"latents": latents}) or {}
            latents = result.get("latents", latents)
        if callback is not None:
            callback(i + 1, total)
        bar.update()
        return latents

    def _sample_student(self, conds, num_inference_steps, guidance_scale, height, width, generator, latents,
                        callback, callback_on_step_end) -> torch.Tensor:
        """Multistep consistency sampling with the distilled student (diffusers' ``LCMScheduler``):
        each step predicts the clean latents from the current ones and re-noises them to the next
        timestep; the guidance scale goes in as a condition, so a step is ONE UNet call."""
        device = self._execution_device
        n = len(conds)
        codes, masks = self.prepare_conditions(conds, height, width, device)
        guidance = torch.full((n,), float(guidance_scale), device=device)
        conditions = EncodedConditions(codes, masks, guidance=guidance)
        denoiser = self.student_denoiser
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = (n, self.student_unet.config.out_channels, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.student_unet.dtype)
        latents = latents.to(device) * self.scheduler.init_noise_sigma
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                prediction = denoiser(latents, t, conditions)
                latents = self.scheduler.step(prediction, t, latents, generator=generator).prev_sample
                latents = self._after_step(i, t, latents, len(timesteps), callback, callback_on_step_end, bar)
        return latents

    # ---- loading ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> MammoLDMPipeline:
        """Load a local checkpoint folder; raises :class:`CheckpointError` saying what to do.

        Weights load as float32 unless ``torch_dtype`` is given (fp16 on CPU is slow).
        ``privacy_gate=False`` loads without the privacy checker on purpose (the same as
        ``privacy_checker=None, requires_privacy_checker=False``; logs a loud warning).
        """
        path = Path(pretrained_model_name_or_path)
        if not kwargs.pop("privacy_gate", True):
            kwargs.update(privacy_checker=None, requires_privacy_checker=False)
        check_checkpoint_folder(path)
        if "torch_dtype" not in kwargs:
            kwargs.setdefault("dtype", torch.float32)
        kwargs.setdefault("local_files_only", True)
        if (path / "privacy_checker").is_dir() and "privacy_checker" not in kwargs:
            # The gate is loaded whenever the folder has one, even if model_index.json predates it
            # (`mammosynth build-index --out <checkpoint>/privacy_checker` adds it afterwards).
            checker = importlib.import_module("mammosynth.privacy.checker")
            kwargs["privacy_checker"] = checker.load_privacy_checker(path / "privacy_checker")
            kwargs.setdefault("requires_privacy_checker", True)
        try:
            pipe = super().from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError, ImportError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(
                f"could not load the checkpoint {path}: {error}. The folder must be a complete "
                "MammoLDMPipeline checkpoint (written by `pipe.save_pretrained` or `mammosynth train-ldm`); "
                "re-copy or re-train it"
            ) from error
        if not isinstance(pipe, cls):
            raise CheckpointError(f"{path} holds a {type(pipe).__name__}, not a {cls.__name__}")
        return pipe


def check_components(vae, unet, condition_encoder) -> None:
    """The components must fit together; raise :class:`CheckpointError` saying how they don't."""
    latent = vae.config.latent_channels
    if vae.config.in_channels != 1 or vae.config.out_channels != 1:
        raise CheckpointError(f"the VAE must have 1 input and 1 output channel, has {vae.config.in_channels}/"
                              f"{vae.config.out_channels}")
    if unet.config.in_channels != latent + 1 or unet.config.out_channels != latent:
        raise CheckpointError(
            f"the UNet must take {latent} latent channels + 1 mask channel and return {latent}; it has "
            f"in_channels={unet.config.in_channels}, out_channels={unet.config.out_channels}"
        )
    try:
        latent_affine(vae)
    except ValueError as error:
        raise CheckpointError(f"{error}; re-copy the checkpoint or re-train it with `mammosynth train-ldm`") from None
    if getattr(unet.config, "class_embed_type", None) != "identity":
        raise CheckpointError(f"the UNet must have class_embed_type='identity', has {unet.config.class_embed_type!r}")
    needed = unet.config.block_out_channels[0] * 4
    if condition_encoder.config.out_dim != needed:
        raise CheckpointError(
            f"condition_encoder.out_dim is {condition_encoder.config.out_dim} but the UNet's time embedding "
            f"has {needed} dimensions"
        )


def load_pipeline(checkpoint: str | os.PathLike, scheduler: str | None = None,
                  privacy_gate: bool = True, channels_last: bool = True) -> MammoLDMPipeline:
    """``MammoLDMPipeline.from_pretrained`` with scheduler ``scheduler`` (default: the saved one), no progress bar.

    ``channels_last`` stores the convolution weights of the UNets and decoders channels-last, which
    oneDNN runs faster on CPU (``benchmarks/bench_sampling.py --contiguous`` measures the gain);
    the outputs are the same up to float rounding.

    A checkpoint without a privacy checker is refused at generation time unless
    ``privacy_gate=False``, which loads without the checker on purpose (ungated images,
    ``privacy`` None in their recipes; the pipeline logs a loud warning).
    """
    # diffusers loads only components whose modules are imported (see the checkpoint's model_index.json)
    from ..privacy import checker  # noqa: F401

    pipe = MammoLDMPipeline.from_pretrained(checkpoint, privacy_gate=privacy_gate)
    if scheduler is not None:
        pipe.scheduler = pipe.scheduler_named(scheduler)
    if channels_last:
        for module in (pipe.unet, pipe.student_unet, pipe.vae, pipe.tiny_vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    return pipe
