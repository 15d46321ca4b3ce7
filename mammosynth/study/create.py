"""Create a study folder from a real and a synthetic prepared dataset (``study create``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StudyError
from .readers import read_readers_csv, readers_csv_text
from .study import (
    DB_FILE, KEY_FILE, MANIFEST_FILE, READERS_FILE, STUDY_FILE, STUDY_FORMAT, Study, StudySettings,
)

__all__ = ["create_study"]


def _rows(data: Any, split: str | None) -> list[dict]:
    frame = data.split(split)
    return frame.to_dict("records")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def create_study(
    out: str | os.PathLike,
    *,
    name: str,
    real: str | os.PathLike,
    synthetic: str | os.PathLike,
    readers_csv: str | os.PathLike,
    n_cases: int = 100,
    synthetic_fraction: float = 0.5,
    real_split: str | None = "test",
    synthetic_split: str | None = None,
    repeats: int = 0,
    seed: int = 0,
    settings: StudySettings | None = None,
) -> Study:
    """Build a blinded study folder and open it.

    Args:
        out: the new study folder (must not exist, or be empty).
        name: a human name for the study.
        real: a prepared dataset of real images; ``real_split`` selects its split (None = all).
        synthetic: a prepared dataset of synthetic images (manifest ``source == "synthetic"``);
            ``synthetic_split`` selects its split (None = all).
        readers_csv: ``id,display_name,role,password_hash`` (see :mod:`.readers`).
        n_cases: distinct cases; ``synthetic_fraction`` of them synthetic, matched on
            density, lesion type, view and laterality.
        repeats: how many cases are shown a second time (as separate blinded copies) to
            measure intra-reader agreement.
        seed: seeds the case selection and every reader's order (stored in study.json).
        settings: confidence scale and whether to ask for BI-RADS.

    The folder is built in a temporary sibling and renamed into place when complete, so an
    interrupted create leaves no half-made study.
    """
    from .design import match_cases

    settings = settings or StudySettings()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty: choose a new --out for the study")
    readers = read_readers_csv(readers_csv)
    real_data, synth_data = _load_same_size(real, synthetic)
    real_rows, synth_rows = _rows(real_data, real_split), _rows(synth_data, synthetic_split)
    _check_sources(real, real_rows, synthetic, synth_rows)
    if not 0 <= repeats <= n_cases:
        raise StudyError(f"repeats must be between 0 and the number of cases ({n_cases}), got {repeats}")

    rng = np.random.default_rng(seed)
    real_idx, synth_idx, report = match_cases(real_rows, synth_rows, n_cases, synthetic_fraction, rng)
    chosen = [("real", real_data, real_rows[i], str(real)) for i in real_idx]
    chosen += [("synthetic", synth_data, synth_rows[i], str(synthetic)) for i in synth_idx]
    items, repeat_pairs = _blinded_items(chosen, repeats, rng)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.creating."))
    try:
        key_cases, manifest_cases = _write_cases(tmp / "cases", items, rng)
        study_uid = uuid.uuid4().hex
        info = {
            "format": STUDY_FORMAT,
            "study_uid": study_uid,
            "name": name,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "seed": int(seed),
            "settings": {"confidence_scale": settings.confidence_scale, "ask_birads": settings.ask_birads},
            "n_cases": int(n_cases),
            "n_served": len(items),
            "repeats": int(repeats),
            "repeat_pairs": repeat_pairs,
            "image_size": [real_data.height, real_data.width],
            "encoding": "16-bit grayscale PNG, zlib level 0, no ancillary chunks; right breasts mirrored",
        }
        key = {
            "study_uid": study_uid,
            "cases": dict(sorted(key_cases.items())),
            "matching": report.to_dict(),
            "real_dataset": str(real), "real_split": real_split,
            "synthetic_dataset": str(synthetic), "synthetic_split": synthetic_split,
        }
        _write_study_files(tmp, info, key, readers, manifest_cases)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Study.open(out)


def _load_same_size(real: str | os.PathLike, synthetic: str | os.PathLike) -> tuple[Any, Any]:
    from ..data.prepared import load_prepared

    real_data, synth_data = load_prepared(real), load_prepared(synthetic)
    if (real_data.height, real_data.width) != (synth_data.height, synth_data.width):
        raise StudyError(
            f"real images are {real_data.height}x{real_data.width} but synthetic images are "
            f"{synth_data.height}x{synth_data.width}: prepare both at the same size (nothing is resized here)"
        )
    return real_data, synth_data


def _check_sources(real: Any, real_rows: list[dict], synthetic: Any, synth_rows: list[dict]) -> None:
    not_synth = sorted({r.get("source") for r in synth_rows} - {"synthetic"})
    if not_synth:
        raise StudyError(f"{synthetic} must hold synthetic images (source 'synthetic'), but has source(s) {not_synth}")
    if any(r.get("source") == "synthetic" for r in real_rows):
        raise StudyError(f"{real} holds images marked source 'synthetic'; --real must be real data")


def _blinded_items(chosen: list[tuple], repeats: int, rng: np.random.Generator) -> tuple[list[tuple], list[list[str]]]:
    """``(case_id, truth, data, row, dataset, repeat_of)`` per served case, and the repeat pairs.

    Every chosen case gets a random id; ``repeats`` of them are served again under another id.
    """
    from .blinding import new_case_id

    taken: set[str] = set()
    items = [(new_case_id(taken), truth, data, row, dataset, None) for truth, data, row, dataset in chosen]
    repeat_pairs = []
    for j in rng.choice(len(chosen), size=repeats, replace=False) if repeats else []:
        original = items[int(j)]
        copy_id = new_case_id(taken)
        items.append((copy_id, *original[1:5], original[0]))
        repeat_pairs.append([original[0], copy_id])
    return items, repeat_pairs


def _write_cases(folder: Path, items: list[tuple], rng: np.random.Generator) -> tuple[dict, dict]:
    """Write each case's blinded PNG; return the key's and the manifest's entries per case id."""
    from .blinding import display_frame, encode_png16, sha256_file

    folder.mkdir()
    key_cases, manifest_cases = {}, {}
    for k in rng.permutation(len(items)):  # random write order: file times say nothing
        case_id, truth, data, row, dataset, repeat_of = items[int(k)]
        frame = display_frame(np.asarray(data.images[int(row["index"])]), row.get("laterality"))
        path = folder / f"{case_id}.png"
        blob = encode_png16(frame)
        path.write_bytes(blob)
        manifest_cases[case_id] = {"bytes": len(blob), "sha256": sha256_file(path)}
        key_cases[case_id] = {
            "truth": truth,
            "dataset": dataset,
            "image_id": row["image_id"],
            "study_id": row["study_id"],
            **{f: ("" if row.get(f) is None else str(row.get(f))) for f in ("density", "lesion", "view", "laterality")},
            "birads": None if row.get("birads") in (None, "") or row.get("birads") != row.get("birads") else int(row["birads"]),
            "repeat_of": repeat_of,
        }
    return key_cases, manifest_cases


def _write_study_files(tmp: Path, info: dict, key: dict, readers: list, manifest_cases: dict) -> None:
    """study.json, key.json, readers.csv, the manifest of their hashes and the empty response store."""
    from .blinding import sha256_file
    from .store import ResponseStore

    _write_json(tmp / STUDY_FILE, info)
    _write_json(tmp / KEY_FILE, key)
    (tmp / READERS_FILE).write_text(readers_csv_text(readers), encoding="utf-8")
    manifest = {
        "study_uid": info["study_uid"],
        "study_sha256": sha256_file(tmp / STUDY_FILE),
        "key_sha256": sha256_file(tmp / KEY_FILE),
        "cases": dict(sorted(manifest_cases.items())),
    }
    _write_json(tmp / MANIFEST_FILE, manifest)
    ResponseStore(tmp / DB_FILE, info["study_uid"], create=True).close()
