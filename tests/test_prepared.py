"""The prepared-dataset format: writer, crash-safety, reader, torch dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mammosynth.data.dataset import PreparedDataset, from_unit_range, to_unit_range
from mammosynth.data.prepared import (
    MANIFEST_COLUMNS,
    PreparedFormatError,
    PreparedWriter,
    label_boxes,
    load_prepared,
    row_boxes,
    row_conditions,
)


def _row(i: int, split: str = "training", lesion: str = "none", box=None, laterality="L"):
    findings = [{"category": "No Finding", "lesion": "none", "birads": None, "box": None}]
    if lesion != "none":
        findings = [{"category": "Mass", "lesion": lesion, "birads": 4, "box": box}]
    return {
        "study_id": f"s{i // 4:03d}", "image_id": f"img{i:04d}", "split": split,
        "laterality": laterality, "view": "CC" if i % 2 else "MLO",
        "birads": 4 if lesion != "none" else 1, "density": "C", "lesion": lesion,
        "cancer": int(lesion != "none"), "findings": findings, "source": "test", "extra": {"i": i},
    }


def _frame(i: int, h=16, w=8):
    return np.full((h, w), i * 100, dtype=np.uint16)


def test_write_read_round_trip(tmp_path):
    with PreparedWriter(tmp_path / "p", 16, 8, meta={"source": "unit"}) as writer:
        for i in range(6):
            writer.add(_frame(i), _row(i, split="test" if i >= 4 else "training",
                                       lesion="mass" if i == 1 else "none", box=[2, 4, 6, 8]))
        writer.finalize()
    data = load_prepared(tmp_path / "p")
    assert list(data.manifest.columns) == list(MANIFEST_COLUMNS)
    assert data.meta["count"] == 6 and data.meta["splits"] == {"training": 4, "test": 2}
    assert data.meta["source"] == "unit"
    np.testing.assert_array_equal(data.frames([5, 0, 3]), np.stack([_frame(5), _frame(0), _frame(3)]))
    assert len(data.split("test")) == 2
    with pytest.raises(PreparedFormatError, match="split 'validation'"):
        data.split("validation")
    masks = data.masks(data.manifest.iloc[[1]])
    assert masks[0, 4:8, 2:6].all() and masks.sum() == 16


def test_writer_rejects_bad_frames_and_duplicates(tmp_path):
    with PreparedWriter(tmp_path, 16, 8) as writer:
        with pytest.raises(PreparedFormatError, match="uint16 of shape"):
            writer.add(np.zeros((8, 8), np.uint16), _row(0))
        with pytest.raises(PreparedFormatError, match="uint16 of shape"):
            writer.add(np.zeros((16, 8), np.float32), _row(0))
        writer.add(_frame(0), _row(0))
        with pytest.raises(PreparedFormatError, match="already"):
            writer.add(_frame(0), _row(0))
    with pytest.raises(PreparedFormatError, match="multiples of 8"):
        PreparedWriter(tmp_path / "x", 15, 8)
    with pytest.raises(PreparedFormatError, match="holds a dataset of 16x8"):
        PreparedWriter(tmp_path, 32, 8)


def test_unfinished_dataset_has_clear_error(tmp_path):
    with PreparedWriter(tmp_path, 16, 8) as writer:
        writer.add(_frame(0), _row(0))
    with pytest.raises(PreparedFormatError, match="did not finish"):
        load_prepared(tmp_path)
    with pytest.raises(PreparedFormatError, match="not a folder"):
        load_prepared(tmp_path / "missing")


def test_resume_after_sigkill_keeps_every_acknowledged_frame(tmp_path):
    """A writer killed between frames loses nothing it acknowledged and resumes cleanly."""
    out = tmp_path / "p"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        sys.path.insert(0, {str(os.getcwd())!r})
        from tests.test_prepared import _frame, _row
        from mammosynth.data.prepared import PreparedWriter
        w = PreparedWriter({str(out)!r}, 16, 8)
        for i in range(10):
            if i in w.done_ids: continue
            w.add(_frame(i), _row(i))
            print("ack", i, flush=True)
            if i == 4:
                w._partial.write("7,s001,img9999,train")  # a torn, half-written line
                w._partial.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9
    acked = [int(line.split()[1]) for line in proc.stdout.split("\n") if line.startswith("ack")]
    assert acked == [0, 1, 2, 3, 4]
    with PreparedWriter(out, 16, 8) as writer:
        assert writer.done_ids == {f"img{i:04d}" for i in acked}
        for i in range(10):
            if f"img{i:04d}" not in writer.done_ids:
                writer.add(_frame(i), _row(i))
        writer.finalize()
    data = load_prepared(out)
    assert sorted(data.manifest["image_id"]) == [f"img{i:04d}" for i in range(10)]
    for _, row in data.manifest.iterrows():
        i = int(row["image_id"][3:])
        np.testing.assert_array_equal(data.images[int(row["index"])], _frame(i))


def test_dataset_items(tmp_path):
    with PreparedWriter(tmp_path, 16, 8) as writer:
        writer.add(_frame(0), _row(0))
        writer.add(_frame(1), _row(1, lesion="mass", box=[0, 0, 4, 8], laterality="R"))
        writer.finalize()
    ds = PreparedDataset(tmp_path, split="training")
    assert len(ds) == 2
    item = ds[1]
    assert item["image"].shape == (1, 16, 8) and item["image"].dtype == torch.float32
    assert item["mask"][0, :8, :4].all() and item["mask"].sum() == 32
    assert item["lesion"].item() == 2 and item["laterality"].item() == 2 and item["birads"].item() == 4
    assert item["cancer"].item() == 1 and item["image_id"] == "img0001"
    # conditions from a row: box stays canonical in the mask, displayed in Conditions
    cond = row_conditions(ds.rows.iloc[1], 16, 8)
    assert cond.canonical_box().as_tuple() == pytest.approx((0.0, 0.0, 0.5, 0.5))
    assert cond.box.as_tuple() == pytest.approx((0.5, 0.0, 1.0, 0.5))


def test_conditioning_pairs_the_lesion_label_with_its_own_boxes(tmp_path):
    """An image can show several finding types while its label names one (the most severe):
    the conditioning box and mask must be that type's, never another finding's."""
    row = _row(0, lesion="calcification")
    row["findings"] = [  # the architectural distortion comes first, as ingest may list it
        {"category": "Architectural Distortion", "lesion": "architectural_distortion", "birads": 4, "box": [0, 8, 4, 16]},
        {"category": "Suspicious Calcification", "lesion": "calcification", "birads": 5, "box": [4, 0, 8, 4]},
        {"category": "Suspicious Calcification", "lesion": "calcification", "birads": 5, "box": [4, 12, 8, 16]},
    ]
    with PreparedWriter(tmp_path, 16, 8) as writer:
        writer.add(_frame(0), row)
        writer.add(_frame(1), _row(1))
        writer.finalize()
    data = load_prepared(tmp_path)
    first, plain = data.manifest.iloc[0], data.manifest.iloc[1]
    assert len(row_boxes(first, 16, 8)) == 3
    assert [b.as_tuple() for b in label_boxes(first, 16, 8)] == [(0.5, 0.0, 1.0, 0.25), (0.5, 0.75, 1.0, 1.0)]
    assert row_boxes(first, 16, 8, lesion="architectural_distortion")[0].as_tuple() == (0.0, 0.5, 0.5, 1.0)
    assert label_boxes(plain, 16, 8) == [] and row_conditions(plain, 16, 8).box is None
    cond = row_conditions(first, 16, 8)
    assert cond.lesion.value == "calcification" and cond.box.as_tuple() == (0.5, 0.0, 1.0, 0.25)
    item = PreparedDataset(data, split="training")[0]
    expected = torch.zeros(16, 8)
    expected[0:4, 4:8] = expected[12:16, 4:8] = 1
    torch.testing.assert_close(item["mask"][0], expected)  # the calcifications only
    expected[8:16, 0:4] = 1
    torch.testing.assert_close(item["findings_mask"][0], expected)  # every finding (the VAE's lesion weighting)


def test_unit_range_round_trip():
    frames = np.array([[0, 1, 32767, 32768, 65535]], dtype=np.uint16)
    x = to_unit_range(frames)
    assert x.min() == -1 and x.max() == 1
    np.testing.assert_array_equal(from_unit_range(x), frames)


def test_empty_dataset_opens_with_no_frames(tmp_path):
    with PreparedWriter(tmp_path, 16, 8) as writer:
        writer.finalize()
    data = load_prepared(tmp_path)
    assert len(data.manifest) == 0 and data.images.shape == (0, 16, 8)
    assert len(PreparedDataset(data)) == 0
