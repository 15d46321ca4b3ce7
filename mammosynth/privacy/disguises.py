"""The disguise battery: copies of training images a memorising generator could plausibly emit,
by family, to measure what the privacy gate catches (DESIGN §9, issue 20).

:mod:`~mammosynth.privacy.augment` is what the Siamese network is *trained* to see through; a
gate judged only on those augmentations is judged on its own training distribution. This
battery is written apart from it, with its own transforms and wider ranges, and every family
says whether its kind of change was in the Siamese training (``seen``) or never was
(``held_out``). The held-out families are the claim.

Families (each a function ``(x, donors, generator) -> x`` on float ``(N, 1, H, W)`` in [0, 1],
background 0; ``donors`` are other training images, of other studies, for the partial copies):

* geometric — ``scale_crop`` (zoom ×0.85–1.15 about a point near the centre: re-framed, cropped
  or padded), ``aspect`` (one axis stretched ±10 %), ``rotation`` (±5°), ``translation`` (±8 %),
  ``elastic`` (a smooth random displacement field, up to ~3 % of the height);
* photometric — ``gamma`` (0.6–1.6), ``contrast`` (×0.7–1.4), ``windowing`` (clip to a window
  and stretch it to the full range), ``noise`` (σ 0.01–0.05), ``blur`` (σ 0.5–2 px),
  ``sharpen`` (unsharp mask), ``resolution_loss`` (down ×2–4 and back up);
* partial — ``blend`` (50–80 % of one training image over another), ``paste`` (a region of 50–70 %
  of the frame from one training image pasted onto another);
* composition — one geometric and one photometric family, drawn per image.

Every draw comes from a seeded ``torch.Generator``: a seed gives the same battery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .augment import _blur  # the one separable Gaussian blur (its draws are this module's own)

__all__ = ["Family", "FAMILIES", "family_names", "disguise", "disguise_frames", "run_battery"]

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Family:
    """One kind of disguise.

    Attributes:
        name: short id (the key in ``privacy.json``).
        kind: ``geometric``, ``photometric``, ``partial`` or ``composition``.
        seen: the Siamese training augmentations (:mod:`~mammosynth.privacy.augment`) include this
            kind of change (perhaps at a narrower range); ``False``: held out, never seen.
        params: the ranges, in words (for the report).
        transform: the function.
    """

    name: str
    kind: str
    seen: bool
    params: str
    transform: Transform


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine(x: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, angle: torch.Tensor, tx: torch.Tensor,
            ty: torch.Tensor) -> torch.Tensor:
    """Zoom by ``(sx, sy)``, rotate by ``angle`` (radians), shift by ``(tx, ty)`` (fractions of the size)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / sx, -sin / sx, 2 * tx], 1), torch.stack([sin / sy, cos / sy, 2 * ty], 1)], 1)
    return _warp(x, theta)


def _ones(n: int) -> torch.Tensor:
    return torch.ones(n)


def scale_crop(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    s = _uniform(n, 0.85, 1.15, g)
    return _affine(x, s, s, torch.zeros(n), _uniform(n, -0.05, 0.05, g), _uniform(n, -0.05, 0.05, g))


def aspect(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    a = _uniform(n, 0.9, 1.1, g)
    horizontal = torch.rand(n, generator=g) < 0.5
    return _affine(x, torch.where(horizontal, a, _ones(n)), torch.where(horizontal, _ones(n), a), torch.zeros(n),
                   torch.zeros(n), torch.zeros(n))


def rotation(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    return _affine(x, _ones(n), _ones(n), _uniform(n, -5, 5, g) * math.pi / 180, torch.zeros(n), torch.zeros(n))


def translation(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    return _affine(x, _ones(n), _ones(n), torch.zeros(n), _uniform(n, -0.08, 0.08, g), _uniform(n, -0.08, 0.08, g))


def elastic(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    coarse = torch.randn((n, 2, 5, 4), generator=g) * _uniform(n, 0.02, 0.06, g)[:, None, None, None]
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    base = F.affine_grid(torch.eye(2, 3).repeat(n, 1, 1), [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, base + field, mode="bilinear", padding_mode="zeros", align_corners=False)


def gamma(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    value = torch.exp(_uniform(len(x), math.log(0.6), math.log(1.6), g))[:, None, None, None]
    return x.clamp(0, 1) ** value


def contrast(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    factor = _uniform(len(x), 0.7, 1.4, g)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def windowing(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    low = _uniform(n, 0.0, 0.15, g)[:, None, None, None]
    high = _uniform(n, 0.75, 1.0, g)[:, None, None, None]
    return ((x - low) / (high - low)).clamp(0, 1)


def noise(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = _uniform(len(x), 0.01, 0.05, g)[:, None, None, None]
    return x + sigma * torch.randn(x.shape, generator=g)


def blur(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return _blur(x, _uniform(len(x), 0.5, 2.0, g))


def sharpen(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    amount = _uniform(n, 0.5, 1.5, g)[:, None, None, None]
    return x + amount * (x - _blur(x, _uniform(n, 1.0, 2.0, g)))


def resolution_loss(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    factors = torch.randint(2, 5, (len(x),), generator=g)
    for k, factor in enumerate(factors.tolist()):
        small = F.interpolate(x[k : k + 1], size=(h // factor, w // factor), mode="area")
        out[k : k + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def blend(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    alpha = _uniform(len(x), 0.5, 0.8, g)[:, None, None, None]
    return alpha * x + (1 - alpha) * donors


def paste(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A rectangle of 50–70 % of the frame's area from the training image, the rest from a donor."""
    n, _, h, w = x.shape
    out = donors.clone()
    area = _uniform(n, 0.5, 0.7, g)
    ratio = _uniform(n, 0.8, 1.25, g)  # rectangle's height share over its width share
    for k in range(n):
        fh = min(1.0, math.sqrt(float(area[k] * ratio[k])))
        fw = min(1.0, float(area[k]) / fh)
        rh, rw = max(1, round(fh * h)), max(1, round(fw * w))
        top = int(torch.randint(0, h - rh + 1, (1,), generator=g))
        left = int(torch.randint(0, w - rw + 1, (1,), generator=g))
        out[k, :, top : top + rh, left : left + rw] = x[k, :, top : top + rh, left : left + rw]
    return out


_GEOMETRIC = {"scale_crop": scale_crop, "aspect": aspect, "rotation": rotation, "translation": translation,
              "elastic": elastic}
_PHOTOMETRIC = {"gamma": gamma, "contrast": contrast, "windowing": windowing, "noise": noise, "blur": blur,
                "sharpen": sharpen, "resolution_loss": resolution_loss}


def composition(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One geometric, then one photometric family, drawn per image."""
    geometric, photometric = list(_GEOMETRIC.values()), list(_PHOTOMETRIC.values())
    out = torch.empty_like(x)
    first = torch.randint(0, len(geometric), (len(x),), generator=g).tolist()
    second = torch.randint(0, len(photometric), (len(x),), generator=g).tolist()
    for k, (i, j) in enumerate(zip(first, second)):
        one = geometric[i](x[k : k + 1], donors[k : k + 1], g)
        out[k : k + 1] = photometric[j](one, donors[k : k + 1], g)
    return out


#: The battery, in report order.
FAMILIES: tuple[Family, ...] = (
    Family("scale_crop", "geometric", True, "zoom x0.85-1.15 about a point within 5 % of the centre", scale_crop),
    Family("aspect", "geometric", False, "one axis stretched x0.9-1.1", aspect),
    Family("rotation", "geometric", True, "rotation +-5 deg", rotation),
    Family("translation", "geometric", True, "shift +-8 % of each side", translation),
    Family("elastic", "geometric", False, "smooth displacement field, 2-6 % of the half-size per control point",
           elastic),
    Family("gamma", "photometric", True, "gamma 0.6-1.6", gamma),
    Family("contrast", "photometric", True, "contrast x0.7-1.4 about the mean", contrast),
    Family("windowing", "photometric", False, "clip to [0-0.15, 0.75-1] and stretch", windowing),
    Family("noise", "photometric", True, "Gaussian noise sigma 0.01-0.05 of the range", noise),
    Family("blur", "photometric", True, "Gaussian blur sigma 0.5-2 px", blur),
    Family("sharpen", "photometric", False, "unsharp mask, amount 0.5-1.5, sigma 1-2 px", sharpen),
    Family("resolution_loss", "photometric", False, "down x2-4 (area) and back up (bilinear)", resolution_loss),
    Family("blend", "partial", False, "50-80 % of the training image over another study's", blend),
    Family("paste", "partial", False, "a 50-70 % rectangle of the training image pasted onto another study's", paste),
    Family("composition", "composition", False, "one geometric then one photometric family per image", composition),
)


def trained_ranges(config: Any = None) -> dict[str, str]:
    """The range of each seen family that a Siamese network trained with ``config`` (an
    :class:`~mammosynth.privacy.augment.AugmentConfig`, its dict, or ``None`` = the defaults) saw."""
    from .augment import AugmentConfig

    c = config if isinstance(config, AugmentConfig) else AugmentConfig.from_dict(config)
    return {"scale_crop": f"zoom x{1 - c.max_scale:.2f}-{1 + c.max_scale:.2f}",
            "rotation": f"+-{c.max_rotation_deg:g} deg", "translation": f"+-{100 * c.max_shift:g} %",
            "gamma": f"{c.gamma[0]:g}-{c.gamma[1]:g}", "contrast": f"x{c.contrast[0]:g}-{c.contrast[1]:g}",
            "noise": f"sigma <= {c.max_noise_sigma:g}", "blur": f"sigma <= {c.max_blur_sigma:g} px"}


def family_names() -> list[str]:
    return [f.name for f in FAMILIES]


def _family(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown disguise family {name!r}; expected one of {family_names()}")


def disguise(x: torch.Tensor, donors: torch.Tensor, family: str, generator: torch.Generator) -> torch.Tensor:
    """Disguised copies of float ``(N, 1, H, W)`` images in [0, 1] (``donors`` alike, for partial copies)."""
    if x.ndim != 4 or x.shape[1] != 1 or donors.shape != x.shape:
        raise ValueError(f"images and donors have to be (N, 1, H, W) of one shape, got {tuple(x.shape)} and "
                         f"{tuple(donors.shape)}")
    return _family(family).transform(x.float(), donors.float(), generator).clamp(0, 1)


def disguise_frames(frames: np.ndarray, donors: np.ndarray, family: str, seed: int = 0,
                    batch_size: int = 64) -> np.ndarray:
    """Disguised copies of uint16 frames ``(N, H, W)`` (``donors`` the same shape) → uint16, seeded."""
    if frames.ndim != 3 or donors.shape != frames.shape:
        raise ValueError(f"frames and donors have to be (N, H, W) of one shape, got {frames.shape} and {donors.shape}")
    generator = torch.Generator().manual_seed(int(seed))
    out = np.empty(frames.shape, dtype=np.uint16)
    for start in range(0, len(frames), batch_size):
        x = torch.from_numpy(np.asarray(frames[start : start + batch_size], np.float32)[:, None] / 65535.0)
        d = torch.from_numpy(np.asarray(donors[start : start + batch_size], np.float32)[:, None] / 65535.0)
        out[start : start + batch_size] = (disguise(x, d, family, generator)[:, 0].numpy() * 65535.0 + 0.5).astype(
            np.uint16)
    return out


def run_battery(checker, data, per_family: int, seed: int = 0, families: tuple[str, ...] | None = None) -> dict:
    """The gate's recall on ``per_family`` disguised copies of random training images, per family.

    Args:
        checker: the :class:`~mammosynth.privacy.checker.PrivacyChecker` under test.
        data: the prepared dataset whose training split it indexes.
        per_family: copies per family (the same source images for every family, so families
            compare on equal footing); donors for partial copies come from other studies.
        seed: seed of the choice of images and of every disguise.
        families: names to run (default all of :data:`FAMILIES`).

    Returns:
        ``{"per_family": n, "families": {name: {...}}, "seen": {...}, "held_out": {...}}``: each family's
        gate recall with its exact 95 % CI and how often its nearest training image is of the source
        study; ``seen`` / ``held_out`` pool the families of each group (the held-out ones are the claim).
    """
    from .calibration import clopper_pearson

    chosen = [_family(name) for name in (families or family_names())]
    train_rows = checker.index_rows(data)
    n = min(int(per_family), len(train_rows))
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(train_rows), n, replace=False))
    studies = train_rows["study_id"].to_numpy()
    donors = np.array([rng.choice(np.flatnonzero(studies != studies[k])) for k in picks])
    sources = data.frames(train_rows["index"].to_numpy()[picks])
    donor_frames = data.frames(train_rows["index"].to_numpy()[donors])
    threshold = checker.threshold
    ranges = trained_ranges(checker.embedder.config.get("trained_augment"))

    def rate(hits: np.ndarray) -> dict:
        low, high = clopper_pearson(int(hits.sum()), len(hits))
        return {"rate": float(hits.mean()), "caught": int(hits.sum()), "n": int(len(hits)), "ci95": [low, high]}

    report, pooled = {}, {True: [], False: []}
    for k, family in enumerate(chosen):
        copies = disguise_frames(sources, donor_frames, family.name, seed=seed + 1000 * (k + 1))
        similarity, nearest = checker.nearest(checker.embed(copies))
        copy_similarity = checker.copy_similarity(copies, nearest)
        caught = checker.flags(similarity[:, 0], copy_similarity)
        traced = studies[nearest[:, 0]] == studies[picks]
        report[family.name] = {"kind": family.kind, "group": "seen" if family.seen else "held_out",
                               "params": family.params,
                               "trained_range": ranges.get(family.name) if family.seen else None,
                               "gate_recall": rate(caught), "traced_to_source_study": float(traced.mean()),
                               "similarity_median": float(np.median(similarity[:, 0])),
                               "caught_by_siamese": float(np.mean(similarity[:, 0] > threshold))}
        if copy_similarity is not None:
            report[family.name]["caught_by_sketch"] = float(np.mean(checker.copy_flags(copy_similarity)))
        pooled[family.seen].append(caught)
    groups = {("seen" if seen else "held_out"): rate(np.concatenate(hits)) for seen, hits in pooled.items() if hits}
    return {"per_family": n, "threshold": threshold, "families": report, **groups,
            "weakest": min(report, key=lambda name: report[name]["gate_recall"]["rate"]) if report else None}
