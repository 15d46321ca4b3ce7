"""Writing an evaluation report: ``metrics.json``, PNG plots and ``summary.md``.

``metrics.json`` is strict JSON (``NaN`` becomes ``null``). Plots: ``roc.png`` (utility ROC
curves), ``fidelity.png`` (each metric beside its real-vs-real floor), ``adherence.png``
(synthetic vs real scores of the real-trained classifiers), ``samples.png`` (real and
synthetic images side by side). ``summary.md`` is a short human summary with the issue's
targets marked met or missed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..data.prepared import PreparedData, atomic_write_text

__all__ = ["to_json", "write_report", "summary_markdown", "load_metrics"]


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(metrics: dict[str, Any]) -> str:
    """Strict JSON text (NaN/inf → null, numpy scalars → Python)."""
    return json.dumps(_clean(metrics), indent=2, allow_nan=False, default=str)


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read a ``metrics.json`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `mammosynth evaluate` first")
    return json.loads(path.read_text())


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _auc_text(block: dict[str, Any] | None) -> str:
    if not block:
        return "n/a"
    return f"{_fmt(block.get('auc'))} ({_fmt(block.get('ci_low'))}–{_fmt(block.get('ci_high'))})"


def _row(*cells: Any) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(*columns: str) -> list[str]:
    """A Markdown table's header and rule."""
    return [_row(*columns), "|" + "---|" * len(columns)]


def summary_markdown(metrics: dict[str, Any]) -> str:
    """A short Markdown summary of a metrics dict."""
    real = metrics.get("real", {})
    lines = [
        "# Evaluation summary",
        "",
        f"Real data: `{real.get('path')}` (source: {real.get('source')}{', PHANTOM data' if real.get('is_phantom') else ''}), "
        f"test split `{real.get('test_split')}` with {real.get('n_test')} images; " + (
            f"synthetic set: `{metrics['synthetic'].get('path')}` with {metrics['synthetic'].get('n')} images."
            if metrics.get("synthetic") else "no synthetic set (the VAE ceiling only)."),
        "",
    ]
    for key, section in (("fidelity", _fidelity_section), ("utility", _utility_section),
                         ("adherence", _adherence_section), ("realism", _realism_section),
                         ("texture", _texture_section), ("reconstruction", _reconstruction_section),
                         ("privacy", _privacy_section), ("targets", _targets_section)):
        if metrics.get(key):
            lines += section(metrics[key])
    if metrics.get("timings_s"):
        lines += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in metrics["timings_s"].items()), ""]
    return "\n".join(lines)


def _fidelity_section(fidelity: dict[str, Any]) -> list[str]:
    extractor = fidelity.get("extractor", {})
    lines = [
        "## Fidelity",
        f"Features: {extractor.get('kind')}" + (f" ({extractor.get('path')})" if extractor.get("path") else ""),
        "",
        *_table("metric", "synthetic vs real (all)", "synthetic vs real (floor size)", "real vs real floor", "better"),
    ]
    for key, better in (("fid", "lower"), ("kid", "lower"), ("precision", "higher"), ("recall", "higher"),
                        ("density", "higher"), ("coverage", "higher"), ("c2st_features_auc", "0.5")):
        lines.append(_row(key, *(_fmt(fidelity[block].get(key), 4) for block in
                                 ("synthetic_vs_real", "synthetic_vs_real_at_floor_size", "real_vs_real_floor")),
                          better))
    return lines + [""]


def _utility_section(utility: dict[str, Any]) -> list[str]:
    lines = ["## Utility (cancer = BI-RADS ≥ 4, tested on real test images)", "",
             *_table("trained on", "ROC-AUC (95% CI)", "density accuracy", "training images")]
    for regime, label in (("trtr", "real (TRTR)"), ("tstr", "synthetic only (TSTR)"),
                          ("real_plus_synthetic", "real + synthetic")):
        if regime in utility:
            block = utility[regime]
            lines.append(_row(label, _auc_text(block.get("cancer_auc")), _fmt(block.get("density_accuracy")),
                              block.get("n_train")))
    return lines + ["", f"TSTR / TRTR AUC ratio: {_fmt(utility.get('tstr_over_trtr'))} "
                        f"(seeds: {utility.get('seeds')})", ""]


def _adherence_section(adherence: dict[str, Any]) -> list[str]:
    synthetic, real, ratio = adherence["synthetic"], adherence["real"], adherence.get("ratio", {})
    lines = ["## Condition adherence (classifiers trained on real data)", "",
             *_table("score", "synthetic", "real test", "ratio")]
    for key in ("lesion_accuracy", "density_accuracy", "view_accuracy"):
        lines.append(_row(key, _fmt(synthetic.get(key)), _fmt(real.get(key)), _fmt(ratio.get(key))))
    for key in ("hit_rate", "mean_iou"):
        lines.append(_row(f"box {key}", _fmt(synthetic.get("localisation", {}).get(key)),
                          _fmt(real.get("localisation", {}).get(key)), _fmt(ratio.get("localisation_" + key))))
    return lines + [""]


def _realism_section(realism: dict[str, Any]) -> list[str]:
    return ["## Realism", "",
            f"Classifier two-sample test (CNN, held-out halves): ROC-AUC {_auc_text(realism.get('c2st_images'))} "
            "(0.5 = indistinguishable).", ""]


def _texture_rows(blocks: dict[str, dict[str, Any]]) -> list[str]:
    """Background, edge-line and band-power rows for several ``compare_texture`` results (one column each)."""
    rows = [_row("background mean − real (% of range)", *(_fmt(b.get("background_mean_diff")) for b in blocks.values())),
            _row("background std − real (% of range)", *(_fmt(b.get("background_std_diff")) for b in blocks.values()))]
    for side in ("top", "left", "bottom", "right"):
        rows.append(_row(f"{side} edge line − real (% of range)",
                         *(_fmt(b.get("edge_line_diff", {}).get(side)) for b in blocks.values())))
    rows.append(_row("band power, largest deviation from real over octaves (0.1 = 10 %)",
                     *(_fmt(b.get("band_power_max_deviation")) for b in blocks.values())))
    return rows


def _texture_section(texture: dict[str, Any]) -> list[str]:
    blocks = {"synthetic vs real test": texture["synthetic_vs_real"],
              "real vs real floor": texture["real_vs_real_floor"]}
    return ["## Visible tells (0 = as real)", "", *_table("measure", *blocks), *_texture_rows(blocks), ""]


def _reconstruction_section(ceiling: dict[str, Any]) -> list[str]:
    if ceiling.get("skipped"):
        return ["## VAE ceiling", "", f"Left out: {ceiling['skipped']}.", ""]
    blocks = {"real training images (floor)": ceiling["real_training"],
              "their VAE reconstructions": ceiling["reconstructions"]}
    lines = ["## VAE ceiling (what the autoencoder keeps, against the real test images)", "",
             f"{ceiling.get('n')} real training images through `{ceiling.get('vae')}` and back.", "",
             *_table("measure", *blocks)]
    lines.append(_row("FID (floor size)", *(_fmt(b.get("fidelity_at_floor_size", {}).get("fid"), 4)
                                             for b in blocks.values())))
    lines.append(_row("CNN C2ST AUC (95% CI)", *(_auc_text(b.get("c2st_images")) for b in blocks.values())))
    lines += _texture_rows({name: block["texture"] for name, block in blocks.items()})
    return lines + ["", f"Reconstruction FID / real-vs-real floor: {_fmt(ceiling.get('fid_over_floor'))}", ""]


def _privacy_section(privacy: dict[str, Any]) -> list[str]:
    return ["## Privacy", "", f"Privacy audit merged from `{privacy.get('path')}`.", ""]


def _targets_section(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["## Targets", "", *_table("target", "value", "bound", "met")]
    for row in targets:
        lines.append(_row(row["target"], _fmt(row["value"]), _fmt(row["bound"]), "yes" if row["met"] else "**no**"))
    return lines + [""]


def _plots(metrics: dict[str, Any], out_dir: Path, real_data: PreparedData | None, real_rows: Any,
           synth_data: PreparedData | None, synth_rows: Any) -> list[str]:
    """Draw each plot whose metrics are there; return the names of the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(name: str, fig: Any, dpi: int = 120) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=dpi)
        plt.close(fig)
        written.append(name)

    utility = metrics.get("utility")
    if utility and utility.get("roc"):
        save("roc.png", _roc_figure(plt, utility))
    if metrics.get("fidelity"):
        save("fidelity.png", _fidelity_figure(plt, metrics["fidelity"]))
    if metrics.get("adherence"):
        save("adherence.png", _adherence_figure(plt, metrics["adherence"]))
    if real_data is not None and synth_data is not None and len(real_rows) and len(synth_rows):
        save("samples.png", _samples_figure(plt, real_data, real_rows, synth_data, synth_rows), dpi=100)
    return written


def _finite_or_zero(values: list[Any]) -> list[float]:
    return [0 if v is None or not np.isfinite(v) else v for v in values]


def _roc_figure(plt: Any, utility: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for regime, (fpr, tpr) in utility["roc"].items():
        auc = utility[regime]["cancer_auc"]["auc"]
        ax.plot(fpr, tpr, label=f"{regime} (AUC {_fmt(auc)})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Cancer (BI-RADS ≥ 4), real test")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _fidelity_figure(plt: Any, fidelity: dict[str, Any]) -> Any:
    keys = ["fid", "kid", "precision", "recall", "density", "coverage"]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.2 * len(keys), 3))
    for ax, key in zip(axes, keys):
        values = [fidelity["synthetic_vs_real_at_floor_size"].get(key), fidelity["real_vs_real_floor"].get(key)]
        ax.bar(["synthetic", "real floor"], _finite_or_zero(values), color=["tab:orange", "tab:blue"])
        ax.set_title(key)
        ax.tick_params(axis="x", labelsize=7)
    return fig


def _adherence_figure(plt: Any, adherence: dict[str, Any]) -> Any:
    def scores(block: dict[str, Any]) -> list[float]:
        keys = ["lesion_accuracy", "density_accuracy", "view_accuracy"]
        return _finite_or_zero([block.get(k) for k in keys] + [block.get("localisation", {}).get("hit_rate")])

    labels = ["lesion", "density", "view", "box hit"]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(x - 0.2, scores(adherence["synthetic"]), 0.4, label="synthetic", color="tab:orange")
    ax.bar(x + 0.2, scores(adherence["real"]), 0.4, label="real test", color="tab:blue")
    ax.set_xticks(x, labels)
    ax.set(ylim=(0, 1), ylabel="score", title="Condition adherence")
    ax.legend(fontsize=8)
    return fig


def _samples_figure(plt: Any, real_data: PreparedData, real_rows: Any, synth_data: PreparedData,
                    synth_rows: Any) -> Any:
    n = min(6, len(real_rows), len(synth_rows))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 4.2), squeeze=False)
    for row_axes, data, rows, label in ((axes[0], real_data, real_rows, "real"),
                                        (axes[1], synth_data, synth_rows, "synthetic")):
        frames = data.frames(rows["index"].to_numpy()[:n])
        for ax, frame in zip(row_axes, frames):
            ax.imshow(frame, cmap="gray", vmin=0, vmax=65535)
            ax.axis("off")
        row_axes[0].set_title(label, fontsize=9, loc="left")
    return fig


def write_report(metrics: dict[str, Any], out_dir: str | Path, real_data: PreparedData | None = None,
                 real_rows: Any = None, synth_data: PreparedData | None = None, synth_rows: Any = None) -> Path:
    """Write ``metrics.json``, the PNG plots and ``summary.md`` into ``out_dir``; return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics["plots"] = _plots(metrics, out_dir, real_data, real_rows, synth_data, synth_rows)
    atomic_write_text(out_dir / "metrics.json", to_json(metrics))
    atomic_write_text(out_dir / "summary.md", summary_markdown(_clean(metrics)))
    return out_dir
