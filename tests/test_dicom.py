"""DICOM reading (DESIGN §5): display pipeline round-trips and one test per bad-file kind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import PHI, write_mg_dicom

from mammosynth.data.dicom import (
    CorruptDicomError,
    DicomReadError,
    ForProcessingError,
    NoPixelDataError,
    NotDicomError,
    NotMammogramError,
    NotMonochromeError,
    SyntheticImageError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
    ZeroSizeError,
    read_header,
    read_mammogram,
)


@pytest.fixture
def ramp() -> np.ndarray:
    """12-bit stored values covering 0..4095."""
    return (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window to [0, 1] (written out independently of pydicom)."""
    c, w = center - 0.5, width - 1
    y = (x - c) / w + 0.5
    y[x <= c - w / 2] = 0.0
    y[x > c + w / 2] = 1.0
    return y


def test_window_monochrome2_round_trip(tmp_path: Path, ramp: np.ndarray) -> None:
    path = write_mg_dicom(tmp_path / "a.dcm", ramp, window=(1500, 1000))
    image = read_mammogram(path)
    expected = np.rint(linear_window(ramp.astype(float), 1500, 1000) * 65535)
    assert image.pixels.dtype == np.uint16 and image.pixels.shape == ramp.shape
    assert image.voi == "window"
    assert np.abs(image.pixels.astype(float) - expected).max() <= 1
    assert image.pixels.min() == 0 and image.pixels.max() == 65535


def test_monochrome1_is_inverted(tmp_path: Path, ramp: np.ndarray) -> None:
    mono2 = read_mammogram(write_mg_dicom(tmp_path / "m2.dcm", ramp, window=(2048, 4096))).pixels
    mono1 = read_mammogram(write_mg_dicom(tmp_path / "m1.dcm", ramp, window=(2048, 4096),
                                          photometric="MONOCHROME1")).pixels
    assert np.abs(mono1.astype(int) + mono2.astype(int) - 65535).max() <= 1
    # low stored values are bright in MONOCHROME1
    assert mono1[0, 0] == 65535 and mono2[0, 0] == 0


def test_jpeg2000_matches_uncompressed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = (rng.random((96, 80)) * 16383).astype(np.uint16)
    plain = read_mammogram(write_mg_dicom(tmp_path / "p.dcm", stored, bits_stored=14, window=(8000, 12000)))
    j2k = read_mammogram(write_mg_dicom(tmp_path / "j.dcm", stored, bits_stored=14, window=(8000, 12000),
                                        jpeg2000=True, photometric="MONOCHROME2"))
    assert "JPEG 2000" in j2k.header.transfer_syntax
    assert np.array_equal(plain.pixels, j2k.pixels)


def test_voi_lut_sequence_is_used_and_preferred_over_window(tmp_path: Path, ramp: np.ndarray) -> None:
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 4000).astype(np.uint16)  # a gamma curve, max 4000
    path = write_mg_dicom(tmp_path / "lut.dcm", ramp, voi_lut=lut, window=(100, 10))
    image = read_mammogram(path)
    assert image.voi == "lut"
    expected = np.rint(lut[ramp].astype(float) / lut.max() * 65535)
    assert np.abs(image.pixels - expected).max() <= 1
    windowed = read_mammogram(write_mg_dicom(tmp_path / "win.dcm", ramp, window=(100, 10)))
    assert windowed.voi == "window" and not np.array_equal(windowed.pixels, image.pixels)


def test_voi_lut_first_mapped_value_clips_below(tmp_path: Path, ramp: np.ndarray) -> None:
    lut = np.linspace(0, 1000, 1024).astype(np.uint16)  # maps stored 1000..2023
    image = read_mammogram(write_mg_dicom(tmp_path / "lut.dcm", ramp, voi_lut=lut, voi_lut_first=1000))
    assert (image.pixels[ramp < 1000] == 0).all() and (image.pixels[ramp >= 2023] == 65535).all()


def test_modality_rescale_before_window(tmp_path: Path, ramp: np.ndarray) -> None:
    # Rescale doubles the values; the window is in rescaled units.
    image = read_mammogram(write_mg_dicom(tmp_path / "r.dcm", ramp, rescale=(2.0, -100.0), window=(3000, 2000)))
    expected = np.rint(linear_window(ramp * 2.0 - 100.0, 3000, 2000) * 65535)
    assert np.abs(image.pixels - expected).max() <= 1


def test_sigmoid_voi_function(tmp_path: Path, ramp: np.ndarray) -> None:
    import pydicom

    path = write_mg_dicom(tmp_path / "s.dcm", ramp, window=(2000, 800))
    ds = pydicom.dcmread(path)
    ds.VOILUTFunction = "SIGMOID"  # (0028,1056), PS3.3 C.11.2.1.3.1
    ds.save_as(path)
    image = read_mammogram(path)
    expected = 65535 / (1 + np.exp(-4 * (ramp.astype(float) - 2000) / 800))
    assert np.abs(image.pixels - expected).max() <= 1


def test_no_voi_stretches_image_range(tmp_path: Path) -> None:
    stored = np.full((32, 32), 700, np.uint16)
    stored[8:24, 8:24] = 1200
    image = read_mammogram(write_mg_dicom(tmp_path / "n.dcm", stored))
    assert image.voi == "minmax"
    assert set(np.unique(image.pixels)) == {0, 65535}


def test_pixel_padding_is_black_after_inversion(tmp_path: Path, ramp: np.ndarray) -> None:
    stored = ramp.copy()
    stored[:, :8] = 0  # padding at the left edge
    path = write_mg_dicom(tmp_path / "pad.dcm", stored, window=(2048, 4096), photometric="MONOCHROME1",
                          padding_value=0)
    image = read_mammogram(path)
    assert (image.pixels[:, :8] == 0).all()  # without masking, MONOCHROME1 would make these white
    assert image.pixels[:, 8:].max() > 60000


def test_header_attributes(tmp_path: Path, ramp: np.ndarray) -> None:
    path = write_mg_dicom(tmp_path / "h.dcm", ramp, laterality="R", view="MLO", bits_stored=12,
                          window=(2048, 4096), sop_uid="1.2.3.4.5", study_uid="1.2.3.4")
    header = read_header(path)
    assert (header.laterality, header.view, header.manufacturer) == ("R", "MLO", "TESTVENDOR")
    assert (header.bits_stored, header.photometric, header.pixel_spacing) == (12, "MONOCHROME2", (0.1, 0.1))
    assert (header.rows, header.columns) == ramp.shape
    assert (header.sop_instance_uid, header.study_instance_uid) == ("1.2.3.4.5", "1.2.3.4")
    assert read_mammogram(path).header == header


def test_nothing_identifying_leaves_the_reader(tmp_path: Path, ramp: np.ndarray) -> None:
    path = write_mg_dicom(tmp_path / "phi.dcm", ramp, window=(2048, 4096), phi=PHI)
    image = read_mammogram(path)
    fields = {f.name for f in dataclasses.fields(image.header)}
    assert not fields & {"patient_name", "patient_id", "birth_date", "study_date", "institution", "accession"}
    text = repr(image) + repr(dataclasses.asdict(image.header))
    for value in PHI.values():
        assert value not in text
        assert value.split("^")[0] not in text


def test_for_processing_is_skipped_with_a_reason(tmp_path: Path, ramp: np.ndarray) -> None:
    path = write_mg_dicom(tmp_path / "raw.dcm", ramp, intent="FOR PROCESSING")
    with pytest.raises(ForProcessingError, match="FOR PROCESSING") as info:
        read_mammogram(path)
    assert str(path) in str(info.value) and info.value.reason == "for_processing"


# ---- bad files: each raises its own error that names the file ------------------------------


def _truncated_pixels(tmp_path: Path, ramp: np.ndarray) -> Path:
    full = write_mg_dicom(tmp_path / "full.dcm", ramp, window=(2048, 4096)).read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(full[: len(full) - 1000])
    return path


def _truncated_header(tmp_path: Path, ramp: np.ndarray) -> Path:
    full = write_mg_dicom(tmp_path / "full.dcm", ramp, window=(2048, 4096)).read_bytes()
    path = tmp_path / "truncated-header.dcm"
    path.write_bytes(full[:400])
    return path


def _truncated_jpeg2000(tmp_path: Path, ramp: np.ndarray) -> Path:
    rng = np.random.default_rng(1)
    stored = (rng.random((64, 64)) * 4095).astype(np.uint16)
    full = write_mg_dicom(tmp_path / "fullj.dcm", stored, window=(2048, 4096), jpeg2000=True).read_bytes()
    path = tmp_path / "truncated-j2k.dcm"
    path.write_bytes(full[: len(full) // 2])
    return path


def _not_dicom(tmp_path: Path, ramp: np.ndarray) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("this is a text file, not an image\n" * 10)
    return path


def _no_pixel_data(tmp_path: Path, ramp: np.ndarray) -> Path:
    return write_mg_dicom(tmp_path / "nopix.dcm", ramp, pixel_data=False)


def _not_mg(tmp_path: Path, ramp: np.ndarray) -> Path:
    return write_mg_dicom(tmp_path / "ct.dcm", ramp, modality="CT", window=(40, 400))


def _synthetic(tmp_path: Path, ramp: np.ndarray) -> Path:
    """What mammosynth exports: Modality MG since issue 22, but Conversion Type SYN."""
    from mammosynth.conditions import Conditions
    from mammosynth.data.export import Recipe, write_dicom

    recipe = Recipe(conditions=Conditions.create(view="CC", laterality="L"), seed=1, num_inference_steps=2,
                    guidance_scale=3.0, scheduler="dpm", checkpoint="x", height=ramp.shape[0], width=ramp.shape[1])
    return write_dicom(ramp.astype(np.uint16), recipe, tmp_path / "synthetic.dcm")


def _rgb(tmp_path: Path, ramp: np.ndarray) -> Path:
    return write_mg_dicom(tmp_path / "rgb.dcm", (ramp % 256).astype(np.uint8), rgb=True)


def _empty_file(tmp_path: Path, ramp: np.ndarray) -> Path:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    return path


def _zero_rows(tmp_path: Path, ramp: np.ndarray) -> Path:
    return write_mg_dicom(tmp_path / "zero.dcm", np.zeros((0, 64), np.uint16))


def _unsupported_syntax(tmp_path: Path, ramp: np.ndarray) -> Path:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1, JPEGLossless

    uid = next((u for u in (JPEGLosslessSV1, JPEGLossless) if not get_decoder(u).is_available), "1.2.3.4.5.6.7")
    return write_mg_dicom(tmp_path / "jpegll.dcm", ramp, window=(2048, 4096), transfer_syntax=uid)


BAD_FILES = [
    (_truncated_pixels, TruncatedDicomError, "truncated"),
    (_truncated_header, TruncatedDicomError, "truncated"),
    (_truncated_jpeg2000, TruncatedDicomError, "truncated"),
    (_not_dicom, NotDicomError, "not a DICOM file"),
    (_no_pixel_data, NoPixelDataError, "Pixel Data"),
    (_not_mg, NotMammogramError, "'CT'"),
    (_rgb, NotMonochromeError, "RGB"),
    (_synthetic, SyntheticImageError, "synthetic"),
    (_empty_file, ZeroSizeError, "0 bytes"),
    (_zero_rows, ZeroSizeError, "0x64"),
    (_unsupported_syntax, UnsupportedTransferSyntaxError, "cannot be decoded"),
]


@pytest.mark.parametrize("make, error, words", BAD_FILES, ids=[m.__name__.strip("_") for m, _, _ in BAD_FILES])
def test_bad_file_raises_specific_error_naming_the_file(tmp_path, ramp, make, error, words) -> None:
    path = make(tmp_path, ramp)
    with pytest.raises(error) as info:
        read_mammogram(path)
    assert isinstance(info.value, DicomReadError) and isinstance(info.value, ValueError)
    assert str(path) in str(info.value), "the message must name the file"
    assert words in str(info.value)
    assert info.value.reason == error.reason != DicomReadError.reason


def test_header_read_catches_bad_files_early(tmp_path: Path, ramp: np.ndarray) -> None:
    for make, error in ((_not_mg, NotMammogramError), (_rgb, NotMonochromeError), (_not_dicom, NotDicomError),
                        (_synthetic, SyntheticImageError),
                        (_truncated_header, TruncatedDicomError)):
        with pytest.raises(error, match=str(make(tmp_path, ramp)).replace(".", r"\.")):
            read_header(make(tmp_path, ramp))


def test_reason_codes_are_distinct() -> None:
    classes = [e for _, e, _ in BAD_FILES] + [ForProcessingError, CorruptDicomError]
    assert len({c.reason for c in classes}) == len(set(classes))
