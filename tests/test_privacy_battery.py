"""The disguise battery and the copy sketch (issue 20): what each family does, that the sketch sees
blends and pasted regions, that its local part finds a copy moved or bent by a few pixels, and that a
checker with the sketch catches them, keeps it through save/load and reports both detectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mammosynth.privacy.disguises import FAMILIES, disguise_frames, family_names, run_battery
from mammosynth.privacy.sketch import SketchConfig, block_sketches, local_similarity, sketch_frames


def phantom_frames(n: int, seed: int, h: int = 64, w: int = 48) -> np.ndarray:
    """Breast-like frames: a bright half-ellipse on black, with each image's own fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    breast = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 < 1
    frames = []
    for _ in range(n):
        texture = rng.random((h, w))
        frames.append(np.where(breast, 0.35 + 0.4 * texture, 0.0))
    return (np.stack(frames) * 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def frames():
    return phantom_frames(8, seed=0)


def test_every_family_is_seeded_shape_preserving_and_changes_the_image(frames):
    donors = frames[::-1].copy()
    assert len(set(family_names())) == len(FAMILIES) >= 15
    kinds = {f.kind for f in FAMILIES}
    assert kinds == {"geometric", "photometric", "partial", "composition"}
    assert {f.name for f in FAMILIES if not f.seen} >= {"aspect", "elastic", "windowing", "sharpen",
                                                         "resolution_loss", "blend", "paste"}
    for name in family_names():
        a = disguise_frames(frames, donors, name, seed=3)
        assert a.dtype == np.uint16 and a.shape == frames.shape, name
        assert np.array_equal(a, disguise_frames(frames, donors, name, seed=3)), name
        assert not np.array_equal(a, disguise_frames(frames, donors, name, seed=4)), name
        assert np.abs(a.astype(int) - frames.astype(int)).mean() > 100, name


def test_partial_copies_keep_at_least_half_of_the_training_image(frames):
    donors = phantom_frames(8, seed=1)
    pasted = disguise_frames(frames, donors, "paste", seed=0)
    h, w = frames.shape[1:]
    for k in range(len(frames)):
        from_source = (pasted[k] == frames[k]) & (frames[k] != donors[k])
        rows, cols = np.flatnonzero(from_source.any(1)), np.flatnonzero(from_source.any(0))
        box = np.zeros((h, w), bool)
        box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        assert 0.3 <= box.mean() <= 0.72  # one rectangle of at most 70 % of the frame (plus rounding) ...
        assert np.array_equal(pasted[k][~box], donors[k][~box])  # ... and the donor everywhere else
    blended = disguise_frames(frames, donors, "blend", seed=0).astype(float)
    # 50-80 % of the source: the blend is nearer the source than the donor
    assert (np.abs(blended - frames).mean(axis=(1, 2)) < np.abs(blended - donors).mean(axis=(1, 2))).all()


def test_unknown_family_and_bad_shapes_are_refused(frames):
    with pytest.raises(ValueError, match="unknown disguise family 'mirror'"):
        disguise_frames(frames, frames, "mirror")
    with pytest.raises(ValueError, match="one shape"):
        disguise_frames(frames, frames[:2], "blend")


def test_sketch_sees_the_same_fine_structure_and_not_another_image(frames):
    config = SketchConfig(size=(64, 48), kernel=5, dim=256, seed=0)
    others = phantom_frames(8, seed=5)
    s, o = sketch_frames(frames, config), sketch_frames(others, config)
    assert s.shape == (8, 256) and np.allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5)
    assert np.allclose((s * s).sum(1), 1, atol=1e-5)
    assert np.abs(s @ o.T).max() < 0.35  # different images: near 0
    blended = sketch_frames(disguise_frames(frames, others, "blend", seed=0), config)
    assert ((blended * s).sum(1) > 0.6).all()  # >= 50 % of the source: about 0.7 or more
    pasted = sketch_frames(disguise_frames(frames, others, "paste", seed=0), config)
    assert ((pasted * s).sum(1) > 0.55).all()
    with pytest.raises(ValueError, match="odd number"):
        sketch_frames(frames, SketchConfig(kernel=4))


def shifted(frames: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(frames)
    h, w = frames.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        frames[:, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def test_block_sketches_are_int8_unit_blocks_inside_the_breast_only(frames):
    config = SketchConfig(size=(64, 48), kernel=5, dim=64, block=16, shift=4, block_dim=32)
    blocks = block_sketches(frames, config)
    assert blocks.shape == (8, 4 * 3, 32) and blocks.dtype == np.int8
    norms = np.linalg.norm(blocks.astype(np.float32), axis=-1)
    inside, outside = norms > 0, norms == 0
    assert inside.any(axis=1).all() and outside.any(axis=1).all()   # the black rim has no block
    assert np.allclose(norms[inside], 127, atol=3)
    assert (blocks[:, 0] == 0).all()   # the top-right corner (x = 32-48, y = 0-16) lies outside the ellipse
    with pytest.raises(ValueError, match="between the kernel"):
        SketchConfig(size=(64, 48), block=64)


def test_local_sketch_finds_a_moved_or_bent_copy_that_the_whole_frame_sketch_loses(frames):
    config = SketchConfig(size=(64, 48), kernel=5, dim=256, block=16, shift=4, block_dim=64)
    others = phantom_frames(8, seed=5)
    stored = torch.from_numpy(block_sketches(np.concatenate([frames, others]), config))
    own, other = np.arange(8)[:, None], np.arange(8, 16)[:, None]
    moved = shifted(frames, 3, -2)
    whole = (sketch_frames(moved, config) * sketch_frames(frames, config)).sum(1)
    assert np.abs(whole).max() < 0.35          # one pixel off already decorrelates white texture
    assert (local_similarity(moved, stored, own, config) > 0.85).all()
    assert (local_similarity(moved, stored, other, config) < 0.6).all()
    # beyond the search range the blocks no longer find their place
    assert (local_similarity(shifted(frames, 0, 9), stored, own, config) < 0.6).all()
    bent = disguise_frames(frames, others, "elastic", seed=0)
    # white texture bent by a sub-pixel field keeps only part of its structure; still nearer its source
    assert local_similarity(bent, stored, own, config).mean() > local_similarity(bent, stored, other, config).mean() + 0.05
    # the best candidate counts: the source among others is found
    assert np.allclose(local_similarity(moved, stored, np.concatenate([other, own], 1), config),
                       local_similarity(moved, stored, own, config), atol=1e-5)
    with pytest.raises(ValueError, match="candidates have to be"):
        local_similarity(moved, stored, own[:3], config)
    with pytest.raises(ValueError, match="stored block sketches"):
        local_similarity(moved, stored[:, :5], own, config)


@pytest.fixture(scope="module")
def sketch_world(tmp_path_factory):
    """A prepared dataset (training + unseen test studies) and a checker built with the sketch."""
    from test_privacy_data import make_prepared

    from mammosynth.data.prepared import load_prepared
    from mammosynth.models.siamese import SiameseEmbedder
    from mammosynth.privacy.checker import build_privacy_checker

    root = tmp_path_factory.mktemp("battery")
    data = load_prepared(make_prepared(root / "real", studies=12, test_studies=10, seed=1))
    embedder = SiameseEmbedder(embedding_dim=8, input_size=(32, 32), block_inplanes=(4, 4, 8, 8),
                               layers=(1, 1, 1, 1)).eval()
    config = SketchConfig(size=(64, 48), kernel=5, dim=256, seed=0)
    with pytest.warns(UserWarning, match="too few"):  # a few dozen calibration images
        checker, report = build_privacy_checker(embedder, data, sketch=config, sketch_share=0.3)
    return {"root": root, "data": data, "checker": checker, "report": report}


def test_checker_with_sketch_flags_partial_copies_and_survives_save_and_load(sketch_world, tmp_path):
    from mammosynth.privacy.checker import PrivacyChecker

    checker, data = sketch_world["checker"], sketch_world["data"]
    report = sketch_world["report"]
    assert checker.has_sketch and report["sketch"]["threshold"] == checker.copy_threshold
    assert report["calibration"]["target_false_flag_rate"] == pytest.approx(0.007)
    assert report["sketch"]["calibration"]["target_false_flag_rate"] == pytest.approx(0.0015)
    assert report["sketch"]["local_calibration"]["target_false_flag_rate"] == pytest.approx(0.0015)
    assert report["sketch"]["local_threshold"] == checker.local_threshold
    train = data.split("training")
    frames = data.frames(train["index"].to_numpy()[:6])
    donors = data.frames(train["index"].to_numpy()[-6:])
    blends = disguise_frames(frames, donors, "blend", seed=0)
    verdicts = checker.check(blends)
    assert all(v.flagged and v.copy_similarity > v.copy_threshold for v in verdicts)
    # a copy moved by a few pixels, compared with its source (the Siamese neighbours nominate the
    # candidates; this random network cannot, so they are given): the local part of the sketch keeps it
    position = {image_id: k for k, image_id in enumerate(checker.index.image_ids)}
    sources = np.array([[position[i]] for i in train["image_id"].to_numpy()[:6]])
    moved = shifted(frames, 1, 1)
    scores = checker.copy_similarity(moved, sources)
    assert scores.shape == (6, 2) and (scores[:, 1] > checker.local_threshold).all()
    assert checker.copy_flags(scores).all()
    record = verdicts[0].to_dict()
    assert set(record) == {"flagged", "similarity", "threshold", "checker", "copy_similarity", "copy_threshold",
                           "local_similarity", "local_threshold"}

    checker.save_pretrained(tmp_path / "checker")
    again = PrivacyChecker.from_pretrained(tmp_path / "checker")
    assert again.has_sketch and again.fingerprint() == checker.fingerprint()
    assert [v.to_dict() for v in again.check(blends)] == [v.to_dict() for v in verdicts]
    # the fingerprint covers the sketch: another sketch threshold is another gate
    again.register_to_config(sketch={**again.config.sketch, "threshold": 0.99, "local_threshold": 1.01})
    assert again.fingerprint() != checker.fingerprint()
    judged = again.check(blends)
    assert all(v.copy_threshold == 0.99 and v.local_threshold == 1.01 for v in judged)
    assert [v.flagged for v in judged] == [v.similarity > again.threshold for v in judged]  # the Siamese alone now


def test_battery_reports_every_family_with_its_group_and_ci(sketch_world):
    checker, data = sketch_world["checker"], sketch_world["data"]
    battery = run_battery(checker, data, per_family=12, seed=0, families=("blend", "gamma", "aspect"))
    assert set(battery["families"]) == {"blend", "gamma", "aspect"}
    blend = battery["families"]["blend"]
    assert blend["group"] == "held_out" and blend["kind"] == "partial" and blend["gate_recall"]["n"] == 12
    low, high = blend["gate_recall"]["ci95"]
    assert 0 <= low <= blend["gate_recall"]["rate"] <= high <= 1
    assert blend["caught_by_sketch"] == 1.0  # the sketch sees every blend
    assert battery["families"]["gamma"]["group"] == "seen"
    assert battery["seen"]["n"] == 12 and battery["held_out"]["n"] == 24
    json.dumps(battery)  # JSON-ready


def test_a_checker_with_sketches_of_another_version_is_refused(sketch_world, tmp_path):
    from mammosynth.privacy.checker import PrivacyChecker
    from mammosynth.privacy.index import IndexMismatchError

    folder = tmp_path / "old"
    sketch_world["checker"].save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["sketch"]["version"] = 0
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(IndexMismatchError, match="sketch version 0.*rebuild"):
        PrivacyChecker.from_pretrained(folder)


def test_the_app_shows_which_detector_flagged_an_image():
    from mammosynth.privacy.checker import PrivacyVerdict
    from mammosynth.ui.generate import verdict_line

    by_sketch = PrivacyVerdict(flagged=True, similarity=0.80, threshold=0.87, copy_similarity=0.20, copy_threshold=0.34,
                               local_similarity=0.61, local_threshold=0.54)
    mark, text = verdict_line(by_sketch)
    assert "flagged" in mark and text == "0.800 ≤ 0.870; sketch 0.200 ≤ 0.340, local 0.610 > 0.540"
    assert verdict_line(PrivacyVerdict(flagged=False, similarity=0.5, threshold=0.87))[1] == "0.500 ≤ 0.870"
