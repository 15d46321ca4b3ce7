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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mammosynth.data.prepared import load_prepared
    from mammosynth.privacy.checker import load_privacy_checker
    from mammosynth.privacy.disguises import run_battery

    checker = load_privacy_checker(args.checker)
    data = load_prepared(args.data)
    train = data.split("training")
    order = {image_id: k for k, image_id in enumerate(checker.index.image_ids)}
    train = train.iloc[np.argsort([order[i] for i in train["image_id"]])]

    clock = time.perf_counter()
    battery = run_battery(checker, data, train, args.per_family, seed=args.seed)
    print(f"disguise battery: {args.per_family} copies per family, {time.perf_counter() - clock:.0f} s; "
          f"threshold {checker.threshold:.4f}" + (f", sketch threshold {checker.copy_threshold:.4f}"
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
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(battery, handle, indent=2)


if __name__ == "__main__":
    main()
