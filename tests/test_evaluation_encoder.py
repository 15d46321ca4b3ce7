"""The fidelity encoder: lazy export, training on real labels, save/load, the train-encoder command."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mammosynth
from mammosynth.cli import main
from mammosynth.data.prepared import load_prepared
from mammosynth.evaluation.features import load_fidelity_encoder, train_fidelity_encoder
from mammosynth.data.toy import write_toy_dataset


def test_lazy_export_and_config_round_trip(tmp_path):
    encoder = mammosynth.FidelityEncoder(sample_size=(32, 24), block_out_channels=(8, 16), training_info={"x": 1})
    frames = np.random.default_rng(0).integers(0, 65535, (5, 64, 48), dtype=np.uint16)
    features = encoder.embed(frames, batch_size=2)
    assert features.shape == (5, 16) and features.dtype == np.float64
    encoder.save_pretrained(tmp_path / "fe")
    loaded = load_fidelity_encoder(tmp_path / "fe")
    np.testing.assert_allclose(loaded.embed(frames), features, atol=1e-6)
    assert loaded.config.training_info == {"x": 1}
    # found inside a checkpoint folder too
    encoder.save_pretrained(tmp_path / "ckpt" / "feature_extractor")
    assert isinstance(load_fidelity_encoder(tmp_path / "ckpt"), mammosynth.FidelityEncoder)
    with pytest.raises(FileNotFoundError, match="train-encoder"):
        load_fidelity_encoder(tmp_path / "empty")
    with pytest.raises(ValueError, match="sample_size"):
        mammosynth.FidelityEncoder(sample_size=(4,))


def test_training_learns_the_view_and_records_how(tmp_path):
    data = load_prepared(write_toy_dataset(tmp_path / "real", 96, height=32, width=24, seed=0))
    encoder = train_fidelity_encoder(data, "training", sample_size=(32, 24), block_out_channels=(8, 16, 32),
                                     epochs=6, lr=1e-2, validation_split="test")
    info = encoder.config.training_info
    assert info["n_images"] == len(data.split("training")) and info["split"] == "training"
    assert "density" in info["what"] and "lesion" in info["what"]
    assert info["validation"]["view_accuracy"] > 0.9  # the pectoral triangle is obvious


def test_train_encoder_command(tmp_path, capsys):
    real = write_toy_dataset(tmp_path / "real", 48, height=32, width=24, seed=1)
    out = tmp_path / "ckpt" / "feature_extractor"
    assert main(["train-encoder", "--data", str(real), "--out", str(out), "--sample-size", "32x24",
                 "--channels", "8,16", "--epochs", "1", "--threads", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out) and set(printed["validation"]) >= {"view_accuracy", "cancer_accuracy"}
    assert load_fidelity_encoder(tmp_path / "ckpt").config.sample_size == [32, 24]
    assert main(["train-encoder", "--data", str(real), "--out", str(out), "--sample-size", "big"]) == 2
