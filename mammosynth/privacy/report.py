"""The privacy report for sign-off: one self-contained HTML page (``mammosynth privacy-report``,
DESIGN §9, issue 20.5).

A hospital privacy officer reads it and files it. It is made from what the audit and the gate
already wrote — nothing is measured again:

* the checkpoint's ``reports/privacy.json`` (``mammosynth privacy-audit``) and the PNG plots
  written beside it;
* ``privacy_checker/build_report.json`` and ``privacy_checker/config.json`` (the gate's index
  size, its split-conformal calibration and the optional copy sketch);
* the gate's fingerprint (:meth:`~mammosynth.privacy.checker.PrivacyChecker.fingerprint`) and the
  checkpoint's, which the caller passes in (:func:`mammosynth.pipelines.checkpoint.fingerprint`
  lives a floor up).

The page has inline CSS, plots as ``data:`` URIs, no script and no external request. It names
no training image or study: the audit's optional ``training_id`` fields are dropped, and the
finished page is searched for every id of the gate's index (:func:`training_ids_in`). A part the
audit did not measure reads "not measured"; only a missing ``privacy.json`` is an error
(:class:`PrivacyAuditMissingError`, naming the file and the command that makes it).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .checker import CHECKER_FOLDER

__all__ = ["AUDIT_FILE", "PrivacyAuditMissingError", "PrivacyReportInputs", "load_report_inputs",
           "render_privacy_report", "write_privacy_report", "training_ids_in"]

logger = logging.getLogger(__name__)

#: Where ``privacy-audit`` writes the audit of a checkpoint (relative to the checkpoint folder).
AUDIT_FILE = Path("reports") / "privacy.json"

#: The plots ``privacy-audit`` writes beside the JSON (``<stem>_<kind>.png``), in page order.
PLOTS = {"similarity": "Re-identification similarity: each image's nearest training image (Siamese embedding)",
         "membership_roc": "Membership inference: ROC of each attack, members vs non-members, and the member-free control",
         "pixel_nn": "Pixel-space nearest neighbours (model-free view of copying)"}

NOT_MEASURED = "not measured"


class PrivacyAuditMissingError(FileNotFoundError):
    """The checkpoint has no privacy audit to report on."""


@dataclass
class PrivacyReportInputs:
    """Everything the page shows, read from a checkpoint folder (see :func:`load_report_inputs`).

    Attributes:
        checkpoint: the checkpoint folder.
        audit_path: the ``privacy.json`` read.
        audit: its content, with training ids dropped.
        build_report: ``privacy_checker/build_report.json`` (``None`` when absent).
        checker: the parts of ``privacy_checker/config.json`` the page uses (never the index ids).
        checker_fingerprint: :meth:`PrivacyChecker.fingerprint`, or why it is unknown.
        checkpoint_fingerprint: the checkpoint's SHA-256 (``None``: unknown).
        plots: ``{kind: PNG bytes}`` of the audit's plots found beside ``audit_path``.
        training_ids: ids of the indexed training images and studies (to keep them out of the page).
    """

    checkpoint: Path
    audit_path: Path
    audit: dict[str, Any]
    build_report: dict[str, Any] | None = None
    checker: dict[str, Any] = field(default_factory=dict)
    checker_fingerprint: str | None = None
    checker_problem: str | None = None
    checkpoint_fingerprint: str | None = None
    plots: dict[str, bytes] = field(default_factory=dict)
    training_ids: frozenset[str] = frozenset()


# -- reading ------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} could not be read ({error}): rerun the command that wrote it") from None


def _drop_training_ids(value: Any) -> Any:
    """The audit without its optional ``training_id`` fields (``privacy-audit --name-training-ids``)."""
    if isinstance(value, dict):
        return {k: _drop_training_ids(v) for k, v in value.items() if k not in ("training_id", "training_ids")}
    if isinstance(value, list):
        return [_drop_training_ids(v) for v in value]
    return value


def load_report_inputs(checkpoint: str | os.PathLike, audit: str | os.PathLike | None = None,
                       checkpoint_fingerprint: str | None = None) -> PrivacyReportInputs:
    """Read a checkpoint's audit, its gate's build report and config, the plots and the gate's fingerprint.

    Args:
        checkpoint: the pipeline folder (with ``privacy_checker/``).
        audit: the audit JSON (default ``<checkpoint>/reports/privacy.json``).
        checkpoint_fingerprint: the checkpoint's fingerprint, computed by the caller.

    Raises:
        PrivacyAuditMissingError: there is no audit JSON.
        ValueError: a file is there but unreadable.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise NotADirectoryError(f"{checkpoint} is not a checkpoint folder")
    audit_path = Path(audit) if audit else checkpoint / AUDIT_FILE
    body = _read_json(audit_path)
    if body is None:
        raise PrivacyAuditMissingError(
            f"{audit_path} does not exist: the privacy report is made from the privacy audit; run it first: "
            f"`mammosynth privacy-audit --checkpoint {checkpoint} --data <prepared training data> "
            f"--synthetic <synthetic set from mammosynth generate-set> --out {checkpoint / AUDIT_FILE}`"
        )
    folder = checkpoint / CHECKER_FOLDER
    config = _read_json(folder / "config.json") or {}
    ids = frozenset(str(i) for i in (*config.get("index_image_ids", ()), *config.get("index_study_ids", ())))
    checker = {k: config.get(k) for k in ("threshold", "calibration", "sketch", "embedder_fingerprint",
                                          "embedder_config", "image_size", "index_meta", "num_neighbours")}
    checker["index_images"] = len(config.get("index_image_ids", ()))
    checker["index_studies"] = len(set(config.get("index_study_ids", ())))
    inputs = PrivacyReportInputs(checkpoint=checkpoint, audit_path=audit_path, audit=_drop_training_ids(body),
                                 build_report=_read_json(folder / "build_report.json"), checker=checker if config else {},
                                 checkpoint_fingerprint=checkpoint_fingerprint, training_ids=ids)
    inputs.checker_fingerprint, inputs.checker_problem = _checker_fingerprint(checkpoint)
    inputs.plots = _find_plots(audit_path, body.get("plots") or {})
    return inputs


def _checker_fingerprint(checkpoint: Path) -> tuple[str | None, str | None]:
    from .checker import load_privacy_checker

    try:
        return load_privacy_checker(checkpoint).fingerprint(), None
    except Exception as error:  # noqa: BLE001 - the page says why, it does not fail
        logger.warning("the privacy checker of %s could not be loaded: %s", checkpoint, error)
        return None, f"{type(error).__name__}: {error}"


def _find_plots(audit_path: Path, named: dict[str, str]) -> dict[str, bytes]:
    """The audit's PNGs: the names ``privacy.json`` records, else ``<stem>_<kind>.png`` beside it."""
    found = {}
    for kind in PLOTS:
        for name in (named.get(kind), f"{audit_path.stem}_{kind}.png"):
            path = audit_path.parent / Path(name).name if name else None
            if path is not None and path.is_file():
                data = path.read_bytes()
                if data.startswith(b"\x89PNG\r\n\x1a\n"):
                    found[kind] = data
                    break
    return found


# -- formatting ---------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _pct(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}%}" if _is_number(value) else NOT_MEASURED


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else NOT_MEASURED


def _ci(ci: Any, fmt=_pct) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(v) for v in ci):
        return f'<span class="ci">{fmt(ci[0])} – {fmt(ci[1])}</span>'
    return "—"


def _binomial_ci(rate: Any, n: Any) -> list[float] | None:
    """Clopper–Pearson CI of a share of ``n`` queries (P@1 is one: each query is a hit or not)."""
    from .calibration import clopper_pearson

    if not (_is_number(rate) and _is_number(n) and n > 0):
        return None
    return list(clopper_pearson(int(round(rate * n)), int(n)))


def _table(headers: Iterable[str] | None, rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """An HTML table (no header row for ``headers=None``); cells are already-escaped HTML."""
    head = "" if headers is None else "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in headers) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{head}<tbody>{body}</tbody></table>'


def _met(met: Any) -> str:
    if met is True:
        return '<span class="ok">met</span>'
    if met is False:
        return '<span class="bad">NOT met</span>'
    return f'<span class="na">{NOT_MEASURED}</span>'


def _missing(what: str, why: str = "") -> str:
    return f'<p class="na"><b>{_esc(what)}: {NOT_MEASURED}.</b> {_esc(why)}</p>'


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


# -- sections -----------------------------------------------------------------------------

_TARGET_LABELS = {"gate_recall": "Planted copies caught by the gate",
                  "false_flag_unseen_real": "False flags on unseen patients (cross-validated)",
                  "siamese_map_at_r": "Siamese re-ID network on held-out studies, mAP@R"}


def _target_label(name: str, target: dict[str, Any]) -> str:
    if name.startswith("battery_"):
        group = "held out from the Siamese training" if target.get("group") == "held_out" else "seen in training"
        return f"Disguise battery: {name[len('battery_'):]} ({group})"
    return _TARGET_LABELS.get(name, name)


def _targets_section(audit: dict[str, Any]) -> tuple[str, str]:
    """The targets table and a one-line count (``met / total``) for the summary."""
    targets = audit.get("targets") or {}
    if not targets:
        return _missing("Targets", "privacy.json lists no targets"), "no targets were evaluated"
    rows, failed = [], []
    for name, t in targets.items():
        # five digits for mAP@R: 0.89996 must not read as the bound it misses
        fmt = (lambda v: _num(v, 5)) if name == "siamese_map_at_r" else (lambda v: _pct(v, 2))
        rows.append([_esc(_target_label(name, t)), fmt(t.get("value")), _esc(_required(t.get("target"), fmt)),
                     _met(t.get("met"))])
        if t.get("met") is not True:
            failed.append(_target_label(name, t))
    line = (f"all {len(targets)} targets met" if not failed else
            f"{len(targets) - len(failed)} of {len(targets)} targets met; not met: " + "; ".join(failed))
    return _table(["Target", "Measured", "Required", ""], rows, "targets"), line


def _required(target: Any, fmt) -> str:
    """``">= 0.99"`` (as ``_targets`` in the audit writes it) as ``"≥ 99.0%"``, in the value's own format."""
    op, _, number = str(target or "").partition(" ")
    try:
        return f"{ {'>=': '≥', '<=': '≤', '>': '>', '<': '<'}.get(op, op)} {fmt(float(number))}"
    except ValueError:
        return str(target or "")


def _how_section(inputs: PrivacyReportInputs) -> str:
    audit, checker, build = inputs.audit, inputs.checker, inputs.build_report or {}
    cal = checker.get("calibration") or audit.get("calibration") or {}
    index = build.get("index") or {}
    n_images = checker.get("index_images") or index.get("images") or _get(audit, "counts", "training")
    n_studies = checker.get("index_studies") or index.get("studies")
    zoom = (checker.get("embedder_config") or {}).get("zoom_tta") or _get(build, "embedder", "zoom_tta")
    threshold = checker.get("threshold", audit.get("threshold"))
    sketch = checker.get("sketch")
    budget = cal.get("target_false_flag_rate")
    sketch_budget = _get(sketch, "calibration", "target_false_flag_rate")
    if _is_number(sketch_budget) and _is_number(_get(sketch, "local_calibration", "target_false_flag_rate")):
        sketch_budget += _get(sketch, "local_calibration", "target_false_flag_rate")
    if _is_number(budget) and _is_number(sketch_budget):
        budget_text = (f"{_pct(budget + sketch_budget, 1)} (by either detector: the Siamese network's share "
                       f"{_pct(budget, 2)}, the copy sketch's {_pct(sketch_budget, 2)})")
    else:
        budget_text = _pct(budget, 1)
    ver = audit.get("siamese_verification") or build.get("siamese_verification") or {}
    parts = [
        "<h3>The gate (what every generated image passes)</h3>",
        "<ol>",
        "<li><b>A Siamese re-identification network</b> maps an image to an embedding in which images of the same "
        "patient study lie close together; it was trained by metric learning on same-study pairs (other view, other "
        "breast, disguised copies) against other studies"
        + (f", and looks at each image also zoomed ×{', ×'.join(f'{z:g}' for z in zoom)}" if zoom else "") + ". "
        f"Checked on held-out studies it was never trained on: mAP@R {_num(ver.get('mean_average_precision_at_r'), 4)}, "
        f"P@1 {_num(ver.get('precision_at_1'), 4)}, verification ROC-AUC {_num(ver.get('verification_auc'), 4)} "
        f"({_esc(ver.get('n_studies', '?'))} studies).</li>",
        f"<li><b>A nearest-neighbour index over the training set</b>: the embeddings of "
        f"{_esc(n_images if n_images is not None else '?')} training images"
        + (f" of {_esc(n_studies)} studies" if n_studies else "") + ". For each generated image the most similar "
        "training image is found (exact search; cosine similarity).</li>",
        f"<li><b>A calibrated threshold</b> ({_num(threshold, 4)}): an image more similar than this to any training "
        "image is flagged (and redrawn or dropped). It is the split-conformal quantile of the nearest-training "
        f"similarities of {_esc(cal.get('n_images', '?'))} real images of {_esc(cal.get('n_studies', '?'))} patients "
        f"the model never saw ({_esc(cal.get('source', 'unseen patients'))}), so that a new unseen patient's image "
        f"is flagged with probability at most {budget_text}.</li>",
    ]
    if sketch:
        sc = sketch.get("calibration") or {}
        parts.append(
            "<li><b>A partial-copy detector (sketch)</b>: the fine pixel structure of each training image, reduced "
            f"to {_esc(sketch.get('dim', '?'))} numbers by a seeded random projection, and block by block "
            f"({_esc(sketch.get('block', '?'))}-pixel blocks, {_esc(sketch.get('block_dim', '?'))} numbers each), "
            "catches images that carry part of a training image (blends, pasted regions) or all of it moved or "
            f"bent by up to {_esc(sketch.get('shift', '?'))} pixels of the sketch: each block of the image's "
            "candidate training images (its Siamese neighbours and the sketch's nearest) is looked for nearby. "
            "Its two scores have their own thresholds (whole-frame "
            f"{_num(sketch.get('threshold'), 4)}, local {_num(sketch.get('local_threshold'), 4)}), calibrated "
            f"the same way on the same unseen patients at {_pct(sc.get('target_false_flag_rate'), 2)} and "
            f"{_pct(_get(sketch, 'local_calibration', 'target_false_flag_rate'), 2)}; the detectors share the "
            "false-flag budget (an image is flagged when any fires).</li>")
    else:
        parts.append("<li><b>Partial-copy detector (sketch)</b>: not part of this gate (the checker was built "
                     "without one): blends and pasted regions are judged by the Siamese network alone.</li>")
    parts.append("</ol>")
    counts = audit.get("counts") or {}
    battery = audit.get("disguise_battery") or {}
    membership = audit.get("membership") or {}
    mia = _get(audit, "config") or {}
    attacks = ", ".join(membership.get("attacks", {})) or None
    parts += [
        "<h3>The audit (what was measured, once, on a synthetic set)</h3>",
        "<ul>",
        f"<li><b>Re-identification of the synthetic set</b>: {_esc(counts.get('synthetic', '?'))} generated images, "
        "each compared with the training set beside "
        f"{_esc(counts.get('test', '?'))} real images of unseen patients; the share the gate flags; re-ID mAP@R of "
        "the synthetic images against the training studies they were conditioned on.</li>",
        f"<li><b>Planted copies</b>: {_esc(counts.get('planted_copies', NOT_MEASURED))} training images disguised with "
        "the Siamese network's own training augmentations and mixed into the synthetic set: the gate must catch "
        "them.</li>",
        ("<li><b>Disguise battery</b>: " + _esc(battery.get("per_family", "?")) + " copies per family of "
         f"{len(battery.get('families', {}))} disguise families (geometric, photometric, partial, compositions) "
         "written apart from the Siamese training; families it never saw are reported apart: they are the "
         "claim.</li>") if battery else
        f"<li><b>Disguise battery</b>: {NOT_MEASURED} (this audit predates it or ran with --battery 0).</li>",
        (f"<li><b>Membership inference</b> on the diffusion model ({_esc(attacks)}): "
         f"{_esc(mia.get('mia_members', '?'))} training images (members) against "
         f"{_esc(mia.get('mia_nonmembers', '?'))} unseen ones, with a member-free control (two halves of the "
         "non-members) that shows what 'no signal' looks like at this sample size.</li>") if attacks else
        f"<li><b>Membership inference</b>: {NOT_MEASURED} ({_esc(membership.get('skipped', 'absent'))}).</li>",
        "<li><b>Pixel-space nearest neighbours</b>: the same comparison without any network, on downsampled "
        f"pixels ({_esc(_get(audit, 'pixel_nn', 'space') or NOT_MEASURED)}).</li>",
        "</ul>",
    ]
    return "\n".join(parts)


def _row(measure: str, value: str, ci: str, n: Any, reading: str) -> list[str]:
    return [_esc(measure), value, ci, _esc(n if n is not None else "—"), reading]


def _rate_row(measure: str, rate: Any, reading: str) -> list[str]:
    if not isinstance(rate, dict):
        return _row(measure, NOT_MEASURED, "—", None, reading)
    count = rate.get("flagged", rate.get("caught"))
    return _row(measure, _pct(rate.get("rate")), _ci(rate.get("ci95")),
                f"{count} of {rate.get('n')}" if count is not None else rate.get("n"), reading)


def _figures_section(audit: dict[str, Any]) -> str:
    ff = audit.get("false_flags") or {}
    cal = audit.get("calibration") or {}
    reid = audit.get("reid") or {}
    copies = audit.get("planted_copies") or {}
    rows = [
        _rate_row("False flags on unseen patients (real test images; in-sample)", ff.get("unseen_real_test"),
                  "Target ≤ 1 %, with the upper 95 % bound ≤ 2 % on ≥ 800 unseen images. These images also set "
                  "the threshold, so this rate is in-sample: see the next row."),
        _row("False flags on unseen patients, cross-validated by study", _pct(ff.get("unseen_real_cross_validated")),
             _ci(_binomial_ci(ff.get("unseen_real_cross_validated"), cal.get("n_images"))), cal.get("n_images"),
             "The out-of-sample estimate: each fold's threshold fitted on the other studies (with the copy "
             "sketch, the two detectors' rates added: an upper bound)."),
        _rate_row("Fresh synthetic images flagged", _get(ff, "fresh_synthetic"),
                  "Generated images the gate would stop (0 % is expected for a model that does not copy)."),
        _rate_row("Planted copies caught (planted-copy recall)", copies.get("gate_recall"),
                  "Target ≥ 99 %. Disguised with the augmentations the Siamese network was trained on: the easy "
                  "case; the disguise battery below is the harder test."),
        _row("Planted copies traced to their own training image", _pct(copies.get("source_found_at_rank1")),
             _ci(_binomial_ci(copies.get("source_found_at_rank1"), copies.get("n"))), copies.get("n"), "Share whose nearest training image is the one copied."),
    ]
    retrieval = reid.get("synthetic_vs_train_retrieval") or {}
    n_q = retrieval.get("n_queries")
    if "mean_average_precision_at_r" in retrieval:
        rows += [
            _row("Re-ID of the synthetic set: mAP@R against its source studies",
                 _num(retrieval["mean_average_precision_at_r"], 4), "no CI (not a share)", n_q,
                 "How well the Siamese network finds the training study each synthetic image was conditioned on; "
                 "≈ 0 = synthetic images do not look like their source patients (chance is about 1/number of "
                 "studies)."),
            _row("Re-ID of the synthetic set: P@1", _pct(retrieval.get("precision_at_1")),
                 _ci(_binomial_ci(retrieval.get("precision_at_1"), n_q)), n_q,
                 "Share of synthetic images whose nearest training image is of their source study."),
        ]
    else:
        rows.append(_row("Re-ID of the synthetic set: mAP@R", NOT_MEASURED, "—", None,
                         _esc(retrieval.get("note", "the synthetic set names no source studies"))))
    rows += [
        _row("Synthetic closer to training than unseen real images (AUC)", _num(reid.get("synthetic_closer_than_real_auc")),
             "no CI in the audit", _get(reid, "synthetic_to_train_similarity", "n"),
             "0.5 = synthetic images are no closer to training images than new patients are; above 0.5 = closer."),
    ]
    pixel = audit.get("pixel_nn") or {}
    rows += [
        _rate_row("Synthetic images nearer a training image in pixel space than 99 % of unseen real ones",
                  pixel.get("synthetic_below_real_q01"), "About 1 % is what chance gives; far above it would suggest "
                  "copying that the network does not see."),
        _row("Pixel-space distance to the nearest training image, median (synthetic / unseen real)",
             f"{_num(_get(pixel, 'synthetic_to_train', 'q0.5'))} / {_num(_get(pixel, 'real_test_to_train', 'q0.5'))}",
             "—", _get(pixel, "synthetic_to_train", "n"), "Lower = closer."),
    ]
    table = _table(["Measure", "Value", "95 % CI", "n", "How to read it"], rows, "figures")
    return table + _membership_table(audit.get("membership") or {})


def _membership_table(membership: dict[str, Any]) -> str:
    attacks = membership.get("attacks") or {}
    if not attacks:
        return "<h3>Membership inference</h3>" + _missing("Membership inference", membership.get("skipped", ""))
    rows = []
    for name, res in attacks.items():
        main, control = res.get("members_vs_nonmembers") or {}, res.get("control_nonmember_halves") or {}
        n = (f"{main.get('n_members', '?')} members vs {main.get('n_nonmembers', '?')} non-members; control "
             f"{control.get('n_members', '?')} vs {control.get('n_nonmembers', '?')}")
        for k, (key, label, fmt) in enumerate((("auc", "ROC-AUC", _num), ("tpr_at_1pct_fpr", "TPR at 1 % FPR", _pct),
                                               ("tpr_at_0.1pct_fpr", "TPR at 0.1 % FPR", _pct))):
            m, c = main.get(key) or {}, control.get(key) or {}
            note = "" if m.get("resolved", True) else ' <span class="na">(not resolved at this sample size)</span>'
            attack = f"<b>{_esc(name)}</b><br><small>{_esc(n)}</small>" if k == 0 else ""
            rows.append([attack, _esc(label), fmt(m.get("value")) + note, _ci(m.get("ci95"), fmt),
                         fmt(c.get("value")), _ci(c.get("ci95"), fmt)])
    return ("<h3>Membership inference on the diffusion model</h3>"
            "<p>An attacker who holds an image asks the model whether it was trained on it. AUC 0.5 = no better "
            "than a coin; the member-free control (two halves of unseen images, no member among them) shows how far "
            "from 0.5 chance alone goes at this sample size. TPR at low FPR is the share of members an attacker "
            "finds while wrongly accusing only 1 % (0.1 %) of non-members.</p>"
            + _table(["Attack", "Metric", "Members vs non-members", "95 % CI", "Member-free control", "95 % CI"],
                     rows, "membership"))


def _battery_rows(families: dict[str, Any], names: list[str], targets: dict[str, Any],
                  trained: bool) -> list[list[str]]:
    """One row per family: its disguise, (for seen families) the range trained on, recall, CI, detectors, target."""
    rows = []
    for name in names:
        f = families[name]
        recall = f.get("gate_recall") or {}
        target = targets.get(f"battery_{name}") or {}
        required = _required(target["target"], lambda v: f"{v:.0%}") if "target" in target else (
            "≥ 95%" if f.get("kind") == "partial" else "≥ 99%")
        by = f"Siamese {_pct(f.get('caught_by_siamese'), 0)}"
        if f.get("caught_by_sketch") is not None:
            by += f", sketch {_pct(f.get('caught_by_sketch'), 0)}"
        rows.append([f"<b>{_esc(name)}</b>", _esc(f.get("kind", "")), _esc(f.get("params", ""))]
                    + ([_esc(f.get("trained_range") or "—")] if trained else [])
                    + [f"{_pct(recall.get('rate'), 1)} <small>({_esc(recall.get('caught', '?'))} of "
                       f"{_esc(recall.get('n', '?'))})</small>", _ci(recall.get("ci95"), lambda v: _pct(v, 1)),
                       _esc(by), f"{_met(target.get('met'))} <small>({_esc(required)})</small>"])
    return rows


def _battery_section(audit: dict[str, Any]) -> str:
    battery = audit.get("disguise_battery")
    if not battery or not battery.get("families"):
        return _missing("Disguise battery", "privacy.json has no disguise_battery: rerun `mammosynth privacy-audit` "
                        "(it runs by default, --battery 100 copies per family). Until then the gate is judged only on "
                        "copies disguised the way its network was trained, which says little about disguises it never saw.")
    families = battery["families"]
    held = [n for n, f in families.items() if f.get("group") == "held_out"]
    seen = [n for n, f in families.items() if f.get("group") != "held_out"]
    targets = audit.get("targets") or {}
    headers = ["Family", "Kind", "Disguise (range)", "Caught", "95 % CI", "Caught by", "Target"]
    trained_headers = headers[:3] + ["Range in Siamese training"] + headers[3:]

    def pooled(group: str) -> str:
        g = battery.get(group)
        if not isinstance(g, dict):
            return NOT_MEASURED
        return f"{_pct(g.get('rate'), 1)} (95 % CI {_ci(g.get('ci95'), lambda v: _pct(v, 1))}; {g.get('caught', '?')} of {g.get('n', '?')})"

    weakest = battery.get("weakest")
    weak = families.get(weakest, {}) if weakest else {}
    out = [f"<p>{_esc(battery.get('per_family', '?'))} disguised copies of training images per family, the same "
           "source images for every family. Partial copies keep at least half of one training image.</p>",
           f'<div class="claim"><h3>Families the Siamese network never saw in training — the claim</h3>'
           f"<p>Pooled: <b>{pooled('held_out')}</b> caught.</p>"
           + (_table(headers, _battery_rows(families, held, targets, False), "battery") if held else _missing("Held-out families"))
           + "</div>",
           "<h3>Families seen in the Siamese training (perhaps at a narrower range) — reported apart</h3>"
           f"<p>Pooled: {pooled('seen')} caught. A gate is expected to catch what it was trained on; these rows "
           "are not evidence that it generalises.</p>"
           + (_table(trained_headers, _battery_rows(families, seen, targets, True), "battery") if seen else _missing("Seen families"))]
    if weakest:
        out.append(f"<p>Weakest family: <b>{_esc(weakest)}</b> "
                   f"({_pct(_get(weak, 'gate_recall', 'rate'), 1)} caught).</p>")
    return "\n".join(out)


def _is_measure(value: Any) -> bool:
    return isinstance(value, dict) and ("value" in value or "rate" in value)


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict) and not _is_measure(value) and value:
            out += _leaves(value, prefix + (str(key),))
        else:
            out.append((prefix + (str(key),), value))
    return out


def _generic(value: Any, key: str = "") -> str:
    """Any JSON value as a short HTML cell: rates/values with their CI, a ``*rate*`` share in % too."""
    if _is_measure(value):
        main = value.get("rate", value.get("value"))
        text = _generic(main, key if "rate" in value else "")
        if "ci95" in value:
            text += f" (95 % CI {_ci(value['ci95'], _compact)})"
        extra = {k: v for k, v in value.items() if k not in ("rate", "value", "ci95")}
        if extra:
            text += " · " + ", ".join(f"{_esc(k)} {_generic(v)}" for k, v in extra.items())
        return text
    if isinstance(value, bool):
        return '<span class="ok">yes</span>' if value else '<span class="bad">no</span>'
    if _is_number(value):
        share = "rate" in key.split(" · ")[-1] and 0.0 <= value <= 1.0
        return _esc(_compact(value)) + (f" <small>({_pct(value, 1)})</small>" if share else "")
    if value is None:
        return f'<span class="na">{NOT_MEASURED}</span>'
    if isinstance(value, (list, tuple)):
        return _esc(", ".join(_compact(v) if _is_number(v) else str(v) for v in value))
    if isinstance(value, dict):
        return _esc(json.dumps(value, default=str)[:300])
    return _esc(value)


def _compact(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if _is_number(value) else str(value)


def _merge_cis(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"x": v, "x_ci95": [a, b]}`` as ``{"x": {"value": v, "ci95": [a, b]}}`` (one cell)."""
    out = dict(flat)
    for key in list(out):
        if key.endswith("_ci95") and key[: -len("_ci95")] in out and _is_number(out[key[: -len("_ci95")]]):
            out[key[: -len("_ci95")]] = {"value": out[key[: -len("_ci95")]], "ci95": out.pop(key)}
    return out


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    return _merge_cis({" · ".join(path): value for path, value in _leaves(data)})


def _label(key: str) -> str:
    return key.replace("_", " ")


def _positive_control_section(audit: dict[str, Any]) -> str:
    """Whatever the audit's ``positive_control`` holds, as tables: its scalars (the verdict first), the
    groups that share their keys (the memorising model beside the real one) side by side, and any
    other group (settings, criteria, checks) on its own."""
    control = audit.get("positive_control")
    if not isinstance(control, dict) or not control:
        return _missing("Positive control", "privacy.json has no positive_control. Without a deliberately memorising "
                        "model that this audit catches, a 'low risk' result cannot be told apart from an audit that "
                        "cannot see memorisation at all.")
    out = ["<p>A model made on purpose to memorise a few training images is audited like the real one: its "
           "samples must be flagged, its re-ID mAP@R must be far above the real model's and its membership AUC "
           "far above 0.5. It shows that this audit can see memorisation when there is some.</p>"]
    groups = {k: _flat(v) for k, v in control.items() if isinstance(v, dict) and not _is_measure(v) and v}
    scalars = _merge_cis({k: v for k, v in control.items() if k not in groups})
    # the groups measured alike (most keys in common with another group) go side by side
    side = [g for g in groups if any(h != g and len(set(groups[g]) & set(groups[h])) * 2 >= len(groups[g])
                                     for h in groups)]
    real = {}
    for key in list(scalars):  # a flat layout: "x" beside "real_x" / "x_real"
        for other in (f"real_{key}", f"{key}_real", f"real_model_{key}"):
            if other in scalars and other != key:
                real[key] = scalars.pop(other)
    if real:
        out.append(_table(["Measure", "Memorising model", "Real model"],
                          [[_esc(_label(k)), _generic(v, k), _generic(real[k], k) if k in real else "—"]
                           for k, v in scalars.items()], "control"))
    elif scalars:
        verdict = [k for k in scalars if isinstance(scalars[k], bool)]
        out.append(_table(None, [[f"<b>{_esc(_label(k))}</b>", _generic(scalars[k], k)]
                                 for k in verdict + [k for k in scalars if k not in verdict]], "control kv"))
    if len(side) >= 2:
        keys = list(dict.fromkeys(k for g in side for k in groups[g]))
        out.append(_table(["Measure", *[_label(g) for g in side]],
                          [[_esc(_label(k))] + [_generic(groups[g][k], k) if k in groups[g] else "—" for g in side]
                           for k in keys], "control"))
    for name in (g for g in groups if g not in side):
        out.append(f"<h3>{_esc(_label(name).capitalize())}</h3>"
                   + _table(None, [[_esc(_label(k)), _generic(v, k)] for k, v in groups[name].items()], "control kv"))
    return "\n".join(out)


def _plots_section(plots: dict[str, bytes]) -> str:
    out = []
    for kind, caption in PLOTS.items():
        if kind in plots:
            data = base64.b64encode(plots[kind]).decode("ascii")
            out.append(f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_esc(caption)}</figcaption></figure>")
        else:
            out.append(_missing(caption, "the plot is not beside privacy.json"))
    return "\n".join(out)


def _is_phantom(inputs: PrivacyReportInputs) -> bool:
    data = str((inputs.checker.get("index_meta") or {}).get("data", ""))
    return "phantom" in inputs.checkpoint.resolve().name.lower() or "phantom" in data.lower()


def _limits_section(inputs: PrivacyReportInputs) -> str:
    audit = inputs.audit
    n_index = inputs.checker.get("index_images") or _get(audit, "counts", "training") or "?"
    data = (inputs.checker.get("index_meta") or {}).get("data") or "the indexed training data"
    items = []
    if _is_phantom(inputs):
        items.append("<b>These are phantom data, not patients.</b> The model, the gate and the audit were trained "
                     f"and measured on simulated mammograms ({_esc(data)}). The numbers show that the method works "
                     "on them; they say nothing about a model trained on real patients' images. Rerun the whole "
                     "audit on the real training set before any release.")
    else:
        items.append(f"<b>The numbers hold for the data they were measured on</b> ({_esc(data)}) and for this "
                     "checkpoint only; a retrained or fine-tuned model needs a new index and a new audit.")
    items += [
        f"<b>The gate compares only with the indexed training set</b> ({_esc(n_index)} images). It cannot recognise "
        "a copy of an image that is not in the index — images of other institutions, public datasets, data added "
        "after indexing — and it judges whole images: a small memorised detail (a lesion, a marker, a clip) inside "
        "an otherwise new image may pass.",
        "<b>Only the attacks listed were tested</b>: planted copies, the disguise families listed with the ranges "
        "shown, the membership-inference attacks named, pixel-space and embedding nearest neighbours. Stronger or "
        "other attacks (training-data extraction by massive sampling, reconstruction, attribute inference, an "
        "attacker with other auxiliary data) were not run. None of this is a formal guarantee such as differential "
        "privacy.",
        "<b>The confidence intervals are sampling intervals</b> (Clopper–Pearson for shares, bootstrap for AUCs) over "
        "the images drawn. They do not cover the choice of disguises, of data, of the model's random seed or the "
        "attack's settings. The unseen patients that set the threshold are also the ones its in-sample false-flag rate "
        "is measured on; the cross-validated rate is the out-of-sample estimate.",
        "<b>Catching the held-out disguise families does not guarantee catching a family nobody wrote.</b> "
        "Re-identification of an unseen kind of disguise is not guaranteed; the battery measures the ranges listed, "
        "not what lies beyond them.",
        "<b>Membership AUC near 0.5 is not proof of no leakage</b>: at a few hundred images per group the CI leaves "
        "room for a small advantage, and the TPR at very low FPR (the few most exposed patients) is often not "
        "resolved at this sample size.",
        "<b>Re-ID mAP@R uses the project's own Siamese network.</b> A better re-identification model might link "
        "synthetic images to patients that this one does not.",
        "<b>The audit covers the synthetic set it was run on.</b> Images generated later are checked by the gate "
        "one by one, but are not part of these statistics.",
    ]
    if not audit.get("positive_control"):
        items.append("<b>No positive control was measured</b>: this audit has not shown that it catches a model "
                     "that does memorise.")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _consistency_warnings(inputs: PrivacyReportInputs) -> list[str]:
    """Where the audit and the checkpoint's current gate disagree (the audit was made with another gate)."""
    audit, checker = inputs.audit, inputs.checker
    out = []
    if not checker:
        out.append(f"the checkpoint has no {CHECKER_FOLDER}/config.json: the gate described is the audit's own record")
        return out
    if audit.get("embedder_fingerprint") and checker.get("embedder_fingerprint") and \
            audit["embedder_fingerprint"] != checker["embedder_fingerprint"]:
        out.append(f"the audit was made with Siamese network {audit['embedder_fingerprint']}, but the checkpoint's "
                   f"gate uses {checker['embedder_fingerprint']}: rerun the audit")
    a, c = audit.get("threshold"), checker.get("threshold")
    if _is_number(a) and _is_number(c) and abs(a - c) > 1e-9:
        out.append(f"the audit used threshold {a:.4f}, the checkpoint's gate has {c:.4f}: rerun the audit")
    n = _get(audit, "counts", "training")
    if _is_number(n) and checker.get("index_images") and n != checker["index_images"]:
        out.append(f"the audit compared with {n} training images, the gate indexes {checker['index_images']}")
    if inputs.checker_problem:
        out.append(f"the gate could not be loaded ({inputs.checker_problem}): its fingerprint is unknown")
    return out


def _provenance_section(inputs: PrivacyReportInputs, command: str | None, created: dt.datetime) -> str:
    audit = inputs.audit
    audit_bytes = inputs.audit_path.read_bytes()
    written = dt.datetime.fromtimestamp(inputs.audit_path.stat().st_mtime, dt.timezone.utc)
    from .. import __version__

    rows = [
        ("Checkpoint", _esc(inputs.checkpoint.resolve().name)),
        ("Checkpoint fingerprint (SHA-256 of its weights and configs)",
         f"<code>{_esc(inputs.checkpoint_fingerprint)}</code>" if inputs.checkpoint_fingerprint else
         f'<span class="na">unknown</span>'),
        ("Privacy checker fingerprint (embedder, threshold, indexed embeddings"
         + (", sketch" if inputs.checker.get("sketch") else "") + ")",
         f"<code>{_esc(inputs.checker_fingerprint)}</code>" if inputs.checker_fingerprint else
         f'<span class="na">unknown ({_esc(inputs.checker_problem or "no checker")})</span>'),
        ("Siamese network fingerprint", f"<code>{_esc(inputs.checker.get('embedder_fingerprint') or audit.get('embedder_fingerprint') or '?')}</code>"),
        ("Audit file", f"<code>{_esc(AUDIT_FILE if inputs.audit_path == inputs.checkpoint / AUDIT_FILE else inputs.audit_path.name)}</code>, "
                       f"SHA-256 <code>{hashlib.sha256(audit_bytes).hexdigest()}</code>, written {_esc(written.strftime('%Y-%m-%d %H:%M UTC'))}"),
        ("Audit command", f"<code>{_esc(str(audit.get('command') or 'not recorded').strip('`'))}</code>"),
        ("This report made", _esc(created.strftime("%Y-%m-%d %H:%M:%S %Z").strip()) + f" by mammosynth {_esc(__version__)}"),
        ("Report command", f"<code>{_esc(command or 'not recorded')}</code>"),
    ]
    return _table(None, [[f"<b>{_esc(k)}</b>", v] for k, v in rows], "provenance")


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1b1f24;
 max-width:1100px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:34px 0 10px;padding-bottom:4px;border-bottom:2px solid #d0d7de}
h3{font-size:16px;margin:20px 0 8px}p,li{max-width:80ch}code{font:12.5px ui-monospace,Menlo,Consolas,monospace;
 word-break:break-all;background:#f3f4f6;padding:1px 4px;border-radius:3px}
.sub{color:#57606a;margin:0 0 16px}.summary{border:1px solid #d0d7de;border-left:6px solid #0969da;border-radius:6px;
 padding:12px 16px;background:#f6f8fa}.summary.fail{border-left-color:#cf222e}.warn{border:1px solid #d4a72c;
 background:#fff8c5;border-radius:6px;padding:10px 16px}
table{border-collapse:collapse;width:100%;margin:8px 0 14px;font-size:13.5px}th,td{border:1px solid #d0d7de;
 padding:5px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}tbody tr:nth-child(even){background:#fbfcfd}
table.provenance td:first-child{width:34%}table.kv td:first-child{width:40%}td small,.ci{white-space:nowrap}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:700}
.na{color:#6e7781;font-style:italic}.claim{border:2px solid #0969da;border-radius:8px;padding:2px 14px 6px;
 background:#f5f9ff}figure{margin:14px 0 22px;text-align:center}figure img{max-width:100%;height:auto;
 border:1px solid #d0d7de}figcaption{color:#57606a;font-size:13px;margin-top:4px}
.limits li{margin-bottom:6px}.signoff td{height:38px}nav{font-size:13.5px;color:#57606a}
@media print{body{max-width:none;padding:0;font-size:11pt}h2{break-after:avoid}table,figure{break-inside:avoid}
 nav{display:none}}
"""


def render_privacy_report(inputs: PrivacyReportInputs, command: str | None = None,
                          created: dt.datetime | None = None) -> str:
    """The report page for ``inputs`` (see :func:`load_report_inputs`) as one HTML string."""
    created = created or dt.datetime.now(dt.timezone.utc)
    audit = inputs.audit
    targets, line = _targets_section(audit)
    failed = "not met" in line or not audit.get("targets")
    warnings = _consistency_warnings(inputs)
    name = inputs.checkpoint.resolve().name
    sections = [
        ("summary", "Summary", f'<div class="summary{" fail" if failed else ""}"><p><b>Targets: {_esc(line)}.</b></p>'
         + targets + "<p>The targets are the project's own (issue 20); meeting them is what this page documents, not "
         "a certificate of anonymity: read <a href=\"#limits\">what the numbers do not prove</a>.</p></div>"
         + ("".join(f'<p class="warn"><b>Check:</b> {_esc(w)}.</p>' for w in warnings))),
        ("how", "What was checked and how", _how_section(inputs)),
        ("figures", "The figures, each with its 95 % confidence interval", _figures_section(audit)),
        ("battery", "Disguise battery: copies a memorising model could emit, by family", _battery_section(audit)),
        ("control", "Positive control: a deliberately memorising model", _positive_control_section(audit)),
        ("plots", "Plots", _plots_section(inputs.plots)),
        ("limits", "What the numbers do not prove", f'<div class="limits">{_limits_section(inputs)}</div>'),
        ("provenance", "Fingerprints and provenance", _provenance_section(inputs, command, created)),
        ("signoff", "Sign-off", _table(["Role", "Name", "Date", "Signature"],
                                       [["Privacy officer", "", "", ""], ["Model owner", "", "", ""]], "signoff")),
    ]
    nav = " · ".join(f'<a href="#{key}">{_esc(title.split(":")[0])}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{_esc(title)}</h2>\n{content}\n</section>' for key, title, content in sections)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Privacy report — {_esc(name)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>Privacy report — {_esc(name)}</h1>\n"
        f'<p class="sub">Synthetic mammograms: re-identification gate and privacy audit, for sign-off. '
        f"Made {_esc(created.strftime('%Y-%m-%d %H:%M %Z').strip())}"
        + (f" · checkpoint <code>{_esc(inputs.checkpoint_fingerprint[:16])}</code>" if inputs.checkpoint_fingerprint else "")
        + (f" · gate <code>{_esc(inputs.checker_fingerprint[:16])}</code>" if inputs.checker_fingerprint else "")
        + f"</p>\n<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )
    return _withhold_training_ids(page, inputs.training_ids)


def training_ids_in(page: str, ids: Iterable[str]) -> list[str]:
    """The ids of ``ids`` that occur in the text of ``page`` (its embedded images left out)."""
    text = _without_data_uris(page)
    return sorted(i for i in set(ids) if i and i in text)


def _without_data_uris(page: str) -> str:
    import re

    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)


def _withhold_training_ids(page: str, ids: frozenset[str]) -> str:
    """The page with any training id replaced (a last guard: no section is meant to name one)."""
    found = training_ids_in(page, ids)
    if found:
        logger.warning("the privacy report would have named %d training id(s); they are withheld", len(found))
        for image_id in sorted(found, key=len, reverse=True):
            page = page.replace(image_id, "[training id withheld]")
    return page


def write_privacy_report(checkpoint: str | os.PathLike, out: str | os.PathLike, audit: str | os.PathLike | None = None,
                         checkpoint_fingerprint: str | None = None, command: str | None = None) -> Path:
    """Read a checkpoint's privacy files and write the report page to ``out``; returns ``out``.

    Raises:
        PrivacyAuditMissingError: the checkpoint has no ``reports/privacy.json`` (or ``audit``).
    """
    from ..data.prepared import atomic_write_text

    inputs = load_report_inputs(checkpoint, audit, checkpoint_fingerprint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_privacy_report(inputs, command=command))
    return out
