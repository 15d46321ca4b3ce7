"""The whole evaluation end to end on tiny toy sets: CLI, metrics.json, plots, summary, paper table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mammosynth.cli import main
from mammosynth.data.prepared import PreparedWriter, load_prepared
from mammosynth.data.toy import write_toy_dataset

TINY = ["--classifier-size", "32x24", "--epochs", "2", "--seeds", "0,1", "--encoder-epochs", "3",
        "--encoder-size", "32x24", "--bootstrap", "50", "--threads", "1"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    real = write_toy_dataset(root / "real", 96, height=32, width=24, seed=0)
    shifted = write_toy_dataset(root / "shifted", 48, height=32, width=24, seed=1, split="training",
                                shift=0.4, source="synthetic")
    # an "identical" synthetic set: the real test split copied frame by frame
    data = load_prepared(real)
    test = data.split("test")
    with PreparedWriter(root / "copy", 32, 24, meta={"source": "synthetic"}) as writer:
        for (_, row), frame in zip(test.iterrows(), data.frames(test["index"].to_numpy())):
            writer.add(frame, {k: row[k] for k in row.index if k != "index"})
        writer.finalize()
    return {"real": real, "shifted": shifted, "copy": root / "copy", "root": root}


def test_evaluate_end_to_end_on_a_shifted_set(sets, capsys):
    out = sets["root"] / "reports" / "eval"
    out.parent.mkdir(parents=True, exist_ok=True)
    (sets["root"] / "reports" / "privacy.json").write_text(json.dumps(
        {"reid": {"synthetic_vs_train_retrieval": {"mean_average_precision_at_r": 0.0123}},
         "siamese_verification": {"mean_average_precision_at_r": 0.95}}))
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["shifted"]), "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON: no NaN
    assert set(metrics) >= {"fidelity", "utility", "adherence", "realism", "privacy", "targets", "timings_s"}
    for name in ("metrics.json", "summary.md", "roc.png", "fidelity.png", "adherence.png", "samples.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "feature_extractor" / "config.json").exists()  # trained here and saved
    fidelity = metrics["fidelity"]
    # a visibly shifted set is farther from real than real is from real
    assert fidelity["synthetic_vs_real_at_floor_size"]["fid"] > fidelity["real_vs_real_floor"]["fid"]
    assert fidelity["real_vs_real_floor"]["n_real"] + fidelity["real_vs_real_floor"]["n_fake"] == metrics["real"]["n_test"]
    assert metrics["realism"]["c2st_images"]["auc"] > 0.75  # 2 epochs on 24 pairs; 0.5 = indistinguishable
    for regime in ("trtr", "tstr", "real_plus_synthetic"):
        auc = metrics["utility"][regime]["cancer_auc"]
        assert 0 <= auc["ci_low"] <= auc["auc"] <= auc["ci_high"] <= 1
        assert len(metrics["utility"][regime]["cancer_auc_per_seed"]) == 2
    assert metrics["adherence"]["real"]["view_accuracy"] is not None
    assert metrics["privacy"]["report"]["reid"]["synthetic_vs_train_retrieval"]["mean_average_precision_at_r"] == 0.0123
    summary = (out / "summary.md").read_text()
    assert "real vs real floor" in summary and "TSTR" in summary and "Targets" in summary
    assert "MISSED" in capsys.readouterr().out or all(t["met"] for t in metrics["targets"])

    # the paper table finds both reports and picks the synthetic re-ID mAP@R, not the network's own
    table_path = sets["root"] / "reports" / "table.md"
    assert main(["paper-table", "--reports", str(sets["root"] / "reports"), "--out", str(table_path)]) == 0
    table = table_path.read_text()
    assert "| FID ↓ | 5.8 |" in table and "0.77" in table and "0.82" in table and "0.0051" in table
    assert "0.0123" in table and "0.9500" not in table
    assert str(sets["real"]) in table and "toy" in table


def test_identical_synthetic_set_scores_like_real(sets, tmp_path):
    out = tmp_path / "same"
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["copy"]), "--out", str(out),
                 "--parts", "fidelity,realism", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    whole = metrics["fidelity"]["synthetic_vs_real"]
    assert whole["fid"] == pytest.approx(0.0, abs=1e-6)
    assert whole["precision"] == 1.0 and whole["recall"] == 1.0 and whole["coverage"] == 1.0
    assert whole["c2st_features_auc"] == pytest.approx(0.5)
    assert metrics["realism"]["c2st_images"]["auc"] == pytest.approx(0.5)
    assert "utility" not in metrics


def test_evaluate_errors_are_clear(sets, tmp_path, capsys):
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["copy"]), "--out", str(tmp_path),
                 "--parts", "fidelity,beauty"]) == 2
    assert "unknown evaluation part" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["copy"]), "--out", str(tmp_path),
                 "--checkpoint", str(tmp_path)]) == 2
    assert "no fidelity encoder" in capsys.readouterr().err
    assert main(["paper-table", "--reports", str(tmp_path / "missing")]) == 2


def test_inception_weights_from_a_local_torchscript_file(sets, tmp_path):
    class TinyInception(torch.nn.Module):
        """Stands in for inception-2015-12-05.pt: same call signature, 0–255 RGB in, features out."""

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.shape[1] == 3
            pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) / 255.0
            return pooled if return_features else pooled.sum(1, keepdim=True)

    path = tmp_path / "inception.pt"
    torch.jit.script(TinyInception()).save(str(path))
    out = tmp_path / "incep"
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["copy"]), "--out", str(out),
                 "--parts", "fidelity", "--inception-weights", str(path), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fidelity"]["extractor"] == {"kind": "inception-torchscript", "path": str(path)}
    assert metrics["fidelity"]["synthetic_vs_real"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert not (out / "feature_extractor").exists()  # no encoder needed for fidelity with Inception
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["copy"]), "--out", str(out),
                 "--parts", "fidelity", "--inception-weights", str(bad)]) == 2


def test_reports_say_when_the_real_data_is_phantom(sets, tmp_path):
    from mammosynth.evaluation.evaluate import PHANTOM_MANUFACTURER, describe_source

    assert describe_source(load_prepared(sets["real"])) == {"source": "toy", "is_phantom": False}
    data = load_prepared(sets["real"])
    rows = data.manifest.head(2)
    # as ingestion writes phantom DICOM: no source in meta, the layout it came from, manufacturer in extra
    with PreparedWriter(tmp_path / "ph", 32, 24, meta={"source_format": "vindr"}) as writer:
        for (_, row), frame in zip(rows.iterrows(), data.frames(rows["index"].to_numpy())):
            record = {k: row[k] for k in row.index if k != "index"}
            record["extra"] = {"manufacturer": PHANTOM_MANUFACTURER}
            writer.add(frame, record)
        writer.finalize()
    assert describe_source(load_prepared(tmp_path / "ph")) == {"source": "vindr layout", "is_phantom": True}


def test_reconstruction_and_texture_parts_measure_the_vae_ceiling(sets, tmp_path, capsys):
    from mammosynth.models.autoencoder import VAE_PRESETS, build_vae

    torch.manual_seed(0)
    build_vae(**VAE_PRESETS["tiny"]).save_pretrained(tmp_path / "vae")  # untrained: it keeps little of an image
    out = tmp_path / "ceiling"
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["copy"]), "--out", str(out),
                 "--parts", "fidelity,texture,reconstruction", "--vae", str(tmp_path / "vae"), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ceiling = metrics["reconstruction"]
    assert ceiling["n"] == metrics["real"]["n_test"] and ceiling["vae"] == str(tmp_path / "vae")
    real, recon = ceiling["real_training"], ceiling["reconstructions"]
    # real training images are close to the real test images; an untrained VAE's reconstructions are not
    assert recon["fidelity_at_floor_size"]["fid"] > real["fidelity_at_floor_size"]["fid"]
    assert recon["c2st_images"]["auc"] > 0.75
    assert ceiling["fid_over_floor"] == pytest.approx(
        recon["fidelity_at_floor_size"]["fid"] / ceiling["real_vs_real_floor_fid"])
    # the copied test split has the test split's background exactly
    texture = metrics["texture"]["synthetic_vs_real"]
    assert texture["background_mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert set(metrics["texture"]["real_vs_real_floor"]) >= {"background_std_diff", "edge_line_diff"}
    targets = {row["target"]: row for row in metrics["targets"]}
    assert targets["VAE reconstruction CNN C2ST AUC <= 0.70"]["met"] is False
    assert targets["background mean within 1% of the range of real"]["met"] is True
    from PIL import Image

    figure = np.asarray(Image.open(out / ceiling["figure"]))  # real | reconstructed, 1:1 and x3, 4 rows
    data = load_prepared(sets["real"])
    h, w = data.height, data.width
    height = max(h, 3 * min(64, h))
    assert figure.dtype == np.uint16 and figure.shape[0] == 4 * (height + 4) - 4
    training = data.frames(data.split("training")["index"].to_numpy())
    assert any(np.array_equal(figure[:h, :w], frame) for frame in training)
    summary = (out / "summary.md").read_text()
    assert "## VAE ceiling" in summary and "their VAE reconstructions" in summary and "## Visible tells" in summary

    # an autoencoder's ceiling alone needs no synthetic set; the other parts do, and say so
    alone = tmp_path / "alone"
    assert main(["evaluate", "--data", str(sets["real"]), "--out", str(alone), "--parts", "reconstruction",
                 "--vae", str(tmp_path / "vae"), *TINY]) == 0
    assert json.loads((alone / "metrics.json").read_text())["reconstruction"]["n"] == ceiling["n"]
    assert "no synthetic set (the VAE ceiling only)" in (alone / "summary.md").read_text()
    assert main(["evaluate", "--data", str(sets["real"]), "--out", str(alone), "--parts", "fidelity,reconstruction",
                 *TINY]) == 2
    assert "need a synthetic set" in capsys.readouterr().err

    # without a VAE the part is left out, and the metrics say so
    out = tmp_path / "no-vae"
    assert main(["evaluate", "--data", str(sets["real"]), "--synthetic", str(sets["copy"]), "--out", str(out),
                 "--parts", "reconstruction", *TINY]) == 0
    assert "no VAE" in json.loads((out / "metrics.json").read_text())["reconstruction"]["skipped"]
