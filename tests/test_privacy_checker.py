"""The index, the calibration and the PrivacyChecker: save/load and every refused mismatch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mammosynth.models.siamese import SiameseEmbedder
from mammosynth.privacy.calibration import calibrate_threshold, clopper_pearson, false_flag_rate
from mammosynth.privacy.checker import (
    PrivacyChecker,
    PrivacyFilesMissingError,
    PrivacyVerdict,
    build_privacy_checker,
    load_embedder,
    load_privacy_checker,
)
from mammosynth.privacy.index import EmbeddingIndex, IndexMismatchError, build_index


def _embedder(seed: int = 0) -> SiameseEmbedder:
    torch.manual_seed(seed)
    return SiameseEmbedder(embedding_dim=16, input_size=(32, 32), block_inplanes=(4, 8, 8, 16)).eval()


def _frames(n: int, h: int = 64, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65535, (n, h, w), dtype=np.uint16)


@pytest.fixture
def checker():
    embedder = _embedder()
    frames = _frames(12)
    index = build_index(embedder, frames, [f"img{i}" for i in range(12)], [f"st{i // 4}" for i in range(12)])
    calibration = calibrate_threshold(np.linspace(0, 0.9, 300), 0.01)
    return PrivacyChecker.from_index(embedder, index, calibration), frames


# -- calibration ------------------------------------------------------------------------------


def test_calibration_false_flag_rate_on_known_distribution():
    rng = np.random.default_rng(0)
    sims = rng.uniform(0, 1, 20_000)
    cal = calibrate_threshold(sims, 0.01, groups=[str(i // 4) for i in range(len(sims))])
    # Uniform(0,1): the 99th percentile is 0.99; flagged share ≤ 1 % in sample and ≈ 1 % outside it.
    assert cal.threshold == pytest.approx(0.99, abs=0.005)
    assert cal.false_flag_rate <= 0.01
    assert cal.cv_false_flag_rate == pytest.approx(0.01, abs=0.003)
    fresh = rng.uniform(0, 1, 20_000)
    assert false_flag_rate(fresh, cal.threshold) == pytest.approx(0.01, abs=0.003)
    assert cal.false_flag_upper95 > cal.false_flag_rate
    # exact case: 1..100, target 5 % → k = ⌈101 · 0.95⌉ = 96: threshold 96 (97..100 are above it)
    small = calibrate_threshold(np.arange(1, 101), 0.05)
    assert small.threshold == 96 and small.false_flag_rate == pytest.approx(0.04)


def test_calibration_guarantees_the_rate_for_new_patients():
    # 4,000 calibrations on 120 Uniform(0,1) similarities: a new image is flagged with probability
    # 1 - threshold. Conformal: E = 1 - 115/121 = 0.0496 ≤ 5 %; the in-sample quantile (6 of 120
    # above) would give 1 - 114/121 = 0.058.
    rng = np.random.default_rng(3)
    flagged = [1 - calibrate_threshold(rng.uniform(0, 1, 120), 0.05).threshold for _ in range(4000)]
    assert 0.046 < np.mean(flagged) <= 0.0505


def test_calibration_bad_input_and_small_sets():
    with pytest.raises(ValueError, match="non-empty"):
        calibrate_threshold([], 0.01)
    with pytest.raises(ValueError, match="between 0 and 1"):
        calibrate_threshold([0.1, 0.2], 1.5)
    with pytest.raises(ValueError, match="nan"):
        calibrate_threshold([0.1, float("nan")], 0.01)
    with pytest.warns(UserWarning, match="too few"):
        cal = calibrate_threshold([0.1, 0.5, 0.3], 0.01)
    assert cal.threshold == 0.5 and cal.false_flag_rate == 0.0
    low, high = clopper_pearson(0, 100)
    assert low == 0.0 and high == pytest.approx(0.0362, abs=1e-3)


# -- index --------------------------------------------------------------------------------------


def test_index_search_is_exact_cosine_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = EmbeddingIndex(emb, [f"i{k}" for k in range(50)], [f"s{k}" for k in range(50)], "fp", (64, 48))
    q = emb[:5] + 0.01 * rng.normal(size=(5, 8)).astype(np.float32)
    sims, idx = index.search(q, 3)
    brute = q @ emb.T / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_array_equal(idx, np.argsort(-brute, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.sort(brute, axis=1)[:, ::-1][:, :3], atol=1e-5)
    assert index.active_backend == "exact"
    sk = EmbeddingIndex(emb, index.image_ids, index.study_ids, "fp", (64, 48), backend="sklearn")
    sk_sims, sk_idx = sk.search(q, 3)
    np.testing.assert_array_equal(sk_idx, idx)
    np.testing.assert_allclose(sk_sims, sims, atol=1e-5)
    with pytest.raises(ValueError, match="backend has to be"):
        EmbeddingIndex(emb, index.image_ids, index.study_ids, "fp", (64, 48), backend="annoy")
    loaded = EmbeddingIndex.load(index.save(tmp_path / "idx"))
    assert loaded.image_ids == index.image_ids and loaded.image_size == (64, 48)
    np.testing.assert_array_equal(loaded.search(q, 3)[1], idx)
    with pytest.raises(FileNotFoundError, match="not an embedding index"):
        EmbeddingIndex.load(tmp_path)
    with pytest.raises(ValueError, match=r"\(M, 8\)"):
        index.search(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="empty"):
        EmbeddingIndex(np.zeros((0, 8)), [], [], "fp", (64, 48)).search(q)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    emb = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_faiss_factory_index_matches_exact_search_and_round_trips(tmp_path):
    pytest.importorskip("faiss")
    emb = _unit(600, 16, 2)
    ids = [f"i{k}" for k in range(600)]
    exact = EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="exact")
    q = emb[::7] + 0.05 * np.random.default_rng(3).normal(size=(len(emb[::7]), 16)).astype(np.float32)
    want = exact.search(q, 3)[1]
    # nprobe = nlist searches every list: exact; nprobe 1 searches one of 16 lists and misses some
    ivf = EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="faiss", faiss_factory="IVF16,Flat", nprobe=16)
    np.testing.assert_array_equal(ivf.search(q, 3)[1], want)
    assert ivf.search_settings == {"backend": "faiss", "faiss_factory": "IVF16,Flat", "nprobe": 16}
    one = EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="faiss", faiss_factory="IVF16,Flat", nprobe=1)
    assert (one.search(q, 1)[1][:, 0] != want[:, 0]).any()
    loaded = EmbeddingIndex.load(one.save(tmp_path / "ivf"))
    assert (loaded.faiss_factory, loaded.nprobe) == ("IVF16,Flat", 1)
    np.testing.assert_array_equal(loaded.search(q, 1)[1], one.search(q, 1)[1])  # same seeded k-means
    assert EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="faiss").active_factory == "Flat"


def test_faiss_settings_are_checked_before_any_search():
    pytest.importorskip("faiss")
    from mammosynth.privacy.index import default_faiss_factory

    emb = _unit(40, 8, 0)
    ids = [str(k) for k in range(40)]
    with pytest.raises(ValueError, match="'IVFx,Flat' is not a faiss factory string for 8-number"):
        EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="faiss", faiss_factory="IVFx,Flat")
    with pytest.raises(ValueError, match="needs backend 'faiss' or 'auto', not 'exact'"):
        EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="exact", faiss_factory="Flat")
    with pytest.raises(ValueError, match="nprobe has to be a whole number"):
        EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="faiss", nprobe=0)
    with pytest.raises(ValueError, match="64 inverted lists but the index holds only 40 rows"):
        EmbeddingIndex(emb, ids, ids, "fp", (64, 48), backend="faiss", faiss_factory="IVF64,Flat").search(emb[:2])
    assert default_faiss_factory(99_999) == "Flat"
    assert default_faiss_factory(200_000) == "IVF2048,Flat" and default_faiss_factory(1_000_000) == "IVF4096,Flat"


def test_checker_keeps_its_index_search_settings(tmp_path):
    pytest.importorskip("faiss")
    embedder = _embedder()
    frames = _frames(40)
    ids, studies = [f"img{i}" for i in range(40)], [f"st{i // 4}" for i in range(40)]
    calibration = calibrate_threshold(np.linspace(0, 0.9, 300), 0.01)
    plain = PrivacyChecker.from_index(embedder, build_index(embedder, frames, ids, studies), calibration)
    assert plain.config.index_search is None and plain.index.active_backend == "exact"
    index = build_index(embedder, frames, ids, studies, backend="faiss", faiss_factory="IVF4,Flat", nprobe=2)
    checker = PrivacyChecker.from_index(embedder, index, calibration)
    checker.save_pretrained(tmp_path / "gate")
    loaded = PrivacyChecker.from_pretrained(tmp_path / "gate")
    assert loaded.index.search_settings == {"backend": "faiss", "faiss_factory": "IVF4,Flat", "nprobe": 2}
    assert loaded.fingerprint() == checker.fingerprint() != plain.fingerprint()  # same embeddings, other search
    assert loaded.check(frames[:3])[0].flagged   # an indexed image is still its own nearest neighbour


def test_index_refuses_other_model_or_resolution():
    embedder, other = _embedder(0), _embedder(1)
    index = build_index(embedder, _frames(4), list("abcd"), list("aabb"))
    index.check_compatible(embedder.fingerprint(), (64, 48))
    with pytest.raises(IndexMismatchError, match="built with the Siamese network"):
        index.check_compatible(other.fingerprint(), (64, 48))
    with pytest.raises(IndexMismatchError, match="64x48 images, not 128x96"):
        index.check_compatible(embedder.fingerprint(), (128, 96))
    with pytest.raises(IndexMismatchError, match="built with the Siamese network"):
        PrivacyChecker.from_index(other, index, calibrate_threshold(np.linspace(0, 1, 200)))


# -- checker -----------------------------------------------------------------------------------


def test_checker_finds_exact_copies_and_round_trips(checker, tmp_path):
    checker, frames = checker
    verdicts = checker.check(frames[[3, 7]])
    assert all(isinstance(v, PrivacyVerdict) for v in verdicts)
    assert [v.neighbours[0][0] for v in verdicts] == ["img3", "img7"]
    assert all(v.flagged and v.similarity == pytest.approx(1.0, abs=1e-5) for v in verdicts)
    assert all(len(v.neighbours) == 3 and v.threshold == checker.threshold for v in verdicts)
    json.dumps([v.to_dict() for v in verdicts])

    checker.save_pretrained(tmp_path / "ckpt" / "privacy_checker")
    for loaded in (PrivacyChecker.from_pretrained(tmp_path / "ckpt" / "privacy_checker"),
                   load_privacy_checker(tmp_path / "ckpt"),  # a pipeline folder
                   load_privacy_checker(tmp_path / "ckpt" / "privacy_checker")):
        assert loaded.image_size == (64, 48)
        assert loaded.config.index_image_ids == checker.config.index_image_ids
        assert loaded.calibration.threshold == checker.threshold
        again = loaded.check(frames[[3, 7]])
        assert [[i for i, _ in v.neighbours] for v in again] == [[i for i, _ in v.neighbours] for v in verdicts]
        np.testing.assert_allclose([v.similarity for v in again], [v.similarity for v in verdicts], atol=1e-5)


def test_checker_judges_in_float32_under_a_callers_bf16_autocast(checker):
    """A pipeline run under bf16 autocast must get the same verdicts as in float32."""
    import torch

    checker, frames = checker
    plain = checker.check(frames[[1, 5]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = checker.check(frames[[1, 5]])
    assert [v.neighbours for v in cast] == [v.neighbours for v in plain]
    assert [v.similarity for v in cast] == [v.similarity for v in plain]


def test_checker_refuses_wrong_images(checker):
    checker, frames = checker
    with pytest.raises(IndexMismatchError, match="images are 128x96 but .* built from 64x48"):
        checker.check(_frames(2, 128, 96))
    with pytest.raises(ValueError, match="uint16"):
        checker.check(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        checker.check(frames[0])


def test_checker_refuses_altered_weights(checker, tmp_path):
    checker, _ = checker
    checker.save_pretrained(tmp_path / "c")
    # swap in another network's weights: the index no longer belongs to it
    from safetensors.torch import load_file, save_file

    path = tmp_path / "c" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    key = next(k for k in state if k.startswith("embedder.") and state[k].is_floating_point() and state[k].ndim > 1)
    state[key] = state[key] + 0.5
    save_file(state, path)
    with pytest.raises(IndexMismatchError, match="folder was altered"):
        PrivacyChecker.from_pretrained(tmp_path / "c")


def test_checkpoint_without_privacy_files_is_refused(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model_index.json").write_text("{}")
    with pytest.raises(PrivacyFilesMissingError, match="no privacy checker.*build-index.*privacy_checker=None"):
        load_privacy_checker(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no Siamese network"):
        load_embedder(tmp_path / "ckpt")


def test_build_privacy_checker_from_prepared(tmp_path):
    from test_privacy_data import make_prepared

    from mammosynth.data.prepared import load_prepared

    data = load_prepared(make_prepared(tmp_path / "d", studies=6, test_studies=3))
    embedder = _embedder()
    embedder.save_pretrained(tmp_path / "run" / "siamese")
    checker, report = build_privacy_checker(load_embedder(tmp_path / "run"), data)
    assert report["index"]["images"] == 24 and report["calibration"]["n_images"] == 12
    relations = report["siamese_relations"]  # every partner of the 12 calibration images, by relation
    per_study = data.split("test")["study_id"].value_counts()
    assert sum(r["pairs"] for r in relations.values()) == int((per_study * (per_study - 1)).sum())
    assert all(0 <= r["within_r"] <= 1 for r in relations.values())
    assert set(checker.config.index_image_ids) == set(data.split("training")["image_id"])
    assert report["calibration"]["false_flag_rate"] <= 1 / 12  # too few to resolve 1 %: the max
    with pytest.raises(ValueError, match="split 'validation' is not in"):
        build_privacy_checker(embedder, data, calibration_split="validation")
    with pytest.raises(ValueError, match="studies are in both"):
        build_privacy_checker(embedder, data, calibration_split="training")
