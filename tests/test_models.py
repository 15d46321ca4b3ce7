"""The networks: condition encoder, CFG dropout, VAE and UNet builders (tiny, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.conditions import NUM_CLASSES, Conditions
from mammosynth.models.autoencoder import (VAE_PRESETS, build_vae, decode, encode, measure_scaling_factor, reconstruct,
                                           widen_latent)
from mammosynth.models.conditioning import CONDITION_FIELDS, ConditionEncoder, drop_conditions, unconditional_codes
from mammosynth.models.denoiser import ConditionalDenoiser, EncodedConditions
from mammosynth.models.unet import UNET_PRESETS, build_unet, latent_mask, time_embed_dim, widen_unet_latent


def codes_for(*conditions: Conditions) -> dict[str, torch.Tensor]:
    encoded = [c.encode() for c in conditions]
    return {f: torch.tensor([e[f] for e in encoded]) for f in CONDITION_FIELDS}


def test_condition_encoder_shape_and_fields_matter():
    torch.manual_seed(0)
    enc = ConditionEncoder(embed_dim=8, out_dim=16)
    a = Conditions.create(birads=4, density="C", view="MLO", laterality="L", lesion="mass")
    b = Conditions.create(birads=4, density="D", view="MLO", laterality="L", lesion="mass")
    out = enc(codes_for(a, b, Conditions()))
    assert out.shape == (3, 16)
    assert not torch.allclose(out[0], out[1])  # density changes the vector
    torch.testing.assert_close(out[2], enc(unconditional_codes(1))[0])  # all unspecified == zeros


def test_condition_encoder_table_sizes_follow_vocabulary():
    enc = ConditionEncoder()
    for field in CONDITION_FIELDS:
        assert enc.embeddings[field].num_embeddings == NUM_CLASSES[field]


def test_condition_encoder_rejects_bad_codes():
    enc = ConditionEncoder(embed_dim=4, out_dim=8)
    codes = unconditional_codes(2)
    codes["density"] = torch.tensor([0, 9])
    with pytest.raises(ValueError, match="density codes must be in 0..4"):
        enc(codes)
    del codes["density"]
    with pytest.raises(ValueError, match="lack the field"):
        enc(codes)


def test_condition_encoder_is_exported_lazily_and_round_trips(tmp_path):
    import mammosynth

    assert mammosynth.ConditionEncoder is ConditionEncoder
    enc = ConditionEncoder(embed_dim=4, out_dim=8)
    enc.save_pretrained(tmp_path)
    loaded = ConditionEncoder.from_pretrained(tmp_path)
    codes = codes_for(Conditions.create(birads=2, density="A"))
    torch.testing.assert_close(enc(codes), loaded(codes))


def test_drop_conditions_extremes_and_mask_follows_lesion():
    codes = {f: torch.arange(1, 9) % 3 + 1 for f in CONDITION_FIELDS}
    masks = torch.ones(8, 1, 4, 4)
    same, same_masks = drop_conditions(codes, masks, p_field=0.0, p_all=0.0)
    assert all(torch.equal(same[f], codes[f]) for f in CONDITION_FIELDS)
    assert torch.equal(same_masks, masks)
    dropped, dropped_masks = drop_conditions(codes, masks, p_field=0.0, p_all=1.0)
    assert all(int(dropped[f].abs().sum()) == 0 for f in CONDITION_FIELDS)
    assert float(dropped_masks.sum()) == 0.0
    g = torch.Generator().manual_seed(0)
    many = {f: torch.ones(4000, dtype=torch.long) for f in CONDITION_FIELDS}
    out, out_masks = drop_conditions(many, torch.ones(4000, 1, 2, 2), p_field=0.3, p_all=0.0, generator=g)
    rate = float((out["birads"] == 0).float().mean())
    assert 0.25 < rate < 0.35
    lesion_dropped = out["lesion"] == 0
    assert float(out_masks[lesion_dropped].sum()) == 0.0
    assert bool((out_masks[~lesion_dropped] == 1).all())
    # fields drop independently
    assert not torch.equal(out["birads"] == 0, out["density"] == 0)
    with pytest.raises(ValueError, match="probabilities"):
        drop_conditions(codes, masks, p_field=1.5)


def test_vae_is_one_channel_and_factor_8():
    torch.manual_seed(0)
    vae = build_vae(sample_size=64, **VAE_PRESETS["tiny"]).eval()
    images = torch.rand(2, 1, 64, 48) * 2 - 1
    latents = encode(vae, images)
    assert latents.shape == (2, 4, 8, 6)
    assert decode(vae, latents).shape == (2, 1, 64, 48)
    with pytest.raises(ValueError, match="divisible by norm_num_groups"):
        build_vae(block_out_channels=(8, 12, 16, 16), norm_num_groups=8)


def test_scaling_factor_is_one_over_latent_std():
    torch.manual_seed(0)
    vae = build_vae(sample_size=64, **VAE_PRESETS["tiny"]).eval()
    batches = [torch.rand(2, 1, 64, 48) * 2 - 1 for _ in range(2)]
    factor = measure_scaling_factor(vae, batches)
    with torch.no_grad():
        raw = torch.cat([vae.encode(b).latent_dist.mode() for b in batches])
    assert factor == pytest.approx(1 / raw.std().item(), rel=1e-5)
    vae.register_to_config(scaling_factor=factor)
    assert encode(vae, batches[0]).std().item() == pytest.approx((raw[:2] * factor).std().item(), rel=1e-5)
    with pytest.raises(ValueError, match="at least one batch"):
        measure_scaling_factor(vae, [])


def test_unet_takes_latents_plus_mask_and_condition_vector():
    torch.manual_seed(0)
    unet = build_unet(sample_size=(8, 6), **UNET_PRESETS["tiny"]).eval()
    assert unet.config.in_channels == 5 and unet.config.out_channels == 4
    enc = ConditionEncoder(embed_dim=8, out_dim=time_embed_dim(unet))
    x = torch.randn(2, 5, 8, 6)
    codes_a = codes_for(Conditions.create(birads=2, density="A"), Conditions.create(birads=2, density="A"))
    codes_b = codes_for(Conditions.create(birads=5, density="D"), Conditions.create(birads=5, density="D"))
    with torch.no_grad():
        a = unet(x, torch.tensor([10, 10]), class_labels=enc(codes_a)).sample
        b = unet(x, torch.tensor([10, 10]), class_labels=enc(codes_b)).sample
    assert a.shape == (2, 4, 8, 6)
    assert not torch.allclose(a, b)  # the condition vector reaches the output
    with pytest.raises(ValueError, match="attention_levels"):
        build_unet(block_out_channels=(8, 16), attention_levels=(False,), norm_num_groups=4)


def test_conditional_denoiser_feeds_the_mask_channel_and_the_condition_vector():
    torch.manual_seed(0)
    unet = build_unet(sample_size=(8, 6), **UNET_PRESETS["tiny"])
    enc = ConditionEncoder(embed_dim=8, out_dim=time_embed_dim(unet))
    denoiser = ConditionalDenoiser(unet, enc).eval()
    x = torch.randn(2, 4, 8, 6)
    codes = codes_for(Conditions.create(birads=4, lesion="mass", box=(0.2, 0.2, 0.6, 0.6)), Conditions())
    masks = torch.zeros(2, 1, 64, 48)
    masks[0, :, 16:40, 8:32] = 1
    with torch.no_grad():
        out = denoiser(x, torch.tensor([10, 10]), EncodedConditions(codes, masks))
        # by hand: image-size masks area-averaged to the latents, one more input channel, codes embedded
        small = torch.nn.functional.adaptive_avg_pool2d(masks, (8, 6))
        expected = unet(torch.cat([x, small], 1), torch.tensor([10, 10]), class_labels=enc(codes)).sample
        # one timestep for all, and masks already at latent size, give the same
        again = denoiser(x, 10, EncodedConditions(codes, small))
        no_mask = denoiser(x, 10, EncodedConditions(codes, torch.zeros_like(small)))
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    assert not torch.allclose(no_mask[0], out[0])  # the mask reaches the output
    torch.testing.assert_close(no_mask[1], out[1], rtol=0, atol=0)  # the unmasked item is unchanged


def test_bundled_sizes_fit_the_budget():
    vae = build_vae(**VAE_PRESETS["bundled"])
    unet = build_unet(**UNET_PRESETS["bundled"])
    fp16_mb = 2 * sum(p.numel() for m in (vae, unet) for p in m.parameters()) / 1e6
    assert fp16_mb <= 45


def test_latent_mask_downsamples_by_area():
    masks = torch.zeros(1, 1, 16, 16)
    masks[..., :8, :8] = 1
    small = latent_mask(masks, (2, 2))
    assert small.shape == (1, 1, 2, 2)
    assert small[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        latent_mask(torch.zeros(16, 16), (2, 2))


def test_widen_latent_keeps_the_old_channels_and_the_decoder_ignores_the_new_until_trained():
    torch.manual_seed(0)
    vae = build_vae(sample_size=64, **VAE_PRESETS["tiny"])
    with torch.no_grad():   # a non-trivial quant_conv / post_quant_conv (fresh ones are near identity)
        vae.quant_conv.weight.normal_(0, 0.3)
        vae.post_quant_conv.weight.normal_(0, 0.3)
        vae.quant_conv.bias.normal_(0, 0.3)
    wide = widen_latent(vae, 6)
    assert wide.config.latent_channels == 6 and wide.config.scaling_factor == 1.0
    x = torch.rand(2, 1, 64, 48) * 2 - 1
    with torch.no_grad():
        old, new = vae.encode(x).latent_dist, wide.encode(x).latent_dist
        torch.testing.assert_close(new.mean[:, :4], old.mean)
        torch.testing.assert_close(new.logvar[:, :4], old.logvar)
        assert new.mean[:, 4:].abs().sum() > 0      # the new channels carry something to learn from
        z = torch.cat([old.mean, torch.randn(2, 2, 8, 6) * 5], dim=1)   # whatever the new channels hold
        torch.testing.assert_close(wide.decode(z).sample, vae.decode(old.mean).sample, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="larger than the VAE's own 4"):
        widen_latent(vae, 4)


def test_widen_unet_latent_keeps_the_prediction_for_the_old_channels():
    torch.manual_seed(0)
    unet = build_unet(sample_size=(8, 6), **UNET_PRESETS["tiny"])
    with torch.no_grad():
        unet.conv_out.weight.normal_(0, 0.1)    # a fresh conv_out is zero
    wide = widen_unet_latent(unet, 6)
    assert (wide.config.in_channels, wide.config.out_channels) == (7, 6)
    latents, mask = torch.randn(2, 4, 8, 6), torch.rand(2, 1, 8, 6)
    t, cond = torch.tensor([3, 700]), torch.randn(2, time_embed_dim(unet))
    with torch.no_grad():
        before = unet(torch.cat([latents, mask], 1), t, class_labels=cond).sample
        after = wide(torch.cat([latents, torch.randn(2, 2, 8, 6), mask], 1), t, class_labels=cond).sample
    torch.testing.assert_close(after[:, :4], before, atol=1e-5, rtol=0)
    assert torch.equal(after[:, 4:], torch.zeros_like(after[:, 4:]))
    with pytest.raises(ValueError, match="larger than the UNet's own 4"):
        widen_unet_latent(unet, 3)


def test_reconstruct_sends_uint16_frames_through_the_vae_and_back():
    torch.manual_seed(0)
    vae = build_vae(**VAE_PRESETS["tiny"]).eval()
    frames = (np.random.default_rng(0).random((3, 32, 24)) * 65535).astype(np.uint16)
    out = reconstruct(vae, frames)
    assert out.shape == frames.shape and out.dtype == np.uint16
    with torch.no_grad():  # by hand: [-1, 1], posterior mean, decode, back to uint16
        x = torch.from_numpy(frames[:, None].astype(np.float32)) / 32767.5 - 1
        expected = vae.decode(vae.encode(x).latent_dist.mode()).sample[:, 0].numpy()
    np.testing.assert_array_equal(out, np.clip(np.rint((expected + 1) * 32767.5), 0, 65535).astype(np.uint16))
    # batches of 2 sum in another order: the same image up to rounding
    assert np.abs(reconstruct(vae, frames, batch_size=2).astype(int) - out).max() <= 1
    with pytest.raises(ValueError, match="uint16"):
        reconstruct(vae, frames.astype(np.float32))
