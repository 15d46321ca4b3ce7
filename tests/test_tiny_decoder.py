"""The tiny decoder (models.tiny_decoder) and ``mammosynth distill-decoder`` (training.train_tiny_decoder)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from safetensors.torch import load_file

from mammosynth.cli import main as cli
from mammosynth.models.autoencoder import decode, encode
from mammosynth.models.tiny_decoder import (build_tiny_decoder, measure_tiny_decoder, tiny_decode,
                                            tiny_decoder_output)
from mammosynth.pipelines.testing import tiny_modules
from mammosynth.training import train_tiny_decoder

STEPS = 12
TINY_RUN = ["--num_threads", "1", "--no_progress", "--logging_steps", "1", "--validation_steps", "6",
            "--checkpointing_steps", "6", "--checkpoints_total_limit", "0", "--measure_threads", "1",
            "--eval_images", "4", "--train_batch_size", "4", "--learning_rate", "3e-3"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A folder with a tiny random 64x48 VAE in vae/ (4 latent channels), as a pipeline folder has."""
    vae, _, _ = tiny_modules(64, 48, latent_channels=4)
    root = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    vae.save_pretrained(root / "vae")
    return root


@pytest.fixture(scope="module")
def vae(checkpoint) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(checkpoint / "vae", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def run(checkpoint, prepared_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert cli(["distill-decoder", "--checkpoint", str(checkpoint), "--data", str(prepared_root), "--out", str(out),
                "--max_train_steps", str(STEPS), *TINY_RUN]) == 0
    return out


def frames_of(prepared_root, n: int = 4) -> torch.Tensor:
    from mammosynth.data.dataset import to_unit_range
    from mammosynth.data.prepared import load_prepared

    data = load_prepared(prepared_root)
    return to_unit_range(data.frames(data.split("test")["index"].to_numpy()[:n])[:, None])


def test_tiny_decode_takes_model_space_latents_and_gives_unit_range_images(vae, prepared_root):
    tiny = build_tiny_decoder(vae)
    latents = encode(vae, frames_of(prepared_root))   # model space, as the UNet makes them
    images = tiny_decode(tiny, latents)
    assert images.shape == (4, 64, 48) and images.dtype == torch.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    # in: the latents as they are (scaling 1, shift 0; DecoderTiny's own tanh clamp); out: [-1, 1] back to [0, 1]
    with torch.no_grad():
        expected = ((tiny.decoder(latents)[:, 0] + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(images, expected)
    # the output convention: a last layer that always draws 0.3 in TAESD's [0, 1] gives 0.3
    with torch.no_grad():
        last = tiny.decoder.layers[-1]
        last.weight.zero_()
        last.bias.fill_(0.3)
    torch.testing.assert_close(tiny_decode(tiny, latents), torch.full((4, 64, 48), 0.3))
    assert tiny_decoder_output(tiny, latents).shape == (4, 1, 64, 48)


def test_tiny_decoder_is_an_autoencoder_tiny_with_one_upsampling_per_vae_scale(vae):
    tiny = build_tiny_decoder(vae, widths=8, num_blocks=(1, 1, 1, 0))
    assert isinstance(tiny, AutoencoderTiny)
    assert tiny.config.latent_channels == 4 and tiny.config.in_channels == tiny.config.out_channels == 1
    assert len(tiny.config.num_decoder_blocks) - 1 == 3 and tiny.config.upsampling_scaling_factor == 2   # f = 8
    out = tiny_decoder_output(tiny, torch.randn(2, 4, 5, 3))
    assert out.shape == (2, 1, 40, 24)


def test_bad_shapes_are_refused_with_what_was_expected(vae):
    tiny = build_tiny_decoder(vae)
    with pytest.raises(ValueError, match=r"\(N, 4, h, w\), got \(1, 3, 8, 6\)"):
        tiny_decode(tiny, torch.zeros(1, 3, 8, 6))
    with pytest.raises(ValueError, match="same positive width"):
        build_tiny_decoder(vae, widths=(16, 8, 8, 8))
    with pytest.raises(ValueError, match="4 widths and 4 block counts"):
        build_tiny_decoder(vae, num_blocks=(1, 1, 0))


def test_measure_counts_every_convolution(vae):
    tiny = build_tiny_decoder(vae, widths=8, num_blocks=(1, 1, 1, 0))
    flops = []

    def count(module, inputs, output):   # 2 FLOP per multiply-add of a convolution
        flops.append(2 * output.numel() * module.in_channels // module.groups * np.prod(module.kernel_size))

    hooks = [m.register_forward_hook(count) for m in tiny.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        tiny.decoder(torch.zeros(1, 4, 8, 6))
    for hook in hooks:
        hook.remove()
    threads = torch.get_num_threads()
    cost = measure_tiny_decoder(tiny, 64, 48, threads=1, repeats=3, warmup=1)
    assert cost["gflop_per_image"] == pytest.approx(sum(flops) / 1e9, rel=1e-3)
    assert cost["ms_per_image"] > 0 and cost["threads"] == 1 and cost["batch_size"] == 1
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="divisible by 8 but are 60 and 48"):
        measure_tiny_decoder(tiny, 60, 48)


def test_distillation_lowers_the_error_to_the_full_decoder(run, vae, prepared_root):
    latents = encode(vae, frames_of(prepared_root))
    with torch.no_grad():
        full = (decode(vae, latents).clamp(-1, 1)[:, 0] + 1) / 2
    torch.manual_seed(0)   # the run's --seed: the same initial weights
    untrained = build_tiny_decoder(vae)
    trained = AutoencoderTiny.from_pretrained(run / "tiny_vae")
    before = (tiny_decode(untrained, latents) - full).abs().mean()
    after = (tiny_decode(trained, latents) - full).abs().mean()
    assert after < 0.7 * before, (float(before), float(after))
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert float(rows[-1]["l1"]) < 0.7 * float(rows[0]["l1"])


def test_run_folder_records_what_it_distilled_and_how_well(run, checkpoint, prepared_root):
    from mammosynth.training.train_ldm import _file_sha

    record = json.loads((run / "tiny_vae" / "distill.json").read_text())
    assert record["vae"]["sha256"] == _file_sha(checkpoint / "vae")
    assert record["steps"] == STEPS and record["cpu_minutes"] is not None
    report = record["reconstruction"]
    assert report["split"] == "test" and report["images"] == 4
    for pair in ("tiny_vs_full", "full_vs_real", "tiny_vs_real"):
        assert np.isfinite(report[pair]["psnr"]) and -1 <= report[pair]["ssim"] <= 1
    tiny_cost, full_cost = record["cost"]["tiny"], record["cost"]["full_decoder"]
    assert tiny_cost["batch_size"] == 1 and tiny_cost["threads"] == 1
    assert tiny_cost["gflop_per_image"] > 0 and full_cost["gflop_per_image"] > 0   # (the test VAE is tinier)
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "tiny-decoder" and info["finished"] and info["vae"]["sha256"] == record["vae"]["sha256"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-12", "checkpoint-6"]
    assert (run / "validation" / "step-000006.png").is_file()


def test_saved_folder_loads_and_gives_the_measured_output(run, vae, prepared_root):
    from mammosynth.data.prepared import load_prepared

    loaded = AutoencoderTiny.from_pretrained(run / "tiny_vae")
    data = load_prepared(prepared_root)
    frames = data.frames(data.split("test")["index"].to_numpy()[:4])
    again = train_tiny_decoder.reconstruction_report(loaded, vae, frames)
    recorded = json.loads((run / "tiny_vae" / "distill.json").read_text())["reconstruction"]
    for pair in ("tiny_vs_full", "tiny_vs_real"):
        assert again[pair]["psnr"] == pytest.approx(recorded[pair]["psnr"], abs=1e-3)
        assert again[pair]["ssim"] == pytest.approx(recorded[pair]["ssim"], abs=1e-4)
    # the saved weights are the EMA of the last step (the EMA state in the last checkpoint)
    ema = torch.load(run / "checkpoints" / f"checkpoint-{STEPS}" / "custom_checkpoint_0.pkl", weights_only=False)
    rebuilt = build_tiny_decoder(vae)
    with torch.no_grad():
        for param, value in zip(rebuilt.parameters(), ema["shadow_params"], strict=True):
            param.copy_(value)
    latents = encode(vae, frames_of(prepared_root))
    torch.testing.assert_close(tiny_decode(loaded, latents), tiny_decode(rebuilt, latents))
    assert not torch.allclose(tiny_decode(loaded, latents), tiny_decode(build_tiny_decoder(vae), latents))


def test_resume_continues_the_step_count_exactly(run, checkpoint, prepared_root, tmp_path):
    killed = tmp_path / "tiny"   # the run as it was when killed after checkpoint-6
    killed.mkdir()
    shutil.copytree(run / "checkpoints" / "checkpoint-6", killed / "checkpoints" / "checkpoint-6")
    for name in ("run.json", "log.csv", "latents.pt"):
        shutil.copy(run / name, killed / name)
    assert cli(["distill-decoder", "--checkpoint", str(checkpoint), "--data", str(prepared_root), "--out",
                str(killed), "--max_train_steps", str(STEPS), "--resume_from_checkpoint", "latest", "--save_fp16",
                *TINY_RUN]) == 0
    assert [int(r["step"]) for r in csv.DictReader(open(killed / "log.csv"))] == list(range(1, STEPS + 1))
    full = load_file(run / "checkpoints" / f"checkpoint-{STEPS}" / "model.safetensors")
    resumed = load_file(killed / "checkpoints" / f"checkpoint-{STEPS}" / "model.safetensors")
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6)
    saved = load_file(killed / "tiny_vae" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float16}
    assert json.loads((killed / "tiny_vae" / "distill.json").read_text())["steps"] == STEPS


def test_bad_input_names_the_input(checkpoint, prepared_root, vae, tmp_path, capsys):
    empty = tmp_path / "no-vae"
    empty.mkdir()
    assert cli(["distill-decoder", "--checkpoint", str(empty), "--data", str(prepared_root), "--out",
                str(tmp_path / "a"), "--max_train_steps", "1", *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {empty} has no VAE" in err and "vae" in err
    assert not (tmp_path / "a").exists()
    other = tmp_path / "tiny-3"   # a tiny decoder for 3 latent channels; this VAE makes 4
    wrong, _, _ = tiny_modules(64, 48, latent_channels=3)
    build_tiny_decoder(wrong).save_pretrained(other)
    assert cli(["distill-decoder", "--checkpoint", str(checkpoint), "--data", str(prepared_root), "--out",
                str(tmp_path / "b"), "--max_train_steps", "1", "--init_tiny_decoder", str(other), *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert f"--init_tiny_decoder {other} takes 3 latent channels, but the VAE makes 4" in err


def test_a_run_folder_refuses_another_vae(run, prepared_root, tmp_path, capsys):
    other_vae, _, _ = tiny_modules(64, 48, seed=1, latent_channels=4)
    other_vae.save_pretrained(tmp_path / "other" / "vae")
    assert cli(["distill-decoder", "--checkpoint", str(tmp_path / "other"), "--data", str(prepared_root), "--out",
                str(run), "--max_train_steps", str(STEPS + 1), *TINY_RUN]) == 2
    assert "use a new --out" in capsys.readouterr().err
