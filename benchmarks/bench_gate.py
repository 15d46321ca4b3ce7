"""The privacy gate against the disguise battery, its false flags and its speed (issue 20).

    python benchmarks/bench_gate.py --checker checkpoints/mammosynth-phantom-256 --data data/prepared-256
    python benchmarks/bench_gate.py --checker /tmp/ck/privacy_checker --data data/prepared-256 --per-family 200

Prints, for the checker given: each disguise family's gate recall (with its exact 95 % CI, which
detector caught it, and whether the family was seen in the Siamese training or held out), the
pooled seen / held-out recall, the false-flag rate on the dataset's unseen test patients (the
calibration split: an in-sample figure; the cross-validated one is printed beside it), and the
gate's latency per image at batch 1 (median of ``--repeats`` calls, after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checker", required=True, help="a checkpoint folder or its privacy_checker/ folder")
    parser.add_argument("--data", required=True, help="the prepared dataset the checker indexes")
    parser.add_argument("--per-family", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the battery report here")
    parser.add_argument("--unseen", default=None,
                        help="a prepared dataset of fresh patients (e.g. a phantom made with another --seed): false "
                             "flags on all its images, out of sample")
    parser.add_argument("--no-battery", dest="battery", action="store_false",
                        help="skip the battery (false flags and latency only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mammosynth.data.prepared import load_prepared
    from mammosynth.privacy.checker import load_privacy_checker

    checker = load_privacy_checker(args.checker)
    data = load_prepared(args.data)
    if args.unseen:
        _fresh_false_flags(checker, args.unseen)
    battery = _battery(checker, data, args) if args.battery else None
    _test_split_and_latency(checker, data, args)
    if args.json and battery is not None:
        with open(args.json, "w") as handle:
            json.dump(battery, handle, indent=2)


def _fresh_false_flags(checker, folder: str) -> None:
    from mammosynth.data.prepared import load_prepared
    from mammosynth.privacy.calibration import clopper_pearson

    fresh = load_prepared(folder)
    frames = fresh.frames(fresh.manifest["index"].to_numpy())
    flagged = np.array([v.flagged for v in checker.check(frames)])
    low, high = clopper_pearson(int(flagged.sum()), len(flagged))
    print(f"false flags on {len(frames)} images of {fresh.manifest['study_id'].nunique()} fresh patients ({folder}, "
          f"out of sample): {flagged.mean():.4f} ({int(flagged.sum())}), 95 % CI [{low:.4f}, {high:.4f}]")


def _battery(checker, data, args) -> dict:
    from mammosynth.privacy.disguises import run_battery

    clock = time.perf_counter()
    battery = run_battery(checker, data, args.per_family, seed=args.seed)
    print(f"disguise battery: {args.per_family} copies per family, {time.perf_counter() - clock:.0f} s; "
          f"threshold {checker.threshold:.4f}" + (f", sketch thresholds {checker.copy_threshold:.4f} (whole frame) / "
                                                   f"{checker.local_threshold:.4f} (local)"
                                                   if checker.has_sketch else ", no sketch"))
    print("| family | kind | group | recall [95 % CI] | by Siamese | by sketch |")
    print("|---|---|---|---|---|---|")
    for name, family in battery["families"].items():
        recall = family["gate_recall"]
        sketch = f"{family['caught_by_sketch']:.2f}" if "caught_by_sketch" in family else "—"
        print(f"| {name} | {family['kind']} | {family['group']} | {recall['rate']:.3f} "
              f"[{recall['ci95'][0]:.3f}, {recall['ci95'][1]:.3f}] | {family['caught_by_siamese']:.2f} | {sketch} |")
    for group in ("seen", "held_out"):
        g = battery[group]
        print(f"{group}: {g['rate']:.4f} [{g['ci95'][0]:.4f}, {g['ci95'][1]:.4f}] of {g['n']}")
    return battery


def _test_split_and_latency(checker, data, args) -> None:
    test = data.split("test")
    frames = data.frames(test["index"].to_numpy())
    flagged = np.array([v.flagged for v in checker.check(frames)])
    cv = (checker.config.calibration or {}).get("cv_false_flag_rate")
    if checker.has_sketch:
        cv = None if cv is None else cv + checker.config.sketch["calibration"]["cv_false_flag_rate"]
    print(f"false flags on {len(frames)} unseen test images (the calibration split, in-sample): "
          f"{flagged.mean():.4f} ({int(flagged.sum())}); cross-validated {cv}")

    one = frames[:1]
    checker.check(one)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        checker.check(one)
        times.append(time.perf_counter() - start)
    print(f"gate latency, batch 1, {args.threads} threads: median {1000 * np.median(times):.1f} ms "
          f"(min {1000 * min(times):.1f}, max {1000 * max(times):.1f}) against {len(checker.index)} indexed images")


if __name__ == "__main__":
    main()
