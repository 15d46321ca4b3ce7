"""The quality campaign's snapshot (scripts/campaign_snapshot.py): fp16 pack, ledger, and the warm start from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mammosynth.cli import main as cli
from mammosynth.data.toy import write_toy_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import campaign_snapshot  # noqa: E402

TINY_VAE = ["--preset", "tiny", "--crop", "32x24", "--train_batch_size", "2", "--num_threads", "1", "--no_progress",
            "--logging_steps", "1", "--validation_steps", "100", "--checkpointing_steps", "100",
            "--scaling_images", "8", "--eval_images", "4"]
TINY_LDM = ["--preset", "tiny", "--embed_dim", "8", "--train_batch_size", "4", "--num_threads", "1", "--no_progress",
            "--logging_steps", "1", "--validation_steps", "100", "--checkpointing_steps", "100",
            "--num_validation_images", "0", "--latent_norm", "channel"]


def _measured(folder: Path, fid: float) -> Path:
    """An evaluation folder as `mammosynth evaluate --parts fidelity,realism` leaves it (the fields the ledger reads)."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "fidelity": {"synthetic_vs_real_at_floor_size": {"fid": fid, "n_fake": 8, "n_real": 8},
                     "real_vs_real_floor": {"fid": 2.0}, "fid_over_floor": fid / 2.0},
        "realism": {"c2st_images": {"auc": 0.97}}}))
    return folder


def test_pack_writes_fp16_and_the_ledger_and_the_next_leg_starts_from_it(tmp_path, capsys):
    data = write_toy_dataset(tmp_path / "prepared", 12, height=64, width=48)
    vae_run, leg1, leg2, snap = tmp_path / "vae", tmp_path / "leg1", tmp_path / "leg2", tmp_path / "snap"
    assert cli(["train-vae", "--data", str(data), "--out", str(vae_run), "--max_train_steps", "3", *TINY_VAE]) == 0
    assert cli(["train-ldm", "--data", str(data), "--vae", str(vae_run), "--out", str(leg1),
                "--max_train_steps", "4", *TINY_LDM]) == 0
    with pytest.raises(FileNotFoundError, match="not a finished train-ldm pipeline"):
        campaign_snapshot.pack(vae_run, None, tmp_path, snap)
    ledger = campaign_snapshot.pack(leg1, vae_run, _measured(tmp_path / "eval1", 30.0), snap)
    assert [leg["kind"] for leg in ledger["legs"]] == ["vae", "unet"]
    assert ledger["legs"][0]["steps"] == 3 and ledger["legs"][1]["steps"] == 4
    assert ledger["legs"][1]["started_from"] == "scratch" and ledger["legs"][1]["measurement"]["fid_over_floor"] == 15.0
    for part in ("vae", "unet", "condition_encoder"):
        weights = load_file(next((snap / part).glob("*.safetensors")))
        assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    assert json.loads((snap / "vae" / "config.json").read_text()).get("latents_mean")  # the latent statistics came along
    first_sha = ledger["weights_sha256"]

    # the next session: warm start from the snapshot, its latents normalised as before
    assert cli(["train-ldm", "--data", str(data), "--vae", str(snap / "vae"), "--out", str(leg2), "--init_pipeline",
                str(snap), "--keep_latent_stats", "--max_train_steps", "2", *TINY_LDM]) == 0
    ledger = campaign_snapshot.pack(leg2, vae_run, _measured(tmp_path / "eval2", 20.0), snap)
    assert [leg["kind"] for leg in ledger["legs"]] == ["vae", "unet", "unet"]  # the VAE is recorded once
    assert ledger["legs"][2]["started_from"] == first_sha != ledger["weights_sha256"]
    assert ledger["totals"] == {"legs": 2, "unet_steps": 6, "unet_cpu_minutes": ledger["totals"]["unet_cpu_minutes"],
                                "vae_cpu_minutes": ledger["legs"][0]["cpu_minutes"]}
    assert not (tmp_path / "snap.packing").exists() and not (tmp_path / "snap.old").exists()
    assert campaign_snapshot.main(["show", "--snapshot", str(snap)]) == 0
    table = capsys.readouterr().out
    assert "| 3 | unet |" in table and "6 / " in table and "10.0×" in table and "2 leg(s), 6 UNet steps" in table
