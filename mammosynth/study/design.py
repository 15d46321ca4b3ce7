"""Study design: a balanced, label-matched case set and per-reader reading orders.

Real and synthetic images are matched on the stratum ``(density, lesion, view, laterality)``
so that the label mix is the same in both groups and cannot give the answer away. Reading
orders are a deterministic function of the study seed and the reader id, so a reader
resumes at the same place after a restart and a new reader can be added later.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["STRATUM_FIELDS", "stratum_of", "allocate_strata", "match_cases", "reading_order", "MatchReport"]

#: Labels that must have the same distribution among real and synthetic cases.
STRATUM_FIELDS: tuple[str, ...] = ("density", "lesion", "view", "laterality")


def stratum_of(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The matching stratum of a manifest row (blank labels are their own value ``""``)."""
    out = []
    for name in STRATUM_FIELDS:
        value = row.get(name)
        out.append("" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value))
    return tuple(out)


def _largest_remainder(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Integers summing to ``total``, proportional to ``weights``, never above ``caps``."""
    weights = weights / weights.sum()
    exact = weights * total
    counts = np.minimum(np.floor(exact).astype(int), caps)
    remainder = exact - np.floor(exact)
    while counts.sum() < total:
        room = counts < caps
        if not room.any():
            raise ValueError("not enough images to fill the allocation")
        score = np.where(room, remainder + (exact - counts), -np.inf)
        i = int(np.argmax(score))
        counts[i] += 1
        remainder[i] = -1.0
    return counts


def allocate_strata(real_counts: Sequence[int], synth_counts: Sequence[int], n_real: int, n_synth: int) -> tuple[np.ndarray, np.ndarray]:
    """How many real and synthetic images to take from each stratum.

    Stratum proportions are chosen once (proportional to the overlap ``min(real, synth)``,
    water-filled under what each group can supply) and both groups are allocated with them,
    so the two label distributions agree up to rounding.

    Raises:
        ValueError: if the strata both groups share cannot supply ``n_real`` + ``n_synth`` images.
    """
    nr, ns = np.asarray(real_counts, float), np.asarray(synth_counts, float)
    cap = np.minimum(nr / max(n_real, 1), ns / max(n_synth, 1))  # largest proportion each stratum can carry
    if cap.sum() < 1 - 1e-9:
        usable_r = int(np.floor((cap * n_real).sum()))
        usable_s = int(np.floor((cap * n_synth).sum()))
        raise ValueError(
            f"only about {usable_r} real and {usable_s} synthetic images can be matched on "
            f"{'/'.join(STRATUM_FIELDS)}, but {n_real} real and {n_synth} synthetic were asked for: "
            "ask for fewer --cases or generate synthetic images for the missing label combinations"
        )
    weights = np.minimum(nr, ns)
    p = np.zeros_like(cap)
    free = np.ones(len(cap), bool)
    left = 1.0
    while True:  # water-filling: p ∝ weights, capped at cap
        w = np.where(free, weights, 0.0)
        if w.sum() <= 0:
            break
        trial = np.where(free, w / w.sum() * left, p)
        over = free & (trial > cap)
        if not over.any():
            p = trial
            break
        p[over] = cap[over]
        free &= ~over
        left = 1.0 - p[~free].sum()
    real = _largest_remainder(n_real, np.maximum(p, 1e-12) * (p > 0), nr.astype(int))
    synth = _largest_remainder(n_synth, np.maximum(p, 1e-12) * (p > 0), ns.astype(int))
    return real, synth


@dataclass
class MatchReport:
    """Per-stratum counts of a matched case set and the largest proportion difference."""

    strata: list[dict]
    max_proportion_difference: float

    def to_dict(self) -> dict:
        return {"strata": self.strata, "max_proportion_difference": self.max_proportion_difference}


def match_cases(
    real_rows: Sequence[Mapping[str, Any]],
    synth_rows: Sequence[Mapping[str, Any]],
    n_cases: int,
    synthetic_fraction: float,
    rng: np.random.Generator,
) -> tuple[list[int], list[int], MatchReport]:
    """Pick matched real and synthetic rows.

    Args:
        real_rows, synth_rows: manifest rows (mappings with the :data:`STRATUM_FIELDS`).
        n_cases: total number of distinct cases.
        synthetic_fraction: share of synthetic cases, strictly between 0 and 1.
        rng: the study's random generator.

    Returns:
        ``(real_indices, synth_indices, report)``: positions into the two row lists.
    """
    if not 0 < synthetic_fraction < 1:
        raise ValueError(f"synthetic_fraction must be strictly between 0 and 1, got {synthetic_fraction}")
    if n_cases < 2:
        raise ValueError(f"a study needs at least 2 cases, got {n_cases}")
    n_synth = int(round(n_cases * synthetic_fraction))
    n_synth = min(max(n_synth, 1), n_cases - 1)
    n_real = n_cases - n_synth
    groups_r: dict[tuple, list[int]] = {}
    groups_s: dict[tuple, list[int]] = {}
    for i, row in enumerate(real_rows):
        groups_r.setdefault(stratum_of(row), []).append(i)
    for i, row in enumerate(synth_rows):
        groups_s.setdefault(stratum_of(row), []).append(i)
    keys = sorted(set(groups_r) | set(groups_s))
    real_alloc, synth_alloc = allocate_strata(
        [len(groups_r.get(k, [])) for k in keys], [len(groups_s.get(k, [])) for k in keys], n_real, n_synth
    )
    real_idx, synth_idx, strata = [], [], []
    for k, a, b in zip(keys, real_alloc, synth_alloc):
        if a:
            real_idx += sorted(rng.choice(groups_r[k], size=int(a), replace=False).tolist())
        if b:
            synth_idx += sorted(rng.choice(groups_s[k], size=int(b), replace=False).tolist())
        if a or b:
            strata.append({**dict(zip(STRATUM_FIELDS, k)), "real": int(a), "synthetic": int(b)})
    diff = max(abs(s["real"] / n_real - s["synthetic"] / n_synth) for s in strata)
    return real_idx, synth_idx, MatchReport(strata, float(diff))


def _reader_seed(seed: int, reader_id: str) -> list[int]:
    digest = hashlib.sha256(reader_id.encode()).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def reading_order(
    case_ids: Sequence[str],
    seed: int,
    reader_id: str,
    repeat_pairs: Sequence[tuple[str, str]] = (),
    min_gap: int = 5,
) -> list[str]:
    """The reader's case order: a shuffle seeded by ``(seed, reader_id)``.

    Repeated copies (``(original, copy)`` in ``repeat_pairs``) are kept at least ``min_gap``
    positions from their original when the list is long enough (up to 200 reshuffles, then
    the best order found). The same inputs always give the same order.
    """
    ids = sorted(case_ids)
    rng = np.random.default_rng(_reader_seed(seed, reader_id))
    gap = min(min_gap, max(1, len(ids) // 4))
    best, best_gap = None, -1
    for _ in range(200):
        order = [ids[i] for i in rng.permutation(len(ids))]
        if not repeat_pairs:
            return order
        pos = {c: i for i, c in enumerate(order)}
        closest = min(abs(pos[a] - pos[b]) for a, b in repeat_pairs)
        if closest > best_gap:
            best, best_gap = order, closest
        if closest >= gap:
            break
    return best
