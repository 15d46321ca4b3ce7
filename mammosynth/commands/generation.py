"""``mammosynth train-vae``, ``swap-decoder``, ``train-ldm``, ``add-fast``, ``sample`` and ``promote``."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable

from ..conditions import BIRADS_VALUES, Density, Laterality, Lesion, View
from ..pipelines.checkpoint import BUNDLED_CHECKPOINT

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..training.options import ldm_parser, vae_parser

    _command(subparsers, "train-vae", _train_vae, vae_parser,
             help="train the 1-channel VAE (f=8, or f=4 with three blocks) on a prepared dataset",
             description="Train the 1-channel AutoencoderKL; resumes from the run folder.")
    swap = _command(
        subparsers, "swap-decoder", _swap_decoder,
        help="put a fine-tuned VAE decoder into a pipeline folder (same encoder required)",
        description="Replace <checkpoint>/vae with a VAE trained by `train-vae --init_vae <checkpoint>/vae "
        "--freeze_encoder`. The encoder weights and latent scaling must be identical (checked), so the "
        "checkpoint's diffusion model stays valid; the VAE is saved in the checkpoint's dtype.")
    swap.add_argument("--checkpoint", required=True, help="pipeline folder whose vae/ is replaced")
    swap.add_argument("--vae", required=True, help="the decoder-trained VAE: a train-vae run folder or its vae/ folder")
    _command(subparsers, "train-ldm", _train_ldm, ldm_parser, help="train the conditional latent diffusion model",
             description="Train the conditional UNet on a frozen VAE; saves <out>/pipeline.")
    fast = _command(
        subparsers, "add-fast", _add_fast,
        help="add a distilled few-step student and/or tiny decoder to a checkpoint",
        description="Copy RUN/student/ (from `mammosynth distill`) and/or RUN/tiny_vae/ (from `mammosynth "
        "distill-decoder`) into a checkpoint as fp16 components; then `--scheduler lcm` samples with the student "
        "and `--decoder tiny` decodes with the tiny decoder. A student distilled from another teacher is refused.")
    fast.add_argument("--checkpoint", required=True, help="pipeline folder to add them to")
    fast.add_argument("--student", default=None, help="a `mammosynth distill` run folder (or its student/)")
    fast.add_argument("--tiny-decoder", default=None, help="a `mammosynth distill-decoder` run folder (or its tiny_vae/)")
    fast.add_argument("--fp32", action="store_true", help="keep float32 weights (default: fp16 safetensors)")
    fast.add_argument("--allow-other-teacher", action="store_true",
                      help="accept a student distilled from a different UNet (on purpose)")
    from ..training.promote import add_arguments as promote_arguments

    _command(subparsers, "promote", _promote, promote_arguments,
             help="replace the shipped checkpoint by a candidate only if it measures better",
             description="Compare a candidate's reports/eval/metrics.json and reports/privacy.json (from "
             "scripts/evaluate_bundled.sh) with the shipped checkpoint's: it must beat it on FID and C2ST, keep "
             "lesion and density adherence and pass the privacy audit; then it replaces it atomically. Exit "
             "status 1 when it does not.")
    _command(subparsers, "sample", _sample, _sample_arguments,
             help="generate images from a checkpoint (16-bit PNG + JSON recipe each)",
             description="Generate synthetic mammograms. Each image gets a 16-bit PNG and a JSON recipe "
             "(conditions, seed, checkpoint, sampler) that makes it again with --recipe.")


def _command(subparsers: argparse._SubParsersAction, name: str, handler: Callable[[argparse.Namespace], int],
             add_arguments: Callable[[argparse.ArgumentParser], Any] | None = None, **texts: str) -> argparse.ArgumentParser:
    """Subcommand ``name`` (``help``, ``description`` in ``texts``) running ``handler``, with its arguments."""
    parser = subparsers.add_parser(name, **texts)
    if add_arguments is not None:
        add_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def _sample_arguments(sample: argparse.ArgumentParser) -> None:
    sample.add_argument("--checkpoint", default=BUNDLED_CHECKPOINT, help="pipeline folder (default: %(default)s)")
    sample.add_argument("--out", required=True, help="output folder")
    sample.add_argument("--num", type=int, default=1, help="number of images")
    _condition_arguments(sample)
    sample.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    sample.add_argument("--steps", type=int, default=None,
                        help="denoising steps (default: 8 for the teacher's schedulers, 2 for --scheduler lcm)")
    sample.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (>= 1)")
    sample.add_argument("--scheduler", default="dpm",
                        help="dpm, ddim, unipc, euler or ddpm (the teacher), or lcm: the distilled few-step "
                             "student (1-4 steps; needs a checkpoint with student_unet/)")
    sample.add_argument("--decoder", choices=("full", "tiny"), default="full",
                        help="the VAE's decoder (default) or the distilled tiny one (fast previews)")
    sample.add_argument("--batch_size", type=int, default=1,
                        help="images per forward pass (1 gives bit-exact recipes; larger is faster per image)")
    sample.add_argument("--recipe", default=None, help="a JSON recipe written by this command: make that image again")
    sample.add_argument("--dicom", action="store_true",
                        help="also write the batch as ONE synthetic DICOM study: a .dcm per image (one series "
                             "per side and view) and dicom-study.zip of them")
    sample.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")
    sample.add_argument("--no-privacy-gate", dest="privacy_gate", action="store_false",
                        help="generate without the privacy checker on purpose (warns; recipes record privacy: null). "
                             "Without this flag a checkpoint that has no privacy_checker/ is refused")
    sample.add_argument("--name-training-neighbours", dest="name_neighbours", action="store_true",
                        help="also write the ids and similarities of the nearest training images into each "
                             "recipe and DICOM (warns: that names training-set members; for use inside the "
                             "institution only). Default: the verdict only (pass/flagged, similarity, "
                             "threshold, checker fingerprint)")


def _condition_arguments(parser: argparse.ArgumentParser) -> None:
    """``--birads`` … ``--lesion`` with the values of :mod:`mammosynth.conditions`, and ``--box``."""
    vocabulary = {"birads": BIRADS_VALUES, "density": Density, "view": View, "laterality": Laterality,
                  "lesion": Lesion}
    for name, values in vocabulary.items():
        words = [str(getattr(v, "value", v)) for v in values]
        parser.add_argument(f"--{name}", default=None,
                            help=f"{', '.join(words[:-1])} or {words[-1]} (default: unspecified)")
    parser.add_argument("--box", default=None, help="x0,y0,x1,y1 in [0,1] of the displayed image")


def _train_vae(args: argparse.Namespace) -> int:
    from ..training import train_vae

    train_vae.main(args)
    return 0


def _swap_decoder(args: argparse.Namespace) -> int:
    from ..models.autoencoder import swap_decoder

    print(f"new decoder in {swap_decoder(args.checkpoint, args.vae)}")
    return 0


def _train_ldm(args: argparse.Namespace) -> int:
    from ..training import train_ldm

    train_ldm.main(args)
    return 0


def _add_fast(args: argparse.Namespace) -> int:
    from ..pipelines.fast_parts import add_fast_parts

    added = add_fast_parts(args.checkpoint, student=args.student, tiny_decoder=args.tiny_decoder,
                           fp16=not args.fp32, allow_other_teacher=args.allow_other_teacher)
    print(f"added {', '.join(added)} to {args.checkpoint}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from ..pipelines.sampling import sample_to_folder

    written = sample_to_folder(args)
    print(f"wrote {len(written)} image(s) to {args.out}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from ..training.promote import main

    return main(args)

