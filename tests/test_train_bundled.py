"""scripts/train_bundled.sh rebuilds a whole checkpoint from nothing (tiny step counts, a small phantom)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

#: Every stage of the script, each for a step or two: what the shipped recipe runs, only shorter.
TINY = {"PHANTOM_STUDIES": "10", "VAE_STEPS": "2", "LDM_STEPS": "2", "DEC_STEPS": "2", "WIDE_STEPS": "2",
        "WIDE_LDM_STEPS": "2", "LESION_LDM_STEPS": "2", "LABEL_LDM_STEPS": "2", "SIAMESE_LEGS": "2 3 4",
        "SIAMESE_WIDE_STEPS": "2", "ENCODER_EPOCHS": "1", "STUDENT_STEPS": "2", "TINY_STEPS": "2", "CARD_ARGS": "--seeds 1 --steps 2",
        "THREADS": "1"}


@pytest.mark.slow
def test_train_bundled_rebuilds_a_gated_checkpoint_from_nothing_and_resumes(tmp_path: Path):
    env = {**os.environ, **TINY, "PHANTOM": str(tmp_path / "phantom"), "DATA": str(tmp_path / "prepared"),
           "RUNS": str(tmp_path / "runs"), "CKPT": str(tmp_path / "ckpt")}
    first = subprocess.run(["bash", "scripts/train_bundled.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    ckpt = tmp_path / "ckpt"
    index = json.loads((ckpt / "model_index.json").read_text())
    assert index["privacy_checker"] == ["mammosynth.privacy.checker", "PrivacyChecker"]
    assert (ckpt / "feature_extractor" / "config.json").is_file() and (ckpt / "README.md").is_file()
    unet = json.loads((ckpt / "unet" / "config.json").read_text())
    assert unet["out_channels"] == 8  # the widened latents of stages 4-5c
    for run in ("vae", "ldm", "vae_decoder", "vae_wide", "ldm_wide", "ldm_lesion", "ldm_label", "siamese",
                "siamese-wide"):
        assert json.loads((tmp_path / "runs" / run / "run.json").read_text())["finished"] is True, run
    assert json.loads((tmp_path / "runs" / "siamese" / "run.json").read_text())["metrics"]["steps"] == 4
    # stage 7b: the gate's network is the wide-geometry leg, and the gate has the copy sketch
    checker_config = json.loads((ckpt / "privacy_checker" / "config.json").read_text())
    assert checker_config["embedder_config"]["trained_augment"]["max_scale"] == pytest.approx(0.18)
    assert checker_config["sketch"]["block_dim"] == 64

    from mammosynth.conditions import Conditions
    from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline

    pipe = MammoLDMPipeline.from_pretrained(ckpt)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(conditions=[Conditions.create(birads=4, lesion="mass")], num_inference_steps=2,
               generator=[torch.Generator().manual_seed(0)])
    assert out.images[0].dtype == np.uint16 and out.privacy is not None and len(out.privacy) == 1
    assert pipe.has_student and pipe.has_tiny_decoder   # stage 9b
    pipe.scheduler = pipe.scheduler_named("lcm")
    fast = pipe(conditions=[Conditions.create(birads=4, lesion="mass")], decoder="tiny",
                generator=[torch.Generator().manual_seed(0)])
    assert fast.images[0].shape == out.images[0].shape and fast.privacy is not None

    # a second run trains nothing again: every stage finds its result
    again = subprocess.run(["bash", "scripts/train_bundled.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for stage in ("VAE already trained", "label-mask LDM already trained", "Siamese network already trained"):
        assert stage in again.stdout
