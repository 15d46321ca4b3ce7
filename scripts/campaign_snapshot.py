"""The quality campaign's committed snapshot and its ledger (issue 19; driven by ``scripts/campaign.sh``).

    python scripts/campaign_snapshot.py pack --run runs/campaign/u32 --vae-run runs/sweep/f4c4 --eval runs/campaign/u32/eval
    python scripts/campaign_snapshot.py show                  # every leg: steps, CPU minutes, FID / floor, C2ST
    python scripts/campaign_snapshot.py total                 # one line: legs, steps and CPU minutes so far

``pack`` copies the leg's pipeline (``<run>/pipeline``: VAE with its latent statistics, UNet, condition
encoder, scheduler) into the snapshot folder as fp16 safetensors and appends the leg to ``ledger.json``:
when it ran, its command lines, where it started from (the previous snapshot's weights sha256, or
scratch), its steps and CPU minutes (from ``<run>/log.csv``), and its measurement (``<eval>/metrics.json``).
The first pack also records the VAE's training (``--vae-run``). The new folder is written beside the old
one and swapped in by renames, so a crash leaves one of them whole.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SNAPSHOT = "checkpoints/campaign/f4c4-u32"
LEDGER = "ledger.json"
PARTS = ("vae", "unet", "condition_encoder", "scheduler")


def _log_totals(run: Path) -> tuple[int, float]:
    """``(last step, CPU minutes)`` of a training run from its ``log.csv``."""
    log = run / "log.csv"
    if not log.is_file():
        raise FileNotFoundError(f"{run} has no log.csv: it is not a training run folder")
    with open(log, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("step") and r.get("elapsed_min")]
    if not rows:
        raise ValueError(f"{log} has no logged step yet")
    return int(float(rows[-1]["step"])), float(rows[-1]["elapsed_min"])


def _commands(run: Path) -> list[list[str]]:
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    return [i["argv"][1:] for i in info.get("invocations", []) if i.get("argv")]


def _measurement(eval_dir: Path) -> dict:
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    fidelity = metrics.get("fidelity", {})
    at_floor = fidelity.get("synthetic_vs_real_at_floor_size", {})
    fid, floor = at_floor.get("fid"), fidelity.get("real_vs_real_floor", {}).get("fid")
    c2st = metrics.get("realism", {}).get("c2st_images", {})
    return {"fid": fid, "floor": floor, "fid_over_floor": fidelity.get("fid_over_floor"),
            "c2st_auc": c2st.get("auc"), "synthetic_images": at_floor.get("n_fake"),
            "real_images": at_floor.get("n_real"), "folder": str(eval_dir)}


def _ledger(snapshot: Path) -> dict:
    path = snapshot / LEDGER
    return json.loads(path.read_text()) if path.is_file() else {"legs": []}


def _to_fp16(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    for path in sorted(folder.rglob("*.safetensors")):
        tensors = load_file(path)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, path,
                  metadata={"format": "pt"})


def pack(run: Path, vae_run: Path | None, eval_dir: Path, snapshot: Path) -> dict:
    from mammosynth.data.prepared import atomic_write_text
    from mammosynth.pipelines.checkpoint import weights_sha256

    source = run / "pipeline"
    missing = [p for p in PARTS if not (source / p).is_dir()]
    if missing or not (source / "model_index.json").is_file():
        raise FileNotFoundError(f"{source} is not a finished train-ldm pipeline (missing {missing or 'model_index.json'})")
    ledger = _ledger(snapshot)
    steps, minutes = _log_totals(run)
    info = json.loads((run / "run.json").read_text())
    warm = [i.get("config", {}).get("init_pipeline") for i in info.get("invocations", [])]
    started_from = ledger.get("weights_sha256", str(warm[0])) if warm and warm[0] else "scratch"
    if not ledger["legs"] and vae_run is not None and (vae_run / "log.csv").is_file():
        vae_steps, vae_minutes = _log_totals(vae_run)
        ledger["legs"].append({"kind": "vae", "run": str(vae_run), "steps": vae_steps, "cpu_minutes": round(vae_minutes, 1),
                               "commands": _commands(vae_run), "started_from": "scratch"})
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    ledger["legs"].append({
        "kind": "unet", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": str(run), "steps": steps,
        "cpu_minutes": round(minutes, 1), "commands": _commands(run), "started_from": started_from,
        "git_sha": git, "measurement": _measurement(eval_dir),
    })
    staging = snapshot.with_name(snapshot.name + ".packing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for part in PARTS:
        shutil.copytree(source / part, staging / part)
    shutil.copy2(source / "model_index.json", staging / "model_index.json")
    _to_fp16(staging)
    ledger["weights_sha256"] = weights_sha256(staging / "unet")
    ledger["totals"] = totals(ledger)
    atomic_write_text(staging / LEDGER, json.dumps(ledger, indent=2))
    old = snapshot.with_name(snapshot.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if snapshot.exists():
        snapshot.rename(old)
    staging.rename(snapshot)
    shutil.rmtree(old, ignore_errors=True)
    return ledger


def totals(ledger: dict) -> dict:
    unet = [leg for leg in ledger["legs"] if leg["kind"] == "unet"]
    vae = [leg for leg in ledger["legs"] if leg["kind"] == "vae"]
    return {"legs": len(unet), "unet_steps": sum(leg["steps"] for leg in unet),
            "unet_cpu_minutes": round(sum(leg["cpu_minutes"] for leg in unet), 1),
            "vae_cpu_minutes": round(sum(leg["cpu_minutes"] for leg in vae), 1)}


def show(snapshot: Path) -> str:
    ledger = _ledger(snapshot)
    if not ledger["legs"]:
        return f"no campaign snapshot at {snapshot} yet: run scripts/campaign.sh"
    lines = ["| leg | kind | finished | steps | CPU min | cumulative UNet steps / CPU min | FID (n vs n) | / floor | CNN C2ST |",
             "|---|---|---|---|---|---|---|---|---|"]
    steps = minutes = 0
    for k, leg in enumerate(ledger["legs"], 1):
        m = leg.get("measurement") or {}
        if leg["kind"] == "unet":
            steps, minutes = steps + leg["steps"], minutes + leg["cpu_minutes"]
        cumulative = f"{steps:,} / {minutes:.0f}" if leg["kind"] == "unet" else "—"
        fid = f"{m['fid']:.2f} ({m.get('synthetic_images')} vs {m.get('real_images')})" if m.get("fid") is not None else "—"
        ratio = f"{m['fid_over_floor']:.1f}×" if m.get("fid_over_floor") else "—"
        c2st = f"{m['c2st_auc']:.3f}" if m.get("c2st_auc") is not None else "—"
        lines.append(f"| {k} | {leg['kind']} | {leg.get('finished', '—')[:16]} | {leg['steps']:,} | {leg['cpu_minutes']:.0f} "
                     f"| {cumulative} | {fid} | {ratio} | {c2st} |")
    t = totals(ledger)
    lines.append(f"\ntotal: {t['vae_cpu_minutes'] + t['unet_cpu_minutes']:.0f} CPU minutes of training "
                 f"({t['vae_cpu_minutes']:.0f} VAE + {t['unet_cpu_minutes']:.0f} UNet over {t['legs']} leg(s), "
                 f"{t['unet_steps']:,} UNet steps)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack a finished leg into the snapshot and append it to the ledger")
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--vae-run", type=Path, default=None)
    p.add_argument("--eval", required=True, type=Path)
    p.add_argument("--snapshot", type=Path, default=Path(SNAPSHOT))
    for name in ("show", "total"):
        sub.add_parser(name).add_argument("--snapshot", type=Path, default=Path(SNAPSHOT))
    args = parser.parse_args(argv)
    if args.command == "pack":
        ledger = pack(args.run, args.vae_run, args.eval, args.snapshot)
        print(f"packed {args.run} into {args.snapshot}: {ledger['totals']}")
    elif args.command == "show":
        print(show(args.snapshot))
    else:
        t = totals(_ledger(args.snapshot))
        print(f"{t['legs']} UNet leg(s), {t['unet_steps']:,} steps, {t['unet_cpu_minutes']:.0f} UNet + "
              f"{t['vae_cpu_minutes']:.0f} VAE CPU minutes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
