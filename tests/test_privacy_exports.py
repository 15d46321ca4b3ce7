"""Exports disclose no training member (issue 20, point 4): every file a user can take away from
`sample`, the app and `generate-set` is searched for every training id of the gate's index.

Each test also turns the operator's explicit option on and finds the ids: so the search is known
to see them when they are there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mammosynth.cli import main
from mammosynth.conditions import Conditions
from mammosynth.ui.testing import make_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exports")
    # threshold None keeps the calibrated one: a random network flags every image, so the
    # flagged path (which once carried the neighbours too) is what gets exported
    return make_tiny_checkpoint(root / "ckpt", threshold=None, training_data=root / "train")


def training_ids(checkpoint: Path) -> set[str]:
    config = json.loads((checkpoint / "privacy_checker" / "config.json").read_text())
    return set(config["index_image_ids"]) | set(config["index_study_ids"])


def files_naming(folder: Path, ids: set[str], skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """``{file: [ids found in its bytes]}`` for every file under ``folder`` (names in ``skip`` excepted)."""
    found = {}
    files = [p for p in folder.rglob("*") if p.is_file() and p.name not in skip]
    assert files, f"nothing was exported to {folder}"
    for path in files:
        data = path.read_bytes()
        hits = sorted(i for i in ids if i.encode() in data)
        if hits:
            found[str(path.relative_to(folder))] = hits
    return found


def test_sample_exports_name_no_training_image_unless_asked(checkpoint, tmp_path, caplog):
    from mammosynth.privacy.checker import PrivacyChecker

    ids = training_ids(checkpoint)
    assert main(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "plain"), "--num", "2",
                 "--steps", "2", "--dicom"]) == 0
    assert files_naming(tmp_path / "plain", ids) == {}
    recipe = json.loads((tmp_path / "plain" / "sample_seed000000.json").read_text())
    checker = PrivacyChecker.from_pretrained(checkpoint / "privacy_checker")
    assert recipe["privacy"] == {"flagged": True, "similarity": pytest.approx(recipe["privacy"]["similarity"]),
                                 "threshold": checker.threshold, "checker": checker.fingerprint()}
    assert len(checker.fingerprint()) == 64

    with caplog.at_level(logging.WARNING):
        assert main(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "named"), "--num", "1",
                     "--steps", "2", "--dicom", "--name-training-neighbours"]) == 0
    named = files_naming(tmp_path / "named", ids)
    assert set(named) == {"sample_seed000000.json", "sample_seed000000.dcm"}
    assert "names the nearest training images" in caplog.text


def test_app_downloads_name_no_training_image(checkpoint, tmp_path):
    from mammosynth.ui.model import GenerationRequest, ModelService, write_outputs

    service = ModelService(checkpoint)
    request = GenerationRequest(conditions=Conditions.create(view="MLO", laterality="L"), seed=5, num_images=2,
                                num_inference_steps=2, guidance_scale=2.0, scheduler="dpm")
    images = service.generate(request)
    assert all(im.verdict is not None and im.verdict.neighbours for im in images)  # the server knows them
    for image in images:
        write_outputs(image, tmp_path / "downloads")
    assert files_naming(tmp_path / "downloads", training_ids(checkpoint)) == {}


def test_generate_set_names_training_sources_only_in_their_own_file(checkpoint, tmp_path):
    from mammosynth.data.prepared import load_prepared
    from mammosynth.evaluation.generate_set import (TRAINING_SOURCES, GenerationSettings, generate_set,
                                                    read_training_sources)
    from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline

    like = checkpoint.parent / "train"
    pipe = MammoLDMPipeline.from_pretrained(checkpoint)
    pipe.privacy_checker.register_to_config(threshold=1.0)  # nothing flagged: every row is written
    settings = GenerationSettings(num_inference_steps=2, guidance_scale=2.0, batch_size=3, seed=1)
    generate_set(pipe, like, tmp_path / "set", split="training", settings=settings, progress=False)
    ids = training_ids(checkpoint)
    assert files_naming(tmp_path / "set", ids, skip=(TRAINING_SOURCES,)) == {}
    # the audit's source mapping is there, apart, and complete
    sources = read_training_sources(tmp_path / "set")
    real = load_prepared(like).manifest
    synthetic = load_prepared(tmp_path / "set").manifest
    assert set(sources) == set(synthetic["image_id"])
    assert sorted(image for _, image in sources.values()) == sorted(real["image_id"])
    assert {study for study, _ in sources.values()} == set(real["study_id"])
