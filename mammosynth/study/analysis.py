"""Analyse a reader study: joins the answers with the truth key and runs the §12 statistics.

:func:`analyse` returns one JSON-ready dictionary:

* ``per_reader``: accuracy (Wilson 95% CI, binomial test vs 50%), sensitivity/specificity
  for "synthetic", ROC-AUC of the answer+confidence rating with a DeLong 95% CI;
* ``pooled``: the same over all answers (this treats answers as independent and so
  understates uncertainty; the MRMC result below does not);
* ``agreement``: Fleiss' κ over readers and Cohen's κ for every reader pair;
* ``intra_reader``: agreement between the first and the repeated reading of a case;
* ``mrmc``: Obuchowski–Rockette–Hillis analysis of AUC over readers and cases (one
  modality: the AUC with its random-reader random-case CI and a test of AUC = 0.5).

Only first readings (not repeat copies) enter the accuracy, AUC, κ and MRMC results. For a
realistic generator the hoped-for result is accuracy and AUC near 0.5 (readers at chance).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .mrmc import orh_analysis
from .stats import (
    accuracy_summary,
    answer_rating,
    fleiss_kappa_from_answers,
    pairwise_cohen_kappa,
    roc_auc_delong,
    sensitivity_specificity,
)

__all__ = ["responses_table", "analyse"]

RESPONSE_COLUMNS = (
    "reader_id", "case_id", "position", "truth", "y_true", "answer", "y_pred", "confidence", "rating",
    "birads", "seconds_on_case", "answered_at", "repeat_of", "original_case",
)


def responses_table(study) -> Any:
    """All stored answers joined with the truth key, as a pandas DataFrame.

    Columns: :data:`RESPONSE_COLUMNS`. ``y_true``/``y_pred`` are 1 for synthetic; ``rating``
    is :func:`~mammosynth.study.stats.answer_rating`; ``original_case`` is the case id of the
    first copy (itself for non-repeats).
    """
    import pandas as pd

    key = study.key()["cases"]
    low = study.settings.confidence_range[0]
    rows = []
    for a in study.store.answers():
        entry = key[a.case_id]
        rows.append({
            "reader_id": a.reader_id, "case_id": a.case_id, "position": a.position,
            "truth": entry["truth"], "y_true": int(entry["truth"] == "synthetic"),
            "answer": a.answer, "y_pred": int(a.answer == "synthetic"), "confidence": a.confidence,
            "rating": answer_rating(a.answer, a.confidence, low), "birads": a.birads,
            "seconds_on_case": a.seconds_on_case, "answered_at": a.answered_at,
            "repeat_of": entry.get("repeat_of"), "original_case": entry.get("repeat_of") or a.case_id,
        })
    return pd.DataFrame(rows, columns=list(RESPONSE_COLUMNS))


def _reader_summary(frame) -> dict:
    y_true, y_pred = frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()
    out = accuracy_summary(y_true, y_pred)
    out.update(sensitivity_specificity(y_true, y_pred))
    if len(set(y_true)) == 2:
        out["roc"] = roc_auc_delong(y_true, frame["rating"].to_numpy())
    else:
        out["roc"] = {"auc": math.nan, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    out["median_seconds"] = float(frame["seconds_on_case"].median()) if len(frame) else math.nan
    return out


def _intra_reader(table) -> dict:
    from sklearn.metrics import cohen_kappa_score

    out = {}
    repeats = table[table["repeat_of"].notna()]
    firsts = table[table["repeat_of"].isna()].set_index(["reader_id", "case_id"])
    for reader_id, group in repeats.groupby("reader_id"):
        pairs = [(firsts.loc[(reader_id, r.repeat_of), "y_pred"], r.y_pred) for r in group.itertuples()
                 if (reader_id, r.repeat_of) in firsts.index]
        if not pairs:
            continue
        a, b = zip(*pairs)
        kappa = math.nan
        if len(pairs) >= 2 and (len(set(a)) > 1 or len(set(b)) > 1):
            kappa = float(cohen_kappa_score(a, b))
        out[reader_id] = {"n_pairs": len(pairs), "agreement": float(np.mean(np.equal(a, b))), "cohen_kappa": kappa}
    return out


def _mrmc(first) -> dict:
    """ORH on the readers who read every case that every such reader read (complete block)."""
    cases_by_reader = first.groupby("reader_id")["case_id"].apply(set)
    if len(cases_by_reader) == 0:
        return {"available": False, "reason": "no answers yet"}
    n_cases_total = first["case_id"].nunique()
    complete = [r for r, cases in cases_by_reader.items() if len(cases) == n_cases_total]
    readers = complete if len(complete) >= 2 else list(cases_by_reader.index)
    shared = set.intersection(*(cases_by_reader[r] for r in readers))
    block = first[first["reader_id"].isin(readers) & first["case_id"].isin(shared)]
    pivot = block.pivot(index="case_id", columns="reader_id", values="rating")
    truth = block.drop_duplicates("case_id").set_index("case_id").loc[pivot.index, "y_true"].to_numpy()
    if len(readers) < 2 or (truth == 1).sum() < 2 or (truth == 0).sum() < 2:
        return {"available": False, "reason": "needs at least 2 readers who read the same cases, with at least "
                "2 real and 2 synthetic among them"}
    result = orh_analysis(pivot.to_numpy().T[None, :, :], truth)
    single, fixed = result.single_treatment[0], result.single_treatment_frrc[0]
    return {
        "available": True,
        "method": "Obuchowski-Rockette-Hillis, empirical AUC, jackknife covariances (Hillis 2007 ddf)",
        "readers": sorted(readers), "n_readers": len(readers), "n_cases": int(len(truth)),
        "n_synthetic": int(truth.sum()), "n_real": int((truth == 0).sum()),
        "reader_aucs": dict(zip(pivot.columns, result.aucs[0].tolist())),
        "auc": single["auc"], "se": single["se"], "df": single["df"],
        "ci_low": single["ci_low"], "ci_high": single["ci_high"],
        "t_vs_chance": single["t_vs_null"], "p_vs_chance": single["p_vs_null"],
        "fixed_readers": {k: fixed[k] for k in ("se", "ci_low", "ci_high", "p_vs_null")},
        "var_error": result.var_error, "cov2": result.cov2, "ms_r": result.ms_r,
    }


def analyse(study) -> dict:
    """Every §12 statistic of a study (see the module docstring); JSON-ready (NaN allowed)."""
    table = responses_table(study)
    first = table[table["repeat_of"].isna()]
    status = study.status()
    out: dict[str, Any] = {
        "study": {
            "name": study.name, "study_uid": study.info["study_uid"], "created_at": study.info["created_at"],
            "n_cases": study.info["n_cases"], "n_served": study.info["n_served"],
            "confidence_scale": study.settings.confidence_scale, "n_answers": int(len(table)),
        },
        "progress": status,
        "per_reader": {r: _reader_summary(g) for r, g in first.groupby("reader_id")},
        "pooled": _reader_summary(first) if len(first) else {},
        "notes": [
            "positive class = synthetic; accuracy/AUC of 0.5 means readers cannot tell synthetic from real",
            "pooled figures treat all answers as independent; use 'mrmc' for reader- and case-level uncertainty",
            "repeat copies are used only for intra-reader agreement",
        ],
    }
    accs = [v["accuracy"] for v in out["per_reader"].values()]
    out["mean_reader_accuracy"] = float(np.mean(accs)) if accs else math.nan
    answers = {}
    for row in first.itertuples():
        answers.setdefault(row.case_id, {})[row.reader_id] = row.y_pred
    pairs = pairwise_cohen_kappa(answers)
    finite = [v for v in pairs.values() if math.isfinite(v)]
    out["agreement"] = {
        "fleiss_kappa": fleiss_kappa_from_answers(answers),
        "pairwise_cohen_kappa": pairs,
        "mean_pairwise_cohen_kappa": float(np.mean(finite)) if finite else math.nan,
    }
    out["intra_reader"] = _intra_reader(table)
    out["mrmc"] = _mrmc(first) if len(first) else {"available": False, "reason": "no answers yet"}
    if study.settings.ask_birads:
        given = first[first["birads"].notna()]
        out["birads"] = {t: {str(int(k)): int(v) for k, v in g["birads"].value_counts().sort_index().items()}
                         for t, g in given.groupby("truth")}
    return out
