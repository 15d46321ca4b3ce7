"""Read one mammogram DICOM into display pixels (DESIGN §5).

:func:`read_mammogram` reads a file with pydicom (JPEG 2000 through pylibjpeg-openjpeg) and
applies the display pipeline in the standard's order (PS3.4 N.2.1):

1. Modality LUT – (0028,3000) Modality LUT Sequence or (0028,1052)/(0028,1053) Rescale
   Intercept/Slope (:func:`pydicom.pixels.apply_modality_lut`);
2. VOI LUT – (0028,3010) VOI LUT Sequence, else (0028,1050) Window Center /
   (0028,1051) Window Width with (0028,1056) VOI LUT Function
   (:func:`pydicom.pixels.apply_voi_lut`); without either, the image's own value range;
3. Presentation – (0028,0004) MONOCHROME1 is inverted so that 0 is always black;
4. Pixel padding – stored values equal to (0028,0120) Pixel Padding Value (up to
   (0028,0121) Pixel Padding Range Limit) become 0 (black background).

The result is rescaled to uint16 0–65535. The pipeline is a pointwise function of the
stored value, so it is evaluated once per distinct stored value with pydicom and then
applied to the image as a lookup table: exact, and fast on 3518×2800 images.

Bad files raise a :class:`DicomReadError` subclass whose message names the file; its
``reason`` is a short code used in ingest reports. The returned :class:`MammogramImage`
carries pixels and the few non-identifying attributes later steps need; nothing that
identifies a person (names, ids, dates, institution, accession number, ...) leaves this
module.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DicomReadError",
    "NotDicomError",
    "ZeroSizeError",
    "TruncatedDicomError",
    "CorruptDicomError",
    "NoPixelDataError",
    "NotMammogramError",
    "NotMonochromeError",
    "UnsupportedTransferSyntaxError",
    "UnsupportedImageError",
    "ForProcessingError",
    "SyntheticImageError",
    "MammogramImage",
    "MammogramHeader",
    "read_mammogram",
    "read_header",
    "display_lut",
]

#: (0008,0016) SOP Class UIDs of digital mammography X-ray images.
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

#: View Code Sequence codes (SNOMED-RT and SNOMED CT) for the two standard views.
_VIEW_CODES = {
    "R-10242": "CC", "399162004": "CC",
    "R-10226": "MLO", "399368009": "MLO",
}


# ---- errors -----------------------------------------------------------------------------


class DicomReadError(ValueError):
    """A DICOM file cannot be used as a mammogram; the message names the file.

    Attributes:
        path: the file.
        reason: short code for reports (e.g. ``"not_dicom"``), one per subclass.
    """

    reason = "unreadable"

    def __init__(self, path: str | os.PathLike, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class NotDicomError(DicomReadError):
    """The file is not a DICOM Part 10 file (no ``DICM`` marker after the preamble)."""

    reason = "not_dicom"


class ZeroSizeError(DicomReadError):
    """The file is empty (0 bytes), or its image has 0 rows or 0 columns."""

    reason = "zero_size"


class TruncatedDicomError(DicomReadError):
    """The file ends before its header or its pixel data does."""

    reason = "truncated"


class CorruptDicomError(DicomReadError):
    """The header or the compressed pixel data cannot be decoded."""

    reason = "corrupt"


class NoPixelDataError(DicomReadError):
    """The dataset has no (7FE0,0010) Pixel Data (e.g. a structured report)."""

    reason = "no_pixel_data"


class NotMammogramError(DicomReadError):
    """(0008,0060) Modality is not ``MG``."""

    reason = "not_mg"


class NotMonochromeError(DicomReadError):
    """(0028,0004) Photometric Interpretation is not MONOCHROME1/2 (e.g. RGB)."""

    reason = "not_monochrome"


class UnsupportedTransferSyntaxError(DicomReadError):
    """No installed decoder handles the file's (0002,0010) Transfer Syntax UID."""

    reason = "unsupported_transfer_syntax"


class UnsupportedImageError(DicomReadError):
    """A valid image this pipeline does not take (multi-frame, > 16 bits, bad VOI)."""

    reason = "unsupported_image"


class ForProcessingError(DicomReadError):
    """A "FOR PROCESSING" (raw detector) image: skipped, only presentation images are used."""

    reason = "for_processing"


class SyntheticImageError(DicomReadError):
    """A synthetic image ((0008,0064) Conversion Type ``SYN``, e.g. one mammosynth exported):
    never read as a real mammogram, so generated images cannot pass for training data."""

    reason = "synthetic"


# ---- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MammogramHeader:
    """Non-identifying attributes of one mammogram (no names, ids, dates or places).

    Attributes:
        laterality: ``"L"``/``"R"`` from (0020,0062) Image Laterality, else (0020,0060)
            Laterality; ``None`` if absent or another value.
        view: ``"CC"``/``"MLO"`` from (0018,5101) View Position, else (0054,0220) View
            Code Sequence; ``None`` for other views.
        view_position: the raw (0018,5101) value (e.g. ``"XCCL"``), or ``None``.
        manufacturer: (0008,0070) Manufacturer (a device vendor, not a person).
        bits_stored: (0028,0101) Bits Stored.
        photometric: (0028,0004) Photometric Interpretation.
        pixel_spacing: (0028,0030) Pixel Spacing, else (0018,1164) Imager Pixel Spacing,
            in mm ``(row, column)``; ``None`` if absent.
        rows, columns: (0028,0010)/(0028,0011).
        transfer_syntax: name of the (0002,0010) Transfer Syntax UID.
        sop_instance_uid: (0008,0018); an image key, used only to derive pseudonymous ids.
        study_instance_uid: (0020,000D); likewise only for grouping into studies.
    """

    laterality: str | None
    view: str | None
    view_position: str | None
    manufacturer: str | None
    bits_stored: int
    photometric: str
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    transfer_syntax: str
    sop_instance_uid: str | None
    study_instance_uid: str | None


@dataclass(frozen=True)
class MammogramImage:
    """Display pixels plus the non-identifying header.

    Attributes:
        pixels: ``(rows, columns)`` uint16 display values, 0 = black, 65535 = white,
            in the orientation stored in the file.
        header: the :class:`MammogramHeader`.
        voi: which VOI step was used: ``"lut"``, ``"window"`` or ``"minmax"``.
    """

    pixels: np.ndarray
    header: MammogramHeader
    voi: str


# ---- reading ----------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ZeroSizeError(path, "the file is empty (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise NotDicomError(
            path, "not a DICOM file: no 'DICM' marker at byte 128 (expected a DICOM Part 10 file)"
        )


def _dcmread(path: Path, stop_before_pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as error:
        raise NotDicomError(path, f"not a valid DICOM file ({error})") from None
    except (EOFError, struct.error) as error:
        raise TruncatedDicomError(path, f"the file ends inside its header ({type(error).__name__})") from None
    except Exception as error:  # pydicom raises many types for damaged headers
        raise CorruptDicomError(path, f"the header cannot be parsed ({type(error).__name__}: {error})") from None


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF


def _is_truncated(path: Path, ds) -> bool:
    """Whether the file ends inside a data element (or before a sequence is closed).

    pydicom stops quietly at a cut-off element; this walks the element headers of a
    little-endian file (explicit or implicit VR) and checks every length against the
    bytes that are there. Other encodings are not checked (``False``).
    """
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    data = path.read_bytes()
    size = len(data)
    if size < 144 or data[132:136] != b"\x02\x00\x00\x00":
        return True  # the file ends before the (0002,0000) group length
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    if meta_end > size or ts is None:
        return meta_end > size
    try:
        explicit = not ts.is_implicit_VR
        if not ts.is_little_endian or ts.is_deflated:
            return False
    except ValueError:  # a private transfer syntax pydicom does not know
        return False
    pos, depth = meta_end, 0
    while pos < size:
        if size - pos < 8:
            return True
        group, element = struct.unpack_from("<HH", data, pos)
        if group == 0xFFFE:  # item, item delimiter, sequence delimiter: tag + 4-byte length
            length = struct.unpack_from("<I", data, pos + 4)[0]
            pos += 8
            if element == 0xE0DD:
                depth -= 1
            elif element == 0xE000 and length != _UNDEFINED:
                if pos + length > size:
                    return True
                pos += length
            continue
        vr = data[pos + 4: pos + 6]
        if explicit and vr in _LONG_VRS:
            if size - pos < 12:
                return True
            length, pos = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        elif explicit:
            length, pos = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        else:
            length, pos = struct.unpack_from("<I", data, pos + 4)[0], pos + 8
        if length == _UNDEFINED:
            depth += 1  # a sequence or encapsulated pixel data: walk into it
        elif pos + length > size:
            return True
        else:
            pos += length
    return depth > 0


def _text(ds, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _laterality(ds) -> str | None:
    for keyword in ("ImageLaterality", "Laterality"):
        value = (_text(ds, keyword) or "").upper()
        if value in ("L", "R"):
            return value
    return None


def _view(ds) -> tuple[str | None, str | None]:
    raw = _text(ds, "ViewPosition")
    if raw and raw.upper() in ("CC", "MLO"):
        return raw.upper(), raw
    for item in ds.get("ViewCodeSequence") or []:
        code = str(item.get("CodeValue", "")).strip()
        if code in _VIEW_CODES:
            return _VIEW_CODES[code], raw
    return None, raw


def _spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    return None


def _check_dataset(path: Path, ds) -> None:
    modality = _text(ds, "Modality")
    sop_class = _text(ds, "SOPClassUID")
    if modality is None and sop_class not in (MG_FOR_PRESENTATION, MG_FOR_PROCESSING):
        raise NotMammogramError(path, "has no (0008,0060) Modality; expected 'MG' (mammography)")
    if modality is not None and modality.upper() != "MG":
        raise NotMammogramError(path, f"(0008,0060) Modality is {modality!r}, expected 'MG' (mammography)")
    if (_text(ds, "ConversionType") or "").upper() == "SYN":
        raise SyntheticImageError(
            path, "is a synthetic image ((0008,0064) Conversion Type SYN); only real mammograms are read"
        )
    intent = (_text(ds, "PresentationIntentType") or "").upper()
    if intent == "FOR PROCESSING" or sop_class == MG_FOR_PROCESSING:
        raise ForProcessingError(
            path, "is a 'FOR PROCESSING' (raw detector) image; only 'FOR PRESENTATION' images are used"
        )
    photometric = (_text(ds, "PhotometricInterpretation") or "").upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        raise NotMonochromeError(
            path,
            f"(0028,0004) Photometric Interpretation is {photometric or 'missing'!r} with "
            f"{samples} sample(s) per pixel; expected a greyscale MONOCHROME1 or MONOCHROME2 image",
        )
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows == 0 or columns == 0:
        raise ZeroSizeError(path, f"the image is {rows}x{columns} pixels ((0028,0010) Rows x (0028,0011) Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnsupportedImageError(
            path, f"has {frames} frames (e.g. tomosynthesis); expected a single-frame 2-D mammogram"
        )
    bits = int(ds.get("BitsStored", 0) or 0)
    if not 1 <= bits <= 16:
        raise UnsupportedImageError(path, f"(0028,0101) Bits Stored is {bits}; expected 1 to 16")


def _header(ds) -> MammogramHeader:
    view, view_position = _view(ds)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return MammogramHeader(
        laterality=_laterality(ds),
        view=view,
        view_position=view_position,
        manufacturer=_text(ds, "Manufacturer"),
        bits_stored=int(ds.get("BitsStored", 0) or 0),
        photometric=(_text(ds, "PhotometricInterpretation") or "").upper(),
        pixel_spacing=_spacing(ds),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        transfer_syntax=getattr(ts, "name", str(ts)),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
    )


def read_header(path: str | os.PathLike) -> MammogramHeader:
    """Read and check a mammogram's header without decoding its pixels.

    Raises the same :class:`DicomReadError` subclasses as :func:`read_mammogram` for
    everything that can be told from the header (not DICOM, truncated header, not MG,
    FOR PROCESSING, RGB, 0 rows); pixel data is checked by :func:`read_mammogram`.
    """
    path = Path(path)
    _check_file(path)
    ds = _dcmread(path, stop_before_pixels=True)
    try:
        _check_dataset(path, ds)
    except DicomReadError:
        if _is_truncated(path, ds):
            raise TruncatedDicomError(path, "the file ends inside a data element: it is truncated") from None
        raise
    return _header(ds)


def _pixel_array(path: Path, ds) -> np.ndarray:
    from pydicom.pixels import get_decoder

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NoPixelDataError(path, "has no (7FE0,0010) Pixel Data element")
    if "PixelData" not in ds:
        raise UnsupportedImageError(path, "has floating-point pixel data; expected integer (7FE0,0010) Pixel Data")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        raise CorruptDicomError(path, "has no (0002,0010) Transfer Syntax UID in its file meta")
    if ts.is_compressed or not ts.is_transfer_syntax:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            decoder = None
        if decoder is None or not decoder.is_available:
            hint = ""
            if decoder is not None and decoder.missing_dependencies:
                hint = "; install one of: " + "; ".join(decoder.missing_dependencies)
            raise UnsupportedTransferSyntaxError(
                path, f"pixel data in transfer syntax {getattr(ts, 'name', ts)} ({ts}) cannot be decoded here{hint}"
            )
    rows, columns, allocated = int(ds.Rows), int(ds.Columns), int(ds.get("BitsAllocated", 16))
    expected = rows * columns * allocated // 8
    if not ts.is_compressed and len(ds.PixelData) < expected:
        raise TruncatedDicomError(
            path, f"pixel data has {len(ds.PixelData)} bytes, {expected} expected: the file is truncated"
        )
    if (not ts.is_compressed and ts.is_little_endian and not ts.is_deflated and allocated == 16
            and int(ds.get("PixelRepresentation", 0)) == 0):
        # Native 16-bit unsigned: a zero-copy view (pydicom would copy twice); bits above
        # (0028,0101) Bits Stored are masked as pydicom does.
        arr = np.frombuffer(ds.PixelData, dtype="<u2", count=rows * columns).reshape(rows, columns)
        bits = int(ds.BitsStored)
        if bits < 16 and int(arr.max()) >> bits:
            arr = arr & np.uint16((1 << bits) - 1)
        return arr
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as error:
        if _is_truncated(path, ds):
            raise TruncatedDicomError(path, f"the file is truncated: pixel data cannot be decoded ({error})") from None
        raise CorruptDicomError(
            path, f"pixel data cannot be decoded ({type(error).__name__}: {error}); the file may be truncated or damaged"
        ) from None
    if arr.ndim != 2 or arr.size == 0:
        raise UnsupportedImageError(path, f"decoded pixel array has shape {arr.shape}; expected 2-D")
    if arr.dtype.kind not in "iu":
        raise UnsupportedImageError(path, f"decoded pixel array is {arr.dtype}; expected integers")
    return arr


def _padding_values(ds, lo: int, hi: int) -> tuple[int, int] | None:
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):  # ambiguous VR left undecoded
        fmt = "<h" if int(ds.get("PixelRepresentation", 0)) else "<H"
        value = struct.unpack(fmt, bytes(value[:2]))[0]
    limit = ds.get("PixelPaddingRangeLimit", value)
    if isinstance(limit, (bytes, bytearray)):
        limit = value
    a, b = sorted((int(value), int(limit)))
    if b < lo or a > hi:
        return None
    return max(a, lo), min(b, hi)


def display_lut(ds, lo: int, hi: int, present: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
    """The display pipeline for stored values ``lo..hi`` as a uint16 lookup table.

    Entry ``i`` is the display value (0–65535) of stored value ``lo + i`` after modality
    LUT → VOI LUT → presentation → pixel padding.

    Args:
        ds: the pydicom dataset (its VOI/modality attributes are read, pixels are not).
        lo, hi: the stored values the table covers (at least the image's range).
        present: the image's smallest and largest stored value (default ``lo, hi``); with
            neither VOI LUT nor window, this range (padding excluded) is stretched to 0–65535.

    Returns:
        The lookup table and the VOI step used (``"lut"``, ``"window"`` or ``"minmax"``).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    stored = np.arange(lo, hi + 1, dtype=np.int64)
    values = apply_modality_lut(stored, ds)
    padding = _padding_values(ds, lo, hi)
    keep = np.ones(stored.shape, dtype=bool)
    if padding is not None:
        keep[padding[0] - lo: padding[1] - lo + 1] = False

    has_lut = bool(ds.get("VOILUTSequence")) and all(
        ds.VOILUTSequence[0].get(k) is not None for k in ("LUTDescriptor", "LUTData")
    )
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        if has_lut:
            voi = "lut"
            out = apply_voi_lut(np.floor(values).astype(np.int64), ds, prefer_lut=True).astype(np.float64)
            descriptor = ds.VOILUTSequence[0].LUTDescriptor
            first, entries = int(descriptor[1]), int(descriptor[0]) or 65536
            table = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds, prefer_lut=True)
            y_min, y_max = float(table.min()), float(table.max())
        elif has_window:
            voi = "window"
            out = apply_voi_lut(values.astype(np.float64), ds, prefer_lut=False)
            ends = apply_voi_lut(np.array([-1e300, 1e300]), ds, prefer_lut=False)
            y_min, y_max = float(ends.min()), float(ends.max())
        else:
            voi = "minmax"
            out = values.astype(np.float64)
            p_lo, p_hi = present if present is not None else (lo, hi)
            in_image = keep & (stored >= p_lo) & (stored <= p_hi)
            visible = out[in_image] if in_image.any() else out
            y_min, y_max = float(visible.min()), float(visible.max())
    if not np.isfinite(out).all() or not (np.isfinite(y_min) and np.isfinite(y_max)):
        raise ValueError("the VOI LUT / window gives non-finite values")
    scale = 1.0 / (y_max - y_min) if y_max > y_min else 0.0
    unit = np.clip((out - y_min) * scale, 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        unit = 1.0 - unit
    unit[~keep] = 0.0
    return np.rint(unit * 65535.0).astype(np.uint16), voi


def _apply_lut(lut: np.ndarray, arr: np.ndarray, start: int) -> np.ndarray:
    """``lut[arr - start]`` in row blocks (intp indices in cache: ~2x faster on 10 MP)."""
    out = np.empty(arr.shape, dtype=np.uint16)
    step = max(1, (1 << 20) // max(arr.shape[1], 1))
    for y in range(0, arr.shape[0], step):
        index = arr[y: y + step].astype(np.intp)
        if start:
            index -= start
        np.take(lut, index, out=out[y: y + step])
    return out


def read_mammogram(path: str | os.PathLike) -> MammogramImage:
    """Read a mammogram and return display pixels (uint16) plus a non-identifying header.

    Args:
        path: a DICOM Part 10 file of modality MG, "FOR PRESENTATION".

    Raises:
        DicomReadError: one of its subclasses, naming the file and what is wrong
            (see the module docstring); ``FileNotFoundError`` if there is no file.
    """
    path = Path(path)
    _check_file(path)
    ds = _dcmread(path, stop_before_pixels=False)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if _is_truncated(path, ds):
            raise TruncatedDicomError(path, "the file ends inside a data element: it is truncated")
        raise NoPixelDataError(path, "has no (7FE0,0010) Pixel Data element")
    _check_dataset(path, ds)
    arr = _pixel_array(path, ds)
    lo, hi = int(arr.min()), int(arr.max())
    # Unsigned images index the table directly (no offset copy of a 10-megapixel array).
    start = 0 if arr.dtype.kind == "u" else lo
    try:
        lut, voi = display_lut(ds, start, hi, present=(lo, hi))
    except (ValueError, NotImplementedError, AttributeError, KeyError, IndexError, TypeError) as error:
        raise UnsupportedImageError(path, f"the VOI LUT / window cannot be applied ({error})") from None
    pixels = _apply_lut(lut, arr, start)
    return MammogramImage(pixels=pixels, header=_header(ds), voi=voi)
