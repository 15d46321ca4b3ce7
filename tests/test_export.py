"""Synthetic DICOM / 16-bit PNG / recipe writers (DESIGN §5): valid, marked synthetic, no identifiers."""

from __future__ import annotations

import json
import shutil
import subprocess
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
    assert "SYNTHETIC" in ds.SeriesDescription and "seed 1234" in ds.SeriesDescription
    assert "mammosynth-phantom-256" in ds.SeriesDescription
    comments = json.loads(ds.ImageComments.split("Recipe: ", 1)[1])
    assert Recipe.from_dict(comments).conditions == r.conditions
    for keyword in IDENTIFYING:
        assert not str(ds.get(keyword, "")).strip(), f"{keyword} must be empty in a synthetic image"
    if conditions.get("laterality"):
        assert ds.Laterality == conditions["laterality"]
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    rc, report = dciodvfy(path)
    assert rc == 0 and "Error" not in report, report


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
