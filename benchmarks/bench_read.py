"""Read speed of a prepared dataset for training: random batches of 32 frames.

Target (issue 2): ≥ 2,000 images/s with ``PreparedData.frames`` (random batches of 32).
Also measured: the torch ``PreparedDataset`` through a ``DataLoader`` (images, masks and
encoded conditions; ``num_workers=0``), which is what the training loops use.

Without ``--root`` a prepared dataset of ``--frames`` random frames is written to a
temporary folder with ``PreparedWriter`` (so the page cache is warm, as it is after the
first epoch of training).

    python benchmarks/bench_read.py
    python benchmarks/bench_read.py --root data/prepared-256 --batches 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def write_random(root: Path, frames: int, size: tuple[int, int]) -> None:
    from mammosynth.data.prepared import PreparedWriter

    rng = np.random.default_rng(0)
    with PreparedWriter(root, *size) as writer:
        for i in range(frames):
            frame = rng.integers(0, 65535, size, dtype=np.uint16)
            writer.add(frame, {"study_id": f"s{i // 4:05d}", "image_id": f"i{i:06d}", "split": "training",
                               "laterality": "LR"[i % 2], "view": ("CC", "MLO")[i // 2 % 2], "birads": 1 + i % 5,
                               "density": "ABCD"[i % 4], "lesion": "none", "cancer": int(i % 5 >= 3),
                               "findings": [], "source": "benchmark", "extra": {}})
        writer.finalize()


def frames_per_second(root: Path, batch: int, batches: int) -> float:
    from mammosynth.data.prepared import load_prepared

    data = load_prepared(root)
    rng = np.random.default_rng(1)
    n = len(data.manifest)
    data.frames(rng.integers(0, n, batch))  # warm up
    start = time.perf_counter()
    for _ in range(batches):
        out = data.frames(rng.integers(0, n, batch))
    seconds = time.perf_counter() - start
    assert out.shape == (batch, data.height, data.width)
    return batch * batches / seconds


def dataloader_per_second(root: Path, batch: int, batches: int) -> float:
    import torch

    from mammosynth.data.dataset import PreparedDataset

    torch.set_num_threads(1)
    dataset = PreparedDataset(root)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    seen, start = 0, time.perf_counter()
    while seen < batch * batches:
        for item in loader:
            seen += item["image"].shape[0]
            if seen >= batch * batches:
                break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="an existing prepared dataset")
    parser.add_argument("--frames", type=int, default=1024, help="frames to write without --root")
    parser.add_argument("--size", default="256x192", help="frame size HxW without --root")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=500)
    args = parser.parse_args()
    from mammosynth.data.prepare import parse_size

    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "prepared"
            write_random(root, args.frames, parse_size(args.size))
        from mammosynth.data.prepared import load_prepared

        data = load_prepared(root)
        result = {"root": str(args.root or "random frames"), "frames": len(data.manifest),
                  "size": f"{data.height}x{data.width}", "batch": args.batch,
                  "frames_images_per_second": round(frames_per_second(root, args.batch, args.batches)),
                  "dataloader_images_per_second": round(dataloader_per_second(root, args.batch,
                                                                              max(1, args.batches // 10)))}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
