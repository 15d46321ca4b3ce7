"""scripts/train_vindr.sh (the VinDr-Mammo recipe) and scripts/device_job.sh, end to end at test size on the CPU.

The VinDr recipe runs on a phantom in the VinDr layout with the ``vindr-tiny`` preset (bf16, gradient
checkpointing, latent shards: every switch of the GPU presets) and 2 data-parallel processes via
torchrun/gloo; a second run finds every stage done.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVAL_ARGS = ("--classifier-size 32x24 --epochs 1 --seeds 0 --bootstrap 20 --reconstruction-images 4 "
             "--parts fidelity,utility,adherence,realism,reconstruction")


def _phantom(root: Path, studies: int) -> Path:
    subprocess.run(["python", "-m", "mammosynth", "phantom", "--out", str(root), "--studies", str(studies),
                    "--height", "128", "--seed", "0", "--workers", "1"], cwd=ROOT, check=True, capture_output=True)
    return root


@pytest.mark.slow
def test_train_vindr_runs_the_whole_chain_data_parallel_and_resumes(tmp_path: Path):
    env = {**os.environ, "VINDR": str(_phantom(tmp_path / "vindr", 8)), "PRESET": "vindr-tiny", "GPUS": "2",
           "THREADS": "1", "WORKERS": "1", "DATA": str(tmp_path / "data"), "RUNS": str(tmp_path / "runs"),
           "CKPT": str(tmp_path / "ckpt"), "CHECKPOINT_EVERY": "1", "GEN_STEPS": "2", "GEN_LIMIT": "8",
           "MASTER_PORT": "29617",
           "AUDIT_ARGS": "--copies 4 --battery 2 --mia-members 4 --mia-nonmembers 4 --mia-timesteps 100 "
                         "--mia-draws 1 --bootstrap 20 --num-threads 1",
           "EVAL_ARGS": EVAL_ARGS + " --threads 1"}
    first = subprocess.run(["bash", "scripts/train_vindr.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "GPU-hour estimate for --preset vindr-tiny on 2 process(es)" in first.stdout
    runs, ckpt = tmp_path / "runs", tmp_path / "ckpt"
    for run in ("vae", "ldm", "siamese"):
        info = json.loads((runs / run / "run.json").read_text())
        assert info["finished"] is True and info["invocations"][0]["processes"] == 2, run
        assert info["config"]["mixed_precision"] == "bf16"
    assert json.loads((runs / "ldm" / "run.json").read_text())["config"]["gradient_checkpointing"] is True
    assert len(list((runs / "ldm" / "latents").glob("shard-*.safetensors"))) >= 2   # 24 images, 8 per shard
    assert json.loads((ckpt / "model_index.json").read_text())["privacy_checker"][1] == "PrivacyChecker"
    assert (ckpt / "feature_extractor" / "config.json").is_file()
    for report in ("privacy.json", "eval/metrics.json", "table.md"):
        assert (ckpt / "reports" / report).is_file(), report
    plan = json.loads((runs / "plan.json").read_text())
    assert {r["stage"] for r in plan} >= {"train-vae", "train-ldm", "train-siamese", "generate-set"}

    again = subprocess.run(["bash", "scripts/train_vindr.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for stage in ("VAE already trained", "LDM already trained", "Siamese network already trained"):
        assert stage in again.stdout
    assert "== train-encoder" not in again.stdout and "== privacy-audit" not in again.stdout


@pytest.mark.slow
def test_device_job_writes_a_packed_candidate_and_its_reports_within_the_file_limits(tmp_path: Path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "PRESET": "vindr-tiny", "SIZE": "64x48",
           "STUDIES": "8", "PHANTOM_HEIGHT": "128", "VAE_MINUTES": "0.1", "LDM_MINUTES": "0.1", "GEN_IMAGES": "8",
           "GEN_STEPS": "2", "ENCODER_EPOCHS": "1", "CORES": "1", "THREADS": "1", "EVAL_ARGS": EVAL_ARGS}
    done = subprocess.run(["bash", "scripts/device_job.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 * 2**20 for f in files)
    assert {"summary.json", "dry_run.txt", "log.txt", "candidate.tar.part-00"} <= set(files)
    summary = json.loads((out / "summary.json").read_text())
    for network in ("vae", "ldm"):
        assert summary["training"][network]["steps"] >= 1 and summary["training"][network]["images_per_s"] > 0
    assert summary["evaluation"]["targets"]
    packed = tmp_path / "candidate.tar"
    packed.write_bytes(b"".join((out / f).read_bytes() for f in files if f.startswith("candidate.tar.part-")))
    with tarfile.open(packed) as tar:
        names = tar.getnames()
    for member in ("candidate/model_index.json", "candidate/unet/config.json", "candidate/feature_extractor/config.json",
                   "candidate/reports/eval/metrics.json", "candidate/reports/dry_run.txt"):
        assert member in names, member
