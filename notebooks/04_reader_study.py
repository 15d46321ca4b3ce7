# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · A blinded real-vs-synthetic reader study
#
# This notebook walks through the reader-study core of mammosynth (DESIGN §11–§12):
#
# 1. make a *real* and a *synthetic* prepared dataset,
# 2. create a blinded study (matched labels, identical 16-bit PNG encoding, truth key apart),
# 3. let simulated readers of **known skill** answer through the same API the app uses,
# 4. analyse: accuracy, sensitivity/specificity, ROC-AUC, κ, and the Obuchowski–Rockette–Hillis
#    MRMC analysis — and check that the statistics recover the skills we put in.
#
# Set `MAMMOSYNTH_NOTEBOOK_TINY=1` to run it in seconds (used by the tests).

# %%
import os
import tempfile
from pathlib import Path

import numpy as np

TINY = os.environ.get("MAMMOSYNTH_NOTEBOOK_TINY") == "1"
N_CASES = 20 if TINY else 100
N_READERS = 3 if TINY else 8
SIZE = (32, 24) if TINY else (256, 192)
work = Path(tempfile.mkdtemp(prefix="mammosynth_study_"))
print("working in", work, "| tiny" if TINY else "")

# %% [markdown]
# ## 1. Real and synthetic prepared datasets
#
# Both come in the prepared-dataset format (`mammosynth.data.prepared`); a synthetic set has
# `source == "synthetic"` in its manifest. Here we write small stand-ins with
# `mammosynth.study.demo.make_demo_datasets`: random textures with slightly different
# statistics, *not* mammograms.

# %%
from mammosynth.data.prepared import load_prepared
from mammosynth.study.demo import make_demo_datasets, write_demo_readers

real_dir, synth_dir = make_demo_datasets(work / "data", n_real=N_CASES + 20, n_synthetic=N_CASES + 20,
                                         height=SIZE[0], width=SIZE[1], seed=0)
print(load_prepared(synth_dir).manifest[["image_id", "density", "lesion", "view", "laterality", "source"]].head())

# %% [markdown]
# ### Synthetic images from the bundled checkpoint (later)
#
# **TODO, once the bundled checkpoint exists**: replace `synth_dir` above by a synthetic set
# generated from `checkpoints/mammosynth-phantom-256`, e.g.
# `mammosynth generate-set --checkpoint checkpoints/mammosynth-phantom-256 --like data/prepared-256 --out out/synth-set`,
# and `real_dir` by the phantom test split (`mammosynth phantom` + `mammosynth ingest`).
# The rest of the notebook does not change.

# %%
USE_CHECKPOINT = False  # flip when the bundled checkpoint and `generate-set` are available
if USE_CHECKPOINT:
    raise NotImplementedError("generate a synthetic prepared set from the bundled checkpoint here")

# %% [markdown]
# ## 2. Create the study
#
# Readers come from a CSV with salted scrypt password hashes (`mammosynth study hash-password`).

# %%
from mammosynth.study.create import create_study

readers_csv = write_demo_readers(work / "readers.csv", N_READERS, password="demo")
study = create_study(work / "study", name="notebook demo", real=real_dir, synthetic=synth_dir,
                     readers_csv=readers_csv, n_cases=N_CASES, synthetic_fraction=0.5,
                     repeats=max(2, N_CASES // 10), seed=42)
print(sorted(p.name for p in (study.root).iterdir()))
print("label matching, max proportion difference:", study.key()["matching"]["max_proportion_difference"])

# %% [markdown]
# Every served file has the same size and header; names are random.

# %%
files = sorted((study.root / "cases").iterdir())
print(len(files), "cases;", "sizes:", {f.stat().st_size for f in files}, "; e.g.", files[0].name)

# %% [markdown]
# ## 3. What the app does for one reader

# %%
assert study.verify_password("reader01", "demo")
view = study.next_case("reader01")
print(view.case_id, view.label, view.image_path.name)
receipt = study.answer("reader01", view.case_id, "synthetic", confidence=4, birads=None, seconds_on_case=12.0)
print(receipt)
print(study.progress("reader01"))

# %% [markdown]
# ## 4. Simulated readers with known skill
#
# A reader with separation d′ has expected AUC Φ(d′/√2); d′ = 0 is chance.

# %%
from mammosynth.study.simulate import expected_auc, simulate_study

skills = {f"reader{i + 1:02d}": d for i, d in enumerate(np.linspace(0.0, 2.5, N_READERS))}
simulate_study(study, skills, seed=7)
print({r: round(expected_auc(d), 3) for r, d in skills.items()})

# %% [markdown]
# ## 5. Analyse

# %%
from mammosynth.study.analysis import analyse

result = analyse(study)
for reader_id, r in result["per_reader"].items():
    print(f"{reader_id}: accuracy {r['accuracy']:.2f} ({r['ci_low']:.2f}-{r['ci_high']:.2f}), "
          f"AUC {r['roc']['auc']:.2f} (expected {expected_auc(skills[reader_id]):.2f}), p vs 50% {r['p_vs_chance']:.3g}")
m = result["mrmc"]
print(f"MRMC (ORH) AUC {m['auc']:.3f}, 95% CI {m['ci_low']:.3f}-{m['ci_high']:.3f}, df {m['df']:.1f}, "
      f"p vs 0.5 = {m['p_vs_chance']:.3g}")
print("Fleiss kappa", round(result["agreement"]["fleiss_kappa"], 3))

# %%
observed = np.array([result["per_reader"][r]["roc"]["auc"] for r in skills])
wanted = np.array([expected_auc(d) for d in skills.values()])
print("correlation of observed and true reader AUC:", np.corrcoef(observed, wanted)[0, 1].round(3))

# %% [markdown]
# ## 6. Plots and report

# %%
from mammosynth.study.analysis import responses_table
from mammosynth.study.plots import plot_accuracy, plot_confidence_histograms, plot_roc_curves

table = responses_table(study)
plot_roc_curves(table)

# %%
plot_accuracy(result)

# %%
plot_confidence_histograms(table)

# %%
from mammosynth.study.export import export_imrmc
from mammosynth.study.report import write_report

write_report(study, work / "report")
export_imrmc(study, work / "answers.imrmc")
print((work / "report" / "report.md").read_text()[:600])
