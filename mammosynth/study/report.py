"""Write a study report: ``report.json``, plots (PNG) and ``report.md``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["json_ready", "write_report", "markdown_report"]


def json_ready(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python numbers, recursively."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def markdown_report(result: dict, plots: dict[str, str]) -> str:
    """The human-readable report of an :func:`~mammosynth.study.analysis.analyse` result."""
    s = result["study"]
    lines = [f"# Reader study “{s['name']}”", "",
             f"{s['n_cases']} cases ({s['n_served']} served incl. repeats), {s['n_answers']} answers, "
             f"confidence scale {s['confidence_scale']}. Positive class = synthetic; 0.5 = chance.", ""]
    m = result.get("mrmc", {})
    if m.get("available"):
        lines += ["## Main result (MRMC, Obuchowski–Rockette–Hillis)", "",
                  f"Reader-averaged AUC **{_f(m['auc'])}** (95% CI {_f(m['ci_low'])}–{_f(m['ci_high'])}, "
                  f"df {_f(m['df'], 1)}), test of AUC = 0.5: p = {_f(m['p_vs_chance'], 4)} "
                  f"({m['n_readers']} readers, {m['n_cases']} cases). As in OR-DBM MRMC, the CI is "
                  "AUC ± t·SE and is not truncated to [0, 1]; with few readers it is wide.", ""]
    lines += ["## Per reader", "", "| reader | n | accuracy (95% CI) | p vs 50% | sensitivity | specificity | AUC (95% CI) |",
              "|---|---|---|---|---|---|---|"]
    rows = list(result["per_reader"].items()) + ([("**pooled**", result["pooled"])] if result.get("pooled") else [])
    for name, r in rows:
        lines.append(
            f"| {name} | {r['n']} | {_f(r['accuracy'])} ({_f(r['ci_low'])}–{_f(r['ci_high'])}) | {_f(r['p_vs_chance'], 4)} "
            f"| {_f(r['sensitivity'])} | {_f(r['specificity'])} | {_f(r['roc']['auc'])} "
            f"({_f(r['roc']['ci_low'])}–{_f(r['roc']['ci_high'])}) |")
    a = result["agreement"]
    lines += ["", "## Agreement", "", f"Fleiss' κ = {_f(a['fleiss_kappa'])}; mean pairwise Cohen's κ = "
              f"{_f(a['mean_pairwise_cohen_kappa'])}."]
    if result.get("intra_reader"):
        lines += ["", "Intra-reader (repeated cases): " + "; ".join(
            f"{r}: {v['n_pairs']} pairs, agreement {_f(v['agreement'])}, κ {_f(v['cohen_kappa'])}"
            for r, v in result["intra_reader"].items())]
    lines += ["", "## Plots", ""] + [f"![{name}]({path})" for name, path in plots.items()]
    lines += ["", "## Notes", ""] + [f"* {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def write_report(study, out: str | os.PathLike) -> dict:
    """Analyse ``study`` and write ``report.json``, ``report.md`` and PNG plots into ``out``.

    Returns the analysis dictionary (JSON-ready).
    """
    from .analysis import analyse, responses_table
    from .plots import plot_accuracy, plot_confidence_histograms, plot_roc_curves

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = json_ready(analyse(study))
    table = responses_table(study)
    plots = {}
    if len(table):
        for name, fig in (("roc", plot_roc_curves(table)), ("accuracy", plot_accuracy(result)),
                          ("confidence", plot_confidence_histograms(table))):
            fig.savefig(out / f"{name}.png", dpi=120)
            plots[name] = f"{name}.png"
    (out / "report.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown_report(result, plots), encoding="utf-8")
    return result
