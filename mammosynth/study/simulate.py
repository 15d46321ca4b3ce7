"""Simulated readers with known skill (for the notebook, tests and benchmarks).

Binormal model: for each case a reader sees a latent value ``x ~ N(d' · truth, 1)`` (truth 1 =
synthetic). They answer "synthetic" when ``x > d'/2`` and map ``|x − d'/2|`` to a confidence
on the study's scale. ``d' = 0`` is a reader at chance (expected AUC 0.5); the expected
AUC of the latent score is ``Φ(d'/√2)``.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = ["expected_auc", "simulate_answer", "simulate_study"]


def expected_auc(d_prime: float) -> float:
    """Expected AUC of a binormal reader with separation ``d'`` (equal variances)."""
    return 0.5 * (1 + math.erf(d_prime / 2))


def simulate_answer(truth: int, d_prime: float, rng: np.random.Generator, scale: tuple[int, int] = (1, 5)) -> tuple[str, int]:
    """One simulated ``(answer, confidence)``."""
    x = rng.normal(d_prime * truth, 1.0) - d_prime / 2
    low, high = scale
    steps = high - low + 1
    level = min(int(abs(x) / 2.0 * steps), steps - 1)  # |x| in [0, 2) spread over the scale
    return ("synthetic" if x > 0 else "real"), low + level


def simulate_study(study, skills: Mapping[str, float], seed: int = 0, max_answers: int | None = None) -> int:
    """Let each reader in ``skills`` (reader id → d') answer their list through the public API.

    Uses the truth key (this is a simulation, run by an admin). Returns answers stored.
    """
    key = study.key()["cases"]
    rng = np.random.default_rng(seed)
    scale = study.settings.confidence_range
    stored = 0
    for reader_id, d_prime in skills.items():
        count = 0
        while (view := study.next_case(reader_id)) is not None and (max_answers is None or count < max_answers):
            truth = 1 if key[view.case_id]["truth"] == "synthetic" else 0
            answer, confidence = simulate_answer(truth, d_prime, rng, scale)
            study.answer(reader_id, view.case_id, answer, confidence, None, float(rng.uniform(3, 30)))
            count += 1
            stored += 1
    return stored
