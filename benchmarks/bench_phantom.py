"""Phantom generation speed: images/s at ~1024 px height and at VinDr size (3518 × 2800).

Target (DESIGN §3): 1,000 studies (4,000 images) at 1024 px in under 10 minutes on 2 cores,
i.e. at least 6.7 images/s; the issue asks for ≥ 8 images/s.

    python benchmarks/bench_phantom.py                      # 40 studies at 1024, 2 at 3518
    python benchmarks/bench_phantom.py --studies 100 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def measure(studies: int, height: int, workers: int, jpeg2000_fraction: float) -> dict:
    from mammosynth.data.phantom import generate_phantom_dataset

    with tempfile.TemporaryDirectory(prefix="bench-phantom-") as tmp:
        start = time.perf_counter()
        summary = generate_phantom_dataset(tmp, studies, seed=0, height=height,
                                           workers=workers, jpeg2000_fraction=jpeg2000_fraction)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in __import__("pathlib").Path(tmp).rglob("*.dicom"))
    return {"height": height, "width": round(height * 2800 / 3518), "studies": studies,
            "images": summary.images, "workers": workers, "seconds": round(seconds, 2),
            "images_per_second": round(summary.images / seconds, 2),
            "mb_per_image": round(size / summary.images / 1e6, 2),
            "jpeg2000_fraction": jpeg2000_fraction}


def cpu_seconds_per_image(studies: int, height: int) -> float:
    """CPU time per image of one in-process worker (independent of other load on the box)."""
    from pathlib import Path

    from mammosynth.data.phantom.generator import PhantomConfig, generate_study

    config = PhantomConfig(studies=studies + 1, seed=0, height=height)
    with tempfile.TemporaryDirectory(prefix="bench-phantom-cpu-") as tmp:
        generate_study(config, 0, Path(tmp))  # warm-up (imports, caches)
        start = time.process_time()
        for index in range(1, studies + 1):
            generate_study(config, index, Path(tmp))
        return (time.process_time() - start) / (4 * studies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=40, help="studies at --height")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--vindr-studies", type=int, default=2,
                        help="studies at 3518 px (0 to skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--jpeg2000-fraction", type=float, default=0.1)
    args = parser.parse_args()
    print(f"cpu_count={os.cpu_count()} load_average={os.getloadavg()}")
    runs = [(args.studies, args.height)]
    if args.vindr_studies:
        runs.append((args.vindr_studies, 3518))
    for studies, height in runs:
        result = measure(studies, height, args.workers, args.jpeg2000_fraction)
        print("phantom " + " ".join(f"{k}={v}" for k, v in result.items()))
        cpu = cpu_seconds_per_image(max(1, min(studies, 10)), height)
        print(f"  cpu_seconds_per_image={cpu:.3f} -> {args.workers / cpu:.1f} images/s on "
              f"{args.workers} idle cores")
        if height == args.height:
            minutes = 4000 / result["images_per_second"] / 60
            print(f"  -> 1,000 studies at {height} px would take {minutes:.1f} min "
                  f"with {args.workers} workers")


if __name__ == "__main__":
    main()
