"""Synthetic DICOM / 16-bit PNG / recipe writers (DESIGN §5): valid, marked synthetic, no identifiers."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammosynth.conditions import Conditions
from mammosynth.data.export import (
    RECIPE_FORMAT, SYNTHETIC_PATIENT_NAME, Recipe, patient_orientation, read_png16, read_recipe, synthetic_dicom,
    write_dicom, write_png16, write_recipe,
)

DCIODVFY = shutil.which("dciodvfy")
#: SNOMED CT codes of the views (DICOM CID 4014), as OHIF's mammography hanging protocol reads them.
VIEW_CODES = {"CC": "399162004", "MLO": "399368009"}
#: Values that identify a person in real DICOMs; none may appear in a synthetic file.
IDENTIFYING = ("PatientBirthDate", "PatientSex", "PatientAge", "OtherPatientIDs", "InstitutionName",
               "ReferringPhysicianName", "AccessionNumber", "OperatorsName", "PerformingPhysicianName")


def recipe(**conditions) -> Recipe:
    return Recipe(conditions=Conditions.create(**conditions), seed=1234, num_inference_steps=20, guidance_scale=3.0,
                  scheduler="dpm", checkpoint="checkpoints/mammosynth-phantom-256", height=64, width=48,
                  checkpoint_sha256="abcd1234", privacy={"flagged": False, "similarity": 0.41, "threshold": 0.8,
                                                         "neighbours": [["a" * 32, 0.41]]})


@pytest.fixture
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = (rng.random((64, 48)) * 65535).astype(np.uint16)
    image[0, 0], image[0, 1] = 0, 65535  # the full 16-bit range
    return image


def dciodvfy(path: Path) -> tuple[int, str]:
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_png16_round_trip_keeps_every_bit(tmp_path, frame):
    path = write_png16(frame, tmp_path / "x.png")
    back = read_png16(path)
    assert back.dtype == np.uint16 and np.array_equal(back, frame)
    assert path.read_bytes()[24:26] == b"\x10\x00"  # IHDR: bit depth 16, colour type 0 (grayscale)


def test_png16_refuses_8_bit_input(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_png16(np.zeros((4, 4), np.uint8), tmp_path / "x.png")


@pytest.mark.parametrize("conditions", [
    dict(birads=4, density="C", view="MLO", laterality="R", lesion="mass", box="0.5,0.4,0.7,0.6"),
    dict(birads=1, density="A", view="CC", laterality="L", lesion="none"),
    dict(),  # everything unspecified: laterality and orientation unknown
])
def test_dicom_is_valid_and_marked_synthetic(tmp_path, frame, conditions):
    r = recipe(**conditions)
    path = write_dicom(frame, r, tmp_path / "x.dcm")
    ds = pydicom.dcmread(path)
    assert np.array_equal(ds.pixel_array, frame)
    assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (16, 16, "MONOCHROME2")
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.ConversionType == "SYN" and ds.BurnedInAnnotation == "NO"
    assert str(ds.PatientName) == SYNTHETIC_PATIENT_NAME
    assert ds.SeriesDescription.startswith("SYNTHETIC") and ds.StudyDescription.startswith("SYNTHETIC")
    assert "mammosynth-phantom-256" in ds.SeriesDescription
    assert "seed 1234" in ds.DerivationDescription and "nominal" in ds.DerivationDescription
    assert ds.Modality == "MG" and ds.BodyPartExamined == "BREAST"
    comments = json.loads(ds.ImageComments.split("Recipe: ", 1)[1])
    assert Recipe.from_dict(comments).conditions == r.conditions
    for keyword in IDENTIFYING:
        assert not str(ds.get(keyword, "")).strip(), f"{keyword} must be empty in a synthetic image"
    assert_view_attributes(ds, conditions)
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    rc, report = dciodvfy(path)
    assert rc == 0 and "Error" not in report, report


def assert_view_attributes(ds: pydicom.Dataset, conditions: dict) -> None:
    """Side, view, orientation and spacing as a mammography viewer reads them."""
    side, view = conditions.get("laterality"), conditions.get("view")
    assert ds.get("ImageLaterality") == side and ds.get("ViewPosition") == view
    if side is None:
        assert ds.Laterality == "" and ds.PatientOrientation == ""
    else:
        assert "Laterality" not in ds and list(ds.PatientOrientation) == list(
            patient_orientation(Conditions.create(**conditions)))
    if view is None:
        assert "ViewCodeSequence" not in ds
    else:
        code = ds.ViewCodeSequence[0]
        assert (code.CodingSchemeDesignator, code.CodeValue) == ("SCT", VIEW_CODES[view])
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([240.0 / ds.Rows] * 2)


def test_each_dicom_has_fresh_uids(frame):
    a, b = synthetic_dicom(frame, recipe()), synthetic_dicom(frame, recipe())
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.StudyInstanceUID != b.StudyInstanceUID


def test_dicom_refuses_a_frame_that_does_not_fit_the_recipe(frame):
    with pytest.raises(ValueError, match="recipe says 64x48"):
        synthetic_dicom(frame[:32], recipe())


def test_patient_orientation_follows_display_convention():
    assert patient_orientation(Conditions.create(view="CC", laterality="L")) == ("A", "R")
    assert patient_orientation(Conditions.create(view="CC", laterality="R")) == ("P", "L")
    assert patient_orientation(Conditions.create(view="MLO", laterality="R")) == ("P", "F")
    assert patient_orientation(Conditions.create(view="MLO")) is None


def test_recipe_round_trips_through_json(tmp_path):
    r = recipe(birads=5, lesion="calcification", laterality="R")
    path = write_recipe(r, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["format"] == RECIPE_FORMAT and data["seed"] == 1234
    assert read_recipe(path) == r
    assert read_recipe(path.read_text()) == r
    kwargs = r.pipeline_kwargs()
    assert kwargs["conditions"] == r.conditions and kwargs["num_inference_steps"] == 20


def test_read_recipe_explains_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="not a mammosynth recipe"):
        read_recipe('{"seed": 1}')
    with pytest.raises(ValueError, match="does not exist"):
        read_recipe(tmp_path / "missing.json")
    bad = recipe().to_dict()
    bad["conditions"]["birads"] = 9
    with pytest.raises(ValueError, match="birads"):
        read_recipe(json.dumps(bad))


# ---- one synthetic study per batch (issue 22.1) ------------------------------------------------


def batch(frame: np.ndarray) -> list[tuple[np.ndarray, Recipe]]:
    """A screening-like batch: two L-MLO, one R-CC and one with side and view unspecified."""
    views = [dict(view="MLO", laterality="L"), dict(view="CC", laterality="R"), dict(view="MLO", laterality="L"), {}]
    return [(np.roll(frame, i), recipe(**v)) for i, v in enumerate(views)]


def test_a_batch_is_one_study_with_a_series_per_view(tmp_path, frame):
    from mammosynth.data.study import export_study

    images = batch(frame)
    result = export_study(images, tmp_path / "study", tmp_path / "study.zip")
    datasets = [pydicom.dcmread(f) for f in result.files]
    assert {ds.StudyInstanceUID for ds in datasets} == {result.study_uid}
    assert {ds.PatientID for ds in datasets} == {result.patient_id} and result.patient_id.startswith("SYN-")
    assert {str(ds.PatientName) for ds in datasets} == {SYNTHETIC_PATIENT_NAME}
    assert len({(ds.StudyDate, ds.StudyTime) for ds in datasets}) == 1
    series = {(ds.get("ImageLaterality"), ds.get("ViewPosition")): ds.SeriesInstanceUID for ds in datasets}
    assert len(series) == 3 and len({ds.SeriesInstanceUID for ds in datasets}) == 3
    numbers = [(ds.SeriesNumber, ds.InstanceNumber) for ds in datasets]
    assert numbers == [(4, 1), (1, 1), (4, 2), (5, 1)]  # R-CC 1, L-CC 2, R-MLO 3, L-MLO 4, others after
    assert len({ds.SOPInstanceUID for ds in datasets}) == 4
    for ds, (image, _) in zip(datasets, images):
        assert np.array_equal(ds.pixel_array, image)
    with zipfile.ZipFile(result.zip) as archive:
        names = archive.namelist()
        assert sorted(names) == sorted(f.name for f in result.files) and "DICOMDIR" not in names
        assert archive.read(names[0]) == (result.folder / names[0]).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left behind"
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    for path in result.files:
        rc, report = dciodvfy(path)
        assert rc == 0 and "Error" not in report, report


def test_each_study_gets_its_own_pseudonym_and_uid(tmp_path, frame):
    from mammosynth.data.study import export_study

    a = export_study(batch(frame)[:1], zip_path=tmp_path / "a.zip")
    b = export_study(batch(frame)[:1], zip_path=tmp_path / "b.zip")
    assert a.study_uid != b.study_uid and a.patient_id != b.patient_id
    assert a.folder is None and a.files == [] and sorted(tmp_path.iterdir()) == [tmp_path / "a.zip", tmp_path / "b.zip"]


def test_export_study_refuses_a_full_folder_and_keeps_it(tmp_path, frame):
    from mammosynth.data.study import export_study

    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_study(batch(frame), tmp_path / "study")
    assert [p.name for p in (tmp_path / "study").iterdir()] == ["mine.txt"]


def test_a_failed_export_leaves_no_half_study(tmp_path, frame):
    from mammosynth.data.study import export_study

    images = batch(frame) + [(frame[:32], recipe())]  # the last frame does not fit its recipe
    with pytest.raises(ValueError, match="recipe says 64x48"):
        export_study(images, tmp_path / "study", tmp_path / "study.zip")
    assert list(tmp_path.iterdir()) == []


def test_export_study_cli_reads_sample_output(tmp_path, frame, capsys):
    from mammosynth.cli import main

    for i, (image, r) in enumerate(batch(frame)):
        write_png16(image, tmp_path / "samples" / f"s{i}.png")
        write_recipe(r, tmp_path / "samples" / f"s{i}.json")
    assert main(["export-study", str(tmp_path / "samples"), "--out", str(tmp_path / "study"),
                 "--zip", str(tmp_path / "study.zip")]) == 0
    assert "wrote 4 image(s) as study" in capsys.readouterr().out
    assert len(list((tmp_path / "study").glob("S0*_*.dcm"))) == 4 and (tmp_path / "study.zip").is_file()
    (tmp_path / "samples" / "s0.json").unlink()
    assert main(["export-study", str(tmp_path / "samples"), "--zip", str(tmp_path / "again.zip")]) == 2
    assert "s0.png has no recipe s0.json" in capsys.readouterr().err


def test_sample_dicom_writes_one_study(tmp_path, tiny_pipe, monkeypatch):
    import argparse

    from mammosynth.pipelines import sampling

    monkeypatch.setattr("mammosynth.pipelines.pipeline_mammo_ldm.load_pipeline", lambda *a, **k: tiny_pipe)
    monkeypatch.setattr(sampling, "fingerprint", lambda checkpoint: "test")
    args = argparse.Namespace(num_threads=None, recipe=None, num=2, birads=None, density=None, view="CC",
                              laterality="L", lesion=None, box=None, seed=7, steps=2, guidance=2.0, scheduler="dpm",
                              checkpoint="tiny", batch_size=1, dicom=True, privacy_gate=False, out=str(tmp_path))
    sampling.sample_to_folder(args)
    datasets = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("*.dcm"))]
    assert len(datasets) == 2 and len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1 and [ds.InstanceNumber for ds in datasets] == [1, 2]
    with zipfile.ZipFile(tmp_path / "dicom-study.zip") as archive:
        assert sorted(archive.namelist()) == ["sample_seed000007.dcm", "sample_seed000008.dcm"]
