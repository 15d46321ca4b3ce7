"""Latent consistency distillation: the guidance embedding, the math of one LCD step, the command and its resume."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mammosynth.cli import main as cli
from mammosynth.models.conditioning import CONDITION_FIELDS, ConditionEncoder, with_guidance_embedding
from mammosynth.models.denoiser import ConditionalDenoiser, EncodedConditions
from mammosynth.pipelines.checkpoint import weights_sha256
from mammosynth.pipelines.testing import tiny_modules, tiny_pipeline
from mammosynth.training import distill

TINY = ["--train_batch_size", "4", "--num_threads", "1", "--no_progress", "--logging_steps", "1",
        "--checkpointing_steps", "2", "--checkpoints_total_limit", "0", "--guidance_embed_dim", "16",
        "--learning_rate", "1e-3", "--lr_warmup_steps", "0", "--lr_scheduler", "constant"]


def _codes(n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = {f: torch.randint(1, 3, (n,), generator=g) for f in CONDITION_FIELDS}
    masks = torch.zeros(n, 1, 8, 6)
    masks[:, :, 2:5, 1:4] = 1
    return codes, masks


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny random 64x48 teacher pipeline folder."""
    folder = tmp_path_factory.mktemp("teacher") / "pipeline"
    tiny_pipeline(seed=3).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def run(teacher, prepared_root, tmp_path_factory) -> Path:
    """``distill`` for 2 steps from the CLI (checkpoint at step 2)."""
    out = tmp_path_factory.mktemp("distill") / "run"
    assert cli(["distill", "--teacher", str(teacher), "--data", str(prepared_root), "--out", str(out),
                "--max_train_steps", "2", *TINY]) == 0
    return out


def _read_log(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---- (a) the guidance embedding ----------------------------------------------------------------


def test_a_new_guidance_embedding_leaves_the_teachers_output_exactly():
    _, unet, encoder = tiny_modules(seed=1)
    student_encoder = with_guidance_embedding(encoder, dim=16)
    assert student_encoder.config.guidance_embed_dim == 16
    assert torch.count_nonzero(student_encoder.guidance_mlp[-1].weight) == 0
    teacher = ConditionalDenoiser(unet, encoder).eval()
    student = ConditionalDenoiser(copy.deepcopy(unet), student_encoder).eval()
    codes, masks = _codes(3)
    x = torch.randn(3, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999, 500, 19])
    with torch.no_grad():
        expected = teacher(x, t, EncodedConditions(codes, masks))
        for w in (torch.tensor([1.0, 3.0, 5.0]), torch.tensor([5.0, 1.5, 2.0])):
            assert torch.equal(student(x, t, EncodedConditions(codes, masks, guidance=w)), expected)
    # the guidance is required by the student's encoder and refused by the teacher's
    with pytest.raises(ValueError, match="guidance"):
        student(x, t, EncodedConditions(codes, masks))
    with pytest.raises(ValueError, match="guidance"):
        teacher(x, t, EncodedConditions(codes, masks, guidance=torch.ones(3)))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        student_encoder(codes, guidance=torch.ones(2))
    with pytest.raises(ValueError, match="already has a guidance embedding"):
        with_guidance_embedding(student_encoder, dim=16)


def test_old_encoder_configs_load_without_a_guidance_embedding(tmp_path):
    _, _, encoder = tiny_modules(seed=2)
    encoder.save_pretrained(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    del config["guidance_embed_dim"]   # as every encoder saved before the option existed
    (tmp_path / "enc" / "config.json").write_text(json.dumps(config))
    loaded = ConditionEncoder.from_pretrained(tmp_path / "enc")
    assert loaded.config.guidance_embed_dim == 0 and loaded.guidance_mlp is None
    codes, _ = _codes(2)
    with torch.no_grad():
        assert torch.equal(loaded(codes), encoder(codes))
    assert set(loaded.state_dict()) == set(encoder.state_dict())


def test_the_trained_student_depends_on_the_guidance_scale(run):
    unet, encoder, _ = distill.load_student(run / "student")
    assert torch.count_nonzero(encoder.guidance_mlp[-1].weight) > 0
    student = ConditionalDenoiser(unet, encoder).eval()
    codes, masks = _codes(2)
    x = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        low = student(x, 500, EncodedConditions(codes, masks, guidance=torch.full((2,), 1.0)))
        high = student(x, 500, EncodedConditions(codes, masks, guidance=torch.full((2,), 5.0)))
    assert (low - high).abs().max() > 1e-6


# ---- (b) the command, its student folder and resume ----------------------------------------------


def test_distill_writes_a_student_that_load_student_loads(run, teacher):
    unet, encoder, scheduler = distill.load_student(run / "student")
    assert type(scheduler).__name__ == "LCMScheduler"
    assert scheduler.config.original_inference_steps == 50
    assert scheduler.config.prediction_type == "epsilon"
    assert scheduler.config.timestep_scaling == 10.0
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 759, 499, 259]
    assert encoder.config.guidance_embed_dim == 16
    assert unet.config.sample_size == [8, 6] or tuple(unet.config.sample_size) == (8, 6)
    record = json.loads((run / "student" / "distill.json").read_text())
    assert record["steps"] == 2 and record["solver_steps"] == 50 and record["skip"] == 20
    assert (record["w_min"], record["w_max"]) == (1.0, 5.0)
    assert record["teacher"]["folder"] == str(teacher)
    assert record["teacher"]["unet_sha256"] == weights_sha256(teacher / "unet")
    assert record["train_minutes"] > 0
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "distill" and info["finished"] and info["teacher"]["unet_sha256"]
    assert [int(r["step"]) for r in _read_log(run / "log.csv")] == [1, 2]


def test_a_second_invocation_resumes_with_the_saved_target_network(run, teacher, prepared_root, tmp_path, monkeypatch):
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    saved = run / "checkpoints" / "checkpoint-2"
    saved_target = torch.load(saved / "custom_checkpoint_0.pkl", weights_only=True)
    saved_student = load_file(saved / "model.safetensors")
    # the target is its own network: an EMA of the student, neither the student nor the teacher's copy
    name = "unet.conv_in.weight"
    assert not torch.equal(saved_target[name], saved_student[name])
    teacher_unet = load_file(next((teacher / "unet").glob("*.safetensors")))
    assert not torch.equal(saved_target[name], teacher_unet["conv_in.weight"])

    seen = []
    real = distill.update_target

    def spy(target, student, decay):
        seen.append({k: v.detach().clone() for k, v in target.state_dict().items()})
        real(target, student, decay)

    monkeypatch.setattr(distill, "update_target", spy)
    assert cli(["distill", "--teacher", str(teacher), "--data", str(prepared_root), "--out", str(resumed),
                "--max_train_steps", "4", *TINY]) == 0
    assert len(seen) == 2   # steps 3 and 4 only
    for key, value in saved_target.items():
        assert torch.equal(seen[0][key], value), key
    assert [int(r["step"]) for r in _read_log(resumed / "log.csv")] == [1, 2, 3, 4]
    assert json.loads((resumed / "student" / "distill.json").read_text())["steps"] == 4

    # and the resumed run is the uninterrupted one, weight for weight
    monkeypatch.setattr(distill, "update_target", real)
    straight = tmp_path / "straight"
    assert cli(["distill", "--teacher", str(teacher), "--data", str(prepared_root), "--out", str(straight),
                "--max_train_steps", "4", *TINY]) == 0
    for part in ("model.safetensors",):
        a = load_file(resumed / "checkpoints" / "checkpoint-4" / part)
        b = load_file(straight / "checkpoints" / "checkpoint-4" / part)
        assert all(torch.equal(a[k], b[k]) for k in a)
    a = torch.load(resumed / "checkpoints" / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=True)
    b = torch.load(straight / "checkpoints" / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- (c) the math of one LCD step ---------------------------------------------------------------


def _schedule():
    from diffusers import DDPMScheduler

    from mammosynth.pipelines.pipeline_mammo_ldm import default_scheduler

    return DDPMScheduler.from_config(default_scheduler().config)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_consistency_output_at_the_boundary_is_the_input(prediction_type):
    c_skip, c_out = distill.boundary_scalings(torch.tensor([0, 19, 999]))
    assert (c_skip[0].item(), c_out[0].item()) == (1.0, 0.0)
    assert c_skip[2] < 1e-6 and abs(c_out[2] - 1) < 1e-6
    alphas = _schedule().alphas_cumprod
    x = torch.randn(2, 4, 8, 6)
    output = torch.randn(2, 4, 8, 6)
    t = torch.zeros(2, dtype=torch.long)
    assert torch.equal(distill.consistency_output(output, t, x, prediction_type, alphas), x)
    # away from the boundary it is (almost) the predicted x0
    t = torch.full((2,), 999)
    x0, _ = distill.to_x0_and_noise(output, t, x, prediction_type, alphas)
    torch.testing.assert_close(distill.consistency_output(output, t, x, prediction_type, alphas), x0,
                               atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_model_output_converts_back_to_the_true_x0_and_noise(prediction_type):
    scheduler = _schedule()
    x0, eps = torch.randn(3, 4, 8, 6), torch.randn(3, 4, 8, 6)
    t = torch.tensor([19, 499, 999])
    noisy = scheduler.add_noise(x0, eps, t)
    output = eps if prediction_type == "epsilon" else scheduler.get_velocity(x0, eps, t)
    got_x0, got_eps = distill.to_x0_and_noise(output, t, noisy, prediction_type, scheduler.alphas_cumprod)
    torch.testing.assert_close(got_x0, x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(got_eps, eps, atol=2e-4, rtol=1e-4)


def test_the_ddim_solver_step_with_the_true_x0_and_noise_lands_on_the_noised_sample():
    scheduler = _schedule()
    solver = distill.DDIMSolver(scheduler.alphas_cumprod, 50)
    assert solver.skip == 20
    assert solver.timesteps[:3].tolist() == [19, 39, 59] and solver.timesteps[-1] == 999
    assert solver.previous[:3].tolist() == [0, 19, 39] and solver.previous[-1] == 979
    index = torch.arange(50)
    x0, eps = torch.randn(50, 4, 8, 6), torch.randn(50, 4, 8, 6)
    expected = scheduler.add_noise(x0, eps, solver.previous[index])
    assert torch.equal(solver.step(x0, eps, index), expected)
    with pytest.raises(ValueError, match="--solver_steps"):
        distill.DDIMSolver(scheduler.alphas_cumprod, 0)


def test_the_teacher_step_guides_with_w_and_w_one_is_the_conditional_step():
    scheduler = _schedule()
    solver = distill.DDIMSolver(scheduler.alphas_cumprod, 50)
    _, unet, encoder = tiny_modules(seed=4)
    teacher = ConditionalDenoiser(unet, encoder).eval()
    codes, masks = _codes(2)
    noisy = torch.randn(2, 4, 8, 6)
    index = torch.tensor([10, 40])
    t = solver.timesteps[index]
    cond = EncodedConditions(codes, masks)
    with torch.no_grad():
        eps_c = teacher(noisy, t, cond)
        eps_u = teacher(noisy, t, EncodedConditions({f: torch.zeros(2, dtype=torch.long) for f in codes},
                                                    torch.zeros_like(masks)))
    for w in (1.0, 3.0):
        eps = eps_u + w * (eps_c - eps_u)
        x0, _ = distill.to_x0_and_noise(eps, t, noisy, "epsilon", scheduler.alphas_cumprod)
        expected = solver.step(x0, eps, index)
        got = distill.guided_teacher_step(teacher, solver, noisy, index, cond, torch.full((2,), w), "epsilon")
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_pseudo_huber_is_zero_for_equal_inputs_and_about_the_absolute_error_for_large_ones():
    a = torch.randn(4, 4)
    assert distill.pseudo_huber(a, a, 0.001) == 0
    assert abs(distill.pseudo_huber(a, a + 2.0, 0.001) - 2.0) < 1e-3


# ---- (d) bad input ------------------------------------------------------------------------------


def test_a_teacher_without_a_unet_is_a_clear_error(teacher, prepared_root, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(teacher, broken)
    shutil.rmtree(broken / "unet")
    assert cli(["distill", "--teacher", str(broken), "--data", str(prepared_root), "--out", str(tmp_path / "o"),
                "--max_train_steps", "1", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--teacher" in err and str(broken) in err and "unet" in err
    assert not (tmp_path / "o").exists()


def test_bad_guidance_ranges_are_clear_errors(teacher, prepared_root, tmp_path, capsys):
    base = ["distill", "--teacher", str(teacher), "--data", str(prepared_root), "--out", str(tmp_path / "o"),
            "--max_train_steps", "1", *TINY]
    assert cli([*base, "--w_min", "5", "--w_max", "2"]) == 2
    assert "--w_min 5.0 must not exceed --w_max 2.0" in capsys.readouterr().err
    assert cli([*base, "--w_min", "0.5"]) == 2
    assert "--w_min must be >= 1" in capsys.readouterr().err


def test_load_student_names_the_folder_and_what_is_missing(run, tmp_path):
    broken = tmp_path / "student"
    shutil.copytree(run / "student", broken)
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(ValueError, match=r"student.*scheduler/scheduler_config\.json"):
        distill.load_student(broken)
    with pytest.raises(ValueError, match="does not exist"):
        distill.load_student(tmp_path / "nothing")
