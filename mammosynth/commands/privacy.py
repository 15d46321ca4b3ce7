"""``mammosynth train-siamese``, ``build-index`` and ``privacy-audit`` (DESIGN §9)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..training.options import siamese_parser

    p = subparsers.add_parser("train-siamese", help="train the Siamese re-identification network",
                              description="Train the Siamese re-ID network (metric learning on same-study "
                              "positives); saves <out>/siamese and held-out metrics in <out>/metrics.json.")
    siamese_parser(p)
    p.set_defaults(handler=_train_siamese)

    p = subparsers.add_parser("build-index", help="index a training split and calibrate the privacy gate",
                              description="Embed a split with a trained Siamese network, calibrate the "
                              "threshold on unseen patients, and save a PrivacyChecker folder.")
    p.add_argument("--siamese", required=True, help="train-siamese run folder, its siamese/ model folder, or a privacy_checker/ folder (its network)")
    p.add_argument("--data", required=True, help="prepared dataset (the generator's training data)")
    p.add_argument("--split", default="training", help="split to index (default: training)")
    p.add_argument("--calibration-split", default="test", help="unseen patients for the threshold (default: test)")
    p.add_argument("--false-flag-rate", type=float, default=0.01,
                   help="share of unseen real patients the gate may flag (default 0.01)")
    p.add_argument("--neighbours", type=int, default=3, help="nearest training images reported per verdict")
    p.add_argument("--backend", choices=("auto", "exact", "sklearn", "faiss"), default="auto",
                   help="index search (kept by the checker): auto = exact below 100,000 images, faiss from there on")
    p.add_argument("--faiss-factory", default=None, metavar="STRING",
                   help="the faiss index for backend faiss/auto, a faiss factory string: 'Flat' (exact), "
                        "'IVF4096,Flat' (inverted lists), 'HNSW32', 'IVF4096,PQ32,RFlat'; default: 'Flat' below "
                        "100,000 images, IVF{4√N},Flat from there on (benchmarks/bench_index_scale.py)")
    p.add_argument("--nprobe", type=int, default=None,
                   help="inverted lists an IVF index searches per query (default 64; fewer is faster, less exact)")
    p.add_argument("--zoom-tta", type=zoom_factors, default=None, metavar="Z1,Z2,...",
                   help="test-time zoom factors added to each embedding (e.g. 0.9,1.1; 1+N × the gate's cost); "
                        "'none' turns off any the network has; default: the network's own setting")
    p.add_argument("--no-copy-sketch", dest="copy_sketch", action="store_false",
                   help="leave out the copy detector (pixel-structure sketches of the indexed images, whole and "
                        "block by block, which catch blends, pasted regions and copies moved or bent by a few "
                        "pixels); by default it shares the false-flag budget")
    p.add_argument("--sketch-share", type=float, default=0.3,
                   help="the sketch's share of --false-flag-rate (default 0.3; the Siamese gate gets the rest)")
    p.add_argument("--out", required=True, help="output folder (e.g. <checkpoint>/privacy_checker)")
    p.set_defaults(handler=_build_index)

    p = subparsers.add_parser("privacy-audit", help="audit a synthetic set: re-ID, planted copies, membership",
                              description="Re-identification, planted-copy recall of the gate, membership "
                              "inference and pixel-space nearest neighbours; writes JSON and PNG plots.")
    p.add_argument("--checkpoint", help="MammoLDMPipeline folder (its privacy_checker/ is used; needed for "
                   "membership inference)")
    p.add_argument("--checker", help="a PrivacyChecker folder (default: <checkpoint>/privacy_checker)")
    p.add_argument("--data", required=True, help="the real prepared dataset the model was trained on")
    p.add_argument("--synthetic", required=True, help="synthetic prepared dataset (mammosynth generate-set)")
    p.add_argument("--out", required=True, help="report JSON path (plots are written next to it)")
    p.add_argument("--copies", type=int, default=200, help="planted disguised training copies (default 200)")
    p.add_argument("--positive-control", default=None, metavar="JSON",
                   help="merge a `mammosynth positive-control` result (its positive_control.json) into the report")
    p.add_argument("--battery", type=int, default=100,
                   help="disguised copies per family of the disguise battery (default 100; 0 skips it)")
    p.add_argument("--no-membership", action="store_true", help="skip the membership-inference attacks")
    p.add_argument("--mia-members", type=int, default=200, help="training images attacked (0 = all)")
    p.add_argument("--mia-nonmembers", type=int, default=200, help="test images attacked (0 = all)")
    p.add_argument("--mia-timesteps", default="50,100,200,300,500", help="loss-attack timesteps")
    p.add_argument("--mia-draws", type=int, default=2, help="noise draws per timestep")
    p.add_argument("--secmi-t", type=int, default=100, help="SecMI inversion timestep")
    p.add_argument("--secmi-interval", type=int, default=20, help="SecMI DDIM step")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="torch device for the models (default: cuda if available)")
    p.add_argument("--name-training-ids", action="store_true",
                   help="name the nearest training image of the most similar synthetic ones in the report "
                        "(warns: that names training-set members; default: similarities only)")
    p.set_defaults(handler=_privacy_audit)

    p = subparsers.add_parser("positive-control", help="the audit's positive control: a deliberately memorising model",
                              description="Fine-tune the checkpoint's denoiser to memorise a few dozen training "
                              "images, then measure it beside the real model with the same gate: flagged share, "
                              "re-ID mAP@R of its samples, membership AUC. Writes <out>/positive_control.json; "
                              "resumable.")
    p.add_argument("--checkpoint", required=True, help="MammoLDMPipeline folder with its privacy_checker/")
    p.add_argument("--data", required=True, help="the prepared dataset the checkpoint was trained on")
    p.add_argument("--out", required=True, help="work folder (subset, memoriser, samples, the JSON)")
    p.add_argument("--images", type=int, default=32, help="training images memorised (whole studies; default 32)")
    p.add_argument("--test-images", type=int, default=64, help="unseen images for the attacks (default 64)")
    p.add_argument("--steps", type=int, default=600, help="fine-tune steps (default 600)")
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--mia-timesteps", default="50,100,200", help="loss-attack timesteps")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(handler=_positive_control)


def zoom_factors(text: str) -> list[float]:
    """``--zoom-tta``: comma-separated zoom factors (``none`` for no zoom views), checked by
    :func:`~mammosynth.models.siamese.check_zoom_factors`."""
    from ..models.siamese import check_zoom_factors

    if text.strip().lower() in ("none", ""):
        return []
    try:
        return check_zoom_factors(text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated zoom factors like 0.9,1.1, got {text!r} "
                                         f"({error})") from None


def _train_siamese(args: argparse.Namespace) -> int:
    from ..training.train_siamese import main

    main(args)
    return 0


def _build_index(args: argparse.Namespace) -> int:
    from ..data.prepared import atomic_write_text, load_prepared
    from ..privacy.checker import build_privacy_checker, load_embedder
    from ..privacy.sketch import SketchConfig

    embedder = load_embedder(args.siamese)
    if args.zoom_tta is not None:
        embedder.register_to_config(zoom_tta=args.zoom_tta)
    data = load_prepared(args.data)
    checker, report = build_privacy_checker(embedder, data, split=args.split,
                                            calibration_split=args.calibration_split,
                                            target=args.false_flag_rate, num_neighbours=args.neighbours,
                                            sketch=SketchConfig() if args.copy_sketch else None,
                                            sketch_share=args.sketch_share,
                                            backend=args.backend, faiss_factory=args.faiss_factory,
                                            nprobe=args.nprobe)
    from ..pipelines.pipeline_mammo_ldm import register_privacy_checker

    run = Path(args.siamese)
    earlier = run / "build_report.json"  # a checker folder: its network's history comes along
    if earlier.is_file() and "siamese_run" in json.loads(earlier.read_text()):
        report["siamese_run"] = json.loads(earlier.read_text())["siamese_run"]
    if (run / "run.json").is_file():  # a train-siamese run folder: record how the network was made
        info = json.loads((run / "run.json").read_text())
        report["siamese_run"] = {"folder": str(run),
                                 "all_argv": [i["argv"] for i in info.get("invocations", []) if i.get("argv")],
                                 "steps": info.get("metrics", {}).get("steps"),
                                 "elapsed_min": info.get("metrics", {}).get("elapsed_min"),
                                 "git_sha": info.get("git_sha")}
    out = Path(args.out)
    checker.save_pretrained(out)
    atomic_write_text(out / "build_report.json", json.dumps(report, indent=2, default=str))
    if register_privacy_checker(out.parent):
        print(f"registered the privacy checker in {out.parent / 'model_index.json'}")
    cal, ver = report["calibration"], report["siamese_verification"]
    print(f"indexed {report['index']['images']} {args.split} images of {report['index']['studies']} studies; "
          f"threshold {cal['threshold']:.4f} (false-flag rate on {cal['n_images']} unseen {args.calibration_split} "
          f"images {cal['false_flag_rate']:.2%}, cross-validated {cal['cv_false_flag_rate']:.2%}); "
          f"re-ID on {args.calibration_split}: mAP@R {ver['mean_average_precision_at_r']:.4f}, "
          f"P@1 {ver['precision_at_1']:.4f}; saved {out}")
    if "sketch" in report:
        sk = report["sketch"]
        print(f"copy sketch: thresholds {sk['threshold']:.4f} (whole frame), {sk['local_threshold']:.4f} (local); "
              f"unseen {args.calibration_split} images flagged "
              f"by either detector {sk['unseen_flagged_by_either']:.2%} of {sk['unseen_images']}")
    return 0


def _privacy_audit(args: argparse.Namespace) -> int:
    import torch

    from ..data.prepared import load_prepared
    from ..privacy.audit import AuditConfig, audit_summary, load_synthetic, run_audit, write_report
    from ..privacy.checker import PrivacyChecker, load_privacy_checker
    from ..privacy.membership import AttackConfig

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if not args.checker and not args.checkpoint:
        raise ValueError("give --checkpoint (a pipeline folder with privacy_checker/) or --checker")
    checker = PrivacyChecker.from_pretrained(args.checker) if args.checker else load_privacy_checker(args.checkpoint)
    data = load_prepared(args.data)
    synthetic = load_synthetic(args.synthetic)
    pipe = None
    if not args.no_membership:
        if not args.checkpoint:
            raise ValueError("membership inference needs --checkpoint (the diffusion pipeline); "
                             "or pass --no-membership")
        try:
            from ..pipelines.pipeline_mammo_ldm import MammoLDMPipeline
        except ImportError as error:
            raise ValueError(f"membership inference needs mammosynth.pipelines ({error}); "
                             "pass --no-membership to skip it") from None
        pipe = MammoLDMPipeline.from_pretrained(args.checkpoint, privacy_checker=checker)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe.to(device)
    try:
        timesteps = tuple(int(t) for t in args.mia_timesteps.split(","))
    except ValueError:
        raise ValueError(f"--mia-timesteps must be comma-separated integers, got {args.mia_timesteps!r}") from None
    config = AuditConfig(
        planted_copies=args.copies, membership=not args.no_membership,
        mia_members=args.mia_members or None, mia_nonmembers=args.mia_nonmembers or None,
        attack=AttackConfig(timesteps=timesteps, noise_draws=args.mia_draws, secmi_t=args.secmi_t,
                            secmi_interval=args.secmi_interval, seed=args.seed),
        mia_bootstrap=args.bootstrap, seed=args.seed, battery_copies=args.battery,
        name_training_ids=args.name_training_ids,
    )
    if args.name_training_ids:
        logger.warning("--name-training-ids: %s names training images (members of the training set) beside the "
                       "most similar synthetic ones; keep it inside the institution", args.out)
    control = None
    if args.positive_control:
        path = Path(args.positive_control)
        if not path.is_file():
            raise ValueError(f"--positive-control {path} does not exist: make it with `mammosynth positive-control`")
        control = json.loads(path.read_text())
    report = run_audit(checker, data, synthetic, pipe, config)
    if control is not None:
        report["positive_control"] = control
    report["command"] = "`mammosynth " + " ".join(sys.argv[1:]) + "`" if sys.argv[1:2] == ["privacy-audit"] else None
    report["n_synthetic"] = len(synthetic.manifest)
    files = write_report(report, args.out)
    print(audit_summary(report))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _positive_control(args: argparse.Namespace) -> int:
    from ..data.prepared import load_prepared
    from ..privacy.membership import AttackConfig
    from ..training.positive_control import ControlConfig, run_positive_control

    try:
        timesteps = tuple(int(t) for t in args.mia_timesteps.split(","))
    except ValueError:
        raise ValueError(f"--mia-timesteps must be comma-separated integers, got {args.mia_timesteps!r}") from None
    for name in ("images", "test_images", "steps", "batch_size", "sample_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    config = ControlConfig(images=args.images, test_images=args.test_images, steps=args.steps,
                           learning_rate=args.learning_rate, batch_size=args.batch_size,
                           sample_steps=args.sample_steps, attack=AttackConfig(timesteps=timesteps, seed=args.seed),
                           bootstrap=args.bootstrap, seed=args.seed, num_threads=args.num_threads)
    report = run_positive_control(args.checkpoint, load_prepared(args.data), args.out, config)
    mem, real = report["memorising"], report["real"]
    print(f"positive control ({report['member_images']} memorised images of {report['member_studies']} studies): "
          f"flagged {mem['flagged_rate']:.0%} vs real {real['flagged_rate']:.0%}; re-ID mAP@R {mem['reid_map_at_r']:.3f} "
          f"vs {real['reid_map_at_r']:.3f}; membership AUC {mem['membership_auc']:.3f} vs {real['membership_auc']:.3f} "
          f"-> {'caught' if report['caught'] else 'NOT caught: ' + str([k for k, v in report['checks'].items() if not v])}")
    return 0 if report["caught"] else 1
