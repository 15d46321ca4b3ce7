"""generate-set: the label distribution of a split, privacy gating, mirroring, resuming — with a tiny real pipeline."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from mammosynth.data.prepared import load_prepared, row_boxes
from mammosynth.evaluation.generate_set import GenerationSettings, generate_set, read_training_sources
from mammosynth.pipelines.testing import tiny_pipeline
from mammosynth.data.toy import write_toy_dataset
from mammosynth.privacy.checker import PrivacyVerdict


class CountingGate:
    """A privacy gate that flags the first ``n_flag`` images it sees (its verdicts are real PrivacyVerdicts)."""

    def __init__(self, n_flag: int):
        self.n_flag, self.seen = n_flag, 0

    def check(self, frames: np.ndarray) -> list[PrivacyVerdict]:
        verdicts = []
        for _ in frames:
            self.seen += 1
            flagged = self.seen <= self.n_flag
            verdicts.append(PrivacyVerdict(flagged=flagged, similarity=0.99 if flagged else 0.1, threshold=0.9))
        return verdicts


def gated_pipe(gate=None):
    """A tiny 32x24 pipeline (VAE f = 2, 2 latent channels) behind ``gate``."""
    return tiny_pipeline(32, 24, latent_channels=2, vae={"block_out_channels": (4, 4), "norm_num_groups": 2},
                         unet={"attention_levels": (False, False)}, privacy_checker=gate)


@pytest.fixture(scope="module")
def like(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("like") / "real", 24, height=32, width=24, seed=3)


def _labels(rows):
    return Counter(zip(rows["birads"].astype(str), rows["density"], rows["lesion"], rows["view"], rows["laterality"]))


def test_same_label_distribution_and_canonical_frames(like, tmp_path):
    pipe = gated_pipe(CountingGate(0))
    settings = GenerationSettings(num_inference_steps=2, guidance_scale=2.0, batch_size=5, seed=7, copies=2)
    report = generate_set(pipe, like, tmp_path / "synth", split="training", settings=settings, progress=False)
    real, synth = load_prepared(like), load_prepared(tmp_path / "synth")
    train = real.split("training")
    assert report["written"] == 2 * len(train) == len(synth.manifest) and report["dropped"] == 0
    assert synth.meta["source"] == "synthetic" and synth.meta["privacy_gated"] is True
    assert set(synth.manifest["source"]) == {"synthetic"} and set(synth.manifest["split"]) == {"training"}
    # every label combination appears exactly twice as often (copies=2)
    assert _labels(synth.manifest) == Counter({k: 2 * v for k, v in _labels(train).items()})
    # box statistics follow the real boxes (same pixel grid here)
    real_boxes = sorted(b.as_tuple() for _, r in train.iterrows() for b in row_boxes(r, 32, 24))
    synth_boxes = sorted(b.as_tuple() for _, r in synth.manifest.iterrows() for b in row_boxes(r, 32, 24))
    assert np.allclose(np.repeat(np.array(real_boxes), 2, axis=0), np.array(synth_boxes), atol=1 / 24 + 1e-9)
    # ids are fresh, and the source study is recorded for the privacy audit apart from the manifest
    assert not set(synth.manifest["image_id"]) & set(real.manifest["image_id"])
    extra = [json.loads(e) for e in synth.manifest["extra"]]
    assert not any("source_study_id" in e or "source_image_id" in e for e in extra)
    sources = read_training_sources(tmp_path / "synth")
    assert set(sources) == set(synth.manifest["image_id"])
    assert {study for study, _ in sources.values()} == set(train["study_id"])
    # a right-breast image is stored in the canonical frame: the pipeline's display image mirrored back
    from mammosynth.conditions import Conditions

    k = int(np.nonzero((synth.manifest["laterality"] == "R").to_numpy())[0][0])
    info = extra[k]
    shown = pipe(conditions=[Conditions.from_dict(info["conditions"])], num_inference_steps=2, guidance_scale=2.0,
                 generator=[torch.Generator().manual_seed(info["seed"])]).images[0]
    stored, shown = synth.frames([k])[0].astype(int), shown.astype(int)
    assert np.abs(stored - np.fliplr(shown)).max() <= 2  # batch-size float rounding only
    assert np.abs(stored - shown).max() > 1000


def test_privacy_gate_resample_and_drop(like, tmp_path):
    settings = dict(num_inference_steps=1, batch_size=4, limit=6)
    resampled = generate_set(gated_pipe(CountingGate(2)), like, tmp_path / "r", settings=GenerationSettings(**settings),
                             progress=False)
    assert (resampled["flagged"], resampled["resampled"], resampled["dropped"], resampled["written"]) == (2, 2, 0, 6)
    attempts = [json.loads(e)["attempt"] for e in load_prepared(tmp_path / "r").manifest["extra"]]
    assert sorted(attempts)[-2:] == [1, 1]
    dropped = generate_set(gated_pipe(CountingGate(2)), like, tmp_path / "d",
                           settings=GenerationSettings(privacy="drop", **settings), progress=False)
    assert (dropped["dropped"], dropped["written"]) == (2, 4)
    assert len(load_prepared(tmp_path / "d").manifest) == 4
    assert json.loads((tmp_path / "d" / "generation_report.json").read_text())["dropped"] == 2
    with pytest.raises(ValueError, match="no privacy verdict"):
        generate_set(gated_pipe(None), like, tmp_path / "x", settings=GenerationSettings(**settings), progress=False)
    ungated = generate_set(gated_pipe(None), like, tmp_path / "u", settings=GenerationSettings(privacy="off", **settings),
                           progress=False)
    assert ungated["written"] == 6 and load_prepared(tmp_path / "u").meta["privacy_gated"] is False


def test_resumes_after_a_crash(like, tmp_path):
    settings = GenerationSettings(num_inference_steps=1, batch_size=3, limit=7)

    def crash(done, total):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_set(gated_pipe(CountingGate(0)), like, tmp_path / "s", settings=settings, progress=False, on_batch=crash)
    report = generate_set(gated_pipe(CountingGate(0)), like, tmp_path / "s", settings=settings, progress=False)
    assert report["already_done"] == 3 and report["written"] == 4
    manifest = load_prepared(tmp_path / "s").manifest
    assert len(manifest) == 7 and manifest["image_id"].is_unique


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="privacy must be one of"):
        GenerationSettings(privacy="maybe")
    with pytest.raises(ValueError, match="copies"):
        GenerationSettings(copies=0)


def test_shards_merge_into_the_single_process_set(like, tmp_path):
    from mammosynth.evaluation.generate_set import merge_shards, shard_folder

    settings = GenerationSettings(num_inference_steps=2, guidance_scale=2.0, batch_size=1, seed=5, copies=1)
    single = generate_set(gated_pipe(CountingGate(0)), like, tmp_path / "one", settings=settings, progress=False)
    out = tmp_path / "many"
    with pytest.raises(ValueError, match="shard 0 of 3 .* missing or unfinished"):
        merge_shards(out, 3, like, settings=settings)
    sizes = []
    for k in range(3):
        report = generate_set(gated_pipe(CountingGate(0)), like, shard_folder(out, k, 3), settings=settings,
                              progress=False, shard=(k, 3))
        sizes.append(report["written"])
    merged = merge_shards(out, 3, like, settings=settings)
    one, many = load_prepared(tmp_path / "one"), load_prepared(out)
    assert merged["written"] == single["written"] == sum(sizes) == len(many.manifest) and min(sizes) > 0
    assert merged["shards"] == 3 and not (out / ".shards").exists()
    # same rows in the same (plan) order, same pixels: sharding changes nothing but the speed
    cols = ["image_id", "study_id", "split", "birads", "density", "lesion", "view", "laterality", "findings", "extra"]
    assert one.manifest[cols].astype(str).equals(many.manifest[cols].astype(str))
    assert np.array_equal(np.asarray(one.images), np.asarray(many.images))
    with pytest.raises(ValueError, match="0 <= k < n"):
        generate_set(gated_pipe(CountingGate(0)), like, tmp_path / "bad", settings=settings, shard=(3, 3))


def test_generate_set_cli_runs_data_parallel_under_torchrun(like, tmp_path):
    """Two CPU processes under torchrun: each makes half, rank 0 merges (what accelerate launch runs)."""
    import os
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt"
    gated_pipe().save_pretrained(ckpt)
    out = tmp_path / "synth"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mammosynth",
           "generate-set", "--checkpoint", str(ckpt), "--like", str(like), "--out", str(out), "--steps", "2",
           "--batch-size", "4", "--privacy", "off", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    synth, real = load_prepared(out), load_prepared(like)
    assert len(synth.manifest) == len(real.split("training")) and synth.meta["shards"] == 2
    assert json.loads(result.stdout)["written"] == len(synth.manifest)


def test_the_set_records_the_checkpoint_fingerprint(like, tmp_path):
    from mammosynth.pipelines.checkpoint import fingerprint

    pipe = gated_pipe(CountingGate(0))
    pipe.save_pretrained(tmp_path / "ckpt")
    settings = GenerationSettings(num_inference_steps=1, batch_size=4, limit=2)
    generate_set(pipe, like, tmp_path / "synth", settings=settings, checkpoint=str(tmp_path / "ckpt"), progress=False)
    meta = load_prepared(tmp_path / "synth").meta
    assert meta["checkpoint_sha256"] == fingerprint(tmp_path / "ckpt") is not None
