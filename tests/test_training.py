"""VAE and LDM training from scratch on a tiny prepared set, exact resume, sample CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mammosynth.cli import main as cli
from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline, PrivacyGateMissingError
from mammosynth.training import common, options, train_ldm, train_vae
from mammosynth.training.loop import TensorDictDataset
from mammosynth.data.toy import write_toy_dataset
from mammosynth.models.autoencoder import swap_decoder
from mammosynth.models.denoiser import ConditionalDenoiser

TINY_VAE = ["--preset", "tiny", "--crop", "32x24", "--train_batch_size", "2", "--num_threads", "1", "--no_progress",
            "--logging_steps", "1", "--validation_steps", "2", "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "0", "--scaling_images", "8", "--eval_images", "4"]
TINY_LDM = ["--preset", "tiny", "--embed_dim", "8", "--train_batch_size", "4", "--num_threads", "1", "--no_progress",
            "--logging_steps", "1", "--validation_steps", "2", "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "0", "--validation_inference_steps", "2", "--num_validation_images", "2"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "prepared", 16, height=64, width=48)


@pytest.fixture(scope="module")
def vae_run(toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert cli(["train-vae", "--data", str(toy), "--out", str(out), "--max_train_steps", "4", *TINY_VAE]) == 0
    return out


@pytest.fixture(scope="module")
def ldm_run(toy, vae_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ldm"
    assert cli(["train-ldm", "--data", str(toy), "--vae", str(vae_run), "--out", str(out),
                "--max_train_steps", "4", "--save_fp16", *TINY_LDM]) == 0
    return out


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_toy_dataset_has_lesions_and_both_splits(toy):
    from mammosynth.data.dataset import PreparedDataset

    train, test = PreparedDataset(toy, "training"), PreparedDataset(toy, "test")
    assert len(train) == 12 and len(test) == 4
    assert any(float(train[i]["mask"].sum()) > 0 for i in range(len(train)))


def test_vae_run_folder_has_everything(vae_run, toy):
    run = json.loads((vae_run / "run.json").read_text())
    assert run["kind"] == "vae" and run["finished"]
    assert run["data"]["manifest_sha256"] == common.manifest_sha256(toy)
    assert "torch" in run["versions"] and "diffusers" in run["versions"]
    assert "git_sha" in run and run["config"]["max_train_steps"] == 4
    config = json.loads((vae_run / "vae" / "config.json").read_text())
    assert config["in_channels"] == 1 and config["latent_channels"] == 4
    assert config["scaling_factor"] != 1.0 and config["scaling_factor"] > 0
    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["images"] == 4 and np.isfinite(metrics["psnr"])
    assert 0 < metrics["ssim"] <= 1
    assert [int(r["step"]) for r in read_log(vae_run / "log.csv")] == [1, 2, 3, 4]
    assert (vae_run / "validation" / "step-000002.png").exists()
    assert sorted(p.name for p in (vae_run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]


def test_vae_resume_matches_an_uninterrupted_run(vae_run, tmp_path):
    # Simulate a run killed after checkpoint-2: copy the folder as it was at that point.
    killed = tmp_path / "vae"
    killed.mkdir()
    shutil.copytree(vae_run / "checkpoints" / "checkpoint-2", killed / "checkpoints" / "checkpoint-2")
    shutil.copy(vae_run / "run.json", killed / "run.json")
    shutil.copy(vae_run / "log.csv", killed / "log.csv")  # rows after step 2 must be dropped and redone
    args = train_vae.parse_args(["--data", json.loads((vae_run / "run.json").read_text())["data"]["root"],
                                 "--out", str(killed), "--max_train_steps", "4", *TINY_VAE])
    train_vae.main(args)
    assert [int(r["step"]) for r in read_log(killed / "log.csv")] == [1, 2, 3, 4]
    full = load_file(vae_run / "checkpoints" / "checkpoint-4" / "model.safetensors")
    resumed = load_file(killed / "checkpoints" / "checkpoint-4" / "model.safetensors")
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6)
    invocations = json.loads((killed / "run.json").read_text())["invocations"]
    assert len(invocations) == 2  # the first run and the resume


def test_vae_with_a_patch_gan_logs_both_losses_and_resumes_exactly(toy, tmp_path):
    gan = ["--adv_weight", "0.5", "--adv_start", "1", "--disc_channels", "8", *TINY_VAE]
    full = tmp_path / "full"
    assert cli(["train-vae", "--data", str(toy), "--out", str(full), "--max_train_steps", "4", *gan]) == 0
    rows = read_log(full / "log.csv")
    assert rows[0]["adv_g"] == "" and all(float(r["adv_g"]) > 0 and float(r["adv_d"]) > 0 for r in rows[1:])
    stored = sorted(p.name for p in (full / "checkpoints" / "checkpoint-4").iterdir())
    assert "model_1.safetensors" in stored and "optimizer_1.bin" in stored   # the discriminator and its optimiser
    killed = tmp_path / "killed"
    copy_run_at(full, 2, killed)
    train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(killed), "--max_train_steps", "4", *gan]))
    for name in ("model.safetensors", "model_1.safetensors"):
        a = load_file(full / "checkpoints" / "checkpoint-4" / name)
        b = load_file(killed / "checkpoints" / "checkpoint-4" / name)
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    # the adversarial term is the generator's least-squares loss against "real", weighted
    from mammosynth.models.autoencoder import VAE_PRESETS, build_vae

    torch.manual_seed(0)
    vae, disc = build_vae(sample_size=32, **VAE_PRESETS["tiny"]), train_vae.build_discriminator(8)
    images = torch.rand(2, 1, 32, 24) * 2 - 1
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain, _ = train_vae.vae_loss(vae, images, 0.5, 0.0, g())
    with_adv, parts, recon = train_vae.vae_loss(vae, images, 0.5, 0.0, g(), discriminator=disc, adv_weight=0.5,
                                                return_reconstruction=True)
    with torch.no_grad():
        expected = ((disc(recon)[-1] - 1) ** 2).mean()   # least squares on the raw patch logits
    assert parts["adv_g"] == pytest.approx(expected.item(), rel=1e-5)
    assert with_adv.item() == pytest.approx(plain.item() + 0.5 * expected.item(), rel=1e-5)
    with_adv.backward()
    assert all(p.grad is None for p in disc.parameters())   # the generator step leaves the discriminator alone
    # adaptive: the weight makes the adversarial gradient at the decoder's last layer adv_weight × the
    # reconstruction gradient there
    vae.zero_grad()
    adaptive, parts_a = train_vae.vae_loss(vae, images, 0.5, 0.0, g(), discriminator=disc, adv_weight=0.5,
                                           adv_adaptive=True)
    last = vae.decoder.conv_out.weight
    with_adv_grad = torch.autograd.grad(adaptive, last, retain_graph=True)[0]
    rec_grad = torch.autograd.grad(train_vae.vae_loss(vae, images, 0.5, 0.0, g())[0], last)[0]
    adv_part = (with_adv_grad - rec_grad) / parts_a["adv_lambda"]
    expected_lambda = 0.5 * rec_grad.norm().item() / (adv_part.norm().item() + 1e-4)
    assert parts_a["adv_lambda"] == pytest.approx(expected_lambda, rel=1e-3)
    assert plain.item() == pytest.approx(adaptive.item() - parts_a["adv_lambda"] * parts_a["adv_g"], rel=1e-5)
    d_loss = train_vae.discriminator_loss(disc, images, recon)
    with torch.no_grad():
        manual = 0.5 * (disc(recon)[-1] ** 2).mean() + 0.5 * ((disc(images)[-1] - 1) ** 2).mean()
    assert d_loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_ldm_trains_and_saves_a_loadable_fp16_pipeline(ldm_run):
    from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline

    folder = ldm_run / "pipeline"
    for name in ("model_index.json", "vae", "unet", "condition_encoder", "scheduler"):
        assert (folder / name).exists(), name
    stored = load_file(next((folder / "unet").glob("*.safetensors")))
    assert all(t.dtype == torch.float16 for t in stored.values())
    with pytest.raises(PrivacyGateMissingError, match="build-index"):  # saved pipelines require their gate
        MammoLDMPipeline.from_pretrained(folder)(num_inference_steps=2)
    pipe = MammoLDMPipeline.from_pretrained(folder, requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(birads=4, lesion="mass", laterality="R", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images[0].shape == (64, 48) and out.images[0].dtype == np.uint16
    run = json.loads((ldm_run / "run.json").read_text())
    assert run["kind"] == "ldm" and run["metrics"]["steps"] == 4 and run["vae"]["sha256"]
    assert (ldm_run / "validation" / "step-000002.png").exists()
    assert (ldm_run / "latents.pt").exists()


def copy_run_at(run: Path, step: int, out: Path) -> str:
    """A run folder ``out`` holding only ``run``'s checkpoint at ``step`` (as if stopped there); returns its data root."""
    out.mkdir()
    shutil.copytree(run / "checkpoints" / f"checkpoint-{step}", out / "checkpoints" / f"checkpoint-{step}")
    shutil.copy(run / "run.json", out / "run.json")
    return json.loads((run / "run.json").read_text())["data"]["root"]


def test_ldm_resume_matches_an_uninterrupted_run(ldm_run, vae_run, tmp_path):
    killed = tmp_path / "ldm"
    data = copy_run_at(ldm_run, 2, killed)
    args = train_ldm.parse_args(["--data", data, "--vae", str(vae_run), "--out", str(killed),
                                 "--max_train_steps", "4", *TINY_LDM])
    train_ldm.main(args)
    assert [int(r["step"]) for r in read_log(killed / "log.csv")] == [3, 4]
    full = load_file(ldm_run / "checkpoints" / "checkpoint-4" / "model.safetensors")
    resumed = load_file(killed / "checkpoints" / "checkpoint-4" / "model.safetensors")
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6)
    # EMA weights continue too
    ema_full = torch.load(ldm_run / "checkpoints" / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False)
    ema_resumed = torch.load(killed / "checkpoints" / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False)
    assert ema_full["optimization_step"] == ema_resumed["optimization_step"] == 4
    for a, b in zip(ema_full["shadow_params"], ema_resumed["shadow_params"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_ldm_trains_data_parallel_on_two_cpu_processes(toy, vae_run, ldm_run, tmp_path):
    """torchrun (what `accelerate launch` runs) with 2 gloo processes: one run, split batches."""
    import subprocess
    import sys

    out = tmp_path / "ldm2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mammosynth.training.train_ldm", "--data", str(toy), "--vae", str(vae_run), "--out", str(out),
           "--max_train_steps", "4", *TINY_LDM]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("LDM trained 4 steps") == 1  # one run, not two independent ones
    run = json.loads((out / "run.json").read_text())
    assert run["invocations"][-1]["processes"] == 2
    assert len(read_log(out / "log.csv")) == 4
    # rank 0 sees the 1-process run's first batch, but from step 2 the weights carry the other
    # rank's gradients too, so the runs part
    single = [float(r["loss"]) for r in read_log(ldm_run / "log.csv")]
    double = [float(r["loss"]) for r in read_log(out / "log.csv")]
    assert single[0] == double[0] and single[1:] != double[1:]
    pipe = MammoLDMPipeline.from_pretrained(out / "pipeline", requires_privacy_checker=False)
    assert pipe.unet.config.in_channels == MammoLDMPipeline.from_pretrained(
        ldm_run / "pipeline", requires_privacy_checker=False).unet.config.in_channels


def test_siamese_resume_matches_an_uninterrupted_run(toy, tmp_path):
    from mammosynth.training import train_siamese

    tiny = ["--data", str(toy), "--max_train_steps", "4", "--input_size", "48x32", "--embedding_dim", "8",
            "--block_inplanes", "4,4,8,8", "--train_batch_size", "6", "--images_per_study", "2", "--num_threads", "1",
            "--no_progress", "--logging_steps", "1", "--validation_steps", "2", "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "0", "--monitor_images", "4"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    train_siamese.main(train_siamese.parse_args(["--out", str(full), *tiny]))
    copy_run_at(full, 2, killed)
    train_siamese.main(train_siamese.parse_args(["--out", str(killed), *tiny]))
    assert [int(r["step"]) for r in read_log(killed / "log.csv")] == [3, 4]
    a = load_file(full / "checkpoints" / "checkpoint-4" / "model.safetensors")
    b = load_file(killed / "checkpoints" / "checkpoint-4" / "model.safetensors")
    for key in a:   # BatchNorm running statistics too
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    assert read_log(killed / "log.csv")[-1]["test_mean_average_precision_at_r"]   # validated at the last step


def test_max_minutes_picks_the_step_count(toy, tmp_path):
    out = tmp_path / "vae"
    args = train_vae.parse_args(["--data", str(toy), "--out", str(out), "--max_minutes", "0.02",
                                 *[a for a in TINY_VAE]])
    train_vae.main(args)
    state = json.loads((common.latest_checkpoint(out) / "train_state.json").read_text())
    assert state["max_train_steps"] >= 1 and state["done"]
    assert (out / "vae" / "config.json").exists()


def test_sample_cli_writes_png16_and_a_recipe_that_remakes_it(ldm_run, tmp_path):
    from mammosynth.data.export import read_png16, read_recipe

    out = tmp_path / "samples"
    assert cli(["sample", "--checkpoint", str(ldm_run / "pipeline"), "--out", str(out), "--num", "2",
                "--birads", "4", "--density", "C", "--lesion", "mass", "--box", "0.45,0.30,0.60,0.42",
                "--view", "MLO", "--laterality", "L", "--seed", "7", "--steps", "2", "--scheduler", "ddim",
                "--no-privacy-gate"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["sample_seed000007.png", "sample_seed000008.png"]
    image = read_png16(pngs[1])
    assert image.dtype == np.uint16 and image.shape == (64, 48)
    recipe = read_recipe(pngs[1].with_suffix(".json"))
    assert recipe.seed == 8 and recipe.scheduler == "ddim" and recipe.num_inference_steps == 2
    assert recipe.conditions.lesion.value == "mass"
    again = tmp_path / "again"
    assert cli(["sample", "--checkpoint", str(ldm_run / "pipeline"), "--out", str(again),
                "--recipe", str(pngs[1].with_suffix(".json")), "--no-privacy-gate"]) == 0
    assert np.array_equal(read_png16(again / "sample_seed000008.png"), image)


def test_sample_cli_refuses_a_checkpoint_without_its_gate(ldm_run, tmp_path, capsys):
    code = cli(["sample", "--checkpoint", str(ldm_run / "pipeline"), "--out", str(tmp_path / "s"), "--steps", "2"])
    assert code != 0
    err = capsys.readouterr().err
    assert "no privacy checker" in err and "--no-privacy-gate" in err
    assert not list(tmp_path.rglob("*.png"))


def test_vae_lesion_weighting_and_lesion_crops():
    from mammosynth.models.autoencoder import VAE_PRESETS, build_vae

    torch.manual_seed(0)
    vae = build_vae(sample_size=32, **VAE_PRESETS["tiny"])
    images = torch.rand(2, 1, 32, 24) * 2 - 1
    masks = torch.zeros_like(images)
    masks[:, :, 8:16, 8:16] = 1
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain, parts = train_vae.vae_loss(vae, images, 0.0, 0.0, g())
    weighted, _ = train_vae.vae_loss(vae, images, 0.0, 0.0, g(), masks=masks, lesion_weight=4.0)
    with torch.no_grad():
        recon = vae.decode(vae.encode(images).latent_dist.sample(g())).sample
        error = (recon - images).abs()
    expected = (error * (1 + 4 * masks)).mean()
    assert torch.allclose(weighted.detach(), expected, atol=1e-5) and weighted > plain
    # lesion-centred crops contain the lesion centre and stay on the 8-pixel grid
    big = torch.rand(4, 1, 64, 48)
    big_masks = torch.zeros_like(big)
    big_masks[:, :, 50:56, 36:44] = 1
    crops, crop_masks = train_vae._crop_batch(big, (16, 16), torch.Generator().manual_seed(1), big_masks, 1.0)
    assert crops.shape == (4, 1, 16, 16) and crop_masks.shape == (4, 1, 16, 16)
    assert all(m.sum() > 0 for m in crop_masks)
    plain_crops = train_vae._crop_batch(big, (16, 16), torch.Generator().manual_seed(1))
    assert plain_crops.shape == (4, 1, 16, 16)


def test_sample_cli_bad_input_is_an_error_message(ldm_run, tmp_path, capsys):
    code = cli(["sample", "--checkpoint", str(ldm_run / "pipeline"), "--out", str(tmp_path), "--birads", "1",
                "--lesion", "mass"])
    assert code == 2 and "BI-RADS 1" in capsys.readouterr().err
    code = cli(["sample", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_training_bad_input(toy, vae_run, tmp_path):
    with pytest.raises(FileExistsError, match="already has checkpoints"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(vae_run), "--max_train_steps", "4",
                                             *TINY_VAE, "--resume_from_checkpoint", "none"]))
    with pytest.raises(FileNotFoundError, match="run `mammosynth train-vae` first"):
        train_ldm.main(train_ldm.parse_args(["--data", str(toy), "--vae", str(tmp_path), "--out",
                                             str(tmp_path / "l"), "--max_train_steps", "1", *TINY_LDM]))
    with pytest.raises(ValueError, match="--crop"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "v"), "--max_train_steps",
                                             "1", *TINY_VAE, "--crop", "30x20"]))
    with pytest.raises(ValueError, match="--max_train_steps or --max_minutes"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "w"),
                                             *TINY_VAE]))


def test_resume_with_other_data_is_refused(vae_run, tmp_path):
    other = write_toy_dataset(tmp_path / "other", 8, height=64, width=48, seed=1)
    with pytest.raises(ValueError, match="use a new --out"):
        train_vae.main(train_vae.parse_args(["--data", str(other), "--out", str(vae_run), "--max_train_steps", "4",
                                             *TINY_VAE]))


def test_batches_are_a_function_of_the_seed_and_epoch():
    from mammosynth.training.loop import EpochSampler, TensorDictDataset, seeded_dataloader

    def epoch_batches(epoch, seed=3):
        loader = seeded_dataloader(TensorDictDataset({"i": torch.arange(10)}), 4, seed)
        loader.sampler.set_epoch(epoch)
        return [b["i"].tolist() for b in loader]

    assert epoch_batches(0) == epoch_batches(0) and epoch_batches(0) != epoch_batches(1)
    assert sorted(sum(epoch_batches(1), [])) == list(range(10))  # every item once per epoch
    assert [len(b) for b in epoch_batches(0)] == [4, 4, 2]
    assert epoch_batches(0, seed=4) != epoch_batches(0)
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) == sum(epoch_batches(1), [])


def test_siamese_batches_deal_every_study_once_per_epoch():
    from mammosynth.training.train_siamese import StudyBatchSampler

    groups = [np.arange(4 * k, 4 * k + 4) for k in range(12)] + [np.array([48, 49])]
    sampler = StudyBatchSampler(groups, batch_size=32, per_study=3, seed=1, copies=1)
    assert sampler.studies_per_batch == 8 and len(sampler) == 2
    sampler = StudyBatchSampler(groups, batch_size=16, per_study=3, seed=1, copies=1)
    batches = list(sampler)
    assert len(batches) == 4 and batches == list(sampler)
    assert all(len(b) <= 16 for b in batches)
    study_of = {int(p): k for k, g in enumerate(groups) for p in g}
    seen = [sorted({study_of[p] for p in b}) for b in batches]
    assert sorted(sum(seen, [])) == list(range(13))   # each study in one batch of the epoch
    for batch in batches:
        for k in {study_of[p] for p in batch}:
            drawn = [p for p in batch if study_of[p] == k]
            assert len(drawn) == min(3, len(groups[k])) + 1 and len(set(drawn)) == len(drawn) - 1  # one twin
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_parsers_do_not_import_torch():
    import subprocess
    import sys

    code = ("import argparse, sys\nfrom mammosynth.commands import generation\n"
            "generation.register(argparse.ArgumentParser().add_subparsers())\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
    assert options.ldm_parser().parse_args(["--data", "d", "--out", "o", "--vae", "v"]).save_fp16 is False


def test_model_card_sections_come_from_the_component_files(tmp_path):
    from mammosynth.training.model_card import component_sections

    assert component_sections(tmp_path) == ""  # nothing added yet: nothing claimed
    (tmp_path / "privacy_checker").mkdir()
    build = {"siamese_verification": {"n_images": 40, "n_studies": 10, "precision_at_1": 0.975, "r_precision": 0.91,
                                      "mean_average_precision_at_r": 0.905, "verification_auc": 0.99},
             "calibration": {"threshold": 0.8123, "n_images": 40, "false_flag_rate": 0.0, "cv_false_flag_rate": 0.01,
                             "false_flag_upper95": 0.07},
             "index": {"images": 120, "split": "training", "studies": 30, "backend": "exact"},
             "siamese_run": {"argv": ["x", "train-siamese", "--max_train_steps", "9"], "steps": 9, "elapsed_min": 1.0,
                             "all_argv": [["x", "train-siamese", "--max_train_steps", "5"],
                                          ["x", "train-siamese", "--max_train_steps", "9"]]},
             "siamese_relations": {"other-side/other-view": {"pairs": 40, "within_r": 0.625, "median_rank": 2.0}},
             "embedder": {"input_size": [128, 96], "flip_invariant": True, "zoom_tta": [0.9, 1.1]}}
    (tmp_path / "privacy_checker" / "build_report.json").write_text(json.dumps(build))
    (tmp_path / "reports" / "eval").mkdir(parents=True)
    (tmp_path / "reports" / "eval" / "metrics.json").write_text("{}")
    (tmp_path / "reports" / "eval" / "summary.md").write_text("# Evaluation\n\n* FID 12.5 (floor 3.1)\n")
    card = component_sections(tmp_path)
    assert "mAP@R **0.905**" in card and "(target ≥ 0.9: met)" in card and "0.8123" in card
    assert ("trained by `mammosynth train-siamese --max_train_steps 5`, then resumed by "
            "`mammosynth train-siamese --max_train_steps 9` (9 steps, 1 min)") in card
    assert "other-side/other-view 62.5% (median rank 2)" in card
    assert "four flips of the image at 128×96 and of its zooms ×0.9, ×1.1 (`--zoom-tta`)" in card
    assert "* FID 12.5 (floor 3.1)" in card and "\n# Evaluation" not in card


def test_model_card_names_the_leg_that_switched_on_min_snr():
    from mammosynth.training.model_card import ldm_loss_label

    legs = [{"config": {"max_train_steps": 2000}}, {"config": {"max_train_steps": 4400, "snr_gamma": None}},
            {"config": {"max_train_steps": 12000, "snr_gamma": 5.0}}]
    assert ldm_loss_label(legs[:2]) == "ε-prediction MSE"
    assert ldm_loss_label(legs).startswith("ε-prediction MSE; Min-SNR-5 weighting from step 4,400 ")
    assert ldm_loss_label(legs[2:]).startswith("ε-prediction MSE; Min-SNR-5 weighting (")  # on from the start


def test_model_card_says_how_latents_are_scaled():
    from mammosynth.models.autoencoder import build_vae
    from mammosynth.training.model_card import latent_norm_label

    vae = build_vae(**{"block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4})
    vae.register_to_config(scaling_factor=0.5233)
    assert latent_norm_label(vae) == "latents scaled by the VAE scaling_factor 0.5233"
    vae.register_to_config(latents_mean=[1.0, 2.0, 3.0, 4.0], latents_std=[0.5, 0.25, 1.0, 2.0])
    label = latent_norm_label(vae)
    assert "standardised per channel" in label and "std 0.500, 0.250, 1.000, 2.000" in label


def test_model_card_reports_the_fine_tuned_decoder():
    from mammosynth.training.model_card import ldm_loss_label, render_model_card

    base = {"vae": {"psnr": 25.57, "ssim": 0.6376, "images": 400, "elapsed_min": 42.0}, "ldm": {"elapsed_min": 88.0},
            "data": {}, "sizes_mb": {"vae": 1.0, "unet": 1.0, "condition_encoder": 0.1}}
    card = render_model_card(base)
    assert "SSIM **0.6376** (higher is better)." in card and "decoder fine-tune" not in card
    decoder = {"psnr": 26.9, "ssim": 0.7012, "images": 400, "steps": 2000, "elapsed_min": 50.0, "batch": 8,
               "crop": "128x96", "first_loss": 0.5, "final_loss": 0.4, "adv_weight": 0.5, "adv_adaptive": True}
    card = render_model_card({**base, "decoder": decoder})
    assert ("| VAE decoder fine-tune, encoder frozen (same loss + patch-GAN (adaptive weight 0.5, MONAI "
            "PatchDiscriminator), 128x96 crops) | 2000 | 50.0 | 8 | 0.5000 → 0.4000 |") in card
    assert "SSIM **0.6376** with the VAE's own decoder" in card and "SSIM **0.7012** on 400 test images" in card
    assert "in about 180 minutes" in card
    wide = {"psnr": 27.5, "ssim": 0.7321, "images": 400, "steps": 1500, "elapsed_min": 40.0, "batch": 8,
            "crop": "128x96", "first_loss": 0.7, "final_loss": 0.6, "adv_weight": 0.5, "latent_channels": 8}
    first = {"steps": 7000, "elapsed_min": 88.0, "batch": 16, "first_loss": 1.0, "final_loss": 0.08, "loss_label": "x"}
    final = {"steps": 5000, "elapsed_min": 60.0, "batch": 16, "first_loss": 0.3, "final_loss": 0.07, "loss_label": "y",
             "latent_channels": 8}
    card = render_model_card({**base, "decoder": decoder, "wide_vae": wide, "base_ldm": first, "ldm": final})
    assert "| LDM (x, EMA 0.999) | 7000 | 88.0 | 16 | 1.0000 → 0.0800 |" in card
    assert ("| VAE widened to 8 latent channels, encoder and decoder trained (same loss + patch-GAN (adaptive weight "
            "0.5), 128x96 crops) | 1500 | 40.0 | 8 | 0.7000 → 0.6000 |") in card
    assert "| LDM on the 8-channel latents, warm-started from the LDM above (y, EMA 0.999) | 5000 | 60.0 |" in card
    assert "`UNet2DModel` on 8 latent + 1 lesion-mask channels" in card
    assert "widened to 8 latent channels PSNR **27.50 dB**, SSIM **0.7321** on 400 test images" in card
    assert "in about 280 minutes" in card
    # a chain: each later LDM warm-started from the one above, on the wide latents
    middle = {**final, "steps": 4500, "loss_label": "z"}
    card = render_model_card({**base, "decoder": decoder, "wide_vae": wide, "base_ldm": [first, middle],
                              "ldm": {**final, "loss_label": ldm_loss_label(
                                  [{"config": {"max_train_steps": 6000, "snr_gamma": 5.0, "lesion_weight": 8.0}}])}})
    rows = [line for line in card.splitlines() if line.startswith("| LDM")]
    assert rows[0].startswith("| LDM (x, EMA 0.999) | 7000 |") and len(rows) == 3
    assert rows[1].startswith("| LDM on the 8-channel latents, warm-started from the LDM above (z, EMA 0.999) | 4500 |")
    assert rows[2].startswith("| LDM on the 8-channel latents, warm-started from the LDM above (ε-prediction MSE; "
                              "Min-SNR-5 weighting; lesion-box cells weigh ×9 (weighted losses")
    assert "in about 340 minutes" in card


def test_csv_log_widens_for_new_columns_and_truncates_on_resume(tmp_path):
    log = common.CsvLogger(tmp_path / "log.csv")
    log.log(10, {"loss": 0.5})
    log.log(20, {"loss": 0.4, "test_map": 0.25})  # a validation column first seen at step 20
    log.log(30, {"loss": 0.3})
    rows = read_log(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "loss", "test_map"]
    assert [(r["step"], r["loss"], r["test_map"]) for r in rows] == [
        ("10", "0.5", ""), ("20", "0.4", "0.25"), ("30", "0.3", "")]
    log.truncate_after(20)
    assert [r["step"] for r in read_log(tmp_path / "log.csv")] == ["10", "20"]
    assert not (tmp_path / "log.csv.tmp").exists()


def test_plan_steps_lets_a_resume_extend_a_finished_run(tmp_path):
    import argparse

    state = common.TrainState(step=150, max_train_steps=150, done=True)  # stopped (steps or --max_minutes)
    common.plan_steps(state, argparse.Namespace(max_train_steps=300, max_minutes=None), calibrate=lambda: 0)
    assert state.max_train_steps == 300 and not state.done
    fresh = common.TrainState()
    common.plan_steps(fresh, argparse.Namespace(max_train_steps=None, max_minutes=5.0), calibrate=lambda: 42)
    assert fresh.max_train_steps == 42
    with pytest.raises(ValueError, match="--max_train_steps or --max_minutes"):
        common.plan_steps(common.TrainState(), argparse.Namespace(max_train_steps=None, max_minutes=None),
                          calibrate=lambda: 1)


def test_resume_refuses_a_checkpoint_without_its_train_state(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train_state.json"):
        common.resume_state(tmp_path, "latest")
    state, path = common.resume_state(tmp_path / "fresh", "latest")
    assert path is None and state.step == 0


def test_min_snr_weights_match_the_formula():
    from diffusers import DDPMScheduler

    from mammosynth.pipelines.pipeline_mammo_ldm import default_scheduler

    eps = DDPMScheduler.from_config(default_scheduler().config)
    t = torch.tensor([0, 50, 200, 500, 999])
    a = eps.alphas_cumprod[t].double()
    snr = a / (1 - a)
    expected = torch.minimum(snr, torch.full_like(snr, 5.0)) / snr
    torch.testing.assert_close(train_ldm.min_snr_weights(eps, t, 5.0).double(), expected, rtol=1e-5, atol=0)
    assert expected[0] < 0.01 and expected[-1] == 1  # clean timesteps weigh little, noisy ones fully
    v = DDPMScheduler.from_config(eps.config, prediction_type="v_prediction")
    torch.testing.assert_close(train_ldm.min_snr_weights(v, t, 5.0).double(),
                               torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="snr_gamma"):
        train_ldm.min_snr_weights(eps, t, 0.0)



def test_snr_gamma_is_checked_when_the_command_is_parsed(capsys):
    for bad in ("0", "-1", "five"):
        with pytest.raises(SystemExit):
            train_ldm.parse_args(["--data", "d", "--vae", "v", "--out", "o", "--snr_gamma", bad])
        assert f"expected a number > 0, got '{bad}'" in capsys.readouterr().err
    assert train_ldm.parse_args(["--data", "d", "--vae", "v", "--out", "o", "--snr_gamma", "5"]).snr_gamma == 5.0


def tiny_denoiser_and_scheduler(cache: dict):
    """A freshly initialised tiny Denoiser for ``cache``'s latents and the pipeline's training scheduler."""
    from diffusers import DDPMScheduler

    from mammosynth.models.conditioning import ConditionEncoder
    from mammosynth.models.unet import UNET_PRESETS, build_unet, time_embed_dim
    from mammosynth.pipelines.pipeline_mammo_ldm import default_scheduler

    torch.manual_seed(0)
    unet = build_unet(sample_size=tuple(cache["mean"].shape[-2:]), **UNET_PRESETS["tiny"])
    denoiser = ConditionalDenoiser(unet, ConditionEncoder(embed_dim=8, out_dim=time_embed_dim(unet)))
    return denoiser, DDPMScheduler.from_config(default_scheduler().config)


def test_min_snr_loss_reweights_the_plain_loss(ldm_run):
    cache = torch.load(ldm_run / "latents.pt", weights_only=True)
    denoiser, scheduler = tiny_denoiser_and_scheduler(cache)
    batch = TensorDictDataset(cache)[np.arange(8) % len(cache["mean"])]

    def loss(gamma):
        args = train_ldm.parse_args(["--data", "x", "--vae", "x", "--out", "x", "--cond_dropout", "0.1",
                                     *([] if gamma is None else ["--snr_gamma", str(gamma)])])
        with torch.no_grad():
            return train_ldm._training_step(denoiser, scheduler, batch, (torch.zeros(4), torch.ones(4)),
                                            torch.Generator().manual_seed(3), args, "cpu").item()

    plain = loss(None)
    assert loss(1e9) == pytest.approx(plain, rel=1e-5)  # every weight is 1 when gamma exceeds every SNR
    assert loss(0.5) < plain  # timesteps with SNR above gamma are down-weighted


def test_lesion_weight_adds_the_error_inside_the_boxes_even_when_the_lesion_field_is_dropped(ldm_run, capsys):
    masks = torch.zeros(2, 1, 4, 3)
    masks[0, 0, 1:3, 1] = 1.0
    masks[1, 0, 0, 0] = 0.25  # area-averaged edge cell
    weights = train_ldm.lesion_loss_weights(masks, 8.0)
    assert weights[0, 0, 1, 1] == 9 and weights[0, 0, 0, 0] == 1 and weights[1, 0, 0, 0] == 3
    assert torch.equal(train_ldm.lesion_loss_weights(masks, 0.0), torch.ones_like(masks))
    with pytest.raises(ValueError, match="lesion_weight"):
        train_ldm.lesion_loss_weights(masks, -1.0)
    with pytest.raises(SystemExit):
        train_ldm.parse_args(["--data", "d", "--vae", "v", "--out", "o", "--lesion_weight", "-2"])
    assert "expected a number >= 0, got '-2'" in capsys.readouterr().err

    cache = torch.load(ldm_run / "latents.pt", weights_only=True)
    with_lesion = np.flatnonzero(cache["masks"].flatten(1).amax(1) > 0)[:4]
    assert len(with_lesion) == 4
    denoiser, scheduler = tiny_denoiser_and_scheduler(cache)

    def loss(weight, cache=cache):
        # every field dropped: the model gets no mask, but the loss still weighs the true boxes
        args = train_ldm.parse_args(["--data", "x", "--vae", "x", "--out", "x", "--cond_drop_all", "1",
                                     "--lesion_weight", str(weight)])
        with torch.no_grad():
            return train_ldm._training_step(denoiser, scheduler, TensorDictDataset(cache)[with_lesion],
                                            (torch.zeros(4), torch.ones(4)),
                                            torch.Generator().manual_seed(3), args, "cpu").item()

    plain = loss(0)
    assert loss(4) > plain
    assert loss(8) - plain == pytest.approx(2 * (loss(4) - plain), rel=1e-4)  # 1 + w·mask: linear in w
    no_boxes = {**cache, "masks": torch.zeros_like(cache["masks"])}
    assert loss(8, no_boxes) == pytest.approx(loss(0, no_boxes), rel=1e-6)


def test_a_later_ldm_leg_can_switch_on_min_snr(ldm_run, vae_run, tmp_path):
    leg = tmp_path / "ldm"
    data = copy_run_at(ldm_run, 4, leg)
    train_ldm.main(train_ldm.parse_args(["--data", data, "--vae", str(vae_run), "--out", str(leg),
                                         "--max_train_steps", "6", "--snr_gamma", "5", *TINY_LDM]))
    assert [int(r["step"]) for r in read_log(leg / "log.csv")] == [5, 6]
    run = json.loads((leg / "run.json").read_text())
    assert run["invocations"][-1]["config"]["snr_gamma"] == 5.0 and run["metrics"]["steps"] == 6


def test_per_channel_latent_standardisation_round_trips_and_is_checked():
    from mammosynth.models.autoencoder import build_vae, channel_stats, from_model_space, latent_affine, to_model_space

    vae = build_vae(**{"block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4})
    vae.register_to_config(scaling_factor=0.5)
    spread, offset = torch.tensor([2.0, 0.25, 3.0, 1.0]), torch.tensor([1.0, 2.0, 0, -1])
    z = torch.randn(6, 4, 4, 3) * spread.view(1, 4, 1, 1) + offset.view(1, 4, 1, 1)
    torch.testing.assert_close(to_model_space(vae, z), z * 0.5)  # no statistics: the global scale
    mean, std = channel_stats(z)
    assert mean[1] == pytest.approx(float(z[:, 1].mean()), abs=1e-5)
    assert std[2] == pytest.approx(float(z[:, 2].std()), rel=1e-4)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    model = to_model_space(vae, z)
    torch.testing.assert_close(model.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(from_model_space(vae, model), z, atol=1e-5, rtol=0)
    vae.register_to_config(latents_std=[1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="latents_std"):
        latent_affine(vae)
    with pytest.raises(ValueError, match="constant"):
        channel_stats(torch.ones(2, 4, 3, 3))


def test_ldm_with_per_channel_latents_saves_its_statistics(toy, vae_run, tmp_path):
    out = tmp_path / "ldm"
    assert cli(["train-ldm", "--data", str(toy), "--vae", str(vae_run), "--out", str(out), "--max_train_steps", "2",
                "--latent_norm", "channel", *TINY_LDM]) == 0
    cache = torch.load(out / "latents.pt", weights_only=True)
    from mammosynth.models.autoencoder import channel_stats

    mean, std = channel_stats(cache["mean"])
    config = json.loads((out / "pipeline" / "vae" / "config.json").read_text())
    assert config["latents_mean"] == pytest.approx(mean) and config["latents_std"] == pytest.approx(std)
    assert json.loads((vae_run / "vae" / "config.json").read_text()).get("latents_mean") is None  # source VAE kept
    pipe = MammoLDMPipeline.from_pretrained(out / "pipeline", requires_privacy_checker=False)
    data = json.loads((out / "run.json").read_text())["data"]["root"]
    from mammosynth.data.prepared import load_prepared

    prepared = load_prepared(data)
    frames = prepared.frames(prepared.split("training")["index"].to_numpy())
    latents = pipe.encode_images(frames)  # the pipeline works in the standardised space
    torch.testing.assert_close(latents.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-3, rtol=0)
    torch.testing.assert_close(latents.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3, rtol=0)
    image = pipe.decode_latents(latents[:1])
    direct = pipe.vae.decode(pipe.vae.encode(torch.from_numpy(frames[:1].astype(np.float32))[:, None] / 32767.5 - 1)
                             .latent_dist.mode()).sample
    torch.testing.assert_close(image, ((direct[:, 0] + 1) / 2).clamp(0, 1), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="--latent_norm channel"):  # a VAE that carries statistics needs it
        train_ldm.main(train_ldm.parse_args(["--data", data, "--vae", str(out / "pipeline" / "vae"), "--out",
                                             str(tmp_path / "again"), "--max_train_steps", "1", *TINY_LDM]))


def test_decoder_fine_tune_keeps_the_latent_space_and_swaps_into_the_pipeline(toy, ldm_run, tmp_path):
    from diffusers import AutoencoderKL

    pipeline = tmp_path / "pipeline"
    shutil.copytree(ldm_run / "pipeline", pipeline)
    source = AutoencoderKL.from_pretrained(pipeline / "vae", dtype=torch.float32)
    tuned = tmp_path / "decoder"
    assert cli(["train-vae", "--data", str(toy), "--out", str(tuned), "--init_vae", str(pipeline / "vae"),
                "--freeze_encoder", "--max_train_steps", "3", "--learning_rate", "1e-2", *TINY_VAE[2:]]) == 0
    result = AutoencoderKL.from_pretrained(tuned / "vae", dtype=torch.float32)
    before, after = source.state_dict(), result.state_dict()
    for name in before:
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(before[name], after[name]), name
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("decoder."))
    assert result.config.scaling_factor == source.config.scaling_factor

    unet_before = load_file(next((pipeline / "unet").glob("*.safetensors")))
    assert cli(["swap-decoder", "--checkpoint", str(pipeline), "--vae", str(tuned)]) == 0
    swapped = load_file(next((pipeline / "vae").glob("*.safetensors")))
    assert all(t.dtype == torch.float16 for t in swapped.values())
    for name, tensor in swapped.items():
        assert torch.equal(tensor, after[name].half()), name
    unet_after = load_file(next((pipeline / "unet").glob("*.safetensors")))
    assert all(torch.equal(unet_before[n], unet_after[n]) for n in unet_before)
    assert not (tmp_path / "pipeline" / "vae.tmp").exists() and not (tmp_path / "pipeline" / "vae.old").exists()
    pipe = MammoLDMPipeline.from_pretrained(pipeline, requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe(num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0].shape == (64, 48)

    moved = tmp_path / "moved"   # a fine-tune that let the encoder move is refused: its latents differ
    assert cli(["train-vae", "--data", str(toy), "--out", str(moved), "--init_vae", str(pipeline / "vae"),
                "--max_train_steps", "1", "--learning_rate", "1e-2", *TINY_VAE[2:]]) == 0
    with pytest.raises(ValueError, match="scaling_factor=.*not the same latent space"):
        swap_decoder(pipeline, moved)
    with torch.no_grad():   # same config, one encoder weight nudged
        result.encoder.conv_in.weight[0, 0, 0, 0] += 0.5
    result.save_pretrained(tmp_path / "nudged")
    with pytest.raises(ValueError, match="encoder weight encoder.conv_in.weight differs"):
        swap_decoder(pipeline, tmp_path / "nudged")
    with pytest.raises(ValueError, match="--freeze_encoder needs --init_vae"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "x"), "--freeze_encoder",
                                             "--max_train_steps", "1", *TINY_VAE]))
    with pytest.raises(ValueError, match="--adv_weight must be >= 0"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "z"), "--adv_weight", "-1",
                                             "--max_train_steps", "1", *TINY_VAE]))
    with pytest.raises(ValueError, match="--adv_adaptive .* --adv_weight"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "z"), "--adv_adaptive",
                                             "--max_train_steps", "1", *TINY_VAE]))
    with pytest.raises(ValueError, match="cannot resize"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "y"), "--init_vae",
                                             str(tuned), "--block_out_channels", "8,8,8,8", "--max_train_steps", "1",
                                             *TINY_VAE[2:]]))
    with pytest.raises(FileNotFoundError, match="no vae/config.json"):
        swap_decoder(tmp_path / "nowhere", tuned)


def test_a_widened_vae_and_a_warm_started_ldm_train_on_more_latent_channels(toy, ldm_run, tmp_path):
    from diffusers import UNet2DModel

    wide = tmp_path / "wide"
    assert cli(["train-vae", "--data", str(toy), "--out", str(wide), "--init_vae", str(ldm_run / "pipeline" / "vae"),
                "--latent_channels", "6", "--max_train_steps", "2", *TINY_VAE[2:]]) == 0
    config = json.loads((wide / "vae" / "config.json").read_text())
    assert config["latent_channels"] == 6 and config["scaling_factor"] != 1.0 and config["latents_mean"] is None
    ldm = tmp_path / "ldm"
    assert cli(["train-ldm", "--data", str(toy), "--vae", str(wide), "--out", str(ldm), "--init_pipeline", str(ldm_run),
                "--latent_norm", "channel", "--max_train_steps", "2", *TINY_LDM]) == 0
    pipe = MammoLDMPipeline.from_pretrained(ldm / "pipeline", requires_privacy_checker=False)
    assert (pipe.unet.config.in_channels, pipe.unet.config.out_channels) == (7, 6)
    assert len(pipe.vae.config.latents_mean) == 6
    start = UNet2DModel.from_pretrained(ldm_run / "pipeline" / "unet", torch_dtype=torch.float32).state_dict()
    trained = pipe.unet.state_dict()   # warm start: two small steps from the old weights, not a fresh init
    drift = max((trained[k].float() - start[k]).abs().max().item() for k in start if not k.startswith("conv_"))
    assert drift < 0.01
    pipe.set_progress_bar_config(disable=True)
    image = pipe(lesion="mass", box=(0.3, 0.3, 0.6, 0.6), birads=4, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (64, 48) and image.dtype == np.uint16

    with pytest.raises(ValueError, match="can only be widened"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "a"), "--init_vae", str(wide),
                                             "--latent_channels", "4", "--max_train_steps", "1", *TINY_VAE[2:]]))
    with pytest.raises(ValueError, match="--freeze_encoder keeps the latent space"):
        train_vae.main(train_vae.parse_args(["--data", str(toy), "--out", str(tmp_path / "b"), "--init_vae", str(wide),
                                             "--freeze_encoder", "--latent_channels", "8", "--max_train_steps", "1",
                                             *TINY_VAE[2:]]))
    with pytest.raises(ValueError, match="not a saved pipeline or train-ldm run folder"):
        train_ldm.main(train_ldm.parse_args(["--data", str(toy), "--vae", str(wide), "--out", str(tmp_path / "c"),
                                             "--init_pipeline", str(tmp_path), "--latent_norm", "channel",
                                             "--max_train_steps", "1", *TINY_LDM]))
    with pytest.raises(ValueError, match="cannot resize the --init_pipeline UNet"):
        train_ldm.main(train_ldm.parse_args(["--data", str(toy), "--vae", str(wide), "--out", str(tmp_path / "d"),
                                             "--init_pipeline", str(ldm), "--block_out_channels", "8,16",
                                             "--latent_norm", "channel", "--max_train_steps", "1", *TINY_LDM]))
    with pytest.raises(ValueError, match="denoises 6-channel latents; the VAE has 4"):
        train_ldm.main(train_ldm.parse_args(["--data", str(toy), "--vae", str(ldm_run / "pipeline" / "vae"),
                                             "--out", str(tmp_path / "e"), "--init_pipeline", str(ldm),
                                             "--max_train_steps", "1", *TINY_LDM]))


def test_lesion_closeups_show_real_reconstructed_and_generated_lesions_at_their_boxes(ldm_run, tmp_path):
    from PIL import Image

    from mammosynth.data.prepared import load_prepared, row_conditions
    from mammosynth.training.model_card import lesion_closeups, lesion_contrast, render_model_card

    pipe = MammoLDMPipeline.from_pretrained(ldm_run / "pipeline", requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    data = load_prepared(json.loads((ldm_run / "run.json").read_text())["data"]["root"])
    size, per = 16, 2
    result = lesion_closeups(pipe, data, tmp_path, per_type=per, size=size, split="training", steps=2, seed=3)
    rows = data.split("training")
    counts = {k: min(per, int((rows["lesion"] == k).sum())) for k in ("mass", "calcification",
                                                                       "architectural_distortion", "asymmetry")}
    assert {k: v["n"] for k, v in result["lesions"].items()} == counts  # the toy set shows every type
    grid = np.asarray(Image.open(tmp_path / "samples_lesions.png"))
    assert grid.dtype == np.uint16 and grid.shape == (4 * size + 3 * 4, 3 * per * size + 2 * 4)
    for r, (lesion, v) in enumerate(result["lesions"].items()):
        chosen = rows[rows["lesion"] == lesion].iloc[:per]
        strip = grid[r * (size + 4):r * (size + 4) + size]
        real_tiles, recon_tiles = [], []
        conds = [row_conditions(row, data.height, data.width) for row in chosen.to_dict("records")]
        made = pipe(conditions=conds, num_inference_steps=2, guidance_scale=3.0,  # one batch, as lesion_closeups
                    generator=[torch.Generator().manual_seed(3 + k) for k in range(len(conds))]).images
        for k, row in enumerate(chosen.to_dict("records")):
            cond = row_conditions(row, data.height, data.width)
            frame = data.frames([row["index"]])[0]
            shown = frame[:, ::-1] if row["laterality"] == "R" else frame  # display orientation
            x0, y0, x1, y1 = cond.box.to_pixels(data.height, data.width)
            top = int(np.clip((y0 + y1) // 2 - size // 2, 0, data.height - size))
            left = int(np.clip((x0 + x1) // 2 - size // 2, 0, data.width - size))
            real_tiles.append(strip[:, k * size:(k + 1) * size].astype(np.float64) / 65535)
            recon_tiles.append(strip[:, per * size + 4 + k * size:per * size + 4 + (k + 1) * size].astype(np.float64) / 65535)
            np.testing.assert_array_equal(strip[:, k * size:(k + 1) * size], shown[top:top + size, left:left + size])
            at = 2 * (per * size + 4) + k * size
            np.testing.assert_array_equal(strip[:, at:at + size], made[k][top:top + size, left:left + size])
        real_contrast = np.mean([lesion_contrast((data.frames([row["index"]])[0][:, ::-1] if row["laterality"] == "R"
                                                  else data.frames([row["index"]])[0]),
                                                 row_conditions(row, data.height, data.width).box.as_tuple())
                                 for row in chosen.to_dict("records")])
        assert v["contrast_real"] == pytest.approx(real_contrast)
        psnr = np.mean([10 * np.log10(1 / max(np.mean((a - b) ** 2), 1e-12)) for a, b in zip(real_tiles, recon_tiles)])
        assert v["reconstruction_psnr"] == pytest.approx(psnr, abs=1e-3)
        assert -1 <= v["reconstruction_ssim"] <= 1
    card = render_model_card({"vae": {}, "ldm": {}, "data": {}, "lesion_closeups": result,
                              "sizes_mb": {"vae": 1.0, "unet": 1.0, "condition_encoder": 0.1}})
    mass = result["lesions"]["mass"]
    assert f"| mass | {mass['n']} | {mass['contrast_real']:.2f} | {mass['contrast_reconstructed']:.2f} |" in card


def test_latent_spread_compares_generated_with_training_latents(ldm_run):
    from mammosynth.data.prepared import load_prepared
    from mammosynth.models.autoencoder import from_model_space
    from mammosynth.training.model_card import latent_spread, render_model_card

    pipe = MammoLDMPipeline.from_pretrained(ldm_run / "pipeline", requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    data = load_prepared(json.loads((ldm_run / "run.json").read_text())["data"]["root"])
    spread = latent_spread(pipe, data, num_images=4, steps=2)
    frames = data.frames(data.split("training")["index"].to_numpy()[:4])
    real = from_model_space(pipe.vae, pipe.encode_images(frames)).float()
    torch.testing.assert_close(torch.tensor(spread["real_std"]), real.transpose(0, 1).flatten(1).std(dim=1))
    assert len(spread["ratio"]) == 4 and spread["images"] == 4
    assert spread["ratio"] == pytest.approx([g / r for g, r in zip(spread["generated_std"], spread["real_std"])])
    card = render_model_card({"vae": {}, "ldm": {}, "data": {}, "latent_spread": spread,
                              "sizes_mb": {"vae": 1.0, "unet": 1.0, "condition_encoder": 0.1}})
    assert f"**{', '.join(f'{v:.2f}' for v in spread['ratio'])}**" in card


def test_an_f4_vae_trains_and_an_ldm_samples_in_its_latents(toy, tmp_path, capsys):
    """Three blocks give f = 4 (16x12 latents of 64x48 frames); the LDM and pipeline follow the VAE's factor."""
    out = tmp_path / "vae4"
    assert cli(["train-vae", "--data", str(toy), "--out", str(out), "--max_train_steps", "2",
                "--block_out_channels", "8,8,16", *TINY_VAE]) == 0
    assert json.loads((out / "vae" / "config.json").read_text())["block_out_channels"] == [8, 8, 16]
    ldm = tmp_path / "ldm4"
    assert cli(["train-ldm", "--data", str(toy), "--vae", str(out), "--out", str(ldm), "--max_train_steps", "2",
                *TINY_LDM]) == 0
    pipe = MammoLDMPipeline.from_pretrained(ldm / "pipeline", requires_privacy_checker=False)
    assert pipe.vae_scale_factor == 4 and tuple(pipe.unet.config.sample_size) == (16, 12)
    assert pipe(birads=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0].shape == (64, 48)
    assert cli(["train-vae", "--data", str(toy), "--out", str(tmp_path / "bad"), "--max_train_steps", "2",
                "--block_out_channels", "8,8,16,16,32", *TINY_VAE]) == 2
    assert "2 to 4 blocks" in capsys.readouterr().err


def test_side_by_side_shows_real_and_generated_at_one_to_one_and_zoomed(ldm_run, tmp_path):
    from PIL import Image

    from mammosynth.data.prepared import load_prepared, row_conditions
    from mammosynth.training.model_card import side_by_side

    pipe = MammoLDMPipeline.from_pretrained(ldm_run / "pipeline", requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    data = load_prepared(json.loads((ldm_run / "run.json").read_text())["data"]["root"])
    h, w, ch, cw, zoom = data.height, data.width, 16, 12, 3
    result = side_by_side(pipe, data, tmp_path, split="training", zoom=zoom, crop=(ch, cw), steps=2, seed=5)
    labels = [r["label"] for r in result["rows"]]
    assert set(labels) >= {"mass", "calcification", "architectural_distortion", "asymmetry"}
    assert all(label.startswith("density ") for label in labels[:len(labels) - 4])
    grid = np.asarray(Image.open(tmp_path / "samples_side_by_side.png"))
    height = max(h, ch * zoom)
    assert grid.dtype == np.uint16 and grid.shape == (len(labels) * (height + 4) - 4, 2 * w + 2 * cw * zoom + 3 * 4)
    rows = data.split("training").to_dict("records")
    for k, entry in enumerate(result["rows"]):
        label = entry["label"]
        if label.startswith("density "):
            same = [r for r in rows if r["density"] == label[-1]]
            row = next((r for r in same if r["lesion"] == "none"), same[0])
        else:
            row = next(r for r in rows if r["lesion"] == label)
        cond = row_conditions(row, h, w)
        assert entry["conditions"] == cond.to_dict() and "image_id" not in entry
        frame = data.frames([row["index"]])[0]
        real = frame[:, ::-1] if row["laterality"] == "R" else frame
        made = pipe(conditions=[cond], num_inference_steps=2, guidance_scale=3.0,
                    generator=[torch.Generator().manual_seed(5 + k)]).images[0]
        strip = grid[k * (height + 4):k * (height + 4) + height]
        np.testing.assert_array_equal(strip[:h, :w], real)
        np.testing.assert_array_equal(strip[:h, w + 4:2 * w + 4], made)
        top, left = entry["crop_top_left"]
        if cond.box is not None:  # the crop is centred on the lesion box (clipped to the frame)
            x0, y0, x1, y1 = cond.box.to_pixels(h, w)
            assert top == int(np.clip((y0 + y1) // 2 - ch // 2, 0, h - ch))
        zoomed = np.repeat(np.repeat(real[top:top + ch, left:left + cw], zoom, 0), zoom, 1)
        at = 2 * (w + 4)
        np.testing.assert_array_equal(strip[:ch * zoom, at:at + cw * zoom], zoomed)
