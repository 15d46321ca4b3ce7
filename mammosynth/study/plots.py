"""Reader-study plots: ROC curves per reader, accuracy with CIs, confidence by truth.

Each function takes the :func:`~mammosynth.study.analysis.responses_table` (and for the
accuracy plot the :func:`~mammosynth.study.analysis.analyse` result) and returns a
matplotlib ``Figure``; nothing is shown or saved here (see :mod:`.report`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["plot_roc_curves", "plot_accuracy", "plot_confidence_histograms"]


def _figure(width: float = 5.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_roc_curves(table: Any):
    """Empirical ROC curve per reader from the answer+confidence ratings (first readings)."""
    from sklearn.metrics import roc_curve

    fig = _figure()
    ax = fig.add_subplot()
    first = table[table["repeat_of"].isna()]
    for reader_id, group in first.groupby("reader_id"):
        if group["y_true"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(group["y_true"], group["rating"])
        ax.plot(fpr, tpr, drawstyle="default", marker=".", label=str(reader_id))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set(xlabel="false-positive rate (real called synthetic)", ylabel="true-positive rate (synthetic found)",
           title="ROC per reader", xlim=(0, 1), ylim=(0, 1), aspect="equal")
    ax.legend(fontsize="x-small", loc="lower right")
    return fig


def plot_accuracy(result: dict):
    """Per-reader and pooled accuracy with Wilson 95% CIs against the 50% chance line."""
    fig = _figure(5.0, 0.6 + 0.35 * (len(result["per_reader"]) + 1))
    ax = fig.add_subplot()
    rows = list(result["per_reader"].items())
    if result.get("pooled"):
        rows.append(("pooled", result["pooled"]))
    for i, (name, r) in enumerate(rows):
        ax.errorbar(r["accuracy"], i, xerr=[[max(0.0, r["accuracy"] - r["ci_low"])], [max(0.0, r["ci_high"] - r["accuracy"])]],
                    fmt="o", color="k" if name == "pooled" else "C0", capsize=3)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [str(n) for n, _ in rows])
    ax.set(xlim=(0, 1), xlabel="accuracy (Wilson 95% CI)", title="Real vs synthetic: accuracy")
    ax.invert_yaxis()
    return fig


def plot_confidence_histograms(table: Any):
    """Histogram of the signed rating (answer × confidence) for real and synthetic cases."""
    fig = _figure()
    ax = fig.add_subplot()
    first = table[table["repeat_of"].isna()]
    if len(first):
        lo, hi = first["rating"].min(), first["rating"].max()
        bins = 20 if first["rating"].nunique() > 20 else sorted(set(first["rating"]))
        if not isinstance(bins, int):
            bins = [b - 0.5 for b in bins] + [bins[-1] + 0.5]
        for truth, colour in (("real", "C0"), ("synthetic", "C1")):
            values = first.loc[first["truth"] == truth, "rating"]
            ax.hist(values, bins=bins, range=None if not isinstance(bins, int) else (lo, hi), alpha=0.6,
                    color=colour, label=f"truly {truth} (n={len(values)})")
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="← sure real        rating        sure synthetic →", ylabel="answers",
           title="Confidence by truth")
    ax.legend(fontsize="small")
    return fig
