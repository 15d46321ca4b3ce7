"""Re-ID metrics against hand-computed cases, and the embedder's save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.models.siamese import SiameseEmbedder
from mammosynth.privacy.reid import (build_loss, relation_breakdown, retrieval_metrics, study_labels,
                                    verification_auc)


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.c_[np.cos(a), np.sin(a)].astype(np.float32)


# Study A at 0°, 30°, 100°; study B at 50°, 145°, 180°. Cosine similarity falls with the angle.
ANGLES = [0, 30, 100, 50, 145, 180]
LABELS = ["A", "A", "A", "B", "B", "B"]


def test_map_at_r_matches_hand_computation():
    # Leave-one-out, R = 2 per query. Ranked neighbours (hit = same study):
    #   0A: 30A 50B → [1,0]: AP@R 1/2,  P@1 1, R-prec 1/2
    #  30A: 50B 0A  → [0,1]: AP@R 1/4,  P@1 0, R-prec 1/2
    # 100A: 145B 50B → [0,0]: 0, 0, 0
    #  50B: 30A, 0A|100A → [0,0]: 0, 0, 0
    # 145B: 180B 100A → [1,0]: 1/2, 1, 1/2
    # 180B: 145B 100A → [1,0]: 1/2, 1, 1/2
    m = retrieval_metrics(_circle(ANGLES), LABELS)
    assert m["mean_average_precision_at_r"] == pytest.approx(1.75 / 6)
    assert m["precision_at_1"] == pytest.approx(0.5)
    assert m["r_precision"] == pytest.approx(2 / 6)
    assert m["n_queries"] == 6


def test_retrieval_perfect_and_cross_set():
    emb = _circle([0, 1, 2, 90, 91, 92])
    labels = ["a", "a", "a", "b", "b", "b"]
    perfect = retrieval_metrics(emb, labels)
    assert perfect["mean_average_precision_at_r"] == pytest.approx(1.0)
    # Queries against a separate reference set: query at 0.5° finds study a's 3 images first.
    cross = retrieval_metrics(_circle([0.5, 91.5]), ["a", "b"], emb, labels)
    assert cross["mean_average_precision_at_r"] == pytest.approx(1.0)
    swapped = retrieval_metrics(_circle([0.5, 91.5]), ["b", "a"], emb, labels)
    assert swapped["mean_average_precision_at_r"] == pytest.approx(0.0)


def test_singletons_are_not_queries_but_stay_references():
    # "c" has one image: it cannot be a query, but it sits closest to the "a" queries.
    emb = _circle([0, 20, 10, 90, 100])
    m = retrieval_metrics(emb, ["a", "a", "c", "b", "b"])
    assert m["n_queries"] == 4
    # a-queries (0°, 20°) retrieve c (10°) first → AP@R 0; b-queries are perfect.
    assert m["mean_average_precision_at_r"] == pytest.approx(0.5)
    with pytest.warns(UserWarning, match="no query has a relevant reference"):
        empty = retrieval_metrics(emb[:2], ["x", "y"])
    assert np.isnan(empty["mean_average_precision_at_r"])


def test_retrieval_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(_circle([0, 1]), ["a"])


def test_verification_auc_matches_hand_computation():
    # Positive-pair angles 30,100,70,95,130,35 vs negative 50,145,180,20,115,150,50,45,80:
    # pairs where the positive is closer: 8+4+5+4+3+8 = 32 of 54.
    assert verification_auc(_circle(ANGLES), LABELS) == pytest.approx(32 / 54)
    with pytest.warns(UserWarning):
        assert np.isnan(verification_auc(_circle([0, 1]), ["a", "b"]))


def test_study_labels_and_losses():
    assert study_labels(["x", "y", "x", "z"]).tolist() == [0, 1, 0, 2]
    for name in ("multi-similarity", "triplet"):
        loss, miner = build_loss(name)
        emb = torch.nn.functional.normalize(torch.randn(8, 4, requires_grad=True), dim=1)
        labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        value = loss(emb, labels, miner(emb, labels))
        assert value.ndim == 0 and torch.isfinite(value)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("contrastive-magic")


def test_embedder_unit_norm_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = SiameseEmbedder(embedding_dim=16, input_size=(32, 32), block_inplanes=(4, 8, 8, 16)).eval()
    frames = np.random.default_rng(0).integers(0, 65535, (3, 64, 48), dtype=np.uint16)
    emb = model.embed_frames(frames)
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    model.save_pretrained(tmp_path / "s")
    loaded = SiameseEmbedder.from_pretrained(tmp_path / "s")
    assert loaded.fingerprint() == model.fingerprint()
    np.testing.assert_allclose(loaded.embed_frames(frames), emb, atol=1e-6)
    other = SiameseEmbedder(embedding_dim=16, input_size=(32, 32), block_inplanes=(4, 8, 8, 16))
    assert other.fingerprint() != model.fingerprint()
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        model.embed_frames(frames[0])
    with pytest.raises(ValueError, match="input_size"):
        SiameseEmbedder(input_size=(8, 8))


def test_zoom_about_centre_by_hand():
    from mammosynth.models.siamese import zoom_about_centre

    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    assert torch.equal(zoom_about_centre(image, 1.0), image)
    shrunk = zoom_about_centre(torch.ones(1, 1, 4, 4), 0.5)  # a 2×2 copy in the middle, air around it
    expected = torch.full((1, 1, 4, 4), -1.0)
    expected[..., 1:3, 1:3] = 1.0
    assert torch.equal(shrunk, expected)
    ramp = torch.linspace(-1, 1, 8).repeat(8, 1).view(1, 1, 8, 8)  # left-to-right ramp
    grown = zoom_about_centre(ramp, 2.0)
    assert grown.shape == ramp.shape
    # the centre half of the ramp spread over the frame: a steeper ramp from about -0.5 to 0.5
    assert grown[0, 0, 0, 0] > ramp[0, 0, 0, 0] and grown[0, 0, 0, -1] < ramp[0, 0, 0, -1]
    assert torch.all(grown[0, 0, :, 1:] > grown[0, 0, :, :-1])


def test_zoom_tta_adds_zoomed_features_and_changes_the_fingerprint():
    torch.manual_seed(0)
    kwargs = dict(embedding_dim=16, input_size=(32, 32), block_inplanes=(4, 8, 8, 16))
    plain = SiameseEmbedder(**kwargs).eval()
    frames = np.random.default_rng(1).integers(0, 65535, (3, 32, 32), dtype=np.uint16)
    same = SiameseEmbedder(**kwargs, zoom_tta=(1.0,)).eval()
    same.load_state_dict(plain.state_dict())
    # a ×1 "zoom" adds the image's own features again: same direction, same unit embedding
    np.testing.assert_allclose(same.embed_frames(frames), plain.embed_frames(frames), atol=1e-5)
    zoomed = SiameseEmbedder(**kwargs, zoom_tta=(0.8, 1.25)).eval()
    zoomed.load_state_dict(plain.state_dict())
    emb = zoomed.embed_frames(frames)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.abs(emb - plain.embed_frames(frames)).max() > 1e-3
    assert len({plain.fingerprint(), same.fingerprint(), zoomed.fingerprint()}) == 3
    with pytest.raises(ValueError, match="zoom_tta"):
        SiameseEmbedder(**kwargs, zoom_tta=(3.0,))


def test_relation_breakdown_matches_hand_ranks():
    # one study of four views (L-CC, L-MLO, R-CC, R-MLO) at 0, 10, 30, 100 degrees on a circle
    # and two strangers at 22 and 210 degrees (cosine similarity falls with the angle)
    emb = _circle([0, 10, 30, 100, 22, 210])
    ids = ["s", "s", "s", "s", "x", "y"]
    lat = ["L", "L", "R", "R", "L", "L"]
    view = ["CC", "MLO", "CC", "MLO", "CC", "CC"]
    out = relation_breakdown(emb, ids, lat, view)
    # rank (0 = nearest) of each partner, R = 3 partners per query:
    #   from 0°:   10°→0, 30°→2, 100°→3      (order 10, 22, 30, 100, 210)
    #   from 10°:  0°→0, 30°→2, 100°→3       (order 0, 22, 30, 100, 210)
    #   from 30°:  10°→1, 0°→2, 100°→3       (order 22, 10, 0, 100, 210)
    #   from 100°: 30°→0, 10°→2, 0°→3        (order 30, 22, 10, 0, 210)
    assert out["same-side/other-view"] == {"pairs": 4, "within_r": 0.75, "median_rank": 0.0}   # 0, 0, 3, 0
    assert out["other-side/same-view"] == {"pairs": 4, "within_r": 0.75, "median_rank": 2.0}   # 2, 2, 3, 2
    assert out["other-side/other-view"] == {"pairs": 4, "within_r": 0.5, "median_rank": 2.5}   # 3, 3, 2, 1
    assert set(out) == {"same-side/other-view", "other-side/same-view", "other-side/other-view"}
    with pytest.raises(ValueError, match="have to match"):
        relation_breakdown(emb, ids, lat[:-1], view)
