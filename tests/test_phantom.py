"""Tests of the phantom generator (DESIGN §3, §4): determinism, identity, CSV schema,
findings and BI-RADS, vendor variety, DICOM round trips and dciodvfy, CLI."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammosynth.conditions import parse_birads, parse_density, parse_finding_categories
from mammosynth.data.phantom import generate_phantom_dataset
from mammosynth.data.phantom.dicom_writer import VENDORS, ImageHeader, write_mg_dicom
from mammosynth.data.phantom.findings import CATEGORIES, lexicon_birads
from mammosynth.data.phantom.generator import (
    BREAST_COLUMNS,
    DENSITY_CUTS,
    FINDING_COLUMNS,
    OUTPUT_FILES,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
SMALL = dict(studies=6, seed=3, height=256, jpeg2000_fraction=0.3, finding_rate=0.7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "a"
    generate_phantom_dataset(out, workers=1, **SMALL)
    return out


def _csv(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / name, dtype=str, keep_default_na=False)


def _display(path: Path) -> np.ndarray:
    """Display values 0–1 (modality LUT → VOI LUT → MONOCHROME1 inverted)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds).astype(np.int32), ds)
    values = values.astype(np.float64)
    values = (values - values.min()) / max(np.ptp(values), 1e-9)
    return 1.0 - values if ds.PhotometricInterpretation == "MONOCHROME1" else values


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "phantom_summary.json"}


# -- determinism -------------------------------------------------------------------------

def test_same_seed_same_bytes_whatever_the_worker_count(dataset, tmp_path):
    again = tmp_path / "b"
    generate_phantom_dataset(again, workers=2, **SMALL)
    first, second = _files(dataset), _files(again)
    assert first.keys() == second.keys()
    assert len([k for k in first if k.endswith(".dicom")]) == 4 * SMALL["studies"]
    differing = [k for k in first if first[k] != second[k]]
    assert differing == []


def test_other_seed_other_data(dataset, tmp_path):
    other = tmp_path / "c"
    generate_phantom_dataset(other, workers=1, **{**SMALL, "seed": 4, "studies": 2})
    a = _csv(dataset, "breast-level_annotations.csv")
    b = _csv(other, "breast-level_annotations.csv")
    assert not set(a.image_id) & set(b.image_id)
    pa = pydicom.dcmread(next((dataset / "images").rglob("*.dicom"))).pixel_array
    pb = pydicom.dcmread(next((other / "images").rglob("*.dicom"))).pixel_array
    assert not np.array_equal(pa, pb)


def test_study_k_does_not_depend_on_the_number_of_studies(dataset, tmp_path):
    fewer = tmp_path / "d"
    generate_phantom_dataset(fewer, workers=1, **{**SMALL, "studies": 2})
    a = _csv(dataset, "finding_annotations.csv")
    b = _csv(fewer, "finding_annotations.csv")
    pd.testing.assert_frame_equal(a[a.study_id.isin(set(b.study_id))].reset_index(drop=True), b)


# -- identity ------------------------------------------------------------------------------

def _tissue_samples(root: Path, row) -> np.ndarray:
    """Sample an image on a grid of tissue-map coordinates (u, v) using the true geometry
    of that view from ``phantom_truth.csv``: if both views are warps of one tissue map,
    these samples agree."""
    from scipy import ndimage

    from mammosynth.data.phantom.anatomy import ViewGeometry

    image = _display(root / "images" / row.study_id / f"{row.image_id}.dicom")
    geometry = ViewGeometry(int(row.height), int(row.width), float(row.view_cy),
                            float(row.view_a), float(row.view_b), float(row.view_angle), 2.0, None)
    u, v = np.meshgrid(np.linspace(0.15, 0.75, 24), np.linspace(-0.6, 0.6, 24))
    x, y = geometry.uv_to_image(u, v)
    if row.laterality == "R":
        x = int(row.width) - 1 - x
    return ndimage.map_coordinates(image, [y, x], order=1).ravel()


def test_identity_is_shared_by_views_and_breasts(dataset):
    """CC and MLO of a breast show one tissue map; the two breasts of a patient share most
    of it; other patients do not: identity is learnable."""
    truth = _csv(dataset, "phantom_truth.csv").drop_duplicates("image_id")
    samples = {(r.study_id, r.laterality, r.view_position): _tissue_samples(dataset, r)
               for r in truth.itertuples()}
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    studies = sorted({key[0] for key in samples})
    views, wins, margins = [], 0, []
    for s in studies:
        for side in "LR":
            views.append(corr(samples[(s, side, "CC")], samples[(s, side, "MLO")]))
        same = corr(samples[(s, "L", "CC")], samples[(s, "R", "CC")])
        others = [corr(samples[(s, "L", "CC")], samples[(t, "R", "CC")]) for t in studies if t != s]
        wins += same > max(others)
        margins.append(same - float(np.mean(others)))
    assert np.mean(views) > 0.8, views
    assert wins >= len(studies) - 1, margins
    assert np.mean(margins) > 0.25, margins


# -- CSV schema ------------------------------------------------------------------------------

def test_layout_and_csv_schema(dataset):
    for name in OUTPUT_FILES:
        assert (dataset / name).is_file(), name
    breast = _csv(dataset, "breast-level_annotations.csv")
    finding = _csv(dataset, "finding_annotations.csv")
    metadata = _csv(dataset, "metadata.csv")
    assert list(breast.columns) == BREAST_COLUMNS == [
        "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
        "breast_birads", "breast_density", "split"]
    assert list(finding.columns) == FINDING_COLUMNS == BREAST_COLUMNS[:-1] + [
        "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"]
    assert len(breast) == 4 * SMALL["studies"]
    for column in ("study_id", "series_id", "image_id"):
        assert breast[column].str.fullmatch(HEX32.pattern).all(), column
    assert breast.image_id.is_unique
    assert set(breast.laterality) == {"L", "R"} and set(breast.view_position) == {"CC", "MLO"}
    assert breast.breast_birads.str.fullmatch(r"BI-RADS [1-5]").all()
    assert breast.breast_density.str.fullmatch(r"DENSITY [ABCD]").all()
    assert set(breast.split) <= {"training", "test"}
    assert (breast.height == "256").all() and (breast.width == str(round(256 * 2800 / 3518))).all()
    for study, group in breast.groupby("study_id"):
        assert sorted(zip(group.laterality, group.view_position)) == [
            ("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
        assert group.split.nunique() == 1, "a study must not straddle splits"
        for _, side in group.groupby("laterality"):
            assert side.breast_birads.nunique() == 1 and side.breast_density.nunique() == 1
        for row in group.itertuples():
            assert (dataset / "images" / study / f"{row.image_id}.dicom").is_file()
    # Strings parse with the project's vocabulary.
    for value in breast.breast_birads:
        assert parse_birads(value) in range(1, 6)
    for value in breast.breast_density:
        assert parse_density(value) is not None
    # Metadata: one row per image, DICOM attribute names, SOP Instance UID == image_id.
    assert set(metadata["SOP Instance UID"]) == set(breast.image_id)
    assert {"Manufacturer", "Photometric Interpretation", "Bits Stored", "View Position",
            "Image Laterality", "Rows", "Columns"} <= set(metadata.columns)
    assert (metadata.Manufacturer != "").all()


def test_finding_rows(dataset):
    finding = _csv(dataset, "finding_annotations.csv")
    breast = _csv(dataset, "breast-level_annotations.csv")
    assert set(finding.image_id) == set(breast.image_id)
    for row in finding.itertuples():
        categories = ast.literal_eval(row.finding_categories)
        assert isinstance(categories, list) and categories
        assert parse_finding_categories(row.finding_categories) == categories
        box = [row.xmin, row.ymin, row.xmax, row.ymax]
        if categories == ["No Finding"]:
            assert row.finding_birads == "" and box == ["", "", "", ""]
            continue
        assert set(categories) <= set(CATEGORIES)
        assert re.fullmatch(r"BI-RADS [345]", row.finding_birads)
        x0, y0, x1, y1 = map(float, box)
        assert 0 <= x0 < x1 <= int(row.width) - 1 and 0 <= y0 < y1 <= int(row.height) - 1
        assert x1 - x0 >= 3 and y1 - y0 >= 3
    # Images without a boxed finding have exactly one "No Finding" row.
    no_finding = finding[finding.finding_categories == "['No Finding']"]
    assert no_finding.image_id.is_unique
    assert not set(no_finding.image_id) & set(finding[finding.finding_birads != ""].image_id)


# -- findings, BI-RADS, cancer ---------------------------------------------------------------

def test_every_finding_is_boxed_in_both_views_of_its_breast(dataset):
    truth = _csv(dataset, "phantom_truth.csv")
    found = truth[truth.finding_id != ""]
    assert len(found) > 0
    for _, rows in found.groupby("finding_id"):
        assert sorted(rows.view_position) == ["CC", "MLO"]
        assert rows.laterality.nunique() == 1 and rows.study_id.nunique() == 1
        assert rows.finding_category.nunique() == 1 and rows.finding_birads.nunique() == 1


def test_birads_and_cancer_follow_the_findings(dataset):
    truth = _csv(dataset, "phantom_truth.csv")
    for (_, _, _), rows in truth.groupby(["study_id", "laterality", "view_position"]):
        birads = int(rows.breast_birads.iloc[0])
        found = rows[rows.finding_id != ""]
        if len(found):
            assert birads == max(int(b) for b in found.finding_birads)
        else:
            assert birads in (1, 2)
            assert (birads == 2) == (int(rows.benign_calcifications.iloc[0]) > 0)
        assert int(rows.cancer.iloc[0]) == int(birads >= 4)
    for row in truth[truth.finding_id != ""].itertuples():
        lexicon = lexicon_birads(row.finding_category, row.mass_shape, row.mass_margin,
                                 row.calc_morphology)
        assert int(row.finding_birads_lexicon) == lexicon
        assert abs(int(row.finding_birads) - lexicon) <= 1  # label noise moves one step at most


def test_lexicon():
    assert lexicon_birads("Mass", "round", "circumscribed") == 3
    assert lexicon_birads("Mass", "irregular", "obscured") == 4
    assert lexicon_birads("Mass", "oval", "spiculated") == 5
    assert lexicon_birads("Suspicious Calcification", morphology="linear") == 5
    assert lexicon_birads("Suspicious Calcification", morphology="pleomorphic") == 4
    assert lexicon_birads("Architectural Distortion") == 4
    assert lexicon_birads("Focal Asymmetry") == 3
    with pytest.raises(ValueError, match="unknown finding category"):
        lexicon_birads("Skin Retraction")


def test_density_label_follows_the_fibroglandular_fraction(dataset):
    truth = _csv(dataset, "phantom_truth.csv")
    for row in truth.itertuples():
        fraction = float(row.density_fraction)
        assert row.breast_density == "ABCD"[int(np.searchsorted(DENSITY_CUTS, fraction, side="right"))]


def test_masses_are_visible_inside_their_boxes(dataset):
    truth = _csv(dataset, "phantom_truth.csv")
    masses = truth[truth.finding_category == "Mass"]
    assert len(masses) > 0
    for row in masses.itertuples():
        image = _display(dataset / "images" / row.study_id / f"{row.image_id}.dicom")
        x0, y0, x1, y1 = (float(v) for v in (row.xmin, row.ymin, row.xmax, row.ymax))
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
        core = image[int(cy - ry):int(cy + ry) + 1, int(cx - rx):int(cx + rx) + 1]
        breast = image[image > 0.05]
        assert core.mean() > np.percentile(breast, 75), row.image_id


# -- DICOM -----------------------------------------------------------------------------------

def test_dataset_has_vendor_variety_and_files_round_trip(dataset):
    metadata = _csv(dataset, "metadata.csv")
    assert metadata["Transfer Syntax UID"].str.contains(r"\.4\.90$").any(), "no JPEG 2000 file"
    for row in metadata.itertuples():
        path = next((dataset / "images").glob(f"*/{row._1}.dicom"))
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
        assert ds.SOPInstanceUID == f"2.25.{int(row._1, 16)}"
        assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.PatientName.family_name == "PHANTOM"
        assert ds.pixel_array.shape == (256, round(256 * 2800 / 3518))
        assert int(ds.pixel_array.max()) < 2 ** int(ds.BitsStored)
        orientation = {("L", "CC"): ["A", "R"], ("L", "MLO"): ["A", "FR"],
                       ("R", "CC"): ["P", "L"], ("R", "MLO"): ["P", "FL"]}
        assert list(ds.PatientOrientation) == orientation[(ds.ImageLaterality, ds.ViewPosition)]


def test_chest_wall_side_follows_laterality(dataset):
    breast = _csv(dataset, "breast-level_annotations.csv")
    for row in breast.itertuples():
        image = _display(dataset / "images" / row.study_id / f"{row.image_id}.dicom")
        left, right = image[:, :20].mean(), image[:, -20:].mean()
        assert (left > right) == (row.laterality == "L"), row.image_id


def _vendor_files(root: Path) -> list[tuple[Path, np.ndarray]]:
    rng = np.random.default_rng(0)
    made = []
    for number, vendor in enumerate(VENDORS):
        for jpeg2000 in (False, True):
            stored = rng.integers(0, vendor.max_value + 1, size=(64, 51)).astype(np.uint16)
            mask = np.zeros(stored.shape, bool)
            mask[8:56, :40] = True
            header = ImageHeader(f"{number * 2 + jpeg2000 + 1:032x}", "a" * 32, "b" * 32,
                                 "LR"[number % 2], ("CC", "MLO")[jpeg2000], 7, 55,
                                 __import__("datetime").date(2020, 5, 17), "PA00000000007",
                                 "Phantom General Hospital", 1, 1)
            path = root / f"{header.image_id}.dicom"
            write_mg_dicom(path, stored, mask, header, vendor, jpeg2000=jpeg2000)
            made.append((path, stored))
    return made


def test_every_vendor_round_trips_exactly(tmp_path):
    photometrics, bits, vois = set(), set(), set()
    for path, stored in _vendor_files(tmp_path):
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(ds.pixel_array, stored)
        photometrics.add(ds.PhotometricInterpretation)
        bits.add(int(ds.BitsStored))
        vois.add("VOILUTSequence" in ds)
        assert ds.PresentationLUTShape == (
            "INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY")
        assert ("WindowCenter" in ds) != ("VOILUTSequence" in ds)
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert bits == {12, 14}
    assert vois == {True, False}
    syntaxes = {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in tmp_path.iterdir()}
    assert syntaxes == {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90"}


def test_dciodvfy_reports_no_errors(dataset, tmp_path):
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is required in CI (apt-get install dicom3tools)")
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    files = [p for p, _ in _vendor_files(tmp_path)]
    files += sorted((dataset / "images").rglob("*.dicom"))[:8]
    for path in files:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        report = result.stdout + result.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}:\n{report}"


# -- CLI and bad input -------------------------------------------------------------------------

def test_cli_help_documents_every_option():
    result = subprocess.run([sys.executable, "-m", "mammosynth", "phantom", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--out", "--studies", "--seed", "--height", "--workers",
                   "--density-prevalence", "--jpeg2000-fraction", "--finding-rate",
                   "--overwrite"):
        assert option in result.stdout


def test_cli_rejects_bad_prevalence():
    result = subprocess.run([sys.executable, "-m", "mammosynth", "phantom", "--out", "x",
                             "--studies", "1", "--density-prevalence", "0.5,0.6"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "A,B,C,D" in result.stderr


def test_bad_arguments_give_clear_errors(tmp_path, dataset):
    with pytest.raises(ValueError, match="studies must be a positive integer"):
        generate_phantom_dataset(tmp_path / "x", 0)
    with pytest.raises(ValueError, match="height must be"):
        generate_phantom_dataset(tmp_path / "x", 1, height=16)
    with pytest.raises(ValueError, match="density prevalence"):
        generate_phantom_dataset(tmp_path / "x", 1, density_prevalence=(1, 1, 1, 1))
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_phantom_dataset(dataset, 1)
