"""Write phantom images as Digital Mammography X-Ray Image – For Presentation DICOM files.

Each fake vendor stores its pixels its own way — 12 or 14 bits, MONOCHROME1 or MONOCHROME2,
a linear or sigmoid window or a VOI LUT Sequence, its own pixel spacing and tone curve — so
that ingestion meets the variety of a real screening archive. A share of the files is JPEG
2000 lossless. The files carry plausible **fake** patient identifiers (``PHANTOM^P000123``…)
so that de-identification at ingest can be tested; they never hold real data.

UIDs are ``2.25.<decimal of the 128-bit id>`` (PS3.5 B.2), so the 32-hex-digit image id of
the CSVs is the SOP Instance UID in another notation.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: (0008,0016) Digital Mammography X-Ray Image Storage – For Presentation.
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
#: Our implementation class UID (a 2.25 UUID-derived root) and version name.
IMPLEMENTATION_CLASS_UID = "2.25.171823306236114513540727296418306470401"
IMPLEMENTATION_VERSION = "MAMMOSYNTH_01"

#: ViewCodeSequence codes (CID 4014), SNOMED CT.
VIEW_CODES = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
}
#: (0020,0020) Patient Orientation per laterality and view, as displayed (chest wall on the
#: left for left breasts, on the right for right breasts).
PATIENT_ORIENTATION = {
    ("L", "CC"): ["A", "R"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "CC"): ["P", "L"],
    ("R", "MLO"): ["P", "FL"],
}


@dataclass(frozen=True)
class Vendor:
    """How one (fake) manufacturer stores a mammogram.

    Attributes:
        manufacturer: (0008,0070) Manufacturer.
        model: (0008,1090) Manufacturer's Model Name.
        photometric: ``MONOCHROME1`` (dense = dark stored values) or ``MONOCHROME2``.
        bits_stored: 12 or 14.
        voi: ``"window"``, ``"window-sigmoid"`` or ``"lut"`` (VOI LUT Sequence).
        pixel_spacing: detector pixel spacing in mm.
        rescale_slope: (0028,1053).
        rescale_intercept: (0028,1052).
        gamma: the vendor's tone curve applied before storage.
        noise_photons: quantum noise level (higher = less noise).
        electronic_noise: additive noise level.
        weight: share of studies acquired on this vendor's units.
    """

    manufacturer: str
    model: str
    photometric: str
    bits_stored: int
    voi: str
    pixel_spacing: float
    rescale_slope: float
    rescale_intercept: float
    gamma: float
    noise_photons: float
    electronic_noise: float
    weight: float

    @property
    def max_value(self) -> int:
        return (1 << self.bits_stored) - 1


VENDORS: tuple[Vendor, ...] = (
    Vendor("Phantom Imaging Systems", "PIS Mammo One", "MONOCHROME2", 12, "window",
           0.085, 1.0, 0.0, 1.0, 2500.0, 0.006, 0.35),
    Vendor("Acme Phantom Radiology", "AcmeMammo 14", "MONOCHROME1", 14, "window",
           0.07, 1.0, 0.0, 0.85, 4000.0, 0.004, 0.25),
    Vendor("Synthetic Breast Devices", "SBD Vista", "MONOCHROME2", 14, "lut",
           0.1, 1.0, 0.0, 1.15, 3000.0, 0.005, 0.20),
    Vendor("Virtual Mammography Corp", "VMC Digital 3DL", "MONOCHROME1", 12, "window-sigmoid",
           0.094, 1.0, 0.0, 0.95, 2000.0, 0.008, 0.20),
)


def hex_to_uid(hex_id: str) -> str:
    """``2.25.<decimal>`` UID of a 32-hex-digit id (PS3.5 B.2)."""
    if len(hex_id) != 32:
        raise ValueError(f"expected a 32-character hex id, got {hex_id!r}")
    return f"2.25.{int(hex_id, 16)}"


def to_stored(display: np.ndarray, vendor: Vendor) -> np.ndarray:
    """Map display values (0 = air, ~1.3 = densest) to the vendor's stored pixel values."""
    top = vendor.max_value
    index = display * np.float32(top / 1.35)
    np.clip(index, 0, top, out=index)
    return _stored_lut(vendor)[np.rint(index).astype(np.uint16)]


def _stored_lut(vendor: Vendor) -> np.ndarray:
    """Stored value for each quantised display level (the vendor's tone curve)."""
    top = vendor.max_value
    d = np.linspace(0.0, 1.0, top + 1) ** vendor.gamma
    m2 = d * (0.93 * top) + 0.01 * top
    stored = m2 if vendor.photometric == "MONOCHROME2" else top - m2
    return np.rint(stored).astype(np.uint16)


def voi_window(stored: np.ndarray, mask: np.ndarray, vendor: Vendor) -> tuple[float, float]:
    """(center, width) in modality units covering the breast's values."""
    sample = stored[mask][::7].astype(np.float32) * vendor.rescale_slope + vendor.rescale_intercept
    if sample.size == 0:
        sample = stored.ravel()[::7].astype(np.float32)
    lo, hi = np.percentile(sample, [0.5, 99.95])
    width = max(float(hi - lo) * 1.05, 16.0)
    return float(round((lo + hi) / 2)), float(round(width))


@dataclass(frozen=True)
class ImageHeader:
    """What the DICOM header says about one image (identifiers are fake).

    Attributes:
        image_id: 32-hex SOP Instance UID as used in the CSVs.
        study_id: 32-hex Study Instance UID.
        series_id: 32-hex Series Instance UID.
        laterality: ``L`` or ``R``.
        view: ``CC`` or ``MLO``.
        patient_number: the phantom patient's number (for the fake name/id).
        age: patient's age in years.
        study_date: acquisition date.
        accession: fake accession number.
        institution: fake institution name.
        series_number: (0020,0011).
        instance_number: (0020,0013).
    """

    image_id: str
    study_id: str
    series_id: str
    laterality: str
    view: str
    patient_number: int
    age: int
    study_date: _dt.date
    accession: str
    institution: str
    series_number: int
    instance_number: int

    @property
    def patient_name(self) -> str:
        return f"PHANTOM^P{self.patient_number:06d}"

    @property
    def patient_id(self) -> str:
        return f"PH{self.patient_number:08d}"

    @property
    def birth_date(self) -> str:
        d = self.study_date
        return f"{d.year - self.age:04d}{d.month:02d}{min(d.day, 28):02d}"


def _code_item(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_dataset(stored: np.ndarray, mask: np.ndarray, header: ImageHeader, vendor: Vendor):
    """The complete MG For Presentation dataset (uncompressed pixel data).

    pydicom writes elements in tag order, so the order of the modules below does not change
    the bytes of the file.
    """
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.file_meta = _file_meta(hex_to_uid(header.image_id))
    ds.update(_sop_common_and_equipment(header, vendor))
    ds.update(_patient(header))
    ds.update(_acquisition(header, vendor))
    ds.update(_image_identity(header))
    ds.update(_image_pixel(stored, vendor))
    ds.update(_voi(stored, mask, vendor))
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _file_meta(sop_uid: str):
    """File Meta Information (PS3.10 7.1): explicit VR little endian, our implementation UID."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.update({
        "MediaStorageSOPClassUID": MG_FOR_PRESENTATION,
        "MediaStorageSOPInstanceUID": sop_uid,
        "TransferSyntaxUID": ExplicitVRLittleEndian,
        "ImplementationClassUID": IMPLEMENTATION_CLASS_UID,
        "ImplementationVersionName": IMPLEMENTATION_VERSION,
    })
    return meta


def _sop_common_and_equipment(header: ImageHeader, vendor: Vendor) -> dict:
    """SOP Common, General Study/Series and Equipment: UIDs, one date and time for all, vendor."""
    date = header.study_date.strftime("%Y%m%d")
    time = f"{9 + header.patient_number % 8:02d}{(header.patient_number * 7) % 60:02d}{header.instance_number * 11 % 60:02d}"
    stamps = ("Study", "Series", "Acquisition", "Content")
    return {
        "SpecificCharacterSet": "ISO_IR 100",
        "ImageType": ["ORIGINAL", "PRIMARY", ""],
        "InstanceCreationDate": date,
        "InstanceCreationTime": time,
        "SOPClassUID": MG_FOR_PRESENTATION,
        "SOPInstanceUID": hex_to_uid(header.image_id),
        **{f"{stamp}Date": date for stamp in stamps},
        **{f"{stamp}Time": time for stamp in stamps},
        "AccessionNumber": header.accession,
        "Modality": "MG",
        "PresentationIntentType": "FOR PRESENTATION",
        "Manufacturer": vendor.manufacturer,
        "InstitutionName": header.institution,
        "ReferringPhysicianName": "",
        "StudyDescription": "MAMMOSYNTH PHANTOM SCREENING (not a patient)",
        "SeriesDescription": f"{header.laterality} {header.view} PHANTOM",
        "ManufacturerModelName": vendor.model,
    }


def _patient(header: ImageHeader) -> dict:
    """Patient module, with fake identifiers only."""
    return {
        "PatientName": header.patient_name,
        "PatientID": header.patient_id,
        "PatientBirthDate": header.birth_date,
        "PatientSex": "F",
        "PatientAge": f"{header.age:03d}Y",
        "PatientIdentityRemoved": "NO",
    }


def _acquisition(header: ImageHeader, vendor: Vendor) -> dict:
    """DX/Mammography acquisition: detector, spacing, positioning of the view."""
    spacing = [vendor.pixel_spacing, vendor.pixel_spacing]
    return {
        "BodyPartExamined": "BREAST",
        "KVP": "28",
        "DeviceSerialNumber": f"PH{vendor.bits_stored}-{len(vendor.model):04d}",
        "SoftwareVersions": "mammosynth-phantom 1",
        "DistanceSourceToDetector": "650",
        "ImagerPixelSpacing": spacing,
        "DetectorType": "DIRECT",
        "PositionerType": "MAMMOGRAPHIC",
        "ViewPosition": header.view,
        "ImageLaterality": header.laterality,
        "PixelSpacing": list(spacing),
        "PixelSpacingCalibrationType": "GEOMETRY",
        "PixelSpacingCalibrationDescription": "Magnification corrected to the breast support",
        "BreastImplantPresent": "NO",
        "PartialView": "NO",
        "OrganExposed": "BREAST",
        "PositionerPrimaryAngle": "0" if header.view == "CC" else ("45" if header.laterality == "R" else "-45"),
    }


def _image_identity(header: ImageHeader) -> dict:
    """Study / series / image identity, orientation and the anatomy and view code sequences."""
    from pydicom.sequence import Sequence

    view_item = _code_item(*VIEW_CODES[header.view])
    view_item.ViewModifierCodeSequence = Sequence()
    return {
        "StudyInstanceUID": hex_to_uid(header.study_id),
        "SeriesInstanceUID": hex_to_uid(header.series_id),
        "StudyID": header.accession[-8:],
        "SeriesNumber": header.series_number,
        "InstanceNumber": header.instance_number,
        "PatientOrientation": PATIENT_ORIENTATION[(header.laterality, header.view)],
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "00",
        "ImageComments": "Procedural phantom generated by mammosynth; not a patient image.",
        "AnatomicRegionSequence": Sequence([_code_item("76752008", "SCT", "Breast")]),
        "ViewCodeSequence": Sequence([view_item]),
        "AcquisitionContextSequence": Sequence(),
    }


def _image_pixel(stored: np.ndarray, vendor: Vendor) -> dict:
    """Image Pixel and Modality LUT: how the vendor stores its values."""
    rows, columns = stored.shape
    monochrome1 = vendor.photometric == "MONOCHROME1"
    return {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": vendor.photometric,
        "Rows": rows,
        "Columns": columns,
        "BitsAllocated": 16,
        "BitsStored": vendor.bits_stored,
        "HighBit": vendor.bits_stored - 1,
        "PixelRepresentation": 0,
        "PixelIntensityRelationship": "LOG",
        # +1: lower values = less X-ray intensity (MONOCHROME1 stores dense tissue dark).
        "PixelIntensityRelationshipSign": 1 if monochrome1 else -1,
        "RescaleIntercept": f"{vendor.rescale_intercept:g}",
        "RescaleSlope": f"{vendor.rescale_slope:g}",
        "RescaleType": "US",
        "PresentationLUTShape": "INVERSE" if monochrome1 else "IDENTITY",
    }


def _voi(stored: np.ndarray, mask: np.ndarray, vendor: Vendor) -> dict:
    """VOI LUT module: a VOI LUT Sequence, one sigmoid window, or two linear windows."""
    from pydicom.sequence import Sequence

    center, width = voi_window(stored, mask, vendor)
    if vendor.voi == "lut":
        return {"VOILUTSequence": Sequence([_voi_lut_item(center, width)])}
    if vendor.voi == "window-sigmoid":
        return {"WindowCenter": f"{center:g}", "WindowWidth": f"{width * 0.8:g}",
                "VOILUTFunction": "SIGMOID", "WindowCenterWidthExplanation": "SIGMOID"}
    return {"WindowCenter": [f"{center:g}", f"{center:g}"], "WindowWidth": [f"{width:g}", f"{width * 1.4:g}"],
            "VOILUTFunction": "LINEAR", "WindowCenterWidthExplanation": ["NORMAL", "SOFT"]}


def _voi_lut_item(center: float, width: float):
    """A VOI LUT Sequence item: a smooth S-curve over [center - width/2, center + width/2]."""
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

    first = max(0, int(center - width / 2))
    n = int(min(max(width, 16), 65535))
    x = (np.arange(n, dtype=np.float64) - n / 2) / (n / 2)
    y = 0.5 + 0.5 * np.tanh(1.6 * x) / np.tanh(1.6)
    data = np.rint(y * 65535).astype("<u2")
    item = Dataset()
    item.add(DataElement(0x00283002, "US", [n, first, 16]))  # LUT Descriptor
    item.LUTExplanation = "PHANTOM S-CURVE"
    item.add(DataElement(0x00283006, "OW", data.tobytes()))  # LUT Data
    return item


def write_mg_dicom(path: Path, stored: np.ndarray, mask: np.ndarray, header: ImageHeader,
                   vendor: Vendor, jpeg2000: bool = False) -> str:
    """Write one image; returns the transfer syntax UID used.

    Args:
        path: destination file (``<image_id>.dicom``).
        stored: stored pixel values (uint16, ``vendor.bits_stored`` bits used).
        mask: breast mask (for the VOI window).
        header: identifiers and labels.
        vendor: how the pixels are stored.
        jpeg2000: compress with JPEG 2000 lossless (pylibjpeg-openjpeg).
    """
    from pydicom.uid import JPEG2000Lossless

    ds = build_dataset(stored, mask, header, vendor)
    if jpeg2000:
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg",
                    generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.file_meta.TransferSyntaxUID)
