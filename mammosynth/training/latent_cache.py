"""The LDM's latent cache in shards on disk, for training sets that do not fit in memory.

``train-ldm --latent_shard_size N`` (the GPU presets set it) encodes the training split with the
frozen VAE into ``<out>/latents/shard-00000.safetensors``, ... of ``N`` images each, and trains
from them memory-mapped (:class:`LatentShards`: ``safetensors.safe_open`` per shard, one item
read per ``__getitem__``), so host memory stays flat however large the set. Each shard holds the
posterior ``mean`` and ``std`` (float32, unscaled), the latent-size lesion ``masks`` and the
condition codes, exactly what the single-file cache (``latents.pt``) holds for those rows.

Encoding is shared by all processes of a data-parallel run (process ``r`` of ``W`` encodes shards
``r, r + W, ...``) and resumable: a shard is written to a temporary file and renamed, and a shard
whose header carries the cache key (VAE weights + data manifest + shard size) is not encoded again.
``index.json`` (written last, by the main process) lists the shards.

At 1024x768 frames (8 x 128 x 96 latents) a VinDr-Mammo training split of 16,000 images is
16,000 x 786 KB = 12.6 GB of shards; the same set x50 would be 630 GB, which only a
memory-mapped cache can train from.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset

__all__ = ["LatentShards", "build_latent_shards", "INDEX_FILE"]

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"


def _shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def _shard_is_current(path: Path, key: str, items: int) -> bool:
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception:  # a torn or foreign file: encode it again
        return False
    return meta.get("key") == key and int(meta.get("items", -1)) == items


def build_latent_shards(accelerator, encode: Callable[[Dataset], dict[str, torch.Tensor]], dataset: Dataset,
                        folder: Path, key: str, shard_size: int) -> "LatentShards":
    """Encode ``dataset`` into shards of ``shard_size`` items under ``folder`` (missing or stale ones only).

    Args:
        accelerator: the run's ``Accelerator`` (process index / count, barriers).
        encode: ``encode(subset) -> {name: tensor (n, ...)}`` (``train_ldm.encode_dataset`` with the VAE bound).
        dataset: the training items, in cache order.
        folder: where the shards and ``index.json`` go.
        key: identifies the VAE and the data; shards with another key are encoded again.
        shard_size: items per shard (> 0).
    """
    from safetensors.torch import save_file

    if shard_size < 1:
        raise ValueError(f"--latent_shard_size must be >= 1 for a sharded cache, got {shard_size}")
    n = len(dataset)
    if n == 0:
        raise ValueError("the training split is empty: nothing to encode")
    folder = Path(folder)
    key = f"{key}:shards-of-{shard_size}"
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    index = {"key": key, "items": n, "shard_size": shard_size,
             "shards": [{"file": _shard_name(i), "start": a, "items": b - a} for i, (a, b) in enumerate(bounds)]}
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    rank, world = accelerator.process_index, accelerator.num_processes
    todo = [i for i in range(rank, len(bounds), world)
            if not _shard_is_current(folder / _shard_name(i), key, bounds[i][1] - bounds[i][0])]
    if todo:
        logger.info("process %d encodes %d of %d latent shards (%d images each)", rank, len(todo), len(bounds),
                    shard_size)
    for i in todo:
        a, b = bounds[i]
        tensors = {k: v.contiguous() for k, v in encode(Subset(dataset, range(a, b))).items()}
        tmp = folder / f".{_shard_name(i)}.tmp-{rank}"
        save_file(tensors, str(tmp), metadata={"key": key, "items": str(b - a), "start": str(a)})
        os.replace(tmp, folder / _shard_name(i))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        from ..data.prepared import atomic_write_text

        atomic_write_text(folder / INDEX_FILE, json.dumps(index, indent=1))
    accelerator.wait_for_everyone()
    return LatentShards(folder, key=key)


class LatentShards(Dataset):
    """Items ``{name: tensor}`` of a sharded latent cache, read lazily from memory-mapped safetensors.

    Args:
        folder: the cache folder (``index.json`` + shards).
        key: when given, the cache must have been made for it (``ValueError`` otherwise).
    """

    def __init__(self, folder: str | os.PathLike, key: str | None = None):
        self.folder = Path(folder)
        path = self.folder / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} has no {INDEX_FILE}: not a sharded latent cache")
        self.index = json.loads(path.read_text())
        if key is not None and self.index.get("key") != key:
            raise ValueError(f"the latent cache in {self.folder} was made for another VAE or dataset "
                             f"({self.index.get('key')!r}, expected {key!r}); delete it to encode again")
        self.starts = [int(s["start"]) for s in self.index["shards"]]
        self.length = int(self.index["items"])
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return self.length

    def _handle(self, shard: int):
        if shard not in self._handles:
            from safetensors import safe_open

            self._handles[shard] = safe_open(str(self.folder / self.index["shards"][shard]["file"]), framework="pt")
        return self._handles[shard]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        item = int(item)
        if not 0 <= item < self.length:
            raise IndexError(f"item {item} outside the cache's {self.length}")
        shard = bisect.bisect_right(self.starts, item) - 1
        row = item - self.starts[shard]
        handle = self._handle(shard)
        return {name: handle.get_slice(name)[row:row + 1][0] for name in handle.keys()}

    def __getstate__(self) -> dict:   # DataLoader workers open their own handles
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def channel_stats(self, name: str = "mean") -> tuple[list[float], list[float]]:
        """Per-channel mean and (sample) standard deviation of ``name`` over all shards, in float64, one shard
        in memory at a time: what :func:`~mammosynth.models.autoencoder.channel_stats` gives on the whole tensor."""
        total = squares = None
        count = 0
        for shard in range(len(self.starts)):
            values = self._handle(shard).get_tensor(name).double().transpose(0, 1).flatten(1)
            total = values.sum(1) if total is None else total + values.sum(1)
            squares = (values ** 2).sum(1) if squares is None else squares + (values ** 2).sum(1)
            count += values.shape[1]
        if count < 2:
            raise ValueError(f"channel statistics need at least 2 values per channel, the cache has {count}")
        mean = total / count
        std = ((squares - count * mean ** 2) / (count - 1)).clamp_min(0).sqrt()
        if not bool((std > 0).all()):
            raise ValueError(f"a latent channel is constant (std {std.tolist()}); is the VAE trained?")
        return [float(v) for v in mean], [float(v) for v in std]
