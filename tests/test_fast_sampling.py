"""The fast path: the distilled student behind ``scheduler="lcm"``, the tiny decoder behind
``decoder="tiny"``, ``mammosynth add-fast`` and the CLI / generate-set options that choose them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosynth.pipelines.checkpoint import CheckpointError
from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline, default_steps
from mammosynth.pipelines.testing import add_tiny_decoder, add_tiny_student, tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
MASS = dict(birads=4, density="C", lesion="mass", box=(0.45, 0.30, 0.60, 0.42), view="MLO", laterality="L")


def _calls(module: torch.nn.Module) -> list[int]:
    batches: list[int] = []
    module.register_forward_hook(lambda _m, args, _out: batches.append(args[0].shape[0]))
    return batches


def test_lcm_without_a_student_is_refused_with_what_to_do():
    pipe = tiny_pipeline()
    pipe.scheduler = pipe.scheduler_named("lcm")
    with pytest.raises(ValueError, match="mammosynth distill"):
        pipe(**MASS)
    with pytest.raises(ValueError, match="distill-decoder"):
        tiny_pipeline()(**MASS, num_inference_steps=2, decoder="tiny")
    with pytest.raises(ValueError, match="decoder"):
        tiny_pipeline()(**MASS, num_inference_steps=2, decoder="small")


def test_the_student_takes_one_unet_call_per_step_and_the_guidance_as_an_input():
    pipe = add_tiny_student(tiny_pipeline())
    teacher_calls, student_calls = _calls(pipe.unet), _calls(pipe.student_unet)
    pipe.scheduler = pipe.scheduler_named("lcm")
    out = pipe(**MASS, num_images=3, num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0))
    assert student_calls == [3, 3] and teacher_calls == []       # no unconditional branch: guidance is an input
    assert len(out.images) == 3 and out.images[0].dtype == np.uint16 and out.images[0].shape == (64, 48)
    assert default_steps(pipe.scheduler) == 2 and default_steps("dpm") == 8   # 8: measured (bench_sampling)

    def image(guidance: float, seed: int = 0) -> np.ndarray:
        return pipe(**MASS, num_inference_steps=2, guidance_scale=guidance,
                    generator=torch.Generator().manual_seed(seed)).images[0]

    assert np.array_equal(image(3.0), image(3.0))               # deterministic
    assert not np.array_equal(image(1.0), image(5.0))           # the guidance embedding is used
    pipe.scheduler = pipe.scheduler_named("dpm")                # the teacher again, with CFG: 2N per step
    pipe(**MASS, num_images=2, num_inference_steps=3, guidance_scale=3.0)
    assert teacher_calls == [4, 4, 4]


def test_edit_refuses_the_student():
    pipe = add_tiny_student(tiny_pipeline())
    pipe.scheduler = pipe.scheduler_named("lcm")
    frame = np.full((64, 48), 30000, np.uint16)
    with pytest.raises(ValueError, match="edit runs the teacher"):
        pipe.edit(frame, lesion="mass", box=(0.3, 0.3, 0.6, 0.6), laterality="L")


def test_a_checkpoint_with_a_student_saves_and_loads_it(tmp_path: Path):
    pipe = add_tiny_student(tiny_pipeline(requires_privacy_checker=False))
    pipe.scheduler = pipe.scheduler_named("lcm")
    before = pipe(**MASS, num_inference_steps=2, generator=torch.Generator().manual_seed(1)).images[0]
    pipe.scheduler = pipe.scheduler_named("dpm")
    pipe.save_pretrained(tmp_path / "ckpt")
    index = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())
    assert index["student_unet"] == ["diffusers", "UNet2DModel"] and index["student_scheduler"][1] == "LCMScheduler"
    loaded = MammoLDMPipeline.from_pretrained(tmp_path / "ckpt", privacy_gate=False)
    assert loaded.has_student and not loaded.has_tiny_decoder
    loaded.scheduler = loaded.scheduler_named("lcm")
    loaded.set_progress_bar_config(disable=True)
    after = loaded(**MASS, num_inference_steps=2, generator=torch.Generator().manual_seed(1)).images[0]
    for name in ("student_unet", "student_condition_encoder"):
        saved, back = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)
    # the same weights; convolution kernels may round differently on the loaded (other-aligned) tensors
    assert np.abs(before.astype(np.int64) - after.astype(np.int64)).max() <= 8


def _student_run(teacher: Path, out: Path) -> Path:
    """A student folder as `mammosynth distill` writes it (untrained), distilled from ``teacher``."""
    from mammosynth.pipelines.checkpoint import weights_sha256
    from mammosynth.training.distill import _save_student

    pipe = add_tiny_student(MammoLDMPipeline.from_pretrained(teacher, privacy_gate=False))
    record = {"teacher": {"folder": str(teacher), "unet_sha256": weights_sha256(teacher / "unet")}, "steps": 0}
    _save_student(out, pipe.student_denoiser, pipe.student_scheduler, record, fp16=False)
    return out


def test_add_fast_adds_a_student_of_this_teacher_and_refuses_another(tmp_path: Path):
    from mammosynth.pipelines.fast_parts import add_fast_parts
    from mammosynth.ui.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    other = make_tiny_checkpoint(tmp_path / "other", seed=5)
    run = _student_run(ckpt, tmp_path / "run")
    with pytest.raises(CheckpointError, match="distilled from a UNet with sha256"):
        add_fast_parts(other, student=run)
    with pytest.raises(CheckpointError, match="not a student"):
        add_fast_parts(ckpt, student=tmp_path / "nothing")
    done = subprocess.run([sys.executable, "-m", "mammosynth", "add-fast", "--checkpoint", str(ckpt), "--student",
                           str(run)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (ckpt / "reports" / "student.json").is_file()
    weights = next((ckpt / "student_unet").glob("*.safetensors"))
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float16 for t in load_file(weights).values())   # fp16, like the bundled weights

    out = tmp_path / "samples"
    made = subprocess.run([sys.executable, "-m", "mammosynth", "sample", "--checkpoint", str(ckpt), "--out", str(out),
                           "--scheduler", "lcm", "--lesion", "mass", "--seed", "3"], cwd=ROOT, capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    recipe = json.loads(next(out.glob("*.json")).read_text())
    assert recipe["scheduler"] == "lcm" and recipe["num_inference_steps"] == 2 and recipe["decoder"] == "full"
    again = subprocess.run([sys.executable, "-m", "mammosynth", "sample", "--checkpoint", str(ckpt), "--out",
                            str(tmp_path / "again"), "--recipe", str(next(out.glob("*.json")))], cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    from mammosynth.data.export import read_png16

    assert np.array_equal(read_png16(next(out.glob("*.png"))), read_png16(next((tmp_path / "again").glob("*.png"))))

    refused = subprocess.run([sys.executable, "-m", "mammosynth", "sample", "--checkpoint", str(other), "--out",
                              str(tmp_path / "x"), "--scheduler", "lcm"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode != 0 and "mammosynth distill" in refused.stderr


def test_the_tiny_decoder_decodes_the_same_latents_and_its_images_pass_the_gate(tmp_path: Path):
    from mammosynth.models.tiny_decoder import tiny_decode
    from mammosynth.ui.testing import make_tiny_checkpoint

    pipe = MammoLDMPipeline.from_pretrained(make_tiny_checkpoint(tmp_path / "ckpt", fast=True))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.has_tiny_decoder and pipe.has_student
    latents = pipe(**MASS, num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(2)).images
    out = pipe(**MASS, num_inference_steps=2, decoder="tiny", generator=torch.Generator().manual_seed(2))
    expected = np.rint(tiny_decode(pipe.tiny_vae, latents).numpy()[0] * 65535).astype(np.uint16)
    assert np.array_equal(out.images[0], expected)          # the same latents, the tiny decoder's pixels
    full = pipe(**MASS, num_inference_steps=2, generator=torch.Generator().manual_seed(2)).images[0]
    assert not np.array_equal(full, out.images[0])
    assert out.privacy is not None and len(out.privacy) == 1   # gated like every image


def test_add_fast_adds_a_tiny_decoder_and_refuses_one_for_other_latents(tmp_path: Path):
    from mammosynth.pipelines.fast_parts import add_fast_parts
    from mammosynth.ui.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    source = add_tiny_decoder(tiny_pipeline())
    source.tiny_vae.save_pretrained(tmp_path / "run" / "tiny_vae")
    assert add_fast_parts(ckpt, tiny_decoder=tmp_path / "run") == ["tiny_vae"]
    loaded = MammoLDMPipeline.from_pretrained(ckpt)
    assert loaded.has_tiny_decoder and not loaded.has_student
    other = add_tiny_decoder(tiny_pipeline(latent_channels=3))
    other.tiny_vae.save_pretrained(tmp_path / "other" / "tiny_vae")
    with pytest.raises(CheckpointError, match="latent channels"):
        add_fast_parts(ckpt, tiny_decoder=tmp_path / "other")
    with pytest.raises(ValueError, match="nothing to add"):
        add_fast_parts(ckpt)
