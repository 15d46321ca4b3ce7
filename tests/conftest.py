"""Shared fixtures: hand-built MG DICOMs and a tiny phantom dataset (raw and prepared).

* ``make_dicom`` – a factory writing one small MG DICOM with chosen pixels and attributes.
* ``mini_vindr`` – a factory writing a VinDr-layout root whose lesions are known exactly.
* ``phantom_root`` (session) – ~6 studies at height 256 in the VinDr layout, from
  :mod:`mammosynth.data.phantom` when it is installed, else from ``mini_vindr``.
* ``prepared_root`` (session) – ``phantom_root`` ingested to 64x48.
* ``tiny_pipe`` (module) – a tiny random ``MammoLDMPipeline`` (64x48, ungated).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

#: Identifying values planted in test DICOMs; none may appear in any ingest output.
PHI = {
    "PatientName": "Zyxwvut^Quenbertha",
    "PatientID": "PIDX7740231",
    "PatientBirthDate": "19431127",
    "StudyDate": "20170611",
    "AcquisitionDate": "20170612",
    "InstitutionName": "Saint Qwertyuiop Hospital",
    "AccessionNumber": "ACCN99182736",
    "ReferringPhysicianName": "Plonkdorf^Ermintrude",
}


def uid_hex(*parts: Any) -> str:
    """A 32-hex id like VinDr's, derived from ``parts``."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def write_mg_dicom(
    path: str | Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    voi_lut_first: int = 0,
    rescale: tuple[float, float] | None = None,
    padding_value: int | None = None,
    laterality: str | None = "L",
    view: str | None = "CC",
    modality: str = "MG",
    intent: str = "FOR PRESENTATION",
    jpeg2000: bool = False,
    transfer_syntax: str | None = None,
    phi: dict[str, str] | None = None,
    sop_uid: str | None = None,
    study_uid: str | None = None,
    manufacturer: str = "TESTVENDOR",
    pixel_data: bool = True,
    rgb: bool = False,
) -> Path:
    """Write a small, valid MG "FOR PRESENTATION" DICOM holding ``stored`` values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, UID, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PresentationIntentType = intent
    ds.Manufacturer = manufacturer
    for key, value in (phi or {}).items():
        setattr(ds, key, value)
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    ds.PixelSpacing = [0.1, 0.1]
    if rgb:
        rgb_pixels = np.repeat(np.asarray(stored, np.uint8)[..., None], 3, axis=2)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.Rows, ds.Columns = rgb_pixels.shape[:2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = rgb_pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
        return path
    stored = np.asarray(stored, dtype=np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), voi_lut_first, 16]
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # (0028,3006) LUT Data
        ds.VOILUTSequence = [item]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if padding_value is not None:
        ds.PixelPaddingValue = padding_value
    if pixel_data:
        ds.PixelData = stored.tobytes()
    if pixel_data and jpeg2000:
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg")
    if transfer_syntax is not None:  # pretend-encapsulated data in another syntax
        from pydicom.encaps import encapsulate

        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        ds.PixelData = encapsulate([stored.tobytes()])
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """Factory: ``make_dicom(path, stored, **options)`` (see :func:`write_mg_dicom`)."""
    return write_mg_dicom


def breast_image(height: int, width: int, side: str, rng: np.random.Generator) -> np.ndarray:
    """12-bit stored values of a half-ellipse 'breast' on a dark background.

    ``side`` is where the chest wall lies in the stored image (``"left"`` or ``"right"``).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = 0.62 * width
    inside = ((xx / depth) ** 2 + ((yy - height / 2) / (0.46 * height)) ** 2) <= 1.0
    tissue = 1400 + 900 * (1 - xx / depth) + rng.normal(0, 40, (height, width))
    image = np.where(inside, tissue, 60 + rng.normal(0, 15, (height, width)))
    image = np.clip(image, 0, 4095).astype(np.uint16)
    return image if side == "left" else image[:, ::-1].copy()


def write_mini_vindr(
    root: str | Path,
    studies: int = 3,
    height: int = 128,
    seed: int = 0,
    phi: dict[str, str] | None = None,
    lesion_box: tuple[int, int, int, int] | None = None,
) -> dict[str, Any]:
    """A tiny VinDr-layout dataset with exactly known lesions.

    Each study has L/R × CC/MLO images; right breasts are stored with the chest wall on the
    right (as displayed). L-CC and R-MLO carry a bright 'mass' (stored value 4000, the
    tissue is below 2700) in ``lesion_box`` (stored-pixel ``x0, y0, x1, y1`` of a left
    breast, mirrored for the right one; default near the middle of the breast).

    Returns:
        ``{"root", "images": [{study_id, image_id, laterality, view, path, box}], ...}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    width = height * 3 // 4
    box_default = (int(0.2 * width), int(0.40 * height), int(0.32 * width), int(0.52 * height))
    records: list[dict[str, Any]] = []
    for s in range(studies):
        study_id = uid_hex("study", seed, s)
        split = "test" if s % 3 == 2 else "training"
        for laterality in ("L", "R"):
            for view in ("CC", "MLO"):
                image_id = uid_hex("image", seed, s, laterality, view)
                image = breast_image(height, width, "left" if laterality == "L" else "right", rng)
                box = None
                if (laterality, view) in (("L", "CC"), ("R", "MLO")):
                    x0, y0, x1, y1 = lesion_box or box_default
                    if laterality == "R":  # stored with the chest wall on the right
                        x0, x1 = width - x1, width - x0
                    box = (x0, y0, x1, y1)
                    image[y0:y1, x0:x1] = 4000
                path = root / "images" / study_id / f"{image_id}.dicom"
                write_mg_dicom(path, image, laterality=laterality, view=view, window=(2048, 4096),
                               phi=phi, study_uid=f"1.2.3.{seed}.{s}")
                records.append(dict(study_id=study_id, image_id=image_id, laterality=laterality, view=view,
                                    split=split, path=path, box=box, height=height, width=width,
                                    birads=4 if box else 1, density="C"))
    columns = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
               "breast_birads", "breast_density", "split"]
    with open(root / "breast-level_annotations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in records:
            writer.writerow([r["study_id"], uid_hex("series", r["study_id"]), r["image_id"], r["laterality"],
                             r["view"], r["height"], r["width"], f"BI-RADS {r['birads']}",
                             f"DENSITY {r['density']}", r["split"]])
    fcols = columns[:-1] + ["finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"]
    with open(root / "finding_annotations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fcols)
        for r in records:
            base = [r["study_id"], uid_hex("series", r["study_id"]), r["image_id"], r["laterality"], r["view"],
                    r["height"], r["width"], f"BI-RADS {r['birads']}", f"DENSITY {r['density']}"]
            if r["box"]:
                x0, y0, x1, y1 = r["box"]
                writer.writerow(base + ["['Mass']", "BI-RADS 4", f"{x0:.2f}", f"{y0:.2f}", f"{x1:.2f}", f"{y1:.2f}",
                                        r["split"]])
            else:
                writer.writerow(base + ["['No Finding']", "", "", "", "", "", r["split"]])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["SOP Instance UID", "Manufacturer", "Photometric Interpretation"])
        for r in records:
            writer.writerow([r["image_id"], "TESTVENDOR", "MONOCHROME2"])
    return {"root": root, "images": records}


@pytest.fixture
def mini_vindr(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Factory: ``mini_vindr(studies=3, height=128, phi=None, name="vindr")`` → description."""
    def make(name: str = "vindr", **kwargs: Any) -> dict[str, Any]:
        return write_mini_vindr(tmp_path / name, **kwargs)

    return make


def _phantom_generator() -> Callable[..., Any] | None:
    try:
        from mammosynth.data.phantom import generate_phantom_dataset
    except ImportError:
        return None
    return generate_phantom_dataset


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VinDr-layout phantom dataset (6 studies, 24 images, height 256).

    Made by :func:`mammosynth.data.phantom.generate_phantom_dataset` when available,
    otherwise by :func:`write_mini_vindr`. Treat it as read-only.
    """
    root = tmp_path_factory.mktemp("phantom") / "root"
    generate = _phantom_generator()
    if generate is not None:
        generate(root, studies=6, seed=0, height=256, workers=1)
    else:
        write_mini_vindr(root, studies=6, height=256, seed=0)
    return root


@pytest.fixture(scope="session")
def prepared_root(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``phantom_root`` ingested to 64x48 (a prepared dataset folder; read-only)."""
    from mammosynth.data.prepare import ingest

    out = tmp_path_factory.mktemp("prepared") / "prepared-64"
    ingest(phantom_root, out, size=(64, 48), workers=1, quiet=True)
    return out


@pytest.fixture(scope="module")
def tiny_pipe():
    """A tiny random ``MammoLDMPipeline`` at 64x48, ungated (one per test module; restore what you change).

    Built by :func:`mammosynth.pipelines.testing.tiny_pipeline`, the one builder tests, the app's
    test checkpoint and the benchmarks share; call it directly for other sizes, seeds or gates.
    """
    from mammosynth.pipelines.testing import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests run torch on one thread: on a 2-core machine, servers, browsers and worker
    processes share the cores, and oversubscribed OpenMP threads slow everything down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
