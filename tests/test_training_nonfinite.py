"""A training run survives a stray non-finite loss and stops with a clear error when it diverges.

Also the cause seen on the CPU: SSIM under bf16 autocast came out ``inf`` on 32×24 crops and the
VAE's weights went NaN from there on (scripts/device_job.sh with the vindr-tiny preset).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from mammosynth.training import common
from mammosynth.training.loop import MAX_NONFINITE_STEPS, TrainingLoop, TrainingSetup, seeded_dataloader
from mammosynth.training.train_vae import parse_args, ssim_float32


def _loop(tmp_path: Path, bad_steps: set[int], steps: int) -> tuple[TrainingLoop, torch.nn.Linear, list]:
    args = parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--max_train_steps", str(steps),
                       "--train_batch_size", "4", "--checkpointing_steps", "100000", "--validation_steps", "100000",
                       "--no_progress", "--no-use_ema", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
                       "--learning_rate", "0.01", "--num_threads", "1"])
    args.mixed_precision = "no"
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    seen: list[torch.Tensor] = []

    def loss(models, batch, micro_step):
        seen.append(net.weight.detach().clone())
        value = (models[0](batch[0]) - 1).pow(2).mean()
        if micro_step in bad_steps:
            value = value * float("nan")
        return value, {}

    data = TensorDataset(torch.randn(16, 3))
    setup = TrainingSetup(network=net, models=[net], optimizers=[torch.optim.SGD(net.parameters(), lr=0.01)],
                          loss=loss, dataloader=seeded_dataloader(data, 4, 0))
    out = tmp_path / "run"
    out.mkdir()
    return TrainingLoop(common.make_accelerator(args, out), args, out, setup, desc="test"), net, seen


def test_a_nan_loss_skips_its_update_and_the_run_goes_on(tmp_path: Path):
    loop, net, seen = _loop(tmp_path, bad_steps={2}, steps=5)
    loop.run()
    assert torch.isfinite(net.weight).all()
    assert torch.equal(seen[2], seen[3])          # the NaN step changed nothing
    assert not torch.equal(seen[1], seen[2])      # the good ones did


def test_a_diverged_run_stops_with_a_clear_error(tmp_path: Path):
    loop, _, _ = _loop(tmp_path, bad_steps=set(range(3, 100)), steps=60)
    with pytest.raises(RuntimeError, match=f"{MAX_NONFINITE_STEPS} updates in a row had a non-finite gradient"):
        loop.run()
    assert loop.state.step == 3 + MAX_NONFINITE_STEPS - 1


@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_the_vae_loss_ssim_is_right_under_bf16_autocast(level: float):
    torch.manual_seed(0)
    a = (level + 0.001 * torch.randn(4, 1, 32, 24)).clamp(0, 1)
    b = (level + 0.001 * torch.randn(4, 1, 32, 24)).clamp(0, 1)
    from pytorch_msssim import ssim

    exact = ssim(a, b, data_range=1.0, size_average=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = ssim_float32(a, b)
    assert value.dtype == torch.float32 and abs(value.item() - exact.item()) < 1e-5
