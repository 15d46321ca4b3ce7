"""Ingestion (DESIGN §4, §6): crop/flip/boxes, adapters, bad input, splits, resume, no PHI."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PHI, breast_image, write_mg_dicom, write_mini_vindr

from mammosynth.data.prepare import (
    Crop,
    breast_bbox,
    chest_wall_side,
    ingest,
    parse_size,
    prepare_image,
    transform_box,
)
from mammosynth.data.plan import UnknownLabelError, hash_split, parse_image_labels
from mammosynth.data.prepared import PreparedFormatError, load_prepared
from mammosynth.data.vindr import AnnotationError

SIZE = (64, 48)


def display(stored: np.ndarray) -> np.ndarray:
    """12-bit stored values → uint16 display values (identity window)."""
    return (stored.astype(np.uint32) * 65535 // 4095).astype(np.uint16)


def rewrite_csv(path: Path, edit) -> None:
    """Apply ``edit(header, rows) -> (header, rows)`` to a CSV file."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = edit(rows[0], rows[1:])
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header] + body)


def findings_of(row) -> list[dict]:
    return json.loads(row["findings"])


# ---- pure image steps ------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_breast_bbox_is_robust_to_noise_and_markers(side: str) -> None:
    rng = np.random.default_rng(3)
    h, w = 400, 300
    stored = breast_image(h, w, side, rng).astype(np.float64)
    stored += rng.normal(0, 120, stored.shape)  # heavy detector noise
    marker = (slice(10, 30), slice(w - 60, w - 20)) if side == "left" else (slice(10, 30), slice(20, 60))
    stored[marker] = 4095  # a burned-in marker, not connected to the breast
    pixels = display(np.clip(stored, 0, 4095).astype(np.uint16))
    crop = breast_bbox(pixels)
    depth = 0.62 * w  # the half-ellipse's extent (see conftest.breast_image)
    assert abs(crop.y0 - 0.04 * h) <= 12 and abs(crop.y1 - 0.96 * h) <= 12
    if side == "left":
        assert crop.x0 == 0 and abs(crop.x1 - depth) <= 12
    else:
        assert crop.x1 == w and abs(crop.x0 - (w - depth)) <= 12
    assert chest_wall_side(pixels) == side


def test_breast_bbox_keeps_lesion_boxes_inside() -> None:
    pixels = display(breast_image(200, 150, "left", np.random.default_rng(0)))
    crop = breast_bbox(pixels, include=[(120, 5, 140, 20)])  # outside the tissue, in the corner
    assert crop.x1 >= 140 and crop.y0 <= 5


def test_transform_box_crop_flip_scale() -> None:
    crop = Crop(y0=10, y1=110, x0=20, x1=70)  # 100 x 50
    assert transform_box((30, 20, 40, 60), crop, flip=False, content=(200, 100)) == [20, 20, 40, 100]
    assert transform_box((30, 20, 40, 60), crop, flip=True, content=(200, 100)) == [60, 20, 80, 100]
    assert transform_box((0, 0, 25, 15), crop, flip=False, content=(100, 50)) == [0, 0, 5, 5]  # clipped
    assert transform_box((80, 0, 90, 5), crop, flip=False, content=(100, 50)) is None  # outside the crop


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_prepare_image_box_still_covers_lesion(laterality: str) -> None:
    rng = np.random.default_rng(1)
    h, w = 300, 225
    stored = breast_image(h, w, "left" if laterality == "L" else "right", rng)
    box = (50, 120, 80, 160) if laterality == "L" else (w - 80, 120, w - 50, 160)
    stored[box[1]:box[3], box[0]:box[2]] = 4095
    result = prepare_image(display(stored), size=(128, 96), laterality=laterality, boxes=[box])
    frame, moved = result.frame, result.boxes[0]
    assert result.flipped == (laterality == "R")
    x0, y0, x1, y1 = moved
    lesion = frame > 60000
    ys, xs = np.nonzero(lesion)
    assert lesion.sum() > 20
    # every lesion pixel lies inside the moved box (one pixel of resampling blur allowed)
    assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1) and ys.min() >= np.floor(y0) - 1
    assert ys.max() <= np.ceil(y1)
    # and the box is filled by the lesion
    inner = frame[int(np.ceil(y0)):int(np.floor(y1)), int(np.ceil(x0)):int(np.floor(x1))]
    assert (inner > 60000).mean() > 0.95
    # canonical: chest wall at x = 0, padding (zeros) at the right
    assert frame[:, :4].mean() > 10 * max(frame[:, -4:].mean(), 1)


def test_prepare_image_keeps_aspect_and_pads_right_bottom() -> None:
    pixels = np.full((100, 100), 40000, np.uint16)  # all tissue: the crop is the image
    result = prepare_image(pixels, size=(64, 48))
    assert result.content == (48, 48)
    assert (result.frame[:48, :48] == 40000).all() and (result.frame[48:] == 0).all()


def test_parse_size() -> None:
    assert parse_size("256x192") == (256, 192)
    for bad in ("256", "250x192", "axb", "0x8"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


# ---- the prepared phantom -----------------------------------------------------------------------


def test_prepared_phantom_is_complete_and_canonical(phantom_root: Path, prepared_root: Path) -> None:
    data = load_prepared(prepared_root)
    with open(phantom_root / "breast-level_annotations.csv", newline="") as handle:
        expected = {row["image_id"]: row for row in csv.DictReader(handle)}
    manifest = data.manifest
    assert sorted(manifest["image_id"]) == sorted(expected)
    assert data.images.shape == (len(expected), *SIZE) and data.images.dtype == np.uint16
    report = json.loads((prepared_root / "report.json").read_text())
    assert report["ingested"] == len(expected) and report["skipped"] == 0
    for _, row in manifest.iterrows():
        source = expected[row["image_id"]]
        assert row["split"] == source["split"] and row["laterality"] == source["laterality"]
        assert row["view"] == source["view_position"]
        assert f"BI-RADS {int(row['birads'])}" == source["breast_birads"]
        assert f"DENSITY {row['density']}" == source["breast_density"]
        frame = data.images[row["index"]].astype(float)
        assert frame[:, :3].mean() > frame[:, -3:].mean(), "chest wall must be at x = 0"
        for finding in findings_of(row):
            if finding["box"]:
                x0, y0, x1, y1 = finding["box"]
                assert 0 <= x0 < x1 <= SIZE[1] and 0 <= y0 < y1 <= SIZE[0]


def test_prepared_dataset_reads_as_torch_dataset(prepared_root: Path) -> None:
    from mammosynth.data.dataset import PreparedDataset

    dataset = PreparedDataset(prepared_root, split="training")
    item = dataset[0]
    assert item["image"].shape == (1, *SIZE) and -1.0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1.0
    assert len(dataset) == int((load_prepared(prepared_root).manifest["split"] == "training").sum())


# ---- VinDr adapter: boxes, splits, quirks, bad input ---------------------------------------------


def test_vindr_lesion_boxes_cover_lesions_after_ingest(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=2, height=128)
    ingest(info["root"], tmp_path / "out", size=SIZE, workers=1, quiet=True)
    data = load_prepared(tmp_path / "out")
    boxed = 0
    for _, row in data.manifest.iterrows():
        frame = data.images[row["index"]]
        boxes = [f["box"] for f in findings_of(row) if f["box"]]
        if row["lesion"] == "mass":
            assert len(boxes) == 1 and row["cancer"] == 1
            x0, y0, x1, y1 = boxes[0]
            ys, xs = np.nonzero(frame > 60000)
            assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1)
            assert ys.min() >= np.floor(y0) - 1 and ys.max() <= np.ceil(y1)
            boxed += 1
        else:
            assert not boxes and (frame > 60000).sum() == 0
    assert boxed == 4  # L-CC and R-MLO of two studies


def test_study_level_splits_follow_the_csv(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=3, height=96)
    ingest(info["root"], tmp_path / "out", size=SIZE, workers=1, quiet=True)
    manifest = load_prepared(tmp_path / "out").manifest
    expected = {r["study_id"]: r["split"] for r in info["images"]}
    assert manifest.groupby("study_id")["split"].nunique().max() == 1
    assert {s: g["split"].iloc[0] for s, g in manifest.groupby("study_id")} == expected
    assert set(manifest["split"]) == {"training", "test"}


def test_study_in_two_splits_is_made_study_level(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=1, height=96)
    target = info["images"][-1]["image_id"]

    def edit(header, rows):
        i, s = header.index("image_id"), header.index("split")
        for row in rows:
            if row[i] == target:
                row[s] = "test"
        return header, rows

    rewrite_csv(info["root"] / "breast-level_annotations.csv", edit)
    report = ingest(info["root"], tmp_path / "out", size=SIZE, workers=1, quiet=True)
    assert report.warnings_by_kind == {"split_conflict": 1}
    assert set(load_prepared(tmp_path / "out").manifest["split"]) == {"training"}


def test_vindr_quirks_are_tolerated(tmp_path: Path) -> None:
    """BOM, extra columns, whitespace, float boxes, a dotted (non-hex) image id."""
    info = write_mini_vindr(tmp_path / "root", studies=1, height=96)
    root = info["root"]
    old = info["images"][0]
    dotted = "1.2.840.113619.2.55.3.604688119"
    (root / "images" / old["study_id"] / f"{old['image_id']}.dicom").rename(
        root / "images" / old["study_id"] / f"{dotted}.dicom")
    for name in ("breast-level_annotations.csv", "finding_annotations.csv"):
        path = root / name

        def edit(header, rows):
            i = header.index("image_id")
            for row in rows:
                row[i] = dotted if row[i] == old["image_id"] else f" {row[i]} "
                row.append("extra value")
            return [h for h in header] + ["an_extra_column"], rows

        rewrite_csv(path, edit)
        path.write_bytes("\ufeff".encode() + path.read_bytes())
    report = ingest(root, tmp_path / "out", size=SIZE, workers=1, quiet=True)
    assert report.skipped == 0 and report.ingested == 4
    manifest = load_prepared(tmp_path / "out").manifest
    assert dotted in set(manifest["image_id"])
    assert (manifest["lesion"] == "mass").sum() == 2


def test_csv_missing_column_names_column_and_file(tmp_path: Path, capsys) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=1, height=96)
    path = info["root"] / "breast-level_annotations.csv"
    rewrite_csv(path, lambda h, rows: (h[:7] + h[8:], [r[:7] + r[8:] for r in rows]))  # drop breast_birads
    with pytest.raises(AnnotationError, match="breast_birads") as error:
        ingest(info["root"], tmp_path / "out", size=SIZE, workers=1, quiet=True)
    assert str(path) in str(error.value)
    from mammosynth.cli import main

    assert main(["ingest", "--root", str(info["root"]), "--out", str(tmp_path / "out2"), "--workers", "1"]) == 2
    assert "breast_birads" in capsys.readouterr().err


def _bad_vindr(tmp_path: Path) -> tuple[dict, dict[str, str]]:
    """A mini VinDr root with one of each bad input; returns (info, image ids by problem)."""
    info = write_mini_vindr(tmp_path / "root", studies=3, height=96)
    root, images = info["root"], info["images"]
    ids = {
        "unknown_birads": images[1]["image_id"],
        "missing_file": images[2]["image_id"],
        "truncated": images[3]["image_id"],
        "not_mg": images[5]["image_id"],
        "box_partly_outside": images[4]["image_id"],   # an L-CC with a lesion (study 1)
        "box_outside": images[8]["image_id"],          # an L-CC with a lesion (study 2)
    }
    by_id = {r["image_id"]: r for r in images}
    (by_id[ids["missing_file"]]["path"]).unlink()
    full = by_id[ids["truncated"]]["path"].read_bytes()
    by_id[ids["truncated"]]["path"].write_bytes(full[: len(full) * 2 // 3])
    r = by_id[ids["not_mg"]]
    write_mg_dicom(r["path"], np.zeros((96, 72), np.uint16), modality="CT", window=(40, 400))
    stray = root / "images" / images[0]["study_id"] / "0123456789abcdef0123456789abcdef.dicom"
    write_mg_dicom(stray, np.zeros((96, 72), np.uint16))

    def edit_breast(header, rows):
        i, b = header.index("image_id"), header.index("breast_birads")
        for row in rows:
            if row[i] == ids["unknown_birads"]:
                row[b] = "BI-RADS 7"
        return header, rows

    def edit_findings(header, rows):
        i = header.index("image_id")
        cols = [header.index(c) for c in ("xmin", "ymin", "xmax", "ymax")]
        for row in rows:
            if row[i] == ids["box_partly_outside"]:
                row[cols[2]] = "500.5"  # xmax beyond the 72-px width
            if row[i] == ids["box_outside"]:
                for c, v in zip(cols, ("900", "900", "950", "950")):
                    row[c] = v
        return header, rows

    rewrite_csv(root / "breast-level_annotations.csv", edit_breast)
    rewrite_csv(root / "finding_annotations.csv", edit_findings)
    return info, ids


def test_bad_input_is_reported_counted_and_the_batch_goes_on(tmp_path: Path, capsys) -> None:
    info, ids = _bad_vindr(tmp_path)
    report = ingest(info["root"], tmp_path / "out", size=SIZE, workers=2)
    printed = capsys.readouterr().out
    assert report.skipped_by_reason == {"unknown_birads": 1, "missing_file": 1, "truncated": 1, "not_mg": 1,
                                        "no_csv_row": 1}
    assert report.warnings_by_kind == {"box_outside_image": 2}
    assert report.ingested == 12 - 4  # the stray file had no row; the boxes only warn
    manifest = load_prepared(tmp_path / "out").manifest
    assert not {ids[k] for k in ("unknown_birads", "missing_file", "truncated", "not_mg")} & set(manifest["image_id"])
    partly = manifest[manifest["image_id"] == ids["box_partly_outside"]].iloc[0]
    outside = manifest[manifest["image_id"] == ids["box_outside"]].iloc[0]
    assert findings_of(partly)[0]["box"] is not None and findings_of(outside)[0]["box"] is None
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["skipped_by_reason"] == report.skipped_by_reason
    messages = {entry["reason"]: entry for entry in saved["skipped_files"]}
    assert "BI-RADS 7" in messages["unknown_birads"]["message"]
    assert "breast-level_annotations.csv line" in messages["unknown_birads"]["message"]
    assert ids["missing_file"] in messages["missing_file"]["message"]
    assert messages["truncated"]["file"].endswith(f"{ids['truncated']}.dicom")
    assert "'CT'" in messages["not_mg"]["message"]
    assert messages["no_csv_row"]["file"].endswith("0123456789abcdef0123456789abcdef.dicom")
    assert "skipped 5" in printed and "unknown_birads 1" in printed and "box_outside_image 2" in printed


def test_limit_and_rerun_adds_nothing_twice(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=2, height=96)
    first = ingest(info["root"], tmp_path / "out", size=SIZE, workers=1, limit=3, quiet=True)
    assert first.ingested == 3
    second = ingest(info["root"], tmp_path / "out", size=SIZE, workers=1, quiet=True)
    assert (second.already_done, second.ingested_this_run, second.ingested) == (3, 5, 8)
    third = ingest(info["root"], tmp_path / "out", size=SIZE, workers=1, quiet=True)
    assert third.ingested_this_run == 0 and third.ingested == 8
    assert load_prepared(tmp_path / "out").manifest["image_id"].is_unique


def _complete_rows(path: Path) -> int:
    if not path.exists():
        return 0
    return max(0, path.read_bytes().count(b"\n") - 1)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=10, height=160)
    total = len(info["images"])
    ingest(info["root"], tmp_path / "full", size=SIZE, workers=1, quiet=True)
    out = tmp_path / "killed"
    code = ("from mammosynth.data.prepare import ingest; "
            f"ingest({str(info['root'])!r}, {str(out)!r}, size={SIZE!r}, workers=2, quiet=True)")
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "manifest.partial.csv"
    deadline = time.monotonic() + 120
    while process.poll() is None and _complete_rows(partial) < 5 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert process.poll() is None, "the ingest finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the ingest and its worker processes
    process.wait()
    done = _complete_rows(partial)
    assert 5 <= done < total
    with pytest.raises(PreparedFormatError, match="resume"):
        load_prepared(out)
    report = ingest(info["root"], out, size=SIZE, workers=2, quiet=True)
    assert report.already_done >= 5 and report.already_done + report.ingested_this_run == total
    resumed, full = load_prepared(out), load_prepared(tmp_path / "full")
    assert resumed.manifest["image_id"].is_unique and len(resumed.manifest) == total
    assert (out / "manifest.csv").read_bytes() == (tmp_path / "full" / "manifest.csv").read_bytes()
    assert (out / "images.u16").read_bytes() == (tmp_path / "full" / "images.u16").read_bytes()


# ---- dicom-folder adapter ------------------------------------------------------------------------


def test_dicom_folder_with_labels(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "vindr", studies=2, height=96)
    folder = tmp_path / "vindr" / "images"
    (folder / "README.txt").write_text("not an image")
    (folder / "junk.bin").write_bytes(b"\x00" * 300)
    # an image without laterality, stored with the chest wall on the right
    loose = breast_image(96, 72, "right", np.random.default_rng(5))
    write_mg_dicom(folder / "loose" / "x.dcm", loose, laterality=None, view=None, window=(2048, 4096),
                   study_uid="1.2.3.99")
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "birads", "density", "lesion", "xmin", "ymin", "xmax", "ymax", "notes"])
        for r in info["images"]:
            rel = r["path"].relative_to(folder).as_posix()
            if r["box"]:
                writer.writerow([rel, 4, "C", "mass", *r["box"], "x"])
            elif r is not info["images"][1]:
                writer.writerow([rel, "BI-RADS 1", "DENSITY C", "", "", "", "", "", ""])
        writer.writerow(["loose/x.dcm", "", "", "", "", "", "", "", ""])
        writer.writerow(["gone/missing.dcm", 2, "B", "", "", "", "", "", ""])
    report = ingest(folder, tmp_path / "out", source="dicom-folder", labels=labels, size=SIZE, workers=1, quiet=True)
    assert report.skipped_by_reason == {"not_dicom": 1, "no_csv_row": 1, "missing_file": 1}
    data = load_prepared(tmp_path / "out")
    manifest = data.manifest
    assert len(manifest) == 8 - 1 + 1
    assert manifest["image_id"].str.fullmatch("[0-9a-f]{32}").all()
    assert manifest["study_id"].nunique() == 3
    assert manifest.groupby("study_id")["split"].nunique().max() == 1
    assert all(row["split"] == hash_split(row["study_id"]) for _, row in manifest.iterrows())
    assert (manifest["lesion"] == "mass").sum() == 4 and (manifest["source"] == "dicom-folder").all()
    for _, row in manifest.iterrows():
        frame = data.images[row["index"]].astype(float)
        assert frame[:, :3].mean() > frame[:, -3:].mean(), row["image_id"]
        if row["lesion"] == "mass":
            x0, y0, x1, y1 = findings_of(row)[0]["box"]
            ys, xs = np.nonzero(frame > 60000)
            assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1)
    loose_row = manifest[manifest["laterality"] == ""]
    assert len(loose_row) == 1 and json.loads(loose_row.iloc[0]["extra"])["flipped"] is True


def test_dicom_folder_without_labels_splits_by_study_hash(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "vindr", studies=3, height=96)
    report = ingest(tmp_path / "vindr" / "images", tmp_path / "out", source="dicom-folder", size=SIZE,
                    workers=1, quiet=True, test_fraction=0.5)
    assert report.ingested == 12 and report.skipped == 0
    manifest = load_prepared(tmp_path / "out").manifest
    assert manifest.groupby("study_id").size().tolist() == [4, 4, 4]
    assert manifest.groupby("study_id")["split"].nunique().max() == 1
    assert set(manifest["laterality"]) == {"L", "R"} and set(manifest["view"]) == {"CC", "MLO"}
    assert manifest["birads"].isna().all() and (manifest["lesion"] == "none").all()
    assert not set(manifest["image_id"]) & {r["image_id"] for r in info["images"]}


def _copies_folder(root: Path) -> dict[str, str]:
    """A folder where one image has truncated copies sorted before and after it, and an intact copy.

    ``a_other.dcm`` is another image; ``b_copy_truncated.dcm`` < ``c_original.dcm`` <
    ``d_copy_truncated.dcm`` < ``e_copy_intact.dcm`` share one SOP Instance UID; so do the two
    truncated-only copies ``f_*`` (no intact file of that image at all).
    """
    rng = np.random.default_rng(11)
    write_mg_dicom(root / "a_other.dcm", breast_image(96, 72, "left", rng), study_uid="1.2.3.7")
    original = write_mg_dicom(root / "c_original.dcm", breast_image(96, 72, "left", rng), sop_uid="1.2.3.4.1",
                              study_uid="1.2.3.4")
    full = original.read_bytes()
    (root / "b_copy_truncated.dcm").write_bytes(full[: len(full) * 2 // 3])
    (root / "d_copy_truncated.dcm").write_bytes(full[: len(full) * 3 // 4])
    (root / "e_copy_intact.dcm").write_bytes(full)
    lost = write_mg_dicom(root / "f_lost.dcm", breast_image(96, 72, "right", rng), sop_uid="1.2.3.5.1",
                          study_uid="1.2.3.5").read_bytes()
    (root / "f_lost.dcm").write_bytes(lost[: len(lost) // 2])
    (root / "f_lost_copy.dcm").write_bytes(lost[: len(lost) * 2 // 3])
    return {"b_copy_truncated.dcm": "truncated", "d_copy_truncated.dcm": "truncated",
            "e_copy_intact.dcm": "duplicate_image", "f_lost.dcm": "truncated", "f_lost_copy.dcm": "truncated"}


def _skipped(report) -> dict[str, str]:
    return {entry["file"]: entry["reason"] for entry in report.skipped_files}


def test_an_unreadable_copy_never_hides_the_intact_image(tmp_path: Path) -> None:
    expected = _copies_folder(tmp_path / "root")
    report = ingest(tmp_path / "root", tmp_path / "out", source="dicom-folder", size=SIZE, workers=1, quiet=True)
    assert _skipped(report) == expected  # each truncated copy is "truncated", only the intact copy a duplicate
    duplicate = next(e for e in report.skipped_files if e["reason"] == "duplicate_image")
    assert "c_original.dcm" in duplicate["message"]  # names the file that was ingested
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "c_original.dcm").write_bytes((tmp_path / "root" / "c_original.dcm").read_bytes())
    ingest(alone, tmp_path / "out-alone", source="dicom-folder", size=SIZE, workers=1, quiet=True)
    data, reference = load_prepared(tmp_path / "out"), load_prepared(tmp_path / "out-alone")
    assert report.ingested == 2 and data.manifest["image_id"].is_unique
    row = data.manifest.set_index("image_id").loc[reference.manifest["image_id"].iloc[0]]
    assert np.array_equal(data.images[int(row["index"])], reference.images[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_a_kill_keeps_every_copy_reported_right(tmp_path: Path, workers: int) -> None:
    expected = _copies_folder(tmp_path / "root")
    ingest(tmp_path / "root", tmp_path / "full", source="dicom-folder", size=SIZE, workers=1, quiet=True)
    for kill_after in range(1, len(expected) + 2):  # every point between two files (7 files)
        out = tmp_path / f"killed-{kill_after}"
        code = ("import os, signal\n"
                "from mammosynth.data.prepare import ingest\n"
                f"def progress(done, total):\n    if done == {kill_after}: os.killpg(0, signal.SIGKILL)\n"
                f"ingest({str(tmp_path / 'root')!r}, {str(out)!r}, source='dicom-folder', size={SIZE!r}, "
                f"workers={workers}, quiet=True, progress=progress)\n")
        killed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300,
                                start_new_session=True)  # the kill takes the ingest and its workers
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
        report = ingest(tmp_path / "root", out, source="dicom-folder", size=SIZE, workers=workers, quiet=True)
        assert _skipped(report) == expected, f"killed after {kill_after} file(s)"
        assert report.ingested == 2
        assert (out / "manifest.csv").read_bytes() == (tmp_path / "full" / "manifest.csv").read_bytes()
        assert (out / "images.u16").read_bytes() == (tmp_path / "full" / "images.u16").read_bytes()


# ---- no PHI anywhere -------------------------------------------------------------------------------


def _assert_no_phi(folder: Path, texts: list[str], planted: list[str]) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {"images.u16", "manifest.csv", "meta.json", "report.json"} <= {p.name for p in files}
    for value in planted:
        needle = value.encode()
        for path in files:
            assert needle not in path.read_bytes(), f"{value!r} found in {path}"
        for text in texts:
            assert value not in text, f"{value!r} found in the output/logs"


def _planted(extra: list[str] = ()) -> list[str]:
    values = list(PHI.values()) + [v.split("^")[0] for v in PHI.values() if "^" in v] + list(extra)
    return values + [f"{v[:4]}-{v[4:6]}-{v[6:]}" for v in PHI.values() if v.isdigit() and len(v) == 8]


def test_no_phi_in_outputs_or_logs_vindr_cli(tmp_path: Path) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=2, height=96, phi=PHI)
    _bad = info["images"][0]["path"]
    _bad.write_bytes(_bad.read_bytes()[:-500])  # a skipped file must not leak either
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "mammosynth", "-v", "ingest", "--root", str(info["root"]), "--out", str(out),
         "--size", "64x48", "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ingested 7 image(s)" in result.stdout and "truncated 1" in result.stdout
    _assert_no_phi(out, [result.stdout, result.stderr], _planted())


def test_no_phi_in_outputs_or_logs_dicom_folder(tmp_path: Path, capsys, caplog) -> None:
    info = write_mini_vindr(tmp_path / "root", studies=2, height=96, phi=PHI)
    caplog.set_level("DEBUG")
    ingest(info["root"] / "images", tmp_path / "out", source="dicom-folder", size=SIZE, workers=1)
    captured = capsys.readouterr()
    import pydicom

    uids = []
    for r in info["images"]:
        ds = pydicom.dcmread(r["path"], stop_before_pixels=True)
        uids += [ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID]
    _assert_no_phi(tmp_path / "out", [captured.out, captured.err, caplog.text], _planted(uids))


def test_phantom_identifiers_do_not_reach_the_prepared_set(phantom_root: Path, prepared_root: Path) -> None:
    import pydicom

    values = set()
    for path in sorted((phantom_root / "images").rglob("*.dicom"))[:8]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber",
                        "InstitutionName", "DeviceSerialNumber", "SOPInstanceUID", "StudyInstanceUID"):
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 6:
                values.add(value)
    assert values, "the phantom should carry fake identifiers to test against"
    _assert_no_phi(prepared_root, [], sorted(values))


# ---- CLI ---------------------------------------------------------------------------------------------


def test_ingest_help_documents_every_option() -> None:
    from mammosynth.data.ingest_cli import add_ingest_command

    parser = argparse.ArgumentParser(prog="mammosynth")
    sub = add_ingest_command(parser.add_subparsers(dest="command"))
    text = sub.format_help()
    for option in ("--root", "--out", "--format", "--labels", "--size", "--workers", "--limit", "--test-fraction",
                   "vindr", "dicom-folder", "sop_instance_uid", "xmin", "256x192", "resume"):
        assert option in text, option
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", "--root", "r", "--out", "o", "--size", "250x192"])


def test_parse_image_labels_gives_plain_values_and_names_the_unknown_field():
    texts = {"birads": "BI-RADS 4", "density": "DENSITY C", "laterality": "left", "view": "mlo"}
    assert parse_image_labels(texts) == {"birads": 4, "density": "C", "laterality": "L", "view": "MLO"}
    assert parse_image_labels(dict.fromkeys(texts, "")) == dict.fromkeys(texts)
    with pytest.raises(UnknownLabelError) as info:
        parse_image_labels({**texts, "density": "DENSITY E", "view": "XX"})
    assert info.value.field == "density" and info.value.text == "DENSITY E"
