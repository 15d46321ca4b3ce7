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
# # 01 · Data: phantom mammograms → prepared dataset
#
# This notebook walks through the data floor of mammosynth (DESIGN §3–§6):
#
# 1. make a **phantom** dataset in the exact VinDr-Mammo layout (DICOM files + the three CSVs),
# 2. **ingest** it: DICOM display pipeline, breast crop, canonical flip (chest wall at x = 0),
#    aspect-kept resize + pad, lesion boxes moved along — the same command ingests real
#    VinDr-Mammo unchanged,
# 3. look at images of every **density** and every **finding type** with their boxes,
# 4. look at the **label distributions** and the study-level **splits**.
#
# Everything here is *phantom* data: procedurally generated, no patient behind it.
# Set `MAMMOSYNTH_NOTEBOOK_TINY=1` to run it in seconds (used by the tests);
# `MAMMOSYNTH_NOTEBOOK_DIR` chooses the working folder (default: a new temporary folder).

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

TINY = os.environ.get("MAMMOSYNTH_NOTEBOOK_TINY") == "1"
STUDIES = 6 if TINY else 60
HEIGHT = 256 if TINY else 1024
SIZE = (64, 48) if TINY else (256, 192)
WORKERS = 1 if TINY else None  # None: all cores
WORK = Path(os.environ.get("MAMMOSYNTH_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mammosynth_data_"))
RAW, PREPARED = WORK / "phantom", WORK / f"prepared-{SIZE[0]}x{SIZE[1]}"
print("working in", WORK, "| tiny" if TINY else "")

# %% [markdown]
# ## 1. A phantom dataset in the VinDr-Mammo layout
#
# Same as `mammosynth phantom --out DIR --studies N --seed 0 --height H`. Each study is one
# phantom patient with four views (L-CC, L-MLO, R-CC, R-MLO) sharing one tissue pattern.

# %%
from mammosynth.data.phantom import generate_phantom_dataset

if not (RAW / "breast-level_annotations.csv").exists():
    generate_phantom_dataset(RAW, studies=STUDIES, seed=0, height=HEIGHT, workers=WORKERS)
sorted(p.name for p in RAW.iterdir())

# %%
breast = pd.read_csv(RAW / "breast-level_annotations.csv")
findings = pd.read_csv(RAW / "finding_annotations.csv")
breast.head()

# %%
findings[findings["finding_categories"] != "['No Finding']"].head()

# %% [markdown]
# ## 2. Ingest
#
# Same as `mammosynth ingest --root RAW --out PREPARED --size 256x192`. The summary lists what
# was ingested and what was skipped and why; `report.json` has the details. Run it again
# and it resumes (nothing is done twice).

# %%
from mammosynth.data.prepare import ingest

report = ingest(RAW, PREPARED, size=SIZE, workers=WORKERS)

# %%
from mammosynth.data.prepared import load_prepared

data = load_prepared(PREPARED)
manifest = data.manifest
print(data.images.shape, data.images.dtype, "| meta:", {k: data.meta[k] for k in ("height", "width", "count")})
manifest.head()

# %% [markdown]
# ## 3. Images: every density and every finding type
#
# Frames are display values (modality LUT → VOI LUT → MONOCHROME1 inverted → padding black)
# scaled to 0–65535, in the canonical orientation: chest wall on the left for both breasts
# (right breasts were mirrored; laterality stays a label). Boxes are in prepared pixels.

# %%
def show(rows: pd.DataFrame, title: str, columns: int = 4) -> None:
    """A row of prepared frames with their lesion boxes."""
    if rows.empty:
        print(f"{title}: no example in this small set")
        return
    rows = rows.head(columns)
    fig, axes = plt.subplots(1, len(rows), figsize=(2.4 * len(rows), 3.2), squeeze=False)
    for ax, (_, row) in zip(axes[0], rows.iterrows()):
        ax.imshow(data.images[int(row["index"])], cmap="gray", vmin=0, vmax=65535)
        for finding in json.loads(row["findings"]):
            if finding["box"]:
                x0, y0, x1, y1 = finding["box"]
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1))
        birads = "?" if pd.isna(row["birads"]) else int(row["birads"])
        ax.set_title(f"{row['laterality']}-{row['view']} BI-RADS {birads}\n{row['density']} · {row['lesion']}",
                     fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    plt.show()


for density in "ABCD":
    show(manifest[manifest["density"] == density], f"density {density}")

# %%
for lesion in ["none", "mass", "calcification", "architectural_distortion", "asymmetry"]:
    show(manifest[manifest["lesion"] == lesion], f"lesion: {lesion}")

# %% [markdown]
# ## 4. Label distributions and splits
#
# The phantom's density prevalence follows VinDr-Mammo (mostly C, then B and D, few A);
# BI-RADS follows the findings; a breast with BI-RADS ≥ 4 counts as *cancer*. Splits are
# study-level: no study is in two splits.

# %%
fig, axes = plt.subplots(1, 5, figsize=(17, 3))
for ax, column in zip(axes, ["birads", "density", "lesion", "view", "split"]):
    counts = manifest[column].fillna("unknown").astype(str).value_counts().sort_index()
    ax.bar(counts.index, counts.values, color="0.4")
    ax.set_title(column)
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
plt.tight_layout()
plt.show()

# %%
pd.crosstab(manifest["density"], manifest["birads"], margins=True)

# %%
per_study = manifest.groupby("study_id")["split"].nunique()
assert per_study.max() == 1, "a study is in two splits"
print("studies per split:", manifest.drop_duplicates("study_id")["split"].value_counts().to_dict())
print("cancer (BI-RADS >= 4) images:", int((manifest["cancer"] == 1).sum()), "of", len(manifest))

# %% [markdown]
# ## 5. For training: the torch `Dataset`
#
# `PreparedDataset` yields the image in [-1, 1], the lesion-box mask (the conditioning
# channel) and the encoded conditions (0 = unspecified).

# %%
from mammosynth.data.dataset import PreparedDataset

train = PreparedDataset(PREPARED, split="training")
item = train[0]
print(len(train), "training images;", {k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in item.items()})
