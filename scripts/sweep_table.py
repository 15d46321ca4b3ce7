"""Print (and write ``<runs>/sweep.md``) a sweep's curve: each design per CPU leg.

    python scripts/sweep_table.py runs/sweep          # autoencoders (scripts/vae_sweep.sh): their ceilings
    python scripts/sweep_table.py runs/ldm-sweep      # UNet sizes (scripts/ldm_sweep.sh): their generated images
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path


def _steps_at(log: Path, minutes: int) -> int | None:
    """The last logged step of a run within its first ``minutes`` of training (from ``log.csv``)."""
    if not log.is_file():
        return None
    with open(log, newline="") as handle:
        done = [int(float(r["step"])) for r in csv.DictReader(handle)
                if r.get("elapsed_min") and float(r["elapsed_min"]) <= minutes + 1e-9]
    return max(done) if done else None


def rows(runs: Path) -> list[dict]:
    found = []
    for metrics_file in sorted(runs.glob("*/ceiling*/metrics.json")):
        ceiling = json.loads(metrics_file.read_text()).get("reconstruction", {})
        if "reconstructions" not in ceiling:
            continue
        design = metrics_file.parent.parent.name
        leg = re.search(r"ceiling-(\d+)min", metrics_file.parent.name)
        steps = _steps_at(metrics_file.parent.parent / "log.csv", int(leg.group(1))) if leg else None
        recon = ceiling["reconstructions"]
        found.append({
            "design": design, "cpu_min": int(leg.group(1)) if leg else None,
            "steps": steps,
            "fid": recon.get("fidelity_at_floor_size", {}).get("fid"), "fid_over_floor": ceiling.get("fid_over_floor"),
            "c2st": recon["c2st_images"]["auc"], "c2st_floor": ceiling["real_training"]["c2st_images"]["auc"],
            "background_mean_diff": recon["texture"]["background_mean_diff"],
            "band_power_max_deviation": recon["texture"]["band_power_max_deviation"],
        })
    return sorted(found, key=lambda r: (r["design"], r["cpu_min"] or 0))


def generator_rows(runs: Path) -> list[dict]:
    """Each UNet size's generated images per leg (``<size>/eval-<minutes>min/metrics.json``)."""
    found = []
    for metrics_file in sorted(runs.glob("*/eval-*min/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        fidelity, leg = metrics.get("fidelity", {}), re.search(r"eval-(\d+)min", metrics_file.parent.name)
        run = metrics_file.parent.parent
        params = None
        if (run / "run.json").is_file():
            unet = json.loads((run / "run.json").read_text()).get("model", {}).get("unet", {})
            params = unet.get("block_out_channels")
        found.append({
            "design": run.name, "blocks": params, "cpu_min": int(leg.group(1)),
            "steps": _steps_at(run / "log.csv", int(leg.group(1))),
            "fid": fidelity.get("synthetic_vs_real_at_floor_size", {}).get("fid"),
            "floor": fidelity.get("real_vs_real_floor", {}).get("fid"),
            "n": fidelity.get("synthetic_vs_real", {}).get("n_fake"),
            "c2st": metrics.get("realism", {}).get("c2st_images", {}).get("auc"),
        })
    return sorted(found, key=lambda r: (r["design"], r["cpu_min"]))


def generator_markdown(found: list[dict]) -> str:
    lines = ["| UNet | blocks | CPU min (wall, 1 thread) | steps | FID (floor size) | real-vs-real floor | / floor | "
             "CNN C2ST AUC | images |", "|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        ratio = r["fid"] / r["floor"] if r["fid"] is not None and r["floor"] else None
        cells = [r["design"], r["blocks"], r["cpu_min"], r["steps"], r["fid"], r["floor"], ratio, r["c2st"], r["n"]]
        lines.append("| " + " | ".join("—" if c is None else (f"{c:.3f}" if isinstance(c, float) else str(c))
                                        for c in cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(found: list[dict]) -> str:
    def fmt(value, digits=3):
        return "—" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))

    lines = ["| design | CPU min | steps | recon FID | / floor | recon C2ST AUC (floor) | background mean − real | "
             "band power max dev |", "|---|---|---|---|---|---|---|---|"]
    for r in found:
        lines.append(f"| {r['design']} | {fmt(r['cpu_min'])} | {fmt(r['steps'])} | {fmt(r['fid'])} | "
                     f"{fmt(r['fid_over_floor'], 2)} | {fmt(r['c2st'])} ({fmt(r['c2st_floor'])}) | "
                     f"{fmt(r['background_mean_diff'])} | {fmt(r['band_power_max_deviation'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sweep")
    generators = generator_rows(runs)
    text = generator_markdown(generators) if generators else markdown(rows(runs))
    (runs / "sweep.md").write_text(text)
    print(text, end="")
