"""``mammosynth generate-set``, ``evaluate``, ``paper-table`` and ``train-encoder`` (DESIGN §10)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..evaluation.evaluate import EvaluationConfig


def _size(text: str, flag: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"{flag} must be HxW (e.g. 64x48), got {text!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"{flag} must be at least 16x16, got {text!r}")
    return h, w


def _split(value: str | None) -> str | None:
    return None if value in (None, "", "all") else value


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate-set", help="a privacy-gated synthetic dataset with the label distribution of a real split",
        description="One synthetic image per row of a real split (its conditions), optionally xK; "
                    "privacy-gated, resumable, written in the prepared-dataset format. Under torchrun / "
                    "accelerate launch with N processes (GPUs or CPU cores) each process makes 1/N of the set "
                    "and rank 0 merges the shards.")
    gen.add_argument("--checkpoint", required=True, help="MammoLDMPipeline checkpoint folder")
    gen.add_argument("--like", required=True, help="real prepared dataset whose label distribution is copied")
    gen.add_argument("--split", default="training", help="split of --like to imitate (default training; 'all')")
    gen.add_argument("--as-split", default=None, help="split name of the synthetic rows (default: the source's)")
    gen.add_argument("--out", required=True, help="output folder (an unfinished one is resumed)")
    gen.add_argument("--copies", type=int, default=1, help="synthetic images per real row (default 1)")
    gen.add_argument("--limit", type=int, default=None, help="make only the first N images (quick runs)")
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--steps", type=int, default=None,
                     help="inference steps (default: 8 for the teacher's schedulers, 2 for --scheduler lcm)")
    gen.add_argument("--scheduler", default=None,
                     help="dpm, ddim, unipc, euler, ddpm, or lcm: the distilled few-step student (default: the "
                          "checkpoint's own, DPM-Solver++)")
    gen.add_argument("--decoder", choices=("full", "tiny"), default="full",
                     help="the VAE's decoder (default) or the distilled tiny one (fast sets)")
    gen.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (default 2.0)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--privacy", choices=("resample", "drop", "off"), default="resample",
                     help="flagged images: resample (default), drop, or off (no gate; marked ungated)")
    gen.add_argument("--max-resamples", type=int, default=3)
    gen.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(handler=_generate_set)

    ev = subparsers.add_parser(
        "evaluate", help="fidelity, utility, adherence and realism of a synthetic set → metrics.json, plots, summary",
        description="Evaluate a synthetic prepared set against a real one (DESIGN §10).")
    ev.add_argument("--data", required=True, help="real prepared dataset (training and test splits)")
    ev.add_argument("--synthetic", default=None,
                    help="synthetic prepared dataset (from generate-set); not needed for --parts reconstruction")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--checkpoint", default=None,
                    help="checkpoint folder whose feature_extractor/ (fidelity) and vae/ (reconstruction) to use")
    ev.add_argument("--encoder", default=None, help="fidelity-encoder folder (overrides --checkpoint)")
    ev.add_argument("--inception-weights", default=None,
                    help="local TorchScript Inception file (e.g. inception-2015-12-05.pt) for the fidelity features")
    ev.add_argument("--vae", default=None, help="VAE for the reconstruction part (overrides --checkpoint's vae/)")
    ev.add_argument("--reconstruction-images", type=int, default=None,
                    help="real training images the reconstruction part sends through the VAE (default: as many as "
                         "test images)")
    ev.add_argument("--parts", default=",".join(("fidelity", "utility", "adherence", "realism", "texture",
                                                 "reconstruction")),
                    help="comma-separated parts to run (default all)")
    ev.add_argument("--test-split", default="test")
    ev.add_argument("--train-split", default="training")
    ev.add_argument("--synthetic-split", default="all")
    ev.add_argument("--classifier-size", default="64x48", help="HxW input of the utility/realism CNNs (default 64x48)")
    ev.add_argument("--epochs", type=int, default=8, help="epochs of each utility/realism CNN (default 8)")
    ev.add_argument("--seeds", default="0,1,2", help="utility training seeds (default 0,1,2)")
    ev.add_argument("--encoder-epochs", type=int, default=10, help="epochs if the encoder is trained here")
    ev.add_argument("--encoder-size", default="128x96", help="HxW input if the encoder is trained here")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (default 1000)")
    ev.add_argument("--max-images", type=int, default=None, help="cap on images per set (random subset)")
    ev.add_argument("--privacy-report", default=None, help="privacy-audit JSON to merge (default: look beside --out)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ev.set_defaults(handler=_evaluate)

    table = subparsers.add_parser("paper-table", help="the seed paper's table with our numbers (Markdown)")
    table.add_argument("--reports", required=True, help="folder with metrics.json (and privacy.json), or a metrics.json")
    table.add_argument("--privacy-report", default=None, help="privacy-audit JSON (default: found under --reports)")
    table.add_argument("--out", default=None, help="Markdown file to write (default: print)")
    table.set_defaults(handler=_paper_table)

    from ..training.train_encoder import add_arguments

    enc = subparsers.add_parser("train-encoder", help="train the fidelity feature extractor on real labels",
                                description="Train FidelityEncoder (density, lesion, view, cancer + lesion heat map) "
                                            "on the real training split; ship it as <checkpoint>/feature_extractor.")
    add_arguments(enc)
    enc.set_defaults(handler=_train_encoder)


def _generate_set(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.generate_set import GenerationSettings, generate_set, merge_shards, shard_folder
    from ..pipelines.pipeline_mammo_ldm import load_pipeline

    from ..pipelines.pipeline_mammo_ldm import default_steps

    pipe = load_pipeline(args.checkpoint, scheduler=args.scheduler, privacy_gate=args.privacy != "off")
    pipe.check_sampler(args.decoder)
    steps = args.steps if args.steps is not None else default_steps(pipe.scheduler)
    settings = GenerationSettings(num_inference_steps=steps, guidance_scale=args.guidance, batch_size=args.batch_size,
                                  seed=args.seed, copies=args.copies, privacy=args.privacy,
                                  max_resamples=args.max_resamples, limit=args.limit,
                                  scheduler=args.scheduler or "checkpoint", decoder=args.decoder)
    state = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun / accelerate launch: one shard per process
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
    device = args.device or (state.device if state is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = pipe.to(device)
    common = dict(split=_split(args.split), settings=settings, as_split=args.as_split, checkpoint=str(args.checkpoint))
    if state is None:
        report = generate_set(pipe, args.like, args.out, progress=not args.no_progress, **common)
    else:
        k, n = state.process_index, state.num_processes
        generate_set(pipe, args.like, shard_folder(args.out, k, n), shard=(k, n),
                     progress=not args.no_progress and state.is_main_process, **common)
        state.wait_for_everyone()
        if not state.is_main_process:
            return 0
        report = merge_shards(args.out, n, args.like, **common)
    print(json.dumps({k: report[k] for k in ("planned", "written", "already_done", "flagged", "resampled", "dropped",
                                             "total_in_set", "seconds")}, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.evaluate import run_evaluation

    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = run_evaluation(args.data, args.synthetic, args.out, _evaluation_config(args))
    print(f"wrote {args.out}/metrics.json, summary.md and {len(metrics.get('plots', []))} plots")
    for row in metrics.get("targets", []):
        print(f"  {'met   ' if row['met'] else 'MISSED'} {row['target']}: {row['value']:.4g} (bound {row['bound']:.4g})")
    return 0


def _evaluation_config(args: argparse.Namespace) -> EvaluationConfig:
    """The :class:`~mammosynth.evaluation.evaluate.EvaluationConfig` of ``mammosynth evaluate``'s options."""
    from ..evaluation.classifiers import Recipe
    from ..evaluation.evaluate import EvaluationConfig
    from ..training.options import int_list

    return EvaluationConfig(
        test_split=args.test_split, train_split=args.train_split, synthetic_split=_split(args.synthetic_split),
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
        recipe=Recipe(size=_size(args.classifier_size, "--classifier-size"), epochs=args.epochs),
        seeds=int_list(args.seeds, "--seeds"), encoder=args.encoder or args.checkpoint,
        inception_weights=args.inception_weights, encoder_epochs=args.encoder_epochs,
        encoder_size=_size(args.encoder_size, "--encoder-size"), n_bootstrap=args.bootstrap,
        max_images=args.max_images, privacy_report=args.privacy_report, seed=args.seed,
        vae=args.vae or args.checkpoint, reconstruction_images=args.reconstruction_images)


def _paper_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.prepared import atomic_write_text
    from ..evaluation.paper_table import find_reports, paper_table_markdown

    metrics, privacy = find_reports(args.reports)
    if args.privacy_report:
        privacy = json.loads(Path(args.privacy_report).read_text())
    if metrics is None and privacy is None:
        raise FileNotFoundError(f"no metrics.json or privacy.json under {args.reports}: run `mammosynth evaluate` first")
    text = paper_table_markdown(metrics, privacy)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _train_encoder(args: argparse.Namespace) -> int:
    from ..training.train_encoder import main

    return main(args)
