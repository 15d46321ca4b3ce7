"""Export a study's answers: a long CSV, or the iMRMC input format.

iMRMC format (FDA/DIDSR iMRMC, also read by RJafroc): free description lines, then
``N0:`` (truth-0 cases), ``N1:`` (truth-1 cases), ``NR:`` readers, ``NM:`` modalities,
``BEGIN DATA:``, one truth line per case ``-1,caseID,0,truth`` and one line per reading
``readerID,caseID,modalityID,score``. Here truth 1 = synthetic, the score is the
answer+confidence rating (larger = more confident "synthetic") and the single modality is
named ``reader_study``. Only first readings are exported (repeat copies are not).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["export_csv", "export_imrmc", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("csv", "imrmc")


def export_csv(study, path: str | os.PathLike) -> Path:
    """Every answer (incl. repeats) joined with the truth: one row per answer."""
    from .analysis import responses_table

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    responses_table(study).to_csv(path, index=False)
    return path


def imrmc_text(study, modality: str = "reader_study") -> str:
    """The iMRMC input file text of a study's first readings."""
    from .analysis import responses_table

    table = responses_table(study)
    first = table[table["repeat_of"].isna()]
    key = study.key()["cases"]
    cases = sorted(c for c, e in key.items() if not e.get("repeat_of"))
    number = {c: i + 1 for i, c in enumerate(cases)}
    truth = {c: int(key[c]["truth"] == "synthetic") for c in cases}
    lines = [f"mammosynth reader study {study.name} ({study.info['study_uid']})",
             "truth 1 = synthetic, 0 = real; score = answer x confidence rating (higher = more synthetic)",
             "case ids are numbered in sorted order of the opaque study case ids",
             f"N0:{sum(1 for c in cases if truth[c] == 0)}", f"N1:{sum(truth.values())}",
             f"NR:{first['reader_id'].nunique()}", "NM:1", "BEGIN DATA:"]
    lines += [f"-1,{number[c]},0,{truth[c]}" for c in cases]
    lines += [f"{r.reader_id},{number[r.case_id]},{modality},{r.rating:g}"
              for r in first.sort_values(["reader_id", "case_id"]).itertuples()]
    return "\n".join(lines) + "\n"


def export_imrmc(study, path: str | os.PathLike) -> Path:
    """Write :func:`imrmc_text` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(imrmc_text(study), encoding="utf-8")
    return path
