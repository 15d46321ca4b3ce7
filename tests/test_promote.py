"""mammosynth promote: a candidate replaces the shipped checkpoint only when it measures better."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from mammosynth.cli import main as cli
from mammosynth.pipelines.checkpoint import fingerprint
from mammosynth.training.promote import PromotionError, compare, promote
from mammosynth.ui.testing import make_tiny_checkpoint

BUNDLED_REPORTS = Path(__file__).resolve().parents[1] / "checkpoints" / "mammosynth-phantom-256" / "reports"


def reports(folder: Path, fid: float, c2st: float, lesion: float = 0.92, reid: float = 0.0012, n_test: int = 828,
            n_synthetic: int = 1600) -> None:
    """The bundled checkpoint's own reports (their real format) with the numbers a test sets."""
    metrics = json.loads((BUNDLED_REPORTS / "eval" / "metrics.json").read_text())
    privacy = json.loads((BUNDLED_REPORTS / "privacy.json").read_text())
    metrics = copy.deepcopy(metrics)
    metrics["fidelity"]["synthetic_vs_real_at_floor_size"]["fid"] = fid
    metrics["realism"]["c2st_images"]["auc"] = c2st
    metrics["adherence"]["ratio"]["lesion_accuracy"] = lesion
    metrics["real"]["n_test"], metrics["synthetic"]["n"] = n_test, n_synthetic
    privacy["reid"]["synthetic_vs_train_retrieval"]["mean_average_precision_at_r"] = reid
    for target in privacy["targets"].values():   # the audit's own targets: met, unless a test changes one
        target["met"] = True
    (folder / "reports" / "eval").mkdir(parents=True, exist_ok=True)
    (folder / "reports" / "eval" / "metrics.json").write_text(json.dumps(metrics))
    (folder / "reports" / "privacy.json").write_text(json.dumps(privacy))


@pytest.fixture
def pair(tmp_path):
    shipped = make_tiny_checkpoint(tmp_path / "checkpoints" / "shipped", seed=0)
    candidate = make_tiny_checkpoint(tmp_path / "candidate", seed=1)
    reports(shipped, fid=4.4, c2st=0.98)
    return shipped, candidate


def test_a_better_candidate_replaces_the_shipped_folder_whole(pair, capsys):
    shipped, candidate = pair
    reports(candidate, fid=3.0, c2st=0.91, lesion=0.915)  # lesion within the 0.01 tolerance
    before, wanted = fingerprint(shipped), fingerprint(candidate)
    assert cli(["promote", "--candidate", str(candidate), "--shipped", str(shipped), "--dry-run"]) == 0
    assert "would promote" in capsys.readouterr().out and fingerprint(shipped) == before  # a dry run changes nothing
    assert cli(["promote", "--candidate", str(candidate), "--shipped", str(shipped)]) == 0
    assert fingerprint(shipped) == wanted and fingerprint(candidate) == wanted
    record = json.loads((shipped / "promotion.json").read_text())
    assert record["promote"] and record["replaced_sha256"] == before and record["candidate_sha256"] == wanted
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["shipped"]  # no staging or old folder left


@pytest.mark.parametrize("change, failed", [
    ({"fid": 4.5}, "FID (floor size) lower"),
    ({"c2st": 0.99}, "CNN C2ST AUC lower"),
    ({"lesion": 0.85}, "lesion adherence"),
    ({"reid": 0.02}, "re-ID mAP@R <= 0.005"),
    ({"n_synthetic": 400}, "measured on >= 1600 synthetic images"),
])
def test_a_candidate_that_loses_anywhere_is_not_promoted(pair, capsys, change, failed):
    shipped, candidate = pair
    reports(candidate, **{"fid": 3.0, "c2st": 0.91, **change})
    before = fingerprint(shipped)
    assert cli(["promote", "--candidate", str(candidate), "--shipped", str(shipped)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED {failed}" in out and "not promoted" in out
    assert [c["check"] for c in compare(candidate, shipped)["checks"] if not c["passed"]][0].startswith(failed)
    assert fingerprint(shipped) == before and not (shipped / "promotion.json").exists()


def test_reports_must_exist_and_describe_the_same_test_set(pair, capsys):
    shipped, candidate = pair
    assert cli(["promote", "--candidate", str(candidate), "--shipped", str(shipped)]) == 2
    assert "scripts/evaluate_bundled.sh" in capsys.readouterr().err
    reports(candidate, fid=3.0, c2st=0.9, n_test=400)
    with pytest.raises(PromotionError, match="400 real test images"):
        promote(candidate, shipped)
    shutil.rmtree(candidate / "unet")
    with pytest.raises(ValueError, match="unet"):
        promote(candidate, shipped)
