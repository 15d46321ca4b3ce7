"""The seed paper's results table beside ours: ``mammosynth paper-table``.

The paper (*Privacy-Preserving Synthetic Mammograms*, Informatics 2025, 12(4):112) reports
on VinDr-Mammo: FID 5.8, a cancer classifier's ROC-AUC 0.77 trained on synthetic images
only vs 0.82 trained on real ones, and re-identification mAP@R 0.0051. We print the same
rows with our numbers, found in a reports folder (``metrics.json`` from ``evaluate`` and
``privacy.json`` from ``privacy-audit``), and say which dataset ours came from. Our FID is
on our own mammography encoder (or a local Inception file), so it is not on the paper's
scale: the real-vs-real floor is printed beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["PAPER", "find_reports", "paper_rows", "paper_table_markdown"]

#: The seed paper's numbers (VinDr-Mammo).
PAPER: dict[str, float] = {
    "fid": 5.8,
    "auc_synthetic_only": 0.77,
    "auc_real": 0.82,
    "reid_map_at_r": 0.0051,
}


def find_reports(root: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The newest ``metrics.json`` and ``privacy.json`` under ``root`` (or ``None``)."""
    root = Path(root)
    if root.is_file():
        candidates = [root]
    elif root.is_dir():
        candidates = list(root.rglob("*.json"))
    else:
        raise FileNotFoundError(f"--reports {root} does not exist")

    def newest(name: str) -> dict[str, Any] | None:
        found = sorted((p for p in candidates if p.name == name), key=lambda p: p.stat().st_mtime)
        return json.loads(found[-1].read_text()) if found else None

    metrics, privacy = newest("metrics.json"), newest("privacy.json")
    if privacy is None and metrics and isinstance(metrics.get("privacy"), dict):
        privacy = metrics["privacy"].get("report")
    return metrics, privacy


def _find_key(data: Any, names: tuple[str, ...]) -> float | None:
    """First numeric value under any of ``names`` anywhere in a nested dict (the privacy
    report's keys belong to its own module, so look for them defensively)."""
    if isinstance(data, dict):
        for name in names:
            value = data.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, dict):
                for inner in ("value", "mean", "map_at_r"):
                    if isinstance(value.get(inner), (int, float)):
                        return float(value[inner])
        for value in data.values():
            found = _find_key(value, names)
            if found is not None:
                return found
    return None


def _reid_map_at_r(privacy: dict[str, Any] | None) -> float | None:
    """Synthetic-to-training re-identification mAP@R from a privacy report.

    The audit's own layout first (``reid.synthetic_vs_train_retrieval``); otherwise any
    mAP@R key outside ``siamese_verification`` (which scores the re-ID network itself on
    real studies and is *not* a privacy number).
    """
    if not isinstance(privacy, dict):
        return None
    names = ("mean_average_precision_at_r", "map_at_r", "mAP@R", "reid_map_at_r")
    retrieval = (privacy.get("reid") or {}).get("synthetic_vs_train_retrieval")
    found = _find_key(retrieval, names) if isinstance(retrieval, dict) else None
    if found is None:
        found = _find_key({k: v for k, v in privacy.items() if k not in ("siamese_verification", "targets")}, names)
    return found


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.4f}"


def paper_rows(metrics: dict[str, Any] | None, privacy: dict[str, Any] | None) -> list[dict[str, str]]:
    """The table rows: metric, the paper's value, ours, and a note."""
    metrics = metrics or {}
    fidelity = metrics.get("fidelity") or {}
    utility = metrics.get("utility") or {}
    ours_fid = (fidelity.get("synthetic_vs_real") or {}).get("fid")
    floor = (fidelity.get("real_vs_real_floor") or {}).get("fid")
    kind = (fidelity.get("extractor") or {}).get("kind", "")

    def auc(regime: str) -> str:
        block = (utility.get(regime) or {}).get("cancer_auc") or {}
        if block.get("auc") is None:
            return "—"
        return f"{_fmt(block['auc'])} ({_fmt(block.get('ci_low'))}–{_fmt(block.get('ci_high'))})"

    reid = _reid_map_at_r(privacy)
    return [
        {"metric": "FID ↓", "paper": _fmt(PAPER["fid"], 1), "ours": _fmt(ours_fid),
         "note": f"ours on {kind or 'our encoder'}; real-vs-real floor {_fmt(floor)} (not the paper's Inception scale)"},
        {"metric": "ROC-AUC, trained on synthetic only ↑", "paper": _fmt(PAPER["auc_synthetic_only"], 2),
         "ours": auc("tstr"), "note": "cancer = BI-RADS ≥ 4, real test split, mean over seeds (95% CI)"},
        {"metric": "ROC-AUC, trained on real ↑", "paper": _fmt(PAPER["auc_real"], 2), "ours": auc("trtr"), "note": ""},
        {"metric": "ROC-AUC, real + synthetic ↑", "paper": "—", "ours": auc("real_plus_synthetic"), "note": "not in the paper"},
        {"metric": "Synthetic-only / real AUC ↑", "paper": _fmt(PAPER["auc_synthetic_only"] / PAPER["auc_real"], 2),
         "ours": _fmt(utility.get("tstr_over_trtr")), "note": ""},
        {"metric": "Re-identification mAP@R ↓", "paper": _fmt(PAPER["reid_map_at_r"], 4), "ours": _fmt(reid, 4),
         "note": "" if reid is not None else "no privacy report found (run `mammosynth privacy-audit`)"},
    ]


def paper_table_markdown(metrics: dict[str, Any] | None, privacy: dict[str, Any] | None) -> str:
    """The table as Markdown, with the datasets named."""
    real = (metrics or {}).get("real") or {}
    source = real.get("source", "unknown")
    dataset = f"`{real.get('path', '?')}` (source: {source}{'; PHANTOM data, not VinDr-Mammo' if real.get('is_phantom') else ''})"
    lines = [
        "# The seed paper's table, with our numbers",
        "",
        "Paper: *Privacy-Preserving Synthetic Mammograms: A Generative Model Approach to Privacy-Preserving "
        "Breast Imaging Datasets*, Informatics 2025, 12(4):112 — on **VinDr-Mammo**.",
        f"Ours: on {dataset}." if metrics else "Ours: no `metrics.json` found (run `mammosynth evaluate`).",
        "",
        "| metric | paper (VinDr-Mammo) | ours | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['metric']} | {r['paper']} | {r['ours']} | {r['note']} |" for r in paper_rows(metrics, privacy)]
    return "\n".join(lines) + "\n"
