"""Benchmark ``mammosynth evaluate``: 1,000 synthetic vs 1,000 real test images, with the breakdown.

Uses the prepared sets given on the command line, or writes random labelled toy sets of that
size (``mammosynth.evaluation.toy``) when none are given. By default the fidelity encoder is
trained inside the run (as when a checkpoint ships none); ``--encoder DIR`` loads one instead.

Run::

    python benchmarks/bench_evaluation.py                       # toy sets, 1000 vs 1000, 256x192
    python benchmarks/bench_evaluation.py --data data/prepared-256 --synthetic out/synth-set
    python benchmarks/bench_evaluation.py --threads 2 --n 1000 --train 2000

Prints seconds per part (feature extractor, fidelity, inputs, utility, adherence, realism) and
the total; the target is ≤ 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="real prepared dataset (default: toy)")
    parser.add_argument("--synthetic", help="synthetic prepared dataset (default: toy)")
    parser.add_argument("--encoder", help="fidelity encoder folder (default: trained in the run)")
    parser.add_argument("--n", type=int, default=1000, help="toy test and synthetic images (default 1000)")
    parser.add_argument("--train", type=int, default=2000, help="toy real training images (default 2000)")
    parser.add_argument("--size", default="256x192", help="toy frame size (default 256x192)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default=None, help="report folder (default: a temp folder)")
    args = parser.parse_args()

    import torch

    from mammosynth.evaluation.classifiers import Recipe
    from mammosynth.evaluation.evaluate import EvaluationConfig, run_evaluation
    from mammosynth.data.toy import write_toy_dataset

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    h, w = (int(v) for v in args.size.split("x"))
    started = time.perf_counter()
    if args.data is None:
        # test share chosen so that the test split has about --n images
        total = args.n + args.train
        args.data = write_toy_dataset(tmp / "real", total, height=h, width=w, seed=0, test_fraction=args.n / total)
    if args.synthetic is None:
        args.synthetic = write_toy_dataset(tmp / "synth", args.n, height=h, width=w, seed=1, split="training",
                                           shift=0.05, source="synthetic")
    setup = time.perf_counter() - started
    config = EvaluationConfig(recipe=Recipe(epochs=args.epochs), seeds=tuple(int(s) for s in args.seeds.split(",")),
                              encoder=args.encoder)
    started, cpu_started = time.perf_counter(), time.process_time()
    metrics = run_evaluation(args.data, args.synthetic, args.out or tmp / "report", config)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({
        "threads": args.threads, "setup_s (toy data, not counted)": round(setup, 1),
        "n_real_test": metrics["real"]["n_test"], "n_real_train": metrics["real"]["n_train"],
        "n_synthetic": metrics["synthetic"]["n"], "breakdown_s": metrics["timings_s"], "total_s": round(total, 1),
        "cpu_s (all threads; wall ≈ cpu / threads on an idle machine)": round(cpu, 1),
        "target_s": 900, "met": total <= 900,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
