"""Blinding: every case re-encoded the same way, with nothing but pixels in the file.

Cases are written as 16-bit grayscale PNGs (IHDR bit depth 16, colour type 0) made by
:func:`encode_png16`: the signature, one ``IHDR``, one ``IDAT`` and ``IEND`` — no text, time,
gamma or physical-size chunks. The IDAT is zlib *stored* (compression level 0) data, so the
file size depends only on the image size, never on the content: every case of a study has
exactly the same number of bytes and the same header bytes. (Compressed PNG sizes depend on
content, e.g. noise level, and would leak the answer.) Case ids are random and say nothing
about the source; files are written in random order (modification times carry no order).

Display orientation: prepared frames are canonical (chest wall left); right-breast frames
(laterality ``R``) are mirrored so that they display as usual, for real and synthetic alike.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["encode_png16", "decode_png16", "display_frame", "new_case_id", "sha256_file", "PNG_SIGNATURE"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(frame: np.ndarray) -> bytes:
    """A minimal, content-independent-size 16-bit grayscale PNG of a ``(H, W)`` uint16 frame."""
    if frame.ndim != 2 or frame.dtype != np.uint16:
        raise ValueError(f"a case frame must be a 2-D uint16 array, got {frame.dtype} {frame.shape}")
    height, width = frame.shape
    rows = np.ascontiguousarray(frame, dtype=">u2").view(np.uint8).reshape(height, width * 2)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 0)) + _chunk(b"IEND", b"")


def decode_png16(data: bytes) -> np.ndarray:
    """Decode a PNG written by :func:`encode_png16` back to uint16 (for checks and tests)."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    pos, chunks = len(PNG_SIGNATURE), []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    if (depth, colour) != (16, 0):
        raise ValueError(f"expected a 16-bit grayscale PNG, got bit depth {depth}, colour type {colour}")
    raw = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 2 * width)
    if rows[:, 0].any():
        raise ValueError("only PNG filter type 0 is supported here")
    return np.ascontiguousarray(rows[:, 1:]).view(">u2").astype(np.uint16).reshape(height, width)


def display_frame(frame: np.ndarray, laterality: str | None) -> np.ndarray:
    """The frame as displayed: canonical frames of right breasts are mirrored left-right."""
    return np.ascontiguousarray(frame[:, ::-1]) if str(laterality) == "R" else np.ascontiguousarray(frame)


def new_case_id(taken: set[str]) -> str:
    """A fresh opaque case id: 12 random hex characters (cryptographic randomness)."""
    while True:
        case_id = secrets.token_hex(6)
        if case_id not in taken:
            taken.add(case_id)
            return case_id


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(Path(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
