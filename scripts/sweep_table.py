"""Print (and write ``<runs>/sweep.md``) the autoencoder sweep's curve: each design's ceiling per CPU leg.

    python scripts/sweep_table.py runs/sweep
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
    text = markdown(rows(runs))
    (runs / "sweep.md").write_text(text)
    print(text, end="")
