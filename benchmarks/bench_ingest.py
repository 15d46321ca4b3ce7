"""Ingest speed: images/s from VinDr-size (3518 × 2800) phantom DICOMs to 256×192.

Target (issue 2): ≥ 5 images/s on 2 cores from uncompressed DICOMs. JPEG 2000 lossless is
measured too (decoding dominates there).

Phantom DICOMs are generated first (not timed), once uncompressed and once all JPEG 2000.
Two figures per set:

* ``images_per_second`` – wall clock of ``ingest(..., workers=K)`` (what a user sees; it
  depends on what else runs on the machine);
* ``cpu_seconds_per_image`` – CPU time of one in-process worker per image (independent of
  other load), and ``ideal_images_per_second`` = K / that.

    python benchmarks/bench_ingest.py                      # 2 studies (8 images) at 3518, 2 workers
    python benchmarks/bench_ingest.py --studies 5 --workers 2 --size 256x192
    taskset -c 0,1 python benchmarks/bench_ingest.py       # pin to 2 cores on a bigger machine
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def cpu_seconds_per_image(root: Path, size: tuple[int, int]) -> float:
    """CPU seconds per image of one worker doing read + prepare (no writing)."""
    from mammosynth.data.prepare import process_task
    from mammosynth.data.vindr import plan_vindr

    tasks = plan_vindr(root).tasks
    process_task(tasks[0], size)  # warm up imports and caches
    start = time.process_time()
    for task in tasks:
        process_task(task, size)
    return (time.process_time() - start) / len(tasks)


def measure(studies: int, height: int, workers: int, size: tuple[int, int], jpeg2000: bool) -> dict:
    from mammosynth.data.phantom import generate_phantom_dataset
    from mammosynth.data.prepare import ingest

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "prepared"
        generate_phantom_dataset(raw, studies, seed=0, height=height, workers=workers,
                                 jpeg2000_fraction=1.0 if jpeg2000 else 0.0)
        megabytes = sum(p.stat().st_size for p in raw.rglob("*.dicom")) / 1e6
        start = time.perf_counter()
        report = ingest(raw, out, size=size, workers=workers, quiet=True)
        seconds = time.perf_counter() - start
        cpu = cpu_seconds_per_image(raw, size)
    images = report.ingested
    return {
        "source": "JPEG 2000 lossless" if jpeg2000 else "uncompressed", "height": height, "images": images,
        "skipped": report.skipped, "workers": workers, "size": f"{size[0]}x{size[1]}",
        "mb_per_image": round(megabytes / max(images, 1), 1), "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 2), "cpu_seconds_per_image": round(cpu, 3),
        "ideal_images_per_second": round(workers / cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=2, help="phantom studies per set (4 images each)")
    parser.add_argument("--height", type=int, default=3518, help="DICOM rows (3518: VinDr size)")
    parser.add_argument("--workers", type=int, default=2, help="ingest worker processes")
    parser.add_argument("--size", default="256x192", help="prepared frame size HxW")
    parser.add_argument("--skip-jpeg2000", action="store_true", help="measure uncompressed DICOMs only")
    args = parser.parse_args()
    from mammosynth.data.prepare import parse_size

    size = parse_size(args.size)
    for jpeg2000 in (False,) if args.skip_jpeg2000 else (False, True):
        print(json.dumps(measure(args.studies, args.height, args.workers, size, jpeg2000)), flush=True)


if __name__ == "__main__":
    main()
