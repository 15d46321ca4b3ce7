"""The audit's positive control (issue 20), end to end at tiny size: the member set, the memoriser's
fine-tune through train-ldm, both models measured with the same gate and attacks, resuming.

At this size the memoriser does not memorise (the tiny pipeline's VAE is untrained, so no latent
decodes to its image): whether the full-size control is caught is measured by the command on the
bundled checkpoint and quoted in the model card, not asserted here.
"""

from __future__ import annotations

import json

from test_privacy_audit import world  # noqa: F401 - the real small audit world (data, Siamese, checker)

from mammosynth.cli import main as cli_main


def roomy_checkpoint(world, folder):  # noqa: F811
    """The audit world's gate on a tiny pipeline whose UNet has room to memorise."""
    import shutil

    from test_privacy_membership import tiny_pipeline

    from mammosynth.pipelines.checkpoint import register_privacy_checker

    pipe = tiny_pipeline(unet_channels=(32, 64))
    pipe.register_to_config(requires_privacy_checker=True)
    pipe.save_pretrained(folder)
    shutil.copytree(world["checker"], folder / "privacy_checker")
    assert register_privacy_checker(folder)
    return folder


def test_a_memorising_model_is_caught_and_the_real_one_is_not(world, tmp_path):  # noqa: F811
    out, checkpoint = tmp_path / "control", roomy_checkpoint(world, tmp_path / "ckpt")
    args = ["positive-control", "--checkpoint", str(checkpoint), "--data", str(world["data"]), "--out", str(out),
            "--images", "8", "--test-images", "12", "--steps", "60", "--learning-rate", "2e-3", "--batch-size", "8",
            "--sample-steps", "4", "--mia-timesteps", "50", "--bootstrap", "20", "--num-threads", "1"]
    code = cli_main(args)
    report = json.loads((out / "positive_control.json").read_text())
    mem, real = report["memorising"], report["real"]
    assert report["member_images"] == 8 and report["member_studies"] == 2 and report["unseen_images"] == 12
    assert mem["samples"] == real["samples"] == 8
    for figures in (mem, real):  # every figure of both models, measured the same way
        assert 0 <= figures["flagged_rate"] <= 1 and 0 <= figures["reid_map_at_r"] <= 1
        assert 0 <= figures["membership_auc"] <= 1 and len(figures["membership_auc_ci95"]) == 2
    # the memoriser is its own model, fine-tuned from the checkpoint on the member set only
    trained = json.loads((out / "memoriser" / "run.json").read_text())
    assert trained["metrics"]["steps"] == 60 and trained["invocations"][0]["config"]["init_pipeline"] == str(checkpoint)
    assert report["caught"] == all(report["checks"].values()) and code == (0 if report["caught"] else 1)
    # resumable: a second run reuses the subset, the memoriser and the samples (the attacks are re-scored)
    trained_log = (out / "memoriser" / "log.csv").read_text()
    samples = (out / "samples-memorising" / "images.u16").read_bytes()
    cli_main(args)
    assert (out / "memoriser" / "log.csv").read_text() == trained_log
    assert (out / "samples-memorising" / "images.u16").read_bytes() == samples
    redo = json.loads((out / "positive_control.json").read_text())["memorising"]
    assert {k: redo[k] for k in ("flagged_rate", "reid_map_at_r", "samples")} == {
        k: mem[k] for k in ("flagged_rate", "reid_map_at_r", "samples")}
