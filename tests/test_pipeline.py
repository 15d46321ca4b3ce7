"""MammoLDMPipeline: sampling, determinism, orientation, schedulers, save/load, bad input."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosynth.conditions import ConditionError, Conditions
from mammosynth.models.conditioning import ConditionEncoder
from mammosynth.models.denoiser import EncodedConditions
from mammosynth.pipelines.checkpoint import weights_mb
from mammosynth.pipelines.pipeline_mammo_ldm import (
    CheckpointError,
    MammoLDMPipeline,
    MammoLDMPipelineOutput,
    PrivacyGateMissingError,
    default_scheduler,
    register_privacy_checker,
    scheduler_from_name,
)
from mammosynth.pipelines.testing import tiny_modules, tiny_pipeline

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "mammosynth-phantom-256"
MASS = dict(birads=4, density="C", lesion="mass", box=(0.45, 0.30, 0.60, 0.42), view="MLO", laterality="L")


@pytest.fixture(scope="module")
def pipe(tiny_pipe) -> MammoLDMPipeline:
    return tiny_pipe


def run(pipe, seed=0, **kwargs):
    kwargs = {**MASS, "num_inference_steps": 2, **kwargs}
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs)


def test_output_is_uint16_frames_with_conditions(pipe):
    out = run(pipe, num_images=2)
    assert isinstance(out, MammoLDMPipelineOutput)
    assert len(out.images) == 2 and all(im.dtype == np.uint16 and im.shape == (64, 48) for im in out.images)
    assert out.conditions[0] == Conditions.create(**MASS)
    assert out.privacy is None
    images, conditions, privacy = run(pipe, return_dict=False)
    assert images[0].shape == (64, 48) and privacy is None


def test_same_seed_same_image_and_other_seed_differs(pipe):
    a, b, c = run(pipe, seed=3).images[0], run(pipe, seed=3).images[0], run(pipe, seed=4).images[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_expected_slice(pipe):
    # Regression guard for the sampling math (tiny random model, torch.manual_seed(0), 2 DPM steps).
    image = run(pipe, seed=0).images[0]
    expected = EXPECTED_SLICE
    got = image[30:32, 20:24].astype(int)
    assert np.abs(got - expected).max() <= 64, got.tolist()


EXPECTED_SLICE = np.array([[49766, 40640, 33629, 30854], [38087, 37660, 35510, 31214]])


def test_per_image_generators_make_images_independent_of_batch(pipe):
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    batch = pipe(**MASS, num_images=2, num_inference_steps=2, generator=gens).images
    alone = pipe(**MASS, num_inference_steps=2, generator=[torch.Generator().manual_seed(6)]).images[0]
    assert np.abs(batch[1].astype(int) - alone.astype(int)).max() <= 1


def test_right_breasts_are_mirrored_back_for_display(pipe):
    cond = Conditions.create(birads=4, lesion="mass", laterality="R", box=(0.6, 0.3, 0.8, 0.5))
    latents = pipe(conditions=cond, num_inference_steps=2, output_type="latent",
                   generator=torch.Generator().manual_seed(1)).images
    canonical = np.rint(pipe.decode_latents(latents).numpy()[0] * 65535).astype(np.uint16)
    shown = pipe(conditions=cond, num_inference_steps=2, generator=torch.Generator().manual_seed(1)).images[0]
    assert np.array_equal(shown, canonical[:, ::-1])
    # the displayed box (right side of a right breast) becomes a canonical mask on the left
    _, masks = pipe.prepare_conditions([cond], 64, 48)
    cols = torch.nonzero(masks[0, 0].sum(0)).flatten()
    assert int(cols.min()) >= int(0.2 * 48) - 1 and int(cols.max()) < int(np.ceil(0.4 * 48))


def test_conditions_list_gives_one_image_each(pipe):
    conds = [Conditions.create(birads=1, lesion="none"), Conditions.create(birads=5, lesion="calcification")]
    out = pipe(conditions=conds, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.conditions == conds and len(out.images) == 2
    with pytest.raises(ConditionError, match="either `conditions` or the fields"):
        pipe(conditions=conds, birads=3)
    with pytest.raises(ConditionError, match="num_images=3"):
        pipe(conditions=conds, num_images=3)


@pytest.mark.parametrize("name", ["ddim", "unipc", "euler", "ddpm", "dpm"])
def test_schedulers_swap(pipe, name):
    base = pipe.scheduler
    try:
        pipe.scheduler = scheduler_from_name(name, base.config)
        image = run(pipe, num_inference_steps=3).images[0]
        assert image.shape == (64, 48) and image.dtype == np.uint16
        again = run(pipe, num_inference_steps=3).images[0]
        assert np.array_equal(image, again)
    finally:
        pipe.scheduler = base


def test_scheduler_choice_changes_the_result(pipe):
    base = pipe.scheduler
    dpm = run(pipe, num_inference_steps=3).images[0]
    try:
        pipe.scheduler = scheduler_from_name("ddim", base.config)
        ddim = run(pipe, num_inference_steps=3).images[0]
    finally:
        pipe.scheduler = base
    assert not np.array_equal(dpm, ddim)
    with pytest.raises(ValueError, match="unknown scheduler"):
        scheduler_from_name("nope", base.config)


def test_callbacks_see_every_step(pipe):
    seen = []
    hooks = []
    run(pipe, num_inference_steps=3, callback=lambda i, n: seen.append((i, n)),
        callback_on_step_end=lambda p, i, t, kw: hooks.append(kw["latents"].shape) or {})
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert hooks == [torch.Size([1, 4, 8, 6])] * 3


def test_guidance_one_skips_the_unconditional_pass(pipe):
    calls = []
    original = pipe.unet.forward

    def counting(sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    pipe.unet.forward = counting
    try:
        run(pipe, guidance_scale=1.0)
        run(pipe, guidance_scale=2.0)
    finally:
        pipe.unet.forward = original
    assert calls == [1, 1, 2, 2]


def test_public_helpers(pipe):
    frames = (np.random.default_rng(0).random((2, 64, 48)) * 65535).astype(np.uint16)
    latents = pipe.encode_images(frames)
    assert latents.shape == (2, 4, 8, 6)
    codes, masks = pipe.prepare_conditions([Conditions.create(**MASS), Conditions()], 64, 48)
    assert codes["lesion"].tolist() == [2, 0] and masks.shape == (2, 1, 64, 48)
    assert float(masks[1].sum()) == 0 and float(masks[0].sum()) > 0
    with torch.no_grad():
        noise = pipe.denoiser(latents, torch.tensor([10, 500]), EncodedConditions(codes, masks))
    assert noise.shape == latents.shape
    with pytest.raises(ValueError, match="uint16"):
        pipe.encode_images(frames.astype(np.float32))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"density": "E"}, ConditionError, "density must be one of"),
        ({"view": "LMO"}, ConditionError, "view must be one of"),
        ({"box": (0.5, 0.2, 1.2, 0.4)}, ConditionError, "outside the image"),
        ({"box": (0.6, 0.2, 0.5, 0.4)}, ConditionError, "x0 < x1"),
        ({"birads": 1}, ConditionError, "BI-RADS 1"),
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
        ({"num_inference_steps": -3}, ValueError, "num_inference_steps"),
        ({"guidance_scale": 0.5}, ValueError, "guidance_scale"),
        ({"num_images": 0}, ValueError, "num_images"),
        ({"height": 60}, ValueError, "multiples of 16"),
        ({"width": 44}, ValueError, "multiples of 16"),
        ({"output_type": "jpeg"}, ValueError, "output_type"),
        ({"resample_flagged": -1}, ValueError, "resample_flagged"),
    ],
)
def test_bad_input_is_rejected_clearly(pipe, kwargs, error, message):
    with pytest.raises(error, match=message):
        run(pipe, **kwargs)


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    loaded = MammoLDMPipeline.from_pretrained(tmp_path / "ckpt")
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(run(pipe).images[0], run(loaded).images[0])
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"


def test_fp16_checkpoint_loads_as_float32(pipe, tmp_path):
    import copy

    half = copy.deepcopy(pipe).to(torch.float16)
    half.save_pretrained(tmp_path / "fp16")
    loaded = MammoLDMPipeline.from_pretrained(tmp_path / "fp16")
    assert loaded.unet.dtype == torch.float32
    loaded.set_progress_bar_config(disable=True)
    assert run(loaded).images[0].shape == (64, 48)


def test_pipeline_without_gate_refuses_to_generate_unless_told(caplog, tmp_path):
    gated = MammoLDMPipeline(*tiny_modules(), default_scheduler())
    gated.set_progress_bar_config(disable=True)
    with pytest.raises(PrivacyGateMissingError, match="no privacy checker.*build-index.*requires_privacy_checker=False"):
        run(gated)
    # the requirement survives save/load: a loaded copy refuses as well
    gated.save_pretrained(tmp_path / "gated")
    with pytest.raises(PrivacyGateMissingError):
        run(MammoLDMPipeline.from_pretrained(tmp_path / "gated"))
    # opting out on purpose works, warns loudly, and reports no verdicts
    with caplog.at_level(logging.WARNING):
        ungated = MammoLDMPipeline.from_pretrained(tmp_path / "gated", requires_privacy_checker=False)
    assert "disabled the privacy checker" in caplog.text and "NOT be checked" in caplog.text
    ungated.set_progress_bar_config(disable=True)
    assert run(ungated).privacy is None


def test_register_privacy_checker_completes_the_checkpoint(tmp_path):
    pipe = MammoLDMPipeline(*tiny_modules(), default_scheduler())
    pipe.save_pretrained(tmp_path / "ckpt")
    assert not register_privacy_checker(tmp_path / "ckpt")  # no privacy_checker/ yet: nothing changes
    index = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())
    assert index.get("privacy_checker") in (None, [None, None])
    (tmp_path / "ckpt" / "privacy_checker").mkdir()
    assert register_privacy_checker(tmp_path / "ckpt")
    index = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())
    assert index["privacy_checker"] == ["mammosynth.privacy.checker", "PrivacyChecker"]
    assert index["requires_privacy_checker"] is True and index["_class_name"] == "MammoLDMPipeline"
    assert not register_privacy_checker(tmp_path / "elsewhere")


@dataclass
class Verdict:
    flagged: bool
    similarity: float
    threshold: float = 0.5
    neighbours: list = None


class FlagBrightChecker:
    """Test double with the PrivacyChecker contract: flags frames brighter than a threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.calls = []

    def check(self, frames):
        assert frames.dtype == np.uint16 and frames.ndim == 3
        self.calls.append(len(frames))
        return [Verdict(flagged=float(f.mean()) > self.threshold, similarity=float(f.mean())) for f in frames]


def test_privacy_checker_runs_and_flagged_images_are_resampled():
    checker = FlagBrightChecker(threshold=-1.0)  # flags everything
    pipe = tiny_pipeline(privacy_checker=checker)
    out = run(pipe, num_images=2, resample_flagged=2)
    assert [v.flagged for v in out.privacy] == [True, True]
    assert checker.calls == [2, 2, 2]  # first check + two resampling rounds
    checker.threshold = 1e9  # flags nothing
    checker.calls.clear()
    out = run(pipe, num_images=2, resample_flagged=3)
    assert [v.flagged for v in out.privacy] == [False, False] and checker.calls == [2]


def test_flagged_image_is_replaced_by_a_new_draw():
    first = run(tiny_pipeline(), num_images=1).images[0]
    checker = FlagBrightChecker(threshold=float(first.mean()) - 1)  # flags the first draw
    pipe = tiny_pipeline(privacy_checker=checker)
    out = run(pipe, num_images=1, resample_flagged=1)
    assert not np.array_equal(out.images[0], first)
    assert out.privacy[0].similarity == pytest.approx(float(out.images[0].mean()))


# ---- checkpoint folders ---------------------------------------------------------------------


@pytest.fixture()
def saved(pipe, tmp_path) -> Path:
    path = tmp_path / "ckpt"
    pipe.save_pretrained(path)
    return path


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        MammoLDMPipeline.from_pretrained(tmp_path / "nope")


def test_missing_model_index(saved):
    (saved / "model_index.json").unlink()
    with pytest.raises(CheckpointError, match="no model_index.json"):
        MammoLDMPipeline.from_pretrained(saved)


def test_missing_weights(saved):
    for f in (saved / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match="unet has no weights"):
        MammoLDMPipeline.from_pretrained(saved)


def test_missing_component_folder(saved):
    shutil.rmtree(saved / "condition_encoder")
    with pytest.raises(CheckpointError, match="missing condition_encoder/config.json"):
        MammoLDMPipeline.from_pretrained(saved)


def test_wrong_config(saved):
    config = json.loads((saved / "unet" / "config.json").read_text())
    config["in_channels"] = 4
    (saved / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="could not load the checkpoint|1 mask channel"):
        MammoLDMPipeline.from_pretrained(saved)


def test_wrong_latent_statistics_are_named(saved):
    config = json.loads((saved / "vae" / "config.json").read_text())
    config["latents_mean"], config["latents_std"] = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]  # 3 values for 4 channels
    (saved / "vae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="latents_mean .* must hold 4 values each"):
        MammoLDMPipeline.from_pretrained(saved)
    config["latents_mean"], config["latents_std"] = [0.0] * 4, None  # a mean without its std
    (saved / "vae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="latents_mean .* but latents_std None: .* needs both"):
        MammoLDMPipeline.from_pretrained(saved)


def test_mismatched_components_are_named():
    vae, unet, _ = tiny_modules()
    with pytest.raises(CheckpointError, match="time embedding"):
        MammoLDMPipeline(vae, unet, ConditionEncoder(out_dim=7), default_scheduler(), requires_privacy_checker=False)


def test_not_a_mammo_pipeline(saved):
    index = json.loads((saved / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (saved / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a MammoLDMPipeline"):
        MammoLDMPipeline.from_pretrained(saved)


def test_fingerprint_covers_weights_and_configs_not_reports(saved):
    from mammosynth.pipelines.checkpoint import fingerprint, fingerprint_files

    names = {p.relative_to(saved).as_posix() for p in fingerprint_files(saved)}
    assert names == {"model_index.json", "scheduler/scheduler_config.json",
                     *(f"{c}/{f}" for c in ("vae", "unet", "condition_encoder")
                       for f in ("config.json", "diffusion_pytorch_model.safetensors"))}
    before = fingerprint(saved)
    assert len(before) == 64
    # reports, the model card, sample images, a privacy build report: rewritten, same model
    (saved / "reports" / "eval").mkdir(parents=True)
    (saved / "reports" / "privacy.json").write_text('{"reid_map_at_r": 0.01}')
    (saved / "reports" / "eval" / "metrics.json").write_text("{}")
    (saved / "README.md").write_text("# a new model card\n")
    (saved / "samples.png").write_bytes(b"\x89PNG not really")
    (saved / "training_summary.json").write_text("{}")
    (saved / "privacy_checker").mkdir()
    (saved / "privacy_checker" / "build_report.json").write_text("{}")
    assert fingerprint(saved) == before
    # a config value changes the model
    config = saved / "scheduler" / "scheduler_config.json"
    original = config.read_text()
    config.write_text(json.dumps({**json.loads(original), "beta_end": 0.02}))
    assert fingerprint(saved) != before
    config.write_text(original)
    assert fingerprint(saved) == before
    # one weight byte changes the model, also in the privacy checker's folder
    weights = saved / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = fingerprint(saved)
    assert changed != before
    (saved / "privacy_checker" / "diffusion_pytorch_model.safetensors").write_bytes(b"index")
    assert fingerprint(saved) not in (before, changed)
    assert fingerprint(saved / "no-such-folder") is None


@pytest.mark.skipif(not (BUNDLED / "model_index.json").exists(), reason="bundled checkpoint not trained yet")
def test_bundled_fingerprint_hashes_the_pipeline_components_only():
    from mammosynth.pipelines.checkpoint import fingerprint_files

    names = {p.relative_to(BUNDLED).as_posix() for p in fingerprint_files(BUNDLED)}
    assert names == {"model_index.json", "scheduler/scheduler_config.json", "student_scheduler/scheduler_config.json",
                     *(f"{c}/{f}" for c in ("vae", "unet", "condition_encoder", "privacy_checker", "student_unet",
                                            "student_condition_encoder", "tiny_vae")
                       for f in ("config.json", "diffusion_pytorch_model.safetensors"))}


# ---- the bundled checkpoint -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED / "model_index.json").exists(), reason="bundled checkpoint not trained yet")
def test_bundled_checkpoint_loads_and_samples():
    pipe = MammoLDMPipeline.from_pretrained(BUNDLED)
    pipe.set_progress_bar_config(disable=True)
    sizes = weights_mb(BUNDLED)
    by_hand = sum(p.stat().st_size for d in ("vae", "unet") for p in (BUNDLED / d).glob("*.safetensors")) / 1e6
    assert sizes["vae"] + sizes["unet"] == pytest.approx(by_hand) and by_hand <= 45
    assert set(sizes) == {"vae", "unet", "condition_encoder", "privacy_checker", "student_unet",
                          "student_condition_encoder", "tiny_vae"} and sum(sizes.values()) <= 60
    assert pipe.has_student and pipe.has_tiny_decoder   # issue 21: the student ships beside the teacher
    out = pipe(**MASS, num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    image = out.images[0]
    assert image.shape == (256, 192) and image.dtype == np.uint16
    assert image.std() > 1000  # not blank
    again = pipe(**MASS, num_inference_steps=20, generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(image, again)
    # the bundled privacy gate is loaded with the checkpoint and judges every image
    assert pipe.privacy_checker is not None and len(out.privacy) == 1
    verdict = out.privacy[0]
    assert 0 < verdict.threshold < 1 and verdict.flagged == (verdict.similarity > verdict.threshold)


#: The bundled checkpoint's 20-step image at seed 1234 as it was made before the structure change of issue 18:
#: its 16x16 block means, and its exact sha256 on the CPUs it was made on. Torch does not promise the same float
#: bits on another CPU (its kernels sum in another order), so the test compares block means: fp32-rounding noise
#: moves them by < 0.1 (measured by perturbing every weight by 2e-7), while guidance 3.05 instead of 3 moves them
#: by 320, 19 steps instead of 20 by 199 and the box by 1 % of the width by 4,400.
BUNDLED_IMAGE_REFERENCE = Path(__file__).parent / "data" / "bundled_image_reference.json"


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED / "model_index.json").exists(), reason="bundled checkpoint not trained yet")
def test_bundled_checkpoint_image_matches_the_image_made_before_the_restructuring():
    import hashlib

    reference = json.loads(BUNDLED_IMAGE_REFERENCE.read_text())
    assert torch.get_num_threads() == 1  # the reference was made on one thread (other counts sum in another order)
    pipe = MammoLDMPipeline.from_pretrained(BUNDLED)
    pipe.set_progress_bar_config(disable=True)
    conditions = Conditions.create(birads=4, density="C", lesion="mass", view="MLO", laterality="L",
                                   box=(0.35, 0.4, 0.55, 0.55))
    image = pipe(conditions=[conditions], num_inference_steps=20, guidance_scale=3.0,
                 generator=[torch.Generator().manual_seed(1234)]).images[0]
    block = reference["block"]
    means = image.astype(np.float64).reshape(image.shape[0] // block, block, image.shape[1] // block, block).mean(axis=(1, 3))
    assert np.abs(means - np.array(reference["block_means"])).max() < 16
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    if digest not in reference["sha256"].values():
        warnings.warn(f"the bundled image matches its reference within fp32 noise but not bit for bit ({digest}): "
                      "a CPU the reference was not made on")
