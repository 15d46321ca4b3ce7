"""Command-line options of the training scripts (no heavy imports: the CLI parses these).

``vae_parser`` / ``ldm_parser`` build (or extend) an ``argparse`` parser; both share
:func:`add_common_arguments`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_common_arguments", "vae_parser", "ldm_parser", "siamese_parser", "distill_parser", "int_list",
           "require_run_folders"]

VAE_DESCRIPTION = "Train the 1-channel AutoencoderKL (f = 8; f = 4 with three --block_out_channels) on a prepared dataset."
LDM_DESCRIPTION = "Train the conditional latent diffusion model (UNet + condition encoder) on a frozen VAE."


def _float_where(text: str, ok, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # fails every check below
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected a number {expected}, got {text!r}")
    return value


def int_list(text: str, name: str, count: int | None = None) -> tuple[int, ...]:
    """Comma-separated integers of option ``name`` (exactly ``count`` of them when given)."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise ValueError(f"{name} must have {count} values, got {len(values)} ({text!r})")
    return values


def positive_float(text: str) -> float:
    """argparse ``type``: a float > 0 (so that a bad value fails when the command is parsed)."""
    return _float_where(text, lambda v: v > 0, "> 0")


def non_negative_float(text: str) -> float:
    """argparse ``type``: a float ≥ 0."""
    return _float_where(text, lambda v: v >= 0, ">= 0")


def require_run_folders(args: argparse.Namespace, *names: str) -> None:
    """``--data`` / ``--out`` (or the other ``names``) are needed unless ``--dry-run``: ``ValueError`` naming them."""
    missing = [f"--{n}" for n in (names or ("data", "out")) if not getattr(args, n, None)]
    if missing and not getattr(args, "dry_run", False):
        raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                         "(or pass --dry-run to print the preset's sizes without training)")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments every training script takes (data, schedule, precision, checkpoints)."""
    parser.add_argument("--data", default=None, help="prepared dataset folder (from `mammosynth ingest`; required "
                        "unless --dry-run)")
    parser.add_argument("--out", "--output_dir", dest="out", default=None,
                        help="run folder (created; re-use it to resume; required unless --dry-run)")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="build the --preset's networks, run ONE optimiser step on a tiny batch on this machine "
                             "and print parameter counts, GFLOP per image and the expected GPU memory at the "
                             "preset's batch size; trains nothing, writes nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_batch_size", type=int, default=None,
                        help="per device (default: the --preset's; see mammosynth.training.presets)")
    parser.add_argument("--max_train_steps", type=int, default=None,
                        help="optimiser steps; if omitted, --max_minutes picks it from a measured sec/step")
    parser.add_argument("--max_minutes", type=float, default=None,
                        help="wall-clock budget for the whole run (all resumes together); the run stops "
                        "and saves when it is spent")
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--lr_scheduler", default="cosine",
                        help="diffusers.optimization.get_scheduler name (cosine, linear, constant_with_warmup, ...)")
    parser.add_argument("--lr_warmup_steps", type=int, default=100)
    parser.add_argument("--adam_weight_decay", type=float, default=1e-4)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None,
                        help="default: the --preset's (bf16 for the GPU presets, else no)")
    parser.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="recompute activations in the backward pass (diffusers enable_gradient_checkpointing): "
                             "less memory, about a third more compute; default: the --preset's")
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default="latest",
                        help="'latest', a checkpoint folder, or 'none' to start fresh (fails if the run folder has checkpoints)")
    parser.add_argument("--validation_steps", type=int, default=500)
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no_progress", action="store_true", help="hide the tqdm bar")


def vae_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="train_vae", description=VAE_DESCRIPTION)
    add_common_arguments(parser)
    parser.add_argument("--preset", default="bundled",
                        help="VAE size preset (bundled, tiny, device-512, vindr-512, vindr-1024); a GPU preset also "
                             "sets --crop, --latent_channels, --train_batch_size, --mixed_precision and "
                             "--gradient_checkpointing unless they are given")
    parser.add_argument("--block_out_channels", default=None, help="override, e.g. 32,64,128,128")
    parser.add_argument("--latent_channels", type=int, default=None,
                        help="latent channels (default: the preset's 4, or --init_vae's own). More than --init_vae's "
                             "widens that VAE function-preservingly (its channels kept, new ones learned): room for "
                             "fine detail; an LDM must then be trained on the new latents")
    parser.add_argument("--init_vae", default=None,
                        help="start from this trained VAE (a train-vae run folder, a VAE model folder, or a saved "
                             "pipeline's vae/ folder) instead of a fresh one of --preset")
    parser.add_argument("--freeze_encoder", action="store_true",
                        help="with --init_vae: train only the decoder (and post_quant_conv); the encoder, hence "
                             "the latent space and its scaling, stay bit for bit, so an LDM trained on that VAE's "
                             "latents stays valid with the new decoder")
    parser.add_argument("--crop", default=None, help="training crop HxW ('full' for whole frames; default: the "
                        "--preset's, 128x96 for bundled)")
    parser.add_argument("--ssim_weight", type=float, default=0.5)
    parser.add_argument("--lesion_weight", type=float, default=0.0,
                        help="extra L1 weight inside lesion boxes (0 = plain L1); small findings such as "
                             "calcification specks are a tiny share of the pixels and blur away without it")
    parser.add_argument("--lesion_crop_prob", type=float, default=0.0,
                        help="probability that a training crop is centred on the image's lesion box (if any)")
    parser.add_argument("--kl_weight", type=float, default=1e-6, help="weight of KL (summed per image / pixels)")
    parser.add_argument("--adv_weight", type=float, default=0.0,
                        help="weight of a patch-GAN adversarial loss on the reconstructions (MONAI "
                             "PatchDiscriminator, least squares); 0 = off. L1 + SSIM alone give the conditional "
                             "mean, a blur: the adversarial term makes the decoder draw texture and small findings")
    parser.add_argument("--adv_adaptive", action="store_true",
                        help="scale the adversarial term so that its gradient at the decoder's last layer is "
                             "--adv_weight times the reconstruction loss's (Esser et al. 2021); then 0.1-0.8 are "
                             "typical weights")
    parser.add_argument("--adv_start", type=int, default=0, help="step at which the adversarial term starts")
    parser.add_argument("--disc_learning_rate", type=float, default=None,
                        help="discriminator learning rate (constant; default: --learning_rate)")
    parser.add_argument("--disc_channels", type=int, default=32, help="width of the discriminator's first layer")
    parser.add_argument("--eval_images", type=int, default=200, help="test images for PSNR/SSIM (0 = all)")
    parser.add_argument("--scaling_images", type=int, default=256, help="training images to measure the scaling factor")
    parser.set_defaults(learning_rate=4e-4, lr_warmup_steps=50)   # batch 8 unless the preset says (presets.FALLBACKS)
    return parser


def ldm_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="train_ldm", description=LDM_DESCRIPTION)
    add_common_arguments(parser)
    parser.add_argument("--vae", default=None, help="VAE run folder (from train-vae) or a VAE model folder "
                        "(required unless --dry-run)")
    parser.add_argument("--preset", default="bundled",
                        help="UNet size preset (bundled, tiny, device-512, vindr-512, vindr-1024); a GPU preset also "
                             "sets --train_batch_size, --mixed_precision, --gradient_checkpointing and "
                             "--latent_shard_size unless they are given")
    parser.add_argument("--block_out_channels", default=None, help="override, e.g. 64,128,256")
    parser.add_argument("--layers_per_block", type=int, default=None, help="override the preset")
    parser.add_argument("--embed_dim", type=int, default=128, help="condition embedding width per field")
    parser.add_argument("--init_pipeline", default=None,
                        help="start the UNet and condition encoder from this saved pipeline (or train-ldm run "
                             "folder) instead of fresh ones of --preset; if --vae has more latent channels, the UNet "
                             "is widened for them (models.unet.widen_unet_latent)")
    parser.add_argument("--cond_dropout", type=float, default=0.1, help="per-field dropout for CFG")
    parser.add_argument("--cond_drop_all", type=float, default=0.1, help="probability to drop every field")
    parser.add_argument("--num_train_timesteps", type=int, default=1000)
    parser.add_argument("--latent_norm", choices=("global", "channel"), default="global",
                        help="how latents are scaled for the UNet: 'global' = the VAE's scaling_factor; 'channel' = "
                             "standardise each channel by its mean/std over the training latents (stored in the "
                             "saved pipeline's vae/config.json as latents_mean/latents_std)")
    parser.add_argument("--keep_latent_stats", action="store_true",
                        help="with --init_pipeline and its own VAE: keep that VAE's latents_mean/latents_std "
                             "(the warm-started UNet's latent scale) instead of measuring them on --data again")
    parser.add_argument("--snr_gamma", type=positive_float, default=None,
                        help="Min-SNR loss weighting (Hang et al. 2023): weight each timestep by min(SNR, gamma) / SNR "
                             "(epsilon) or / (SNR + 1) (v-prediction); 5 is the paper's value. Default: plain MSE")
    parser.add_argument("--lesion_weight", type=non_negative_float, default=0.0,
                        help="extra MSE weight inside lesion boxes (the latent-size lesion mask, whether or not the "
                             "lesion field was dropped for CFG): latent cells of a box weigh 1 + lesion_weight; a "
                             "lesion is 1-3 %% of the latent, so plain MSE spends little on what tells lesion types "
                             "apart. Default 0: plain MSE")
    parser.add_argument("--num_validation_images", type=int, default=4)
    parser.add_argument("--validation_inference_steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=3.0, help="for validation images")
    parser.add_argument("--save_fp16", action="store_true", help="save the final pipeline as fp16 safetensors")
    parser.add_argument("--latent_shard_size", type=int, default=None,
                        help="latents per shard of the latent cache (<out>/latents/shard-*.safetensors, memory-mapped, "
                             "encoded shard by shard by all processes, resumable); 0 = one latents.pt held in memory "
                             "(default: the --preset's; 0 for bundled)")
    parser.set_defaults(learning_rate=3e-4, lr_warmup_steps=100)   # batch 16 unless the preset says
    return parser


def siamese_parser(parser: argparse.ArgumentParser | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """Options of ``train-siamese`` (the Siamese re-identification network)."""
    parser = parser or argparse.ArgumentParser(prog="train_siamese", description=description)
    add_common_arguments(parser)
    parser.add_argument("--preset", default="bundled",
                        help="network size preset (bundled, tiny, device-512, vindr-512, vindr-1024: "
                             "models.siamese.SIAMESE_PRESETS); the four options below override it")
    parser.add_argument("--input_size", default=None, help="HxW the network resizes images to (bundled: 128x96)")
    parser.add_argument("--embedding_dim", type=int, default=None, help="(bundled: 128)")
    parser.add_argument("--block_inplanes", default=None, help="channels of the 4 ResNet stages (bundled: 16,32,64,128)")
    parser.add_argument("--layers", default=None, help="residual blocks of the 4 ResNet stages (bundled: 1,1,1,1)")
    parser.add_argument("--loss", choices=("multi-similarity", "triplet"), default="multi-similarity")
    parser.add_argument("--images_per_study", type=int, default=4, help="images of one study in a batch (m)")
    parser.add_argument("--copies_per_study", type=int, default=1,
                        help="images of each study drawn twice (two disguises) as copy positives")
    parser.add_argument("--no_augment", action="store_true", help="train without the disguise augmentations")
    parser.add_argument("--max_shift", type=float, default=None,
                        help="largest shift of a disguise, a share of each side (default 0.04)")
    parser.add_argument("--max_scale", type=float, default=None, help="largest zoom change of a disguise (default 0.05 = ±5 %%)")
    parser.add_argument("--max_rotation_deg", type=float, default=None, help="largest rotation of a disguise (default 3)")
    parser.add_argument("--init_siamese", default=None,
                        help="start from this network's weights (a train-siamese run, its siamese/ folder or a "
                             "privacy_checker/ folder), e.g. to widen the disguises it sees through; keeps its "
                             "architecture, so --preset's sizes and the four options above do not apply")
    parser.add_argument("--monitor_images", type=int, default=400, help="test images scored at each validation")
    parser.set_defaults(learning_rate=1e-3, lr_warmup_steps=50, use_ema=False,   # batch 64 unless the preset says
                        validation_steps=200, checkpointing_steps=200, adam_weight_decay=1e-4)
    return parser

DISTILL_DESCRIPTION = ("Latent consistency distillation (Luo et al. 2023) of a trained pipeline (the teacher) into a "
                       "1-4-step student with the guidance scale as an input; saves <out>/student.")


def distill_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Options of ``distill`` (:mod:`mammosynth.training.distill`)."""
    parser = parser or argparse.ArgumentParser(prog="distill", description=DISTILL_DESCRIPTION)
    add_common_arguments(parser)
    parser.add_argument("--teacher", default=None,
                        help="the trained pipeline folder to distil (e.g. checkpoints/mammosynth-phantom-256, or a "
                             "train-ldm run folder); --data must be its training data")
    parser.add_argument("--w_min", type=float, default=1.0,
                        help="smallest guidance scale the student learns (the pipeline's guidance_scale, 1 = none)")
    parser.add_argument("--w_max", type=float, default=5.0, help="largest guidance scale the student learns")
    parser.add_argument("--solver_steps", type=int, default=50,
                        help="N of the teacher's DDIM solver (skip k = 1000 / N); also the student LCMScheduler's "
                             "original_inference_steps")
    parser.add_argument("--target_ema_decay", type=float, default=0.95,
                        help="EMA decay of the target network (the student's slow copy that gives the targets)")
    parser.add_argument("--huber_c", type=positive_float, default=0.001, help="c of the pseudo-Huber loss")
    parser.add_argument("--timestep_scaling", type=positive_float, default=10.0,
                        help="timestep scaling of the LCM boundary conditions c_skip / c_out (LCMScheduler's)")
    parser.add_argument("--guidance_embed_dim", type=int, default=256,
                        help="width of the student's sinusoidal guidance-scale embedding")
    parser.add_argument("--cond_dropout", type=float, default=0.1, help="per-field condition dropout (as train-ldm)")
    parser.add_argument("--cond_drop_all", type=float, default=0.1, help="probability to drop every field")
    parser.add_argument("--latent_shard_size", type=int, default=0,
                        help="latents per shard of the latent cache (0 = one latents.pt in memory; see train-ldm)")
    parser.add_argument("--save_fp16", action="store_true", help="save the student as fp16 safetensors")
    parser.set_defaults(learning_rate=1e-4, lr_warmup_steps=100, train_batch_size=8, mixed_precision="no",
                        gradient_checkpointing=False, checkpointing_steps=200)
    return parser


TINY_DECODER_DESCRIPTION = ("Distil the VAE decoder of a checkpoint into a tiny AutoencoderTiny (TAESD) decoder for "
                            "previews and fast image sets; saves <out>/tiny_vae (with distill.json).")


def tiny_decoder_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Options of ``distill-decoder`` (:mod:`mammosynth.training.train_tiny_decoder`)."""
    parser = parser or argparse.ArgumentParser(prog="train_tiny_decoder", description=TINY_DECODER_DESCRIPTION)
    add_common_arguments(parser)
    parser.add_argument("--checkpoint", default=None,
                        help="the pipeline folder whose vae/ to distil (e.g. checkpoints/mammosynth-phantom-256), or "
                             "a train-vae run folder / VAE folder; --data must be the data it was trained on")
    parser.add_argument("--widths", default=None,
                        help="channels of the tiny decoder's stages: one number or one per stage, all equal "
                             "(default: models.tiny_decoder.DEFAULT_WIDTHS, 16)")
    parser.add_argument("--num_blocks", default=None,
                        help="AutoencoderTinyBlocks per stage, coarsest first (default: "
                             "models.tiny_decoder.DEFAULT_NUM_BLOCKS, 2,2,1,0)")
    parser.add_argument("--init_tiny_decoder", default=None,
                        help="start from this tiny decoder (a distill-decoder run folder or a tiny_vae/ folder) "
                             "instead of a fresh one; its widths are kept")
    parser.add_argument("--ssim_weight", type=non_negative_float, default=0.5,
                        help="loss = L1 + ssim_weight * (1 - SSIM), against the full decoder's output")
    parser.add_argument("--real_weight", type=non_negative_float, default=0.0,
                        help="weight of the same loss against the real image, added to the distillation loss "
                             "(0 = pure distillation)")
    parser.add_argument("--eval_images", type=int, default=200,
                        help="test images for the PSNR/SSIM in distill.json (0 = all)")
    parser.add_argument("--measure_threads", type=int, default=2,
                        help="torch threads for the ms-per-image measurement in distill.json (batch 1)")
    parser.add_argument("--latent_shard_size", type=int, default=0,
                        help="latents per shard of the latent cache (0 = one latents.pt in memory; see train-ldm)")
    parser.add_argument("--save_fp16", action="store_true", help="save the tiny decoder as fp16 safetensors")
    parser.set_defaults(learning_rate=1e-3, lr_warmup_steps=50, train_batch_size=4, mixed_precision="no",
                        gradient_checkpointing=False, validation_steps=200, checkpointing_steps=200)
    return parser
