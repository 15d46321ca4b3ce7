"""What the training scripts share: run folders, schedules, logs, checkpoints and resume.

A *run folder* holds everything a run made and what made it::

    run.json          config (all arguments), git sha, data manifest sha256, package versions
    log.csv           one row per logged step (step, loss, lr, sec/step, ...)
    checkpoints/      checkpoint-<step>/ from ``accelerator.save_state`` (pruned) + train_state.json
    validation/       images written every ``--validation_steps``
    <final model>     ``save_pretrained`` output (``vae/`` or the pipeline folder)

The loop that fills it is :class:`mammosynth.training.loop.TrainingLoop`; per-step random
numbers come from :func:`step_generator`, seeded by ``(seed, step)``, so a resumed run draws
what an uninterrupted one would have.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .options import add_common_arguments  # noqa: F401  (re-exported: other training scripts use it)

logger = logging.getLogger(__name__)

__all__ = [
    "add_common_arguments",
    "TrainState",
    "step_generator",
    "write_run_info",
    "manifest_sha256",
    "git_sha",
    "package_versions",
    "CsvLogger",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "make_lr_scheduler",
    "make_accelerator",
    "start_run",
    "StopClock",
]

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainState:
    """Counters saved with every checkpoint (``accelerator.register_for_checkpointing``)."""

    step: int = 0
    elapsed_s: float = 0.0
    max_train_steps: int = 0
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "elapsed_s": self.elapsed_s, "max_train_steps": self.max_train_steps,
                "done": self.done, "extra": dict(self.extra)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.elapsed_s = float(state["elapsed_s"])
        self.max_train_steps = int(state["max_train_steps"])
        self.done = bool(state.get("done", False))
        self.extra = dict(state.get("extra", {}))


class StopClock:
    """Wall-clock time of a run across resumes (``state.elapsed_s`` + this session)."""

    def __init__(self, state: TrainState):
        self.state = state
        self._start = time.monotonic()
        self._base = state.elapsed_s

    def update(self) -> float:
        self.state.elapsed_s = self._base + (time.monotonic() - self._start)
        return self.state.elapsed_s


def step_generator(seed: int, step: int, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by ``(seed, step, stream)``: the same step draws the same numbers."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1))
    return g


def manifest_sha256(data_root: str | os.PathLike) -> str:
    """sha256 of ``manifest.csv`` of a prepared dataset (identifies the training data)."""
    digest = hashlib.sha256()
    with open(Path(data_root) / "manifest.csv", "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_sha() -> str | None:
    """The commit of the source tree (``+dirty`` if it has changes), or ``None`` outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a run produces."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("mammosynth", "torch", "diffusers", "accelerate", "numpy", "safetensors", "pytorch-msssim"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_run_info(out: Path, args: argparse.Namespace, kind: str, extra: Mapping[str, Any] | None = None) -> dict:
    """Write ``run.json`` (config, git sha, data hash, versions); returns what it wrote.

    On a resume the previous file is kept as ``run.json`` and the new invocation is
    appended to its ``invocations`` list, so the history of a run stays in one place.
    """
    path = out / "run.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    invocation = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "processes": int(os.environ.get("WORLD_SIZE", "1")),  # data-parallel processes (torchrun/accelerate)
        "config": {k: v for k, v in vars(args).items() if k != "handler"},
        "git_sha": git_sha(),
        "versions": package_versions(),
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
    }
    info.setdefault("kind", kind)
    info.setdefault("data", {"root": str(args.data), "manifest_sha256": manifest_sha256(args.data)})
    current = manifest_sha256(args.data)
    if info["data"]["manifest_sha256"] != current:
        raise ValueError(
            f"{out} was trained on a prepared dataset with manifest sha256 {info['data']['manifest_sha256'][:12]}…, "
            f"but {args.data} has {current[:12]}…: use a new --out for new data"
        )
    info.update(dict(extra or {}))
    info.setdefault("invocations", []).append(invocation)
    info["config"] = invocation["config"]
    info["git_sha"] = invocation["git_sha"]
    info["versions"] = invocation["versions"]
    out.mkdir(parents=True, exist_ok=True)
    from ..data.prepared import atomic_write_text

    atomic_write_text(path, json.dumps(info, indent=2, default=str))
    return info


def update_run_info(out: Path, **values: Any) -> None:
    """Merge ``values`` into ``run.json`` (e.g. final metrics)."""
    from ..data.prepared import atomic_write_text

    path = out / "run.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    info.update(values)
    atomic_write_text(path, json.dumps(info, indent=2, default=str))


class CsvLogger:
    """Append rows to ``log.csv`` (and to tensorboard if it is installed)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self._columns: list[str] | None = None  # the file's header, read once
        self._writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # tensorboard is optional
                self._writer = None

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}}
        header = self._header()
        if header is None:
            self._rewrite(list(row), [row])
        elif set(row) - set(header):
            # a key not seen before (validation metrics, a resume logging other keys): widen the
            # file's columns instead of dropping it; the old rows keep their values
            self._rewrite(header + [k for k in row if k not in header], [*self._rows(), row])
        else:
            with open(self.path, "a", encoding="utf-8", newline="") as handle:
                csv.DictWriter(handle, fieldnames=header).writerow(row)
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, step)

    def _header(self) -> list[str] | None:
        if self._columns is None and self.path.exists() and self.path.stat().st_size:
            with open(self.path, encoding="utf-8", newline="") as handle:
                self._columns = next(csv.reader(handle), None)
        return self._columns

    def _rows(self) -> list[dict]:
        with open(self.path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))

    def _rewrite(self, fieldnames: list[str], rows: list[Mapping]) -> None:
        """Write the whole file through a temporary file and a rename (a crash leaves the old one)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self._columns = list(fieldnames)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (they belong to steps a resume will redo)."""
        header = self._header() if self.enabled else None
        if header is None:
            return
        kept = [r for r in self._rows() if int(float(r["step"])) <= step]
        self._rewrite(header, kept)


def list_checkpoints(out: Path) -> list[Path]:
    """``checkpoint-<step>`` folders of a run, oldest first."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: Path) -> Path | None:
    checkpoints = list_checkpoints(out)
    return checkpoints[-1] if checkpoints else None


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from for ``--resume_from_checkpoint``.

    Raises:
        FileNotFoundError: a named checkpoint does not exist.
        FileExistsError: ``none`` was asked but the run folder already has checkpoints.
    """
    if resume is None or str(resume).lower() == "latest":
        return latest_checkpoint(out)
    if str(resume).lower() == "none":
        if list_checkpoints(out):
            raise FileExistsError(
                f"{out} already has checkpoints; pass --resume_from_checkpoint latest to continue, "
                "or choose a new --out"
            )
        return None
    path = Path(resume)
    if not path.is_dir():
        path = out / "checkpoints" / str(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {resume} not found (looked for {path}); use 'latest' or a checkpoint-<step> folder")
    return path


def resume_state(out: Path, resume: str | None) -> tuple[TrainState, Path | None]:
    """The :class:`TrainState` to start from and the checkpoint folder to load (``None``: fresh run)."""
    state = TrainState()
    path = resolve_resume(out, resume)
    if path is not None:
        state_file = path / "train_state.json"
        if not state_file.exists():
            raise FileNotFoundError(f"{path} has no train_state.json: it is not a complete checkpoint of this "
                                    "run; pass --resume_from_checkpoint with another checkpoint or delete it")
        state.load_state_dict(json.loads(state_file.read_text(encoding="utf-8")))
    return state, path


def begin_loop(accelerator, out: Path, state: TrainState, resume: Path | None, args: argparse.Namespace,
               desc: str):
    """Load the checkpoint to resume (if any) into the prepared objects, then open the run's
    ``log.csv`` (rows after ``state.step`` dropped), its :class:`StopClock` and the tqdm bar.

    Returns ``(log, clock, progress)``.
    """
    from tqdm.auto import tqdm

    if resume is not None:
        accelerator.load_state(str(resume))
        logger.info("resumed from %s at step %d", resume, state.step)
    log = CsvLogger(out / "log.csv", enabled=accelerator.is_main_process)
    log.truncate_after(state.step)
    clock = StopClock(state)
    stop_if_out_of_time(state, args, state.elapsed_s)  # a resume whose budget is already spent trains no step
    progress = tqdm(total=state.max_train_steps, initial=state.step, desc=desc,
                    disable=args.no_progress or not accelerator.is_local_main_process)
    return log, clock, progress


def prune_checkpoints(out: Path, keep: int | None) -> None:
    """Delete the oldest checkpoints so that at most ``keep`` remain (``None``/≤0: keep all)."""
    if not keep or keep <= 0:
        return
    for path in list_checkpoints(out)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def make_lr_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int,
                      num_processes: int = 1):
    """diffusers' ``get_scheduler`` (cosine with warm-up by default), scaled for accelerate.

    Accelerate steps a prepared scheduler once per process, hence the multiplication.
    """
    from diffusers.optimization import get_scheduler

    warmup = min(warmup_steps, max(total_steps // 10, 1))
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup * num_processes,
                         num_training_steps=max(total_steps, 1) * num_processes)


def make_accelerator(args: argparse.Namespace, out: Path):
    """An ``Accelerator`` for the run folder with the precision and accumulation asked for."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    mixed = args.mixed_precision
    if mixed == "fp16" and not torch.cuda.is_available():
        raise ValueError("--mixed_precision fp16 needs a GPU; on CPU use bf16 or no")
    # Several processes and no GPU (torchrun / accelerate on CPUs): accelerate only sets up
    # gloo data parallelism when told the run is on CPU.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # an optimizer step is always --gradient_accumulation_steps micro-steps, also across epoch ends
    accumulation = GradientAccumulationPlugin(num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False)
    return Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_plugin=accumulation,
        mixed_precision=mixed,
        project_config=ProjectConfiguration(project_dir=str(out), automatic_checkpoint_naming=False),
    )


def start_run(args: argparse.Namespace):
    """The run folder ``--out`` (created), its ``Accelerator`` and the prepared dataset ``--data``."""
    from ..data.prepared import load_prepared

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out, make_accelerator(args, out), load_prepared(args.data)


def measure_sec_per_step(step_fn, warmup: int = 1, steps: int = 3) -> float:
    """Seconds per call of ``step_fn(i)`` after ``warmup`` calls (for --max_minutes)."""
    for i in range(warmup):
        step_fn(i)
    start = time.perf_counter()
    for i in range(steps):
        step_fn(warmup + i)
    return (time.perf_counter() - start) / steps


def steps_for_budget(minutes: float, sec_per_step: float, reserve_fraction: float = 0.1) -> int:
    """How many steps fit in ``minutes`` keeping ``reserve_fraction`` for validation/saving."""
    return max(int(minutes * 60 * (1 - reserve_fraction) / max(sec_per_step, 1e-6)), 1)


def save_checkpoint(accelerator, out: Path, step: int, keep: int | None, state: TrainState | None = None) -> Path:
    """``accelerator.save_state`` (and ``state`` as ``train_state.json``) to ``checkpoints/checkpoint-<step>``.

    Written to a temporary folder and renamed, so a checkpoint folder exists only once it is
    complete; then old checkpoints beyond ``keep`` are pruned.
    """
    path = out / "checkpoints" / f"checkpoint-{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / "checkpoints" / f".tmp-checkpoint-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.save_state(str(tmp))
        if state is not None:
            (tmp / "train_state.json").write_text(json.dumps(state.state_dict()), encoding="utf-8")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        prune_checkpoints(out, keep)
    accelerator.wait_for_everyone()
    return path


def plan_steps(state: TrainState, args: argparse.Namespace, calibrate) -> None:
    """Set ``state.max_train_steps``: ``--max_train_steps`` if given (a resume may extend it), else
    on a fresh run the steps that fit ``--max_minutes`` (``calibrate()`` measures them)."""
    if args.max_train_steps is not None:
        state.max_train_steps = args.max_train_steps
        state.done = state.step >= state.max_train_steps
    elif state.max_train_steps == 0:
        if not args.max_minutes:
            raise ValueError("give --max_train_steps or --max_minutes (or both)")
        state.max_train_steps = int(calibrate())
        logger.info("--max_minutes %.1f → %d steps", args.max_minutes, state.max_train_steps)


def stop_if_out_of_time(state: TrainState, args: argparse.Namespace, elapsed_s: float) -> None:
    """Mark the run done when ``--max_minutes`` (the budget of all legs of the run) is spent."""
    if args.max_minutes and elapsed_s >= args.max_minutes * 60:
        logger.warning("--max_minutes %.1f spent at step %d of %d (%.1f min over all legs of this run): stopping; "
                       "to continue, resume with a larger total", args.max_minutes, state.step,
                       state.max_train_steps, elapsed_s / 60)
        state.done = True


def save_image_grid(images: np.ndarray, path: Path, ncols: int = 4) -> None:
    """Save uint16 frames ``(N,H,W)`` as one 16-bit grayscale PNG grid."""
    from PIL import Image

    n, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    grid = np.zeros((nrows * h, ncols * w), dtype=np.uint16)
    for i, frame in enumerate(images):
        r, c = divmod(i, ncols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = frame
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
