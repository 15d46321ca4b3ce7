"""Membership-inference attacks on a real tiny MammoLDMPipeline (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.data.prepared import load_prepared
from mammosynth.models.denoiser import EncodedConditions
from mammosynth.privacy.membership import (
    AttackConfig,
    attack_metrics,
    loss_scores,
    run_membership,
    secmi_scores,
    two_sample_auc,
)

FAST = AttackConfig(timesteps=(100, 300), noise_draws=2, secmi_t=40, secmi_interval=20, batch_size=16)


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared cores: one torch thread avoids thread contention (much faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_pipeline(seed: int = 0, unet_channels: tuple[int, int] | None = None):
    """A tiny ungated 64x48 pipeline with DDIM; ``unet_channels`` gives a roomier UNet that can memorise."""
    from diffusers import DDIMScheduler

    from mammosynth.pipelines.testing import tiny_pipeline as build

    unet = (dict(block_out_channels=unet_channels, attention_levels=(False, False), norm_num_groups=8)
            if unet_channels else None)
    return build(seed=seed, unet=unet, embed_dim=128, scheduler=DDIMScheduler(num_train_timesteps=1000))


def memorise(pipe, data, rows, steps: int = 200, max_t: int = 500, seed: int = 0) -> None:
    """Overfit the UNet on ``rows`` (the members): a deliberately memorising model."""
    from mammosynth.data.prepared import row_conditions

    frames = data.frames(rows["index"].to_numpy())
    latents = pipe.encode_images(frames)
    codes, masks = pipe.prepare_conditions([row_conditions(r, data.height, data.width) for _, r in rows.iterrows()],
                                           data.height, data.width)
    params = list(pipe.unet.parameters()) + list(pipe.condition_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    pipe.unet.train()
    for _ in range(steps):
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, max_t, (len(latents),), generator=g)
        pred = pipe.denoiser(pipe.scheduler.add_noise(latents, noise, t), t, EncodedConditions(codes, masks))
        loss = ((pred - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pipe.unet.eval()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from test_privacy_data import make_prepared

    return load_prepared(make_prepared(tmp_path_factory.mktemp("mia") / "d", studies=4, test_studies=4))


def test_attack_metrics_known_cases():
    perfect = attack_metrics([2.0, 3.0, 4.0], [0.0, 1.0], n_bootstrap=50)
    assert perfect["auc"]["value"] == 1.0 and perfect["tpr_at_1pct_fpr"]["value"] == 1.0
    inverted = attack_metrics([0.0, 1.0], [2.0, 3.0], n_bootstrap=0)
    assert inverted["auc"]["value"] == 0.0 and inverted["tpr_at_1pct_fpr"]["value"] == 0.0
    # half of the members score above every non-member: TPR at FPR 0 = 0.5, AUC = 0.5·1 + 0.5·0.5
    half = attack_metrics([5.0, 6.0, 0.5, 0.5], [0.5, 0.5], n_bootstrap=0)
    assert half["tpr_at_1pct_fpr"]["value"] == 0.5 and half["auc"]["value"] == pytest.approx(0.75)
    assert half["tpr_at_0.1pct_fpr"]["resolved"] is False
    with pytest.raises(ValueError, match="at least one member"):
        attack_metrics([], [1.0])


def test_two_sample_auc_matches_mann_whitney_with_ties():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    for n_m, n_n in ((5, 7), (40, 13), (200, 300)):
        member, nonmember = rng.integers(0, 6, n_m).astype(float), rng.integers(0, 5, n_n).astype(float)
        u = mannwhitneyu(member, nonmember).statistic
        assert two_sample_auc(member, nonmember) == pytest.approx(u / (n_m * n_n))
    assert np.isnan(two_sample_auc(np.array([]), np.array([1.0])))


def test_attack_ci_is_seeded_and_narrows_with_n():
    rng = np.random.default_rng(4)
    small = attack_metrics(rng.normal(0.5, 1, 40), rng.normal(size=40), n_bootstrap=300)
    large = attack_metrics(rng.normal(0.5, 1, 400), rng.normal(size=400), n_bootstrap=300)
    for result in (small, large):
        low, high = result["auc"]["ci95"]
        assert low <= result["auc"]["value"] <= high
    assert np.diff(large["auc"]["ci95"])[0] < np.diff(small["auc"]["ci95"])[0]
    member, nonmember = rng.normal(size=30), rng.normal(size=30)
    assert attack_metrics(member, nonmember, n_bootstrap=100, seed=7)["auc"]["ci95"] == \
        attack_metrics(member, nonmember, n_bootstrap=100, seed=7)["auc"]["ci95"]


def test_control_is_near_half_in_expectation():
    rng = np.random.default_rng(0)
    aucs = [attack_metrics(rng.normal(size=50), rng.normal(size=50), n_bootstrap=0)["auc"]["value"]
            for _ in range(200)]
    assert np.mean(aucs) == pytest.approx(0.5, abs=0.02)
    shifted = attack_metrics(rng.normal(1.0, 1.0, 400), rng.normal(size=400), n_bootstrap=200)
    low, high = shifted["auc"]["ci95"]
    assert low < shifted["auc"]["value"] < high and low > 0.7  # Φ(1/√2) ≈ 0.76


def test_attacks_on_untrained_model_are_valid_scores(prepared):
    pipe = tiny_pipeline()
    result = run_membership(pipe, prepared, n_members=8, n_nonmembers=8, config=FAST, n_bootstrap=50)
    for name in ("loss", "secmi"):
        res = result["attacks"][name]
        for key in ("members_vs_nonmembers", "control_nonmember_halves"):
            auc = res[key]["auc"]["value"]
            assert 0.0 <= auc <= 1.0
            assert 0.0 <= res[key]["tpr_at_1pct_fpr"]["value"] <= 1.0
        assert res["control_nonmember_halves"]["n_members"] + res["control_nonmember_halves"]["n_nonmembers"] == 8
    # the scores are deterministic for a seed
    rows = prepared.split("test").iloc[:4]
    frames = prepared.frames(rows["index"].to_numpy())
    np.testing.assert_allclose(loss_scores(pipe, frames, rows, FAST), loss_scores(pipe, frames, rows, FAST))


def test_loss_scores_use_the_training_noise_whatever_sampler_ran_before(prepared):
    """The attack noises at the training schedule's t. DPM-Solver's add_noise looks t up among the inference
    steps it was last set to (a fresh one: the wrong sigma), so the scores must not come from it."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    pipe = tiny_pipeline()
    rows = prepared.split("test").iloc[:4]
    frames = prepared.frames(rows["index"].to_numpy())
    reference = loss_scores(pipe, frames, rows, FAST)   # DDIM: add_noise is the training formula
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    fresh = loss_scores(pipe, frames, rows, FAST)
    pipe.scheduler.set_timesteps(7)
    after_sampling = loss_scores(pipe, frames, rows, FAST)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    np.testing.assert_allclose(fresh, reference, rtol=1e-5)
    np.testing.assert_allclose(after_sampling, reference, rtol=1e-5)
    np.testing.assert_allclose(loss_scores(pipe, frames, rows, FAST), reference, rtol=1e-5)


def test_memorising_model_is_caught(prepared):
    pipe = tiny_pipeline(unet_channels=(32, 64))
    members = prepared.split("training")
    nonmembers = prepared.split("test")
    m_frames = prepared.frames(members["index"].to_numpy())
    n_frames = prepared.frames(nonmembers["index"].to_numpy())
    before = attack_metrics(loss_scores(pipe, m_frames, members, FAST), loss_scores(pipe, n_frames, nonmembers, FAST),
                            n_bootstrap=0)["auc"]["value"]
    memorise(pipe, prepared, members)
    loss_m, loss_n = loss_scores(pipe, m_frames, members, FAST), loss_scores(pipe, n_frames, nonmembers, FAST)
    assert loss_m.mean() > loss_n.mean()  # members have lower denoising error
    after = attack_metrics(loss_m, loss_n, n_bootstrap=0)["auc"]["value"]
    assert after > 0.7 and after > before + 0.1
    sec = attack_metrics(secmi_scores(pipe, m_frames, members, FAST), secmi_scores(pipe, n_frames, nonmembers, FAST),
                         n_bootstrap=0)
    # SecMI separates members from non-members (on this over-fitted toy the t-error is larger
    # for members, so the separability is what is reported as the attack's strength)
    assert sec["separability"] > 0.75


def test_attack_bad_input(prepared):
    pipe = tiny_pipeline()
    rows = prepared.split("test").iloc[:2]
    frames = prepared.frames(rows["index"].to_numpy())
    with pytest.raises(ValueError, match="outside the scheduler"):
        loss_scores(pipe, frames, rows, AttackConfig(timesteps=(1000,)))
    with pytest.raises(ValueError, match="multiple of secmi_interval"):
        secmi_scores(pipe, frames, rows, AttackConfig(secmi_t=30, secmi_interval=20))
    with pytest.raises(ValueError, match="2 manifest rows"):
        loss_scores(pipe, frames[:1], rows, FAST)
    with pytest.raises(ValueError, match="unknown attack"):
        run_membership(pipe, prepared, 2, 2, FAST, attacks=("loss", "gradient"))
