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
# # 03 · Evaluating a synthetic set
#
# Fidelity (FID, KID, precision/recall, density/coverage on our trained mammography encoder,
# each beside its real-vs-real floor), utility (a cancer classifier trained on real, on
# synthetic only, and on both — always tested on real), condition adherence, and a classifier
# two-sample test — DESIGN §10. The same steps as
#
# ```
# mammosynth generate-set --checkpoint checkpoints/mammosynth-phantom-256 --like data/prepared-256 --split training --out out/synth-set
# mammosynth evaluate --data data/prepared-256 --synthetic out/synth-set --out reports/eval
# mammosynth paper-table --reports reports/ --out reports/table.md
# ```
#
# With `MAMMOSYNTH_NOTEBOOK_TINY=1` (the tests) everything runs on tiny sets in seconds.
# Without a prepared dataset and a checkpoint, it uses labelled **toy** sets (not mammograms)
# so that every step still runs.

# %%
import os
import tempfile
from pathlib import Path

import torch
from IPython.display import Image, Markdown, display

from mammosynth.evaluation.classifiers import Recipe
from mammosynth.evaluation.evaluate import EvaluationConfig, run_evaluation
from mammosynth.evaluation.paper_table import find_reports, paper_table_markdown
from mammosynth.data.toy import write_toy_dataset

TINY = os.environ.get("MAMMOSYNTH_NOTEBOOK_TINY") == "1"
torch.set_num_threads(1 if TINY else max(1, os.cpu_count() or 1))
WORK = Path(tempfile.mkdtemp(prefix="mammosynth-eval-"))
DATA = Path("data/prepared-256")
CHECKPOINT = Path("checkpoints/mammosynth-phantom-256")
print("tiny:", TINY, "| work folder:", WORK)

# %% [markdown]
# ## 1. A real set and a synthetic set
# The synthetic set copies the label distribution of the real training split: one image per
# real row's conditions, privacy-gated (flagged images are resampled).

# %%
use_model = not TINY and DATA.joinpath("manifest.csv").exists() and CHECKPOINT.joinpath("model_index.json").exists()
if use_model:
    from mammosynth.evaluation.generate_set import GenerationSettings, generate_set
    from mammosynth.pipelines.pipeline_mammo_ldm import MammoLDMPipeline

    pipe = MammoLDMPipeline.from_pretrained(CHECKPOINT)
    pipe.set_progress_bar_config(disable=True)
    real = DATA
    synthetic = WORK / "synth-set"
    report = generate_set(pipe, real, synthetic, split="training",
                          settings=GenerationSettings(num_inference_steps=25, batch_size=8, limit=400),
                          checkpoint=str(CHECKPOINT))
    print({k: report[k] for k in ("written", "flagged", "resampled", "dropped")})
else:
    n, size = (96, (32, 24)) if TINY else (600, (128, 96))
    real = write_toy_dataset(WORK / "real", n, height=size[0], width=size[1], seed=0)
    synthetic = write_toy_dataset(WORK / "synth", n // 2, height=size[0], width=size[1], seed=1,
                                  split="training", shift=0.1, source="synthetic")
    print("toy sets (labelled pictures, not mammograms):", real, synthetic)

# %% [markdown]
# ## 2. Evaluate
# The fidelity encoder comes from the checkpoint's `feature_extractor/` when it has one;
# otherwise it is trained here on the real training split (and saved in the report folder).

# %%
encoder = str(CHECKPOINT) if use_model and CHECKPOINT.joinpath("feature_extractor").exists() else None
if TINY:
    config = EvaluationConfig(recipe=Recipe(size=(32, 24), epochs=2), seeds=(0,), encoder_size=(32, 24),
                              encoder_epochs=2, n_bootstrap=50)
else:
    config = EvaluationConfig(encoder=encoder)
out = WORK / "reports" / "eval"
metrics = run_evaluation(real, synthetic, out, config)
display(Markdown((out / "summary.md").read_text()))

# %% [markdown]
# ## 3. Plots

# %%
for name in metrics["plots"]:
    print(name)
    display(Image(filename=str(out / name)))

# %% [markdown]
# ## 4. The seed paper's table, with our numbers
# (The re-identification row is filled in when `mammosynth privacy-audit` wrote a
# `privacy.json` into the reports folder.)

# %%
display(Markdown(paper_table_markdown(*find_reports(WORK / "reports"))))
