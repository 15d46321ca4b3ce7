"""GPU presets (issue 24): resolution of options, the --dry-run figures, and the sharded latent cache."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mammosynth.training import presets

ROOT = Path(__file__).resolve().parents[1]


def test_old_presets_keep_their_defaults_and_gpu_presets_fill_only_what_is_left_out():
    from mammosynth.training.options import ldm_parser, vae_parser

    bundled = presets.resolve_training_options(vae_parser().parse_args(["--data", "d", "--out", "o"]), "vae")
    assert (bundled.train_batch_size, bundled.mixed_precision, bundled.crop, bundled.latent_channels,
            bundled.gradient_checkpointing) == (8, "no", "128x96", None, False)
    ldm = presets.resolve_training_options(ldm_parser().parse_args(["--preset", "tiny"]), "ldm")
    assert (ldm.train_batch_size, ldm.mixed_precision, ldm.latent_shard_size) == (16, "no", 0)
    gpu = presets.resolve_training_options(
        ldm_parser().parse_args(["--preset", "vindr-1024", "--train_batch_size", "3"]), "ldm")
    assert (gpu.train_batch_size, gpu.mixed_precision, gpu.gradient_checkpointing, gpu.latent_shard_size) == (
        3, "bf16", True, 2048)
    with pytest.raises(ValueError, match="--preset must be one of"):
        presets.resolve_training_options(ldm_parser().parse_args(["--preset", "vindr-2048"]), "ldm")


def test_bundled_architectures_are_unchanged():
    from mammosynth.models.autoencoder import VAE_PRESETS
    from mammosynth.models.unet import UNET_PRESETS

    assert UNET_PRESETS["bundled"] == {"block_out_channels": (32, 64, 128), "layers_per_block": 1,
                                       "attention_levels": (False, True, True), "norm_num_groups": 32,
                                       "attention_head_dim": 32}
    assert VAE_PRESETS["bundled"] == {"block_out_channels": (16, 32, 64, 64), "layers_per_block": 1,
                                      "norm_num_groups": 16}


@pytest.mark.parametrize("network", ["vae", "ldm", "siamese", "encoder"])
def test_dry_run_prints_params_flops_and_memory_and_writes_nothing(network, tmp_path: Path):
    command = [sys.executable, "-m", "mammosynth", f"train-{network}", "--preset", "vindr-tiny", "--dry-run"]
    command += ["--threads", "1"] if network == "encoder" else ["--num_threads", "1"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "M trainable" in out and "GFLOP per image" in out and "expected memory per GPU at batch" in out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_figures_follow_the_network_and_the_batch():
    from mammosynth.training.dry_run import dry_run
    from mammosynth.training.options import ldm_parser

    args = presets.resolve_training_options(ldm_parser().parse_args(["--preset", "vindr-tiny"]), "ldm")
    result = dry_run(args, "ldm", echo=False)
    unet_params = sum(p.numel() for p in __import__("mammosynth.models.unet", fromlist=["x"]).build_unet(
        sample_size=(8, 6), latent_channels=8, **presets.architecture("ldm", "tiny")).parameters())
    assert result.trainable_params > unet_params   # + the condition encoder
    assert result.train_gflop_per_image > 2 * result.forward_gflop_per_image > 0
    assert result.activation_bytes_per_image > 0 and result.gradient_checkpointing and result.precision == "bf16"
    expected = 16 * result.trainable_params + 4 * result.trainable_params + 4 * result.frozen_params \
        + result.activation_bytes_per_image * args.train_batch_size
    assert result.expected_bytes == pytest.approx(expected)


def test_missing_data_is_a_clear_error_without_dry_run(capsys):
    from mammosynth.cli import main

    assert main(["train-vae", "--preset", "vindr-512"]) == 2
    assert "--data and --out are required (or pass --dry-run" in capsys.readouterr().err


def test_gpu_hour_plan_counts_the_stages_from_flops():
    from mammosynth.training.dry_run import plan

    rows = plan("vindr-512", train_images=16_000, processes=8)
    by_stage = {r["stage"]: r for r in rows}
    assert {"train-vae", "train-ldm", "train-siamese", "generate-set", "build-index"} <= set(by_stage)
    ldm = by_stage["train-ldm"]
    assert 5 < ldm["gpu_hours"] < 500   # 200k steps x 1,024 images x ~175 GFLOP at 35 % of 989 TFLOP/s ≈ 29 h
    assert plan("vindr-512", 16_000, 8, steps={"ldm": 100_000})[1]["gpu_hours"] == pytest.approx(ldm["gpu_hours"] / 2)


def test_sharded_latent_cache_holds_what_the_single_file_cache_holds(prepared_root, tmp_path: Path):
    from accelerate import Accelerator
    from diffusers import AutoencoderKL

    from mammosynth.data.dataset import PreparedDataset
    from mammosynth.data.prepared import load_prepared
    from mammosynth.models.autoencoder import build_vae, channel_stats
    from mammosynth.training.latent_cache import LatentShards
    from mammosynth.training.train_ldm import _latent_cache

    torch.manual_seed(0)
    vae: AutoencoderKL = build_vae(**presets.architecture("vae", "tiny")).eval()
    train = PreparedDataset(load_prepared(prepared_root), split="training")
    accelerator = Accelerator(cpu=True)
    (tmp_path / "one").mkdir()
    whole = _latent_cache(accelerator, vae, train, tmp_path / "one", key="k")
    shards = _latent_cache(accelerator, vae, train, tmp_path / "many", key="k", shard_size=3)
    assert isinstance(shards, LatentShards) and len(shards) == len(whole["mean"])
    assert len(list((tmp_path / "many" / "latents").glob("shard-*.safetensors"))) == -(-len(train) // 3)
    for i in range(len(shards)):
        item = shards[i]
        assert set(item) == {k for k in whole if k != "key"}
        for name, value in item.items():   # the VAE runs on other batch sizes: equal up to float rounding
            assert value.dtype == whole[name].dtype and torch.allclose(value, whole[name][i], atol=1e-5), (i, name)
    mean, std = shards.channel_stats()
    ref_mean, ref_std = channel_stats(whole["mean"])
    assert mean == pytest.approx(ref_mean, rel=1e-6, abs=1e-9) and std == pytest.approx(ref_std, rel=1e-6)
    # resumable: a second call encodes nothing (the shards' files are kept as they are)
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "many" / "latents").glob("shard-*")}
    _latent_cache(accelerator, vae, train, tmp_path / "many", key="k", shard_size=3)
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "many" / "latents").glob("shard-*")}
    with pytest.raises(ValueError, match="made for another VAE or dataset"):
        LatentShards(tmp_path / "many" / "latents", key="other")
