"""Promote a candidate checkpoint into ``checkpoints/`` only when its measurements beat the shipped one.

``mammosynth promote --candidate out/candidate`` reads the reports that
``scripts/evaluate_bundled.sh`` leaves in each checkpoint (``reports/eval/metrics.json`` and
``reports/privacy.json``) and compares them. The candidate replaces the shipped folder only if

* it was measured the same way: the same number of real test images and at least
  ``min_images`` synthetic ones;
* it beats the shipped checkpoint on FID (at the real-vs-real floor's sample size) **and** on the CNN
  real-vs-synthetic C2ST AUC (lower is better for both);
* it loses no condition adherence: lesion and density adherence (synthetic accuracy over the same
  classifier's accuracy on real images) at most ``adherence_tolerance`` below the shipped one's;
* its privacy audit passes: every audit target met (gate recall on planted copies, false flags on
  unseen patients, the Siamese network's own mAP@R), synthetic-vs-training re-ID mAP@R at most
  0.005 and every membership attack's AUC at most 0.56.

The swap is a copy to ``<shipped>.promoting`` and two renames, so a crash leaves either folder whole;
``promotion.json`` in the promoted folder records the comparison and both fingerprints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..pipelines.checkpoint import BUNDLED_CHECKPOINT, check_checkpoint_folder, fingerprint

__all__ = ["PrivacyBars", "PromotionError", "compare", "promote", "add_arguments", "main"]


class PromotionError(ValueError):
    """A candidate cannot be compared (a report is missing or was measured differently)."""


@dataclass(frozen=True)
class PrivacyBars:
    """What a promoted checkpoint's privacy audit must show."""

    max_reid_map_at_r: float = 0.005
    max_membership_auc: float = 0.56


def _reports(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    paths = (folder / "reports" / "eval" / "metrics.json", folder / "reports" / "privacy.json")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise PromotionError(f"{folder} has no {' or '.join(missing)}: measure it first with "
                             f"CKPT={folder} bash scripts/evaluate_bundled.sh")
    return json.loads(paths[0].read_text()), json.loads(paths[1].read_text())


def _measures(metrics: dict[str, Any]) -> dict[str, float | None]:
    from ..evaluation.evaluate import metric_value  # here: the CLI's parsers stay free of torch

    ratio = metrics.get("adherence", {}).get("ratio", {})
    return {"fid": metric_value(metrics, "fidelity", "synthetic_vs_real_at_floor_size", "fid"),
            "c2st": metric_value(metrics, "realism", "c2st_images", "auc"),
            "lesion_adherence": metric_value(ratio, "lesion_accuracy"),
            "density_adherence": metric_value(ratio, "density_accuracy")}


def _privacy_checks(privacy: dict[str, Any], bars: PrivacyBars) -> list[dict[str, Any]]:
    from ..evaluation.evaluate import metric_value

    checks = [{"check": f"audit target {name}", "value": t.get("value"), "passed": bool(t.get("met"))}
              for name, t in sorted(privacy.get("targets", {}).items())]
    reid = metric_value(privacy, "reid", "synthetic_vs_train_retrieval", "mean_average_precision_at_r")
    checks.append({"check": f"re-ID mAP@R <= {bars.max_reid_map_at_r}", "value": reid,
                   "passed": reid is not None and reid <= bars.max_reid_map_at_r})
    attacks = privacy.get("membership", {}).get("attacks", {})
    for name, attack in sorted(attacks.items()):
        auc = metric_value(attack, "members_vs_nonmembers", "auc", "value")
        checks.append({"check": f"membership {name} AUC <= {bars.max_membership_auc}", "value": auc,
                       "passed": auc is not None and auc <= bars.max_membership_auc})
    if not attacks:
        checks.append({"check": "membership attacks run", "value": None, "passed": False})
    return checks


def compare(candidate: str | Path, shipped: str | Path, min_images: int = 1600, adherence_tolerance: float = 0.01,
            bars: PrivacyBars = PrivacyBars()) -> dict[str, Any]:
    """Every check of a promotion, each with both values and whether it passed; ``"promote"`` is all of them.

    Raises:
        PromotionError: a report is missing, or the two were measured on different real test sets.
    """
    (cand_metrics, cand_privacy), (ship_metrics, ship_privacy) = _reports(Path(candidate)), _reports(Path(shipped))
    n_test = (cand_metrics.get("real", {}).get("n_test"), ship_metrics.get("real", {}).get("n_test"))
    if n_test[0] != n_test[1]:
        raise PromotionError(f"the candidate was measured on {n_test[0]} real test images, the shipped checkpoint on "
                             f"{n_test[1]}: measure both on the same data")
    cand, ship = _measures(cand_metrics), _measures(ship_metrics)
    n_synthetic = (cand_metrics.get("synthetic") or {}).get("n") or 0
    checks = [{"check": f"measured on >= {min_images} synthetic images", "value": n_synthetic,
               "passed": n_synthetic >= min_images}]
    for key, label in (("fid", "FID (floor size) lower"), ("c2st", "CNN C2ST AUC lower")):
        checks.append({"check": label, "value": cand[key], "shipped": ship[key],
                       "passed": None not in (cand[key], ship[key]) and cand[key] < ship[key]})
    for key in ("lesion_adherence", "density_adherence"):
        checks.append({"check": f"{key.replace('_', ' ')} not lower than shipped - {adherence_tolerance}",
                       "value": cand[key], "shipped": ship[key],
                       "passed": None not in (cand[key], ship[key]) and cand[key] >= ship[key] - adherence_tolerance})
    checks += _privacy_checks(cand_privacy, bars)
    return {"candidate": str(candidate), "shipped": str(shipped), "checks": checks,
            "promote": all(c["passed"] for c in checks)}


def promote(candidate: str | Path, shipped: str | Path, **compare_options: Any) -> dict[str, Any]:
    """Replace ``shipped`` by a copy of ``candidate`` when :func:`compare` says so; returns the comparison."""
    candidate, shipped = Path(candidate), Path(shipped)
    check_checkpoint_folder(candidate)
    result = compare(candidate, shipped, **compare_options)
    if not result["promote"]:
        return result
    result.update({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "candidate_sha256": fingerprint(candidate),
                   "replaced_sha256": fingerprint(shipped)})
    staging, old = shipped.with_name(shipped.name + ".promoting"), shipped.with_name(shipped.name + ".replaced")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(candidate, staging)
    (staging / "promotion.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    shipped.rename(old)
    staging.rename(shipped)
    shutil.rmtree(old)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--candidate", required=True, help="checkpoint folder measured by scripts/evaluate_bundled.sh")
    parser.add_argument("--shipped", default=BUNDLED_CHECKPOINT, help=f"the folder it may replace (default {BUNDLED_CHECKPOINT})")
    parser.add_argument("--min-images", type=int, default=1600, help="synthetic images the evaluation must have used")
    parser.add_argument("--adherence-tolerance", type=float, default=0.01,
                        help="how far lesion / density adherence may fall below the shipped one's (default 0.01)")
    parser.add_argument("--dry-run", action="store_true", help="compare only; change nothing")
    return parser


def main(args: argparse.Namespace) -> int:
    """Print every check; promote unless ``--dry-run``. Exit status 0 if promoted (or would be), 1 if not."""
    options = dict(min_images=args.min_images, adherence_tolerance=args.adherence_tolerance)
    result = (compare(args.candidate, args.shipped, **options) if args.dry_run
              else promote(args.candidate, args.shipped, **options))
    for check in result["checks"]:
        shipped = f" (shipped {check['shipped']:.4g})" if isinstance(check.get("shipped"), float) else ""
        value = f"{check['value']:.4g}" if isinstance(check["value"], float) else str(check["value"])
        print(f"  {'passed' if check['passed'] else 'FAILED'} {check['check']}: {value}{shipped}")
    if not result["promote"]:
        print(f"not promoted: {args.candidate} does not beat {args.shipped} on every check above")
        return 1
    print(f"{'would promote' if args.dry_run else 'promoted'} {args.candidate} -> {args.shipped}")
    return 0
