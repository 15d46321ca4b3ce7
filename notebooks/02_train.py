# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Training: VAE → conditional latent diffusion → sampling
#
# The generation floor of mammosynth (DESIGN §7–§8):
#
# 1. train the 1-channel **VAE** (`AutoencoderKL`, f = 8) with L1 + SSIM + a small KL;
#    its latent scaling factor is measured from data;
# 2. train the **conditional UNet** on the frozen VAE's latents, with per-field condition
#    dropout for classifier-free guidance and the lesion box as an extra input channel;
# 2b. fine-tune the VAE decoder (encoder frozen, patch-GAN) and swap it into the pipeline;
# 3. load the result as a `MammoLDMPipeline` and sample;
# 4. load the **bundled checkpoint** and generate a grid over density × lesion type.
#
# The same scripts run from the command line (`mammosynth train-vae`, `mammosynth train-ldm`)
# and on many GPUs (`accelerate launch -m mammosynth.training.train_ldm ...`).
# `scripts/train_bundled.sh` is the exact recipe of the bundled checkpoint.
#
# Set `MAMMOSYNTH_NOTEBOOK_TINY=1` to run in seconds on a toy dataset (used by the tests);
# `MAMMOSYNTH_NOTEBOOK_DIR` chooses the working folder. Without it the notebook trains on
# `data/prepared-256` for a few minutes per stage.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

TINY = os.environ.get("MAMMOSYNTH_NOTEBOOK_TINY") == "1"
WORK = Path(os.environ.get("MAMMOSYNTH_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mammosynth_train_"))
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
BUNDLED = ROOT / "checkpoints" / "mammosynth-phantom-256"
torch.set_num_threads(1 if TINY else 2)
print("working in", WORK, "| tiny" if TINY else "")

# %% [markdown]
# ## Data
#
# Training reads only a *prepared dataset* (`mammosynth ingest`, notebook 01). In tiny mode we
# write a toy prepared set of 16 labelled pictures (4 studies) at 64×48 instead.

# %%
from mammosynth.data.dataset import PreparedDataset
from mammosynth.data.toy import write_toy_dataset

if TINY:
    DATA = write_toy_dataset(WORK / "prepared", 16, height=64, width=48)
else:
    DATA = ROOT / "data" / "prepared-256"
train_set = PreparedDataset(DATA, split="training")
print(len(train_set), "training images of", train_set.height, "x", train_set.width)

# %% [markdown]
# ## 1. The VAE
#
# Random crops keep CPU training cheap (the VAE is fully convolutional). At the end the
# script measures `scaling_factor = 1 / std(latents)`, saves `vae/` and reports
# reconstruction PSNR / SSIM on the test split.

# %%
from mammosynth.training import train_ldm, train_vae

vae_args = ["--data", str(DATA), "--out", str(WORK / "runs" / "vae"), "--no_progress"]
if TINY:
    vae_args += ["--preset", "tiny", "--crop", "32x24", "--max_train_steps", "3", "--train_batch_size", "2",
                 "--checkpointing_steps", "3", "--validation_steps", "3", "--scaling_images", "8", "--eval_images", "4"]
else:
    vae_args += ["--max_minutes", "5", "--checkpointing_steps", "100", "--validation_steps", "100"]
vae_metrics = train_vae.main(train_vae.parse_args(vae_args))
vae_metrics

# %%
pd.read_csv(WORK / "runs" / "vae" / "log.csv").plot(x="step", y=["loss", "l1"], title="VAE training loss");

# %% [markdown]
# ## 2. The conditional latent diffusion model
#
# The training split is encoded once with the frozen VAE (cached). Each step drops every
# condition field with p = 0.1 (and all of them with p = 0.1); the lesion mask is dropped with
# the lesion field. As for the bundled model, each latent channel is standardised by its
# training statistics (`--latent_norm channel`: with one global scale a weak channel drowns in
# the diffusion noise and comes out as a grid texture) and the loss is Min-SNR-5 weighted.
# The final step saves a complete pipeline folder.

# %%
ldm_args = ["--data", str(DATA), "--vae", str(WORK / "runs" / "vae"), "--out", str(WORK / "runs" / "ldm"),
            "--no_progress", "--save_fp16", "--latent_norm", "channel", "--snr_gamma", "5"]
if TINY:
    ldm_args += ["--preset", "tiny", "--embed_dim", "8", "--max_train_steps", "3", "--train_batch_size", "4",
                 "--checkpointing_steps", "3", "--validation_steps", "3", "--validation_inference_steps", "2",
                 "--num_validation_images", "2"]
else:
    ldm_args += ["--max_minutes", "10", "--checkpointing_steps", "100", "--validation_steps", "200"]
ldm_info = train_ldm.main(train_ldm.parse_args(ldm_args))
ldm_info

# %%
pd.read_csv(WORK / "runs" / "ldm" / "log.csv").plot(x="step", y="loss", title="LDM training loss (ε-MSE)");

# %% [markdown]
# ### 2b. A sharper decoder for the same latents
#
# Trained with L1 + SSIM only, the decoder draws the average of what a latent could mean: a blur.
# The bundled recipe trains it on with the encoder frozen (`--freeze_encoder`, so the latents
# and the LDM trained on them stay valid) and a patch-GAN term (`--adv_weight 0.5 --adv_adaptive`),
# then `swap_decoder` (CLI: `mammosynth swap-decoder`) puts it into the pipeline after checking
# that the encoder and the latent scaling are identical.

# %%
from mammosynth.models.autoencoder import swap_decoder

dec_args = ["--data", str(DATA), "--out", str(WORK / "runs" / "vae_decoder"), "--no_progress",
            "--init_vae", str(WORK / "runs" / "ldm" / "pipeline" / "vae"), "--freeze_encoder",
            "--adv_weight", "0.5", "--adv_adaptive"]
if TINY:
    dec_args += ["--crop", "32x24", "--max_train_steps", "2", "--train_batch_size", "2", "--disc_channels", "8",
                 "--checkpointing_steps", "2", "--validation_steps", "2", "--eval_images", "4"]
else:
    dec_args += ["--max_minutes", "5", "--checkpointing_steps", "100", "--validation_steps", "100"]
dec_metrics = train_vae.main(train_vae.parse_args(dec_args))
swap_decoder(WORK / "runs" / "ldm" / "pipeline", WORK / "runs" / "vae_decoder")
{"own decoder": {k: vae_metrics[k] for k in ("psnr", "ssim")}, "fine-tuned": {k: dec_metrics[k] for k in ("psnr", "ssim")}}

# %% [markdown]
# ## 3. Sample from what we just trained
#
# A killed run resumes with `--resume_from_checkpoint latest` (the default) with no lost
# steps; the run folder records config, git sha, data hash and package versions.

# %%
from mammosynth import MammoLDMPipeline

# A freshly trained pipeline has no privacy gate yet (`mammosynth build-index` adds one); it
# refuses to generate unless told, on purpose, to run ungated:
pipe = MammoLDMPipeline.from_pretrained(WORK / "runs" / "ldm" / "pipeline", requires_privacy_checker=False)
pipe.set_progress_bar_config(disable=True)
out = pipe(birads=4, density="C", lesion="mass", box=(0.30, 0.35, 0.50, 0.55), view="MLO", laterality="L",
           num_images=2, num_inference_steps=2 if TINY else 20, guidance_scale=3.0,
           generator=torch.Generator().manual_seed(0))
fig, axes = plt.subplots(1, len(out.images), figsize=(3 * len(out.images), 4))
for ax, image in zip(axes, out.images):
    ax.imshow(image, cmap="gray", vmin=0, vmax=65535)
    ax.axis("off")
fig.suptitle("our run: BI-RADS 4, density C, mass");

# %% [markdown]
# ## 4. The bundled checkpoint: density × lesion type
#
# `checkpoints/mammosynth-phantom-256` was trained by `scripts/train_bundled.sh` on 1,000
# phantom studies on a 2-core CPU (see its `README.md`). In tiny mode — or before it exists —
# the grid uses the model trained above.

# %%
use_bundled = (BUNDLED / "model_index.json").exists() and not TINY
grid_pipe = MammoLDMPipeline.from_pretrained(BUNDLED) if use_bundled else pipe
grid_pipe.set_progress_bar_config(disable=True)
densities = ["A", "B", "C", "D"]
lesions = ["none", "mass", "calcification", "architectural_distortion", "asymmetry"]
box = (0.35, 0.35, 0.55, 0.50)
fig, axes = plt.subplots(len(densities), len(lesions), figsize=(2.2 * len(lesions), 2.8 * len(densities)))
for r, density in enumerate(densities):
    for c, lesion in enumerate(lesions):
        image = grid_pipe(birads=1 if lesion == "none" else 4, density=density, lesion=lesion,
                          box=None if lesion == "none" else box, view="MLO", laterality="L",
                          num_inference_steps=2 if TINY else 20, guidance_scale=3.0,
                          generator=torch.Generator().manual_seed(r * 10 + c)).images[0]
        ax = axes[r, c]
        ax.imshow(image, cmap="gray", vmin=0, vmax=65535)
        ax.set_xticks([]), ax.set_yticks([])
        if r == 0:
            ax.set_title(lesion.replace("_", " "), fontsize=8)
        if c == 0:
            ax.set_ylabel(f"density {density}")
fig.suptitle("bundled checkpoint" if use_bundled else "model trained above (tiny)");
