"""Blinding: no property of the served files separates real from synthetic."""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np
import pytest

from mammosynth.study.blinding import decode_png16, display_frame, encode_png16
from mammosynth.study.create import create_study
from mammosynth.study.demo import make_demo_datasets, write_demo_readers


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("blind")
    real, synth = make_demo_datasets(root, 48, 48, seed=3)
    readers = write_demo_readers(root / "readers.csv", 2)
    return create_study(root / "study", name="blind", real=real, synthetic=synth, readers_csv=readers,
                        n_cases=40, repeats=4, seed=3)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def _auc(y: list[int], score: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def test_served_files_are_structurally_identical(study):
    key = study.key()["cases"]
    files = sorted((study.root / "cases").iterdir())
    assert len(files) == len(key) == 44
    blobs = {p.stem: p.read_bytes() for p in files}
    sizes = {len(b) for b in blobs.values()}
    assert len(sizes) == 1  # every case has the same byte size
    headers = {b[:33] for b in blobs.values()}  # signature + IHDR (dims, bit depth, colour type)
    assert len(headers) == 1
    for case_id, blob in blobs.items():
        assert [k for k, _ in _chunks(blob)] == [b"IHDR", b"IDAT", b"IEND"]  # no metadata chunks
        assert re.fullmatch(r"[0-9a-f]{12}", case_id)
        entry = key[case_id]
        assert entry["image_id"] not in case_id and entry["truth"] not in case_id
    # A "classifier" on any file property is at chance: the size gives AUC exactly 0.5.
    y = [int(key[c]["truth"] == "synthetic") for c in blobs]
    assert _auc(y, [len(b) for b in blobs.values()]) == 0.5
    # PIL reads the file as 16-bit grayscale of the prepared frame size
    from PIL import Image

    with Image.open(files[0]) as im:
        assert im.mode == "I;16" and im.size == (48, 64) and not im.info


def test_compressed_png_would_leak_and_ours_does_not():
    """Why level-0 PNG: with normal compression, file size alone tells the classes apart."""
    rng = np.random.default_rng(0)
    # "synthetic" frames with a little less quantum noise than "real" ones (a typical
    # generator artefact that a reader might not see but a file size does)
    frames = [np.clip(30000 + rng.normal(0, 60 if i % 2 else 200, (64, 48)), 0, 65535).astype(np.uint16)
              for i in range(30)]
    y = [i % 2 for i in range(30)]
    compressed = [len(zlib.compress(f.astype(">u2").tobytes(), 6)) for f in frames]
    ours = [len(encode_png16(f)) for f in frames]
    assert abs(_auc(y, compressed) - 0.5) > 0.3  # content-dependent size separates them
    assert len(set(ours)) == 1 and _auc(y, ours) == 0.5


def test_pixels_roundtrip_and_right_breasts_are_mirrored(study):
    from mammosynth.data.prepared import load_prepared

    key = study.key()["cases"]
    checked = set()
    for case_id, entry in key.items():
        data = load_prepared(entry["dataset"])
        row = data.manifest[data.manifest["image_id"] == entry["image_id"]].iloc[0]
        frame = np.asarray(data.images[int(row["index"])])
        served = decode_png16(study.case_path(case_id).read_bytes())
        expected = frame[:, ::-1] if entry["laterality"] == "R" else frame
        np.testing.assert_array_equal(served, expected)
        checked.add((entry["truth"], entry["laterality"]))
    assert checked == {("real", "L"), ("real", "R"), ("synthetic", "L"), ("synthetic", "R")}


def test_encode_rejects_wrong_dtype():
    with pytest.raises(ValueError, match="uint16"):
        encode_png16(np.zeros((4, 4), np.float32))
    assert display_frame(np.arange(4, dtype=np.uint16).reshape(1, 4), "R").tolist() == [[3, 2, 1, 0]]


def test_truth_is_not_in_the_reader_facing_files(study):
    import json

    info = json.loads((study.root / "study.json").read_text())
    text = json.dumps(info) + (study.root / "manifest.json").read_text()
    assert "synthetic" not in text.replace("synthetic_fraction", "") and '"real"' not in text
    view = study.next_case("reader01")
    assert set(vars(view)) == {"case_id", "image_path", "position", "total"}
