"""train-siamese → build-index → privacy-audit on tiny data: the gate catches planted copies."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import torch

from mammosynth.cli import main as cli_main
from mammosynth.data.prepared import PreparedWriter, load_prepared
from mammosynth.privacy.audit import (AuditConfig, EmptySyntheticSetError, audit_summary, load_synthetic, run_audit,
                                      write_report)
from mammosynth.privacy.checker import PrivacyChecker
from mammosynth.models.siamese import SiameseEmbedder
from mammosynth.privacy.index import IndexMismatchError
from mammosynth.privacy.membership import AttackConfig

TRAIN_ARGS = ["--input_size", "48x32", "--embedding_dim", "32", "--block_inplanes", "8,16,32,32",
              "--train_batch_size", "32", "--learning_rate", "3e-3", "--lr_warmup_steps", "5",
              "--validation_steps", "50", "--checkpointing_steps", "50", "--logging_steps", "10",
              "--no_progress", "--num_threads", "1"]
# the same run options without the architecture (a warm start keeps its network's) at a vanishing learning rate
WARM_ARGS = [*TRAIN_ARGS[6:8], "--learning_rate", "1e-12", *TRAIN_ARGS[10:]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Real data (12 training + 6 test studies), a trained Siamese run and its checker."""
    from test_privacy_data import make_prepared

    root = tmp_path_factory.mktemp("audit")
    data_root = make_prepared(root / "real", studies=12, test_studies=6, seed=1)
    run = root / "siamese"
    assert cli_main(["train-siamese", "--data", str(data_root), "--out", str(run), "--max_train_steps", "150",
                     *TRAIN_ARGS]) == 0
    from test_privacy_membership import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.register_to_config(requires_privacy_checker=True)
    pipe.save_pretrained(root / "ckpt")  # a trained pipeline folder that has no gate yet
    checker_dir = root / "ckpt" / "privacy_checker"
    assert cli_main(["build-index", "--siamese", str(run), "--data", str(data_root), "--out", str(checker_dir)]) == 0
    synthetic = make_prepared(root / "synth", studies=5, test_studies=0, seed=2, source="synthetic",
                              split_all="synthetic")
    return {"root": root, "data": data_root, "run": run, "checker": checker_dir, "synthetic": synthetic}


def test_build_index_registers_the_gate_in_the_checkpoint(world):
    index = json.loads((world["root"] / "ckpt" / "model_index.json").read_text())
    assert index["privacy_checker"] == ["mammosynth.privacy.checker", "PrivacyChecker"]
    assert index["requires_privacy_checker"] is True
    made = json.loads((world["checker"] / "build_report.json").read_text())["siamese_run"]
    assert made["steps"] == 150 and len(made["all_argv"]) == 1  # one invocation so far (resumed later)


def test_build_index_with_zoom_tta(world, tmp_path):
    out = tmp_path / "zoomed"
    assert cli_main(["build-index", "--siamese", str(world["run"]), "--data", str(world["data"]),
                     "--out", str(out), "--zoom-tta", "0.9,1.1"]) == 0
    zoomed = PrivacyChecker.from_pretrained(out)
    plain = PrivacyChecker.from_pretrained(world["checker"])
    assert list(zoomed.embedder.config.zoom_tta) == [0.9, 1.1] and not plain.embedder.config.zoom_tta
    assert json.loads((out / "build_report.json").read_text())["embedder"]["zoom_tta"] == [0.9, 1.1]
    assert zoomed.config.embedder_fingerprint != plain.config.embedder_fingerprint
    # the zoomed network's embeddings differ, so the plain index refuses it
    with pytest.raises(IndexMismatchError):
        plain.index.check_compatible(zoomed.embedder.fingerprint(), plain.index.image_size)
    with pytest.raises(SystemExit):
        cli_main(["build-index", "--siamese", str(world["run"]), "--data", str(world["data"]),
                  "--out", str(out), "--zoom-tta", "0.9,big"])


def test_build_index_keeps_the_faiss_setting_and_refuses_a_bad_one(world, tmp_path, capsys):
    pytest.importorskip("faiss")
    out = tmp_path / "ivf"
    assert cli_main(["build-index", "--siamese", str(world["run"]), "--data", str(world["data"]), "--out", str(out),
                     "--backend", "faiss", "--faiss-factory", "IVF4,Flat", "--nprobe", "4", "--no-copy-sketch"]) == 0
    gate = PrivacyChecker.from_pretrained(out)
    assert gate.index.search_settings == {"backend": "faiss", "faiss_factory": "IVF4,Flat", "nprobe": 4}
    report = json.loads((out / "build_report.json").read_text())["index"]
    assert (report["backend"], report["faiss_factory"], report["nprobe"]) == ("faiss", "IVF4,Flat", 4)
    capsys.readouterr()
    assert cli_main(["build-index", "--siamese", str(world["run"]), "--data", str(world["data"]),
                     "--out", str(tmp_path / "bad"), "--faiss-factory", "IVF?,Flat"]) == 2
    assert "'IVF?,Flat' is not a faiss factory string" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_train_siamese_writes_model_metrics_and_resumes(world):
    run = world["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 150 and metrics["split"] == "test" and metrics["n_studies"] == 6
    for key in ("mean_average_precision_at_r", "precision_at_1", "r_precision", "verification_auc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (run / "siamese" / "config.json").exists() and (run / "log.csv").exists()
    assert (run / "checkpoints" / "checkpoint-150").is_dir()
    # the held-out retrieval monitored during training reaches log.csv (a column that first
    # appears after the first logged row widens the file instead of being dropped)
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    monitored = [r for r in rows if r["test_mean_average_precision_at_r"]]
    assert monitored and float(monitored[-1]["test_mean_average_precision_at_r"]) > 0
    assert all(r["loss"] for r in rows)
    # learned something: same-study images are told apart better than chance (1 of 17 others)
    assert metrics["precision_at_1"] > 0.3 and metrics["verification_auc"] > 0.7
    # resume: 10 more steps continue from checkpoint-150
    assert cli_main(["train-siamese", "--data", str(world["data"]), "--out", str(run), "--max_train_steps", "160",
                     *TRAIN_ARGS]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["steps"] == 160
    info = json.loads((run / "run.json").read_text())
    assert len(info["invocations"]) == 2
    # --max_minutes is the budget of the whole run: a resume whose budget is already spent
    # trains no step
    assert cli_main(["train-siamese", "--data", str(world["data"]), "--out", str(run), "--max_train_steps", "170",
                     "--max_minutes", "0.001", *TRAIN_ARGS]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 160
    assert not (run / "checkpoints" / "checkpoint-161").exists()


def test_train_siamese_warm_start_with_wider_disguises(world, tmp_path, capsys):
    """--init_siamese starts from a trained network (here its privacy_checker/, zoom views off) and records the
    disguise ranges it was trained with, which the battery then reports as the seen families' trained ranges."""
    from mammosynth.privacy.augment import AugmentConfig
    from mammosynth.privacy.disguises import run_battery

    gate = PrivacyChecker.from_pretrained(world["checker"])
    run = tmp_path / "wider"
    assert cli_main(["train-siamese", "--data", str(world["data"]), "--out", str(run), "--init_siamese",
                     str(world["checker"]), "--max_shift", "0.1", "--max_scale", "0.18", "--max_rotation_deg", "6",
                     "--max_train_steps", "1", *WARM_ARGS]) == 0
    widened = SiameseEmbedder.from_pretrained(run / "siamese")
    assert widened.config.trained_augment == AugmentConfig(max_shift=0.1, max_scale=0.18, max_rotation_deg=6).to_dict()
    assert not widened.config.zoom_tta
    # one step at a vanishing learning rate: the weights are the start's (BatchNorm statistics move a little)
    start = gate.embedder.state_dict()
    assert all(torch.allclose(t, start[k], atol=1e-6) for k, t in widened.state_dict().items() if k.endswith("conv1.weight"))
    assert not torch.allclose(SiameseEmbedder(**dict(widened.config)).backbone.conv1.weight, widened.backbone.conv1.weight)
    out = tmp_path / "gate"
    assert cli_main(["build-index", "--siamese", str(run), "--data", str(world["data"]), "--out", str(out),
                     "--no-copy-sketch"]) == 0
    battery = run_battery(PrivacyChecker.from_pretrained(out), load_prepared(world["data"]), per_family=2,
                          families=("translation", "scale_crop", "rotation", "aspect"))["families"]
    assert [battery[f]["trained_range"] for f in ("translation", "scale_crop", "rotation", "aspect")] == \
        ["+-10 %", "zoom x0.82-1.18", "+-6 deg", None]
    assert run_battery(gate, load_prepared(world["data"]), per_family=2,
                       families=("translation",))["families"]["translation"]["trained_range"] == "+-4 %"
    capsys.readouterr()
    assert cli_main(["train-siamese", "--data", str(world["data"]), "--out", str(tmp_path / "bad"), "--init_siamese",
                     str(world["checker"]), "--embedding_dim", "8", "--max_train_steps", "1", *WARM_ARGS]) == 2
    assert "--init_siamese keeps that network's architecture; leave out --embedding_dim" in capsys.readouterr().err
    assert cli_main(["train-siamese", "--data", str(world["data"]), "--out", str(tmp_path / "bad2"),
                     "--max_shift", "0.7", "--max_train_steps", "1", *TRAIN_ARGS]) == 2
    assert "max_shift has to be in [0, 0.5), not 0.7" in capsys.readouterr().err


def test_audit_catches_planted_copies_and_writes_report(world, tmp_path):
    from test_privacy_membership import tiny_pipeline

    checker = PrivacyChecker.from_pretrained(world["checker"])
    data, synthetic = load_prepared(world["data"]), load_prepared(world["synthetic"])
    config = AuditConfig(planted_copies=48, mia_members=8, mia_nonmembers=8, mia_bootstrap=50,
                         attack=AttackConfig(timesteps=(100,), noise_draws=1, secmi_t=20, secmi_interval=20))
    report = run_audit(checker, data, synthetic, tiny_pipeline(), config)
    copies = report["planted_copies"]
    assert copies["n"] == 48
    # every disguised training copy is caught by the gate and traced to its patient (its
    # nearest training image is often a sibling view of the same study; chance is 1/48)
    assert copies["gate_recall"]["rate"] >= 0.95
    assert copies["source_found_at_rank1"] > 0.3
    assert copies["copies_vs_train_retrieval"]["precision_at_1"] >= 0.9
    assert report["false_flags"]["unseen_real_test"]["rate"] <= 1 / 24 + 1e-9  # calibration: at most the max
    assert 0.0 <= report["reid"]["synthetic_closer_than_real_auc"] <= 1.0
    assert "note" in report["reid"]["synthetic_vs_train_retrieval"]  # no source study in extra
    assert set(report["membership"]["attacks"]) == {"loss", "secmi"}
    assert report["pixel_nn"]["synthetic_to_train"]["n"] == 20
    files = write_report(report, tmp_path / "reports" / "privacy.json")
    names = sorted(f.name for f in files)
    assert names == ["privacy.json", "privacy_membership_roc.png", "privacy_pixel_nn.png", "privacy_similarity.png"]
    body = json.loads((tmp_path / "reports" / "privacy.json").read_text())  # strict JSON (no NaN)
    assert body["planted_copies"]["n"] == 48 and "_arrays" not in body
    # the report ships with the model card: it names no training image or study unless asked
    text = (tmp_path / "reports" / "privacy.json").read_text()
    members = set(checker.config.index_image_ids) | set(checker.config.index_study_ids)
    assert not [m for m in members if m in text]
    assert len(body["reid"]["most_similar_synthetic"]) == 10
    named = run_audit(checker, data, synthetic, None, replace(config, membership=False, planted_copies=0,
                                                               name_training_ids=True))
    assert {e["training_id"] for e in named["reid"]["most_similar_synthetic"]} <= members
    summary = audit_summary(body)  # the lines the model card quotes
    recall = body["planted_copies"]["gate_recall"]["rate"]
    assert f"planted copies: gate recall {recall:.2%} of 48" in summary
    assert f"(cross-validated {body['false_flags']['unseen_real_cross_validated']:.2%})" in summary
    low, high = body["membership"]["attacks"]["loss"]["members_vs_nonmembers"]["auc"]["ci95"]
    assert f"[{low:.2f}, {high:.2f}]" in summary


def test_synthetic_with_source_studies_gets_map_at_r(world):
    """Synthetic images that reproduce their source patient score a high mAP@R."""
    from test_privacy_data import make_prepared

    data = load_prepared(world["data"])
    train = data.split("training")
    first = train.drop_duplicates("study_id").iloc[:3]
    extra = [{"source_study_id": sid} for sid in first["study_id"] for _ in range(4)]
    # "synthetic" images that are fresh renders of the first 3 training patients' own tissue
    from test_privacy_data import study_patterns

    patterns = study_patterns(seed=1, count=3)
    leaky = load_prepared(make_prepared(world["root"] / "leaky", studies=3, test_studies=0, seed=1,
                                        split_all="synthetic", patterns=patterns, extra=extra))
    checker = PrivacyChecker.from_pretrained(world["checker"])
    report = run_audit(checker, data, leaky, None, AuditConfig(planted_copies=0, membership=False))
    # chance level is 4/48 (4 images of the source study among 48 training images)
    assert report["reid"]["synthetic_vs_train_retrieval"]["mean_average_precision_at_r"] > 0.5
    assert report["membership"] == {"skipped": "disabled"}


def test_audit_refuses_bad_inputs(world, tmp_path):
    from test_privacy_data import make_prepared

    checker = PrivacyChecker.from_pretrained(world["checker"])
    data = load_prepared(world["data"])
    with PreparedWriter(tmp_path / "empty", 64, 48) as writer:
        writer.finalize()
    with pytest.raises(EmptySyntheticSetError, match="holds no images"):
        load_synthetic(tmp_path / "empty")
    wrong = load_prepared(make_prepared(tmp_path / "wrong", studies=1, test_studies=0, height=72, width=56,
                                        split_all="synthetic"))
    with pytest.raises(IndexMismatchError, match="--synthetic .* images are 72x56"):
        run_audit(checker, data, wrong, None, AuditConfig(membership=False))
    other = load_prepared(make_prepared(tmp_path / "other", studies=3, test_studies=2, seed=7))
    with pytest.raises(IndexMismatchError, match="built from other data"):
        run_audit(checker, other, load_prepared(world["synthetic"]), None, AuditConfig(membership=False))


def test_privacy_audit_cli(world, tmp_path, capsys):
    out = tmp_path / "r" / "privacy.json"
    code = cli_main(["privacy-audit", "--checkpoint", str(world["root"] / "ckpt"), "--data", str(world["data"]),
                     "--synthetic", str(world["synthetic"]), "--out", str(out), "--no-membership",
                     "--copies", "12", "--bootstrap", "20"])
    assert code == 0
    assert "planted copies: gate recall" in capsys.readouterr().out
    assert json.loads(out.read_text())["membership"] == {"skipped": "disabled"}
    # a checkpoint without privacy files, and an empty synthetic folder: clear CLI errors
    (tmp_path / "bare").mkdir()
    assert cli_main(["privacy-audit", "--checkpoint", str(tmp_path / "bare"), "--data", str(world["data"]),
                     "--synthetic", str(world["synthetic"]), "--out", str(out), "--no-membership"]) == 2
    assert "no privacy checker" in capsys.readouterr().err
    with PreparedWriter(tmp_path / "empty", 64, 48) as writer:
        writer.finalize()
    assert cli_main(["privacy-audit", "--checker", str(world["checker"]), "--data", str(world["data"]),
                     "--synthetic", str(tmp_path / "empty"), "--out", str(out), "--no-membership"]) == 2
    assert "holds no images" in capsys.readouterr().err
