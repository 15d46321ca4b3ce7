"""Sample grids, a conditioning check and the model card (``README.md``) of a checkpoint.

``python -m mammosynth.training.model_card --checkpoint CKPT --vae_run RUN --ldm_run RUN``
writes into ``CKPT``:

* ``samples.png`` – density (rows A–D) × lesion type (columns) grid, MLO, left;
* ``samples_views.png`` – view × laterality grid (CC/MLO × L/R), BI-RADS 4 mass;
* ``samples_lesions.png`` – per lesion type, real test crops | VAE reconstructions | generated
  (:func:`lesion_closeups`; with ``--data``);
* ``samples_side_by_side.png`` – real | generated at 1:1 and ×3 crops, per density and lesion type
  (:func:`side_by_side`; with ``--data``);
* ``conditioning.json`` – the lesion-location check (see :func:`lesion_contrast`);
* ``README.md`` – the model card, from the run folders' metrics and the numbers above.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..conditions import Density, Laterality, Lesion, View
from ..pipelines.checkpoint import weights_mb

logger = logging.getLogger(__name__)

__all__ = ["lesion_contrast", "conditioning_check", "sample_grids", "latent_spread", "lesion_closeups", "ldm_loss_label",
           "latent_norm_label", "render_model_card", "component_sections", "main"]

#: Condition values of the grids and checks, in the order of :mod:`mammosynth.conditions`.
LESIONS = tuple(lesion.value for lesion in Lesion)
FINDING_LESIONS = tuple(lesion for lesion in LESIONS if lesion != Lesion.NONE)
DENSITIES = tuple(density.value for density in Density)
VIEWS = tuple(view.value for view in View)
#: Columns of the view grid: right breast first, as a reader's light box shows them.
LATERALITIES = (Laterality.R.value, Laterality.L.value)
#: Box (displayed frame, left breast) used for the grids and the conditioning check.
CHECK_BOX = (0.35, 0.35, 0.55, 0.50)


def lesion_contrast(image: np.ndarray, box: Sequence[float], ring: float = 0.5) -> float:
    """Local contrast of a box: (mean inside − mean of a surrounding ring) / std of the ring.

    ``box`` is normalised ``(x0, y0, x1, y1)`` in the frame of ``image``; the ring is the
    box grown by ``ring`` × its size on every side, minus the box. Higher means the box is
    brighter than its surroundings (masses, calcifications and asymmetries are dense).
    """
    h, w = image.shape
    img = image.astype(np.float64) / 65535.0
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    inner = _pixels((x0, y0, x1, y1), h, w)
    outer = _pixels((max(x0 - ring * bw, 0), max(y0 - ring * bh, 0), min(x1 + ring * bw, 1), min(y1 + ring * bh, 1)), h, w)
    mask = np.zeros((h, w), bool)
    mask[outer[1]:outer[3], outer[0]:outer[2]] = True
    mask[inner[1]:inner[3], inner[0]:inner[2]] = False
    inside = img[inner[1]:inner[3], inner[0]:inner[2]]
    around = img[mask]
    if around.size == 0 or inside.size == 0:
        return float("nan")
    return float((inside.mean() - around.mean()) / (around.std() + 1e-3))


@torch.no_grad()
def latent_spread(pipe, data, num_images: int = 16, steps: int = 20, guidance_scale: float = 3.0,
                  seed: int = 0) -> dict[str, Any]:
    """Per-channel spread of generated latents against training latents, in the VAE's own space.

    Encodes the first ``num_images`` training frames (posterior mean) and generates as many
    latents under the same rows' conditions; returns each channel's standard deviation over
    images and positions for both, and their ratio (1 = generated latents spread like real
    ones). A ratio well above 1 in a channel is noise the denoiser left there, which the
    decoder draws as a grid texture; well below 1 is lost contrast.
    """
    from ..data.prepared import row_conditions
    from ..models.autoencoder import channel_stats, from_model_space

    rows = data.split("training").iloc[:num_images]
    if len(rows) == 0:
        raise ValueError("latent_spread needs training images in the prepared dataset")
    real = from_model_space(pipe.vae, pipe.encode_images(data.frames(rows["index"].to_numpy()))).float()
    conds = [row_conditions(row, data.height, data.width) for row in rows.to_dict("records")]
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(conds))]
    made = pipe(conditions=conds, num_inference_steps=steps, guidance_scale=guidance_scale, generator=gens,
                output_type="latent").images
    made = from_model_space(pipe.vae, made.to(pipe.vae.dtype)).float()
    real_std, made_std = channel_stats(real)[1], channel_stats(made)[1]
    return {"images": len(rows), "steps": steps, "real_std": real_std, "generated_std": made_std,
            "ratio": [m / r for m, r in zip(made_std, real_std)]}


def _pixels(box, h, w):
    x0, y0, x1, y1 = box
    return int(x0 * w), int(y0 * h), max(int(np.ceil(x1 * w)), int(x0 * w) + 1), max(int(np.ceil(y1 * h)), int(y0 * h) + 1)


def conditioning_check(pipe, num_seeds: int = 6, steps: int = 20, guidance: float = 3.0,
                       box: Sequence[float] = CHECK_BOX) -> dict[str, Any]:
    """Does "lesion X at box B" put something at B? A simple, stated measure.

    For each lesion type and seed, generate the image with the lesion at ``box`` and the
    *same seed* with lesion ``none`` (BI-RADS 1). Report the mean :func:`lesion_contrast`
    at the box for both, and the *localisation ratio*: mean absolute pixel change between
    the pair inside the box / outside it (> 1: the lesion condition changes the image
    where the box is, more than elsewhere).
    """
    results: dict[str, Any] = {"box": list(box), "seeds": num_seeds, "steps": steps, "guidance": guidance,
                               "measure": "lesion_contrast = (mean inside box - mean of ring around it) / std(ring); "
                                          "localisation = mean|lesion - control| inside box / outside box, same seed",
                               "lesions": {}}
    base = dict(density="C", view="MLO", laterality="L")
    controls = []
    for s in range(num_seeds):
        controls.append(pipe(birads=1, lesion="none", num_inference_steps=steps, guidance_scale=guidance,
                             generator=torch.Generator().manual_seed(s), **base).images[0])
    control_contrast = [lesion_contrast(c, box) for c in controls]
    results["control_contrast"] = float(np.mean(control_contrast))
    h, w = controls[0].shape
    x0, y0, x1, y1 = _pixels(box, h, w)
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    for lesion in FINDING_LESIONS:
        contrasts, ratios = [], []
        for s in range(num_seeds):
            img = pipe(birads=4, lesion=lesion, box=box, num_inference_steps=steps, guidance_scale=guidance,
                       generator=torch.Generator().manual_seed(s), **base).images[0]
            contrasts.append(lesion_contrast(img, box))
            diff = np.abs(img.astype(np.float64) - controls[s].astype(np.float64))
            ratios.append(float(diff[inside].mean() / (diff[~inside].mean() + 1e-6)))
        results["lesions"][lesion] = {
            "contrast": float(np.mean(contrasts)),
            "contrast_minus_control": float(np.mean(contrasts) - results["control_contrast"]),
            "localisation_ratio": float(np.mean(ratios)),
            "fraction_above_control": float(np.mean([c > k for c, k in zip(contrasts, control_contrast)])),
        }
    return results


def sample_grids(pipe, out: Path, steps: int = 20, guidance: float = 3.0, seed: int = 0) -> list[Path]:
    """Write ``samples.png`` (density × lesion) and ``samples_views.png`` (view × laterality)."""
    from ..conditions import Conditions
    from .common import save_image_grid

    conds = []
    for density in DENSITIES:
        for lesion in LESIONS:
            conds.append(Conditions.create(birads=1 if lesion == "none" else 4, density=density, view="MLO",
                                           laterality="L", lesion=lesion, box=None if lesion == "none" else CHECK_BOX))
    images = _generate(pipe, conds, steps, guidance, seed)
    save_image_grid(np.stack(images), out / "samples.png", ncols=len(LESIONS))
    conds = [Conditions.create(birads=4, density="B", view=v, laterality=lat, lesion="mass",
                               box=CHECK_BOX if lat == "L" else (1 - CHECK_BOX[2], CHECK_BOX[1], 1 - CHECK_BOX[0], CHECK_BOX[3]))
             for v in VIEWS for lat in LATERALITIES]
    images = _generate(pipe, conds, steps, guidance, seed)
    save_image_grid(np.stack(images), out / "samples_views.png", ncols=2)
    return [out / "samples.png", out / "samples_views.png"]


@torch.no_grad()
def lesion_closeups(pipe, data, out: Path | None = None, per_type: int = 4, size: int = 48, split: str = "test",
                    steps: int = 20, guidance: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Close-ups of each lesion type: real crops | their VAE reconstructions | generated ones.

    For each lesion type, the first ``per_type`` images of ``split`` that show it are taken;
    each is reconstructed by the pipeline's VAE (posterior mean) and generated anew with
    its own conditions (BI-RADS, density, view, laterality, lesion, first box; seed
    ``seed + k``). A ``size``-pixel square around the box centre is cut from all three, in
    the display orientation. Per type this reports the mean :func:`lesion_contrast` at the
    box of the real, reconstructed and generated images (is the lesion as bright and as
    faint as the real one?) and the reconstruction's PSNR and SSIM on the crop (how much of
    the lesion the VAE keeps: what the diffusion model cannot do better than). Types the
    split does not show (with a box) are left out. With ``out``, the crops are written to
    ``out / "samples_lesions.png"`` (16-bit; one row per type, the three groups separated
    by a white gap).
    """
    from ..data.prepared import label_boxes, row_conditions
    from ..study.blinding import display_frame
    from .train_vae import psnr_ssim

    rows = data.split(split)
    h, w = data.height, data.width
    size = min(size, h, w)
    result: dict[str, Any] = {"split": split, "per_type": per_type, "size": size, "steps": steps,
                              "guidance": guidance, "lesions": {}}
    boxed = np.array([bool(label_boxes(row, h, w)) for row in rows.to_dict("records")], bool)  # no box: skipped
    strips = []
    for lesion in FINDING_LESIONS:
        chosen = rows[(rows["lesion"] == lesion).to_numpy() & boxed].iloc[:per_type]
        if len(chosen) == 0:
            continue
        conds = [row_conditions(row, h, w) for row in chosen.to_dict("records")]
        frames = data.frames(chosen["index"].to_numpy())
        recon = np.rint(pipe.decode_latents(pipe.encode_images(frames)).cpu().numpy() * 65535).astype(np.uint16)
        made = _generate(pipe, conds, steps, guidance, seed)
        crops: dict[str, list[np.ndarray]] = {"real": [], "reconstructed": [], "generated": []}
        contrast: dict[str, list[float]] = {k: [] for k in crops}
        for k, cond in enumerate(conds):
            box = cond.box.as_tuple()
            x0, y0, x1, y1 = cond.box.to_pixels(h, w)
            top = int(np.clip((y0 + y1) // 2 - size // 2, 0, h - size))
            left = int(np.clip((x0 + x1) // 2 - size // 2, 0, w - size))
            side = None if cond.laterality is None else cond.laterality.value  # stored frames: chest wall left
            for name, image in (("real", display_frame(frames[k], side)),
                                ("reconstructed", display_frame(recon[k], side)), ("generated", made[k])):
                crops[name].append(np.ascontiguousarray(image[top:top + size, left:left + size]))
                contrast[name].append(lesion_contrast(image, box))
        real, back = (torch.from_numpy(np.stack(crops[name]).astype(np.float32) / 65535.0)[:, None]
                      for name in ("real", "reconstructed"))
        psnr, similarity = psnr_ssim(real, back)
        result["lesions"][lesion] = {
            "n": len(conds),
            **{f"contrast_{name}": float(np.mean(values)) for name, values in contrast.items()},
            "reconstruction_psnr": float(psnr.mean()),
            "reconstruction_ssim": float(similarity.mean()),
        }
        groups = [np.pad(np.concatenate(crops[name], axis=1), ((0, 0), (0, (per_type - len(conds)) * size)))
                  for name in crops]  # black where the split has fewer than per_type images
        gap = np.full((size, 4), 65535, np.uint16)
        strips.append(np.concatenate([groups[0], gap, groups[1], gap, groups[2]], axis=1))
    if out is not None and strips:
        from PIL import Image

        gap = np.full((4, strips[0].shape[1]), 65535, np.uint16)
        grid = np.concatenate([part for strip in strips for part in (strip, gap)][:-1], axis=0)
        Path(out).mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(Path(out) / "samples_lesions.png")
    return result


@torch.no_grad()
def side_by_side(pipe, data, out: Path | None = None, split: str = "test", zoom: int = 3,
                 crop: tuple[int, int] = (64, 48), steps: int = 20, guidance: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Real and generated images side by side at 1:1 and as ×``zoom`` crops, one row per density and lesion type.

    The rows are the first image of ``split`` for each density with no lesion (with one if the split
    has none other), then the first for each lesion type with a box of its own. Each row is: the real
    image (display orientation) | one generated with its conditions (seed ``seed + row``) | the real crop ×``zoom`` | the generated crop
    ×``zoom`` (pixels repeated, no interpolation). The ``crop`` window is centred on the lesion box,
    or on the breast's centre (the tissue mask's centroid of the real image) for the density rows.
    Written to ``out / "samples_side_by_side.png"`` (16-bit, white gaps). Returns the rows' labels
    and conditions; no image id is named.
    """
    from ..data.prepared import label_boxes, row_conditions
    from ..evaluation.texture import crop_origin, write_pairs_figure
    from ..study.blinding import display_frame

    rows = data.split(split)
    h, w = data.height, data.width
    ch, cw = min(crop[0], h), min(crop[1], w)
    records = rows.to_dict("records")
    picks = [(f"density {d}", next((r for r in records if r["density"] == d and r["lesion"] == Lesion.NONE),
                                   next((r for r in records if r["density"] == d), None)))  # with a lesion if need be
             for d in DENSITIES]
    picks += [(lesion, next((r for r in records if r["lesion"] == lesion and label_boxes(r, h, w)), None))
              for lesion in FINDING_LESIONS]
    result: dict[str, Any] = {"split": split, "zoom": zoom, "crop": [ch, cw], "steps": steps, "rows": []}
    reals, mades, centres = [], [], []
    for k, (label, row) in enumerate((label, row) for label, row in picks if row is not None):
        cond = row_conditions(row, h, w)
        side = None if cond.laterality is None else cond.laterality.value
        reals.append(display_frame(data.frames(np.array([row["index"]]))[0], side))
        mades.append(pipe(conditions=[cond], num_inference_steps=steps, guidance_scale=guidance,
                          generator=[torch.Generator().manual_seed(seed + k)]).images[0])
        centre = None
        if cond.box is not None:
            x0, y0, x1, y1 = cond.box.to_pixels(h, w)
            centre = ((y0 + y1) // 2, (x0 + x1) // 2)
        centres.append(centre)
        result["rows"].append({"label": label, "conditions": cond.to_dict(),
                               "crop_top_left": list(crop_origin(reals[-1], (ch, cw), centre))})
    if out is not None and reals:
        write_pairs_figure(np.stack(reals), np.stack(mades), Path(out) / "samples_side_by_side.png", zoom=zoom,
                           crop=(ch, cw), centres=centres)
    return result


def _generate(pipe, conds, steps, guidance, seed) -> list[np.ndarray]:
    images = []
    for i in range(0, len(conds), 5):
        chunk = conds[i:i + 5]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        images += pipe(conditions=chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens).images
    return images


def ldm_loss_label(invocations: list[dict]) -> str:
    """The LDM loss as trained over the legs of a run (``run.json`` ``invocations``), e.g.
    ``"ε-prediction MSE; Min-SNR-5 weighting from step 4,400 (…)"`` when a later leg turned it on
    (the same for ``--lesion_weight``)."""
    done, snr, lesion = 0, "", ""
    for invocation in invocations:
        config = invocation.get("config", {})
        since = f" from step {done:,}" if done else ""
        if config.get("snr_gamma") and not snr:
            snr = f"; Min-SNR-{config['snr_gamma']:g} weighting{since}"
        if config.get("lesion_weight") and not lesion:
            lesion = f"; lesion-box cells weigh ×{1 + config['lesion_weight']:g}{since}"
        done = config.get("max_train_steps") or done
    return f"ε-prediction MSE{snr}{lesion}" + (" (weighted losses, lower by construction)" if snr else "")


def latent_norm_label(vae) -> str:
    """How the UNet's latents relate to the VAE's, for the card's model table."""
    from ..models.autoencoder import has_channel_stats

    if not has_channel_stats(vae.config):
        return f"latents scaled by the VAE scaling_factor {vae.config.scaling_factor:.4f}"
    mean, std = vae.config.latents_mean, vae.config.latents_std
    return ("latents standardised per channel (`--latent_norm channel`; mean "
            f"{', '.join(f'{v:.3f}' for v in mean)}; std {', '.join(f'{v:.3f}' for v in std)}, in vae/config.json)")


def _spread_line(spread: dict | None) -> str:
    if not spread:
        return ""
    ratios = ", ".join(f"{v:.2f}" for v in spread["ratio"])
    return (f"* Latent spread: the standard deviation of generated latents over that of training latents, per channel, "
            f"for {spread['images']} training images' conditions ({spread['steps']} steps): **{ratios}** (1 = as "
            "spread as real latents; above 1 is leftover noise, drawn as a grid texture; below 1 is lost contrast).\n")


def render_model_card(info: dict[str, Any]) -> str:
    """The model card (Markdown) from collected numbers (see :func:`main` for the keys)."""
    vae, ldm, data, cond = info["vae"], info["ldm"], info["data"], info.get("conditioning") or {}
    dec = info.get("decoder") or {}
    wide, bases = info.get("wide_vae") or {}, info.get("base_ldm") or []
    bases = [bases] if isinstance(bases, dict) else bases  # summaries before LDM chains held one dict
    rows = "\n".join(
        f"| {name} | {v['contrast']:.2f} | {v['contrast_minus_control']:+.2f} | {v['localisation_ratio']:.2f} | "
        f"{v['fraction_above_control']:.0%} |" for name, v in cond.get("lesions", {}).items()
    )
    return f"""# mammosynth-phantom-256

**Demo model; not for clinical use.** A conditional latent diffusion model that generates
256×192 16-bit synthetic mammograms of the *procedural phantom* (not of people), conditioned
on BI-RADS, density, view, laterality, lesion type and lesion box. It was trained on a
2-core CPU in about {sum(stage.get('elapsed_min', 0) for stage in (vae, ldm, dec, wide, *bases)):.0f} minutes to show the
whole system working end to end; it is not a model of real mammograms.

## Use

```python
from mammosynth import MammoLDMPipeline
import torch
pipe = MammoLDMPipeline.from_pretrained("./checkpoints/mammosynth-phantom-256")
out = pipe(birads=4, density="C", lesion="mass", box=(0.45, 0.30, 0.60, 0.42), view="MLO",
           laterality="L", num_images=2, num_inference_steps=20, guidance_scale=3.0,
           generator=torch.Generator().manual_seed(0))
out.images  # list of uint16 (256, 192) arrays, display orientation
```
or `mammosynth sample --checkpoint checkpoints/mammosynth-phantom-256 --out out/ --num 8 --birads 4 --lesion mass`.

## Data

* Phantom studies from `mammosynth phantom` (seed 0), ingested with `mammosynth ingest --size 256x192`.
* Prepared dataset: `{data.get('root')}`, manifest sha256 `{data.get('manifest_sha256', '')[:16]}…`,
  {data.get('training', '?')} training and {data.get('test', '?')} test images.

## Model

| part | what | parameters | fp16 size |
|---|---|---|---|
| vae | `AutoencoderKL`, 1 channel, f={2 ** (len(vae.get('block_out_channels', ())) - 1)}, blocks {tuple(vae.get('block_out_channels', ()))}, scaling_factor {vae.get('scaling_factor', float('nan')):.4f} | {vae.get('params_m', 0):.1f} M | {info['sizes_mb']['vae']:.1f} MB |
| unet | `UNet2DModel` on {ldm.get('latent_channels', 4)} latent + 1 lesion-mask channels, blocks {tuple(ldm.get('block_out_channels', ()))}, condition vector added to the time embedding; {ldm.get('latent_norm', 'latents scaled by the VAE scaling_factor')} | {ldm.get('params_m', 0):.1f} M | {info['sizes_mb']['unet']:.1f} MB |
| condition_encoder | per-field embeddings (0 = unspecified) → MLP | {ldm.get('encoder_params_m', 0):.2f} M | {info['sizes_mb']['condition_encoder']:.1f} MB |
| scheduler | DPM-Solver++ (2M), 1000 training steps, scaled-linear betas | | |

Classifier-free guidance: each condition field dropped with p = 0.1 and all with p = 0.1
during training (the lesion mask is dropped with the lesion field).

## Training (exact command: `{info.get('command', 'bash scripts/train_bundled.sh')}`)

| stage | steps | minutes | batch | loss first → last |
|---|---|---|---|---|
| VAE (L1{f" ×{1 + vae['lesion_weight']:g} inside lesion boxes" if vae.get('lesion_weight') else ''} + 0.5·(1−SSIM) + 1e-6·KL, {vae.get('crop', '?')} crops{f", {vae['lesion_crop_prob']:.0%} centred on the lesion" if vae.get('lesion_crop_prob') else ''}) | {vae.get('steps')} | {vae.get('elapsed_min', 0):.1f} | {vae.get('batch')} | {vae.get('first_loss', float('nan')):.4f} → {vae.get('final_loss', float('nan')):.4f} |
{_ldm_row(bases[0] if bases else ldm, 'LDM')}
{_decoder_row(dec)}{_later_rows(wide, [*bases[1:], ldm] if bases else [])}
Git sha `{info.get('git_sha')}`; versions {json.dumps(info.get('versions', {}))}.

## Measured

{_reconstruction_line(vae, dec, wide)}
* Sampling, one image, {info.get('timing', {}).get('steps', 20)} steps with CFG, {info.get('timing', {}).get('threads')} CPU threads: **{info.get('timing', {}).get('seconds', float('nan')):.2f} s** (model loaded); see `benchmarks/bench_sampling.py`.
{_spread_line(info.get('latent_spread'))}* Conditioning (lesion at box {tuple(cond.get('box', CHECK_BOX))}, density C, MLO, L; {cond.get('seeds')} seeds, each paired with
  the same seed and lesion "none"; {cond.get('measure', '')}). Control contrast (no lesion): {cond.get('control_contrast', float('nan')):.2f}.

| lesion | contrast at box | − control | localisation ratio | images above their control |
|---|---|---|---|---|
{rows}

Grids: `samples.png` (rows density A–D, columns lesion none/mass/calcification/architectural
distortion/asymmetry; MLO, left) and `samples_views.png` (rows CC/MLO, columns R/L; BI-RADS 4 mass).
`samples_side_by_side.png`: per density and lesion type, a real test image | one generated with its
conditions, at 1:1, then both cropped around the lesion (or the breast's centre) at ×3.
{_closeups_section(info.get('lesion_closeups'))}
## Intended use and limits

Demo, tests and development of the mammosynth system (app, privacy gate, evaluation).
**Not for clinical use, diagnosis, or as evidence about real mammograms.** It has only
seen phantoms; fidelity and privacy numbers for real data come from re-training on real
data (e.g. VinDr-Mammo) with the same commands. The privacy checker (`privacy_checker/`) and
the fidelity feature extractor (`feature_extractor/`) are added by their own stages
(`mammosynth build-index`, `mammosynth train-encoder`) and described below when present.
{info.get('weaknesses', '')}
"""


def _closeups_section(closeups: dict | None) -> str:
    """The card's lesion close-up table (:func:`lesion_closeups`), if measured."""
    if not closeups or not closeups.get("lesions"):
        return ""
    rows = "\n".join(
        f"| {name} | {v['n']} | {v['contrast_real']:.2f} | {v['contrast_reconstructed']:.2f} | "
        f"{v['contrast_generated']:.2f} | {v['reconstruction_psnr']:.1f} dB / {v['reconstruction_ssim']:.3f} |"
        for name, v in closeups["lesions"].items())
    size = closeups["size"]
    return f"""
Lesion close-ups: `samples_lesions.png`, one row per lesion type: the first {closeups['per_type']} {closeups['split']}
images that show it ({size}×{size} px around the box) | their VAE reconstructions | images generated with the
same conditions and box ({closeups['steps']} steps, guidance {closeups['guidance']:g}). Contrast as above, at the
image's own box; the reconstruction is the best the diffusion model can do through this VAE.

| lesion | images | contrast: real | reconstructed | generated | reconstruction PSNR / SSIM (crop) |
|---|---|---|---|---|---|
{rows}
"""


def _stage_summary(run: Path, *config_keys: str, ldm: bool = False) -> dict:
    """A training stage for the card: its final metrics, first/last loss, batch and the named config values
    (and, for an LDM run, its :func:`ldm_loss_label`)."""
    from .train_ldm import _loss_summary

    info = json.loads((run / "run.json").read_text())
    config = info.get("config", {})
    summary = {**info.get("metrics", {}), **_loss_summary(run / "log.csv"), "batch": config.get("train_batch_size"),
               **{key: config.get(key) for key in config_keys}}
    if ldm:
        summary["loss_label"] = ldm_loss_label(info.get("invocations", []))
    return summary


def _decoder_row(dec: dict) -> str:
    """The training-table row of the decoder fine-tune (``train-vae --freeze_encoder``), if any."""
    if not dec:
        return ""
    adv = ""
    if dec.get("adv_weight"):
        adv = (f" + patch-GAN ({'adaptive weight ' if dec.get('adv_adaptive') else 'weight '}{dec['adv_weight']:g}, "
               "MONAI PatchDiscriminator)")
    return (f"| VAE decoder fine-tune, encoder frozen (same loss{adv}, {dec.get('crop', '?')} crops) | "
            f"{dec.get('steps')} | "
            f"{dec.get('elapsed_min', 0):.1f} | {dec.get('batch')} | {dec.get('first_loss', float('nan')):.4f} → "
            f"{dec.get('final_loss', float('nan')):.4f} |\n")


def _ldm_row(ldm: dict, what: str) -> str:
    nan = float("nan")
    return (f"| {what} ({ldm.get('loss_label', 'ε-prediction MSE')}, EMA 0.999) | {ldm.get('steps')} | "
            f"{ldm.get('elapsed_min', 0):.1f} | {ldm.get('batch')} | {ldm.get('first_loss', nan):.4f} → "
            f"{ldm.get('final_loss', nan):.4f} |")


def _later_rows(wide: dict, ldms: list[dict]) -> str:
    """Rows of the widening stage (``train-vae --latent_channels``), if any, then of the LDMs each warm-started
    (``train-ldm --init_pipeline``) from the one above."""
    nan = float("nan")
    row = ""
    where = ""
    if wide:
        adv = f" + patch-GAN (adaptive weight {wide['adv_weight']:g})" if wide.get("adv_weight") else ""
        channels = wide.get("latent_channels")
        row = (f"| VAE widened to {channels} latent channels, encoder and decoder trained (same loss{adv}, "
               f"{wide.get('crop', '?')} crops) | {wide.get('steps')} | {wide.get('elapsed_min', 0):.1f} | "
               f"{wide.get('batch')} | {wide.get('first_loss', nan):.4f} → {wide.get('final_loss', nan):.4f} |\n")
        where = f" on the {channels}-channel latents"
    for ldm in ldms:
        row += _ldm_row(ldm, f"LDM{where}, warm-started from the LDM above") + "\n"
    return row


def _reconstruction_line(vae: dict, dec: dict, wide: dict | None = None) -> str:
    nan = float("nan")
    line = (f"* VAE reconstruction on {vae.get('images')} phantom **test** images: "
            f"PSNR **{vae.get('psnr', nan):.2f} dB**, SSIM **{vae.get('ssim', nan):.4f}**")
    if not dec and not wide:
        return line + " (higher is better)."
    line += " with the VAE's own decoder"
    if dec:
        line += (f"; with the {'' if wide else 'shipped '}fine-tuned decoder (same encoder, same latents) "
                 f"PSNR **{dec.get('psnr', nan):.2f} dB**, SSIM **{dec.get('ssim', nan):.4f}** on {dec.get('images')} "
                 "test images")
    if wide:
        line += (f"; with the shipped VAE widened to {wide.get('latent_channels')} latent channels "
                 f"PSNR **{wide.get('psnr', nan):.2f} dB**, SSIM **{wide.get('ssim', nan):.4f}** on "
                 f"{wide.get('images')} test images")
    return line + " (higher is better)."


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


def _embedding_views(embedder: dict) -> str:
    """" Embeddings sum the features of …" for a build report's ``embedder`` entry ("" without one)."""
    if not embedder.get("input_size"):
        return ""
    height, width = embedder["input_size"]
    flips = "the four flips of " if embedder.get("flip_invariant", True) else ""
    zooms = embedder.get("zoom_tta") or []
    zoomed = f" and of its zooms ×{', ×'.join(f'{z:g}' for z in zooms)} (`--zoom-tta`)" if zooms else ""
    return f" Embeddings sum the features of {flips}the image at {height}×{width}{zoomed}."


def component_sections(ckpt: Path) -> str:
    """Markdown for the parts other stages add to a checkpoint, from the files they leave.

    * ``privacy_checker/build_report.json`` (``mammosynth build-index``): re-ID quality of the
      Siamese network on held-out studies, index size and the calibrated threshold;
    * ``feature_extractor/config.json`` ``training_info`` (``mammosynth train-encoder``);
    * ``reports/privacy.json`` (``mammosynth privacy-audit``) and ``reports/eval/metrics.json``
      (``mammosynth evaluate``): their headline numbers; the reports themselves sit beside.
    """
    parts: list[str] = []
    build = ckpt / "privacy_checker" / "build_report.json"
    if build.is_file():
        b = json.loads(build.read_text())
        ver, cal, idx = b["siamese_verification"], b["calibration"], b["index"]
        run = b.get("siamese_run") or {}
        legs = run.get("all_argv") or ([run["argv"]] if run.get("argv") else [])  # "argv": reports before all_argv
        how = ("trained by " + ", then resumed by ".join(f"`mammosynth {' '.join(a[1:])}`" for a in legs)
               + f" ({run.get('steps')} steps, {run.get('elapsed_min') or 0:.0f} min)"
               if legs else "trained by `mammosynth train-siamese`")
        mapr = ver["mean_average_precision_at_r"]
        rel = b.get("siamese_relations") or {}
        relations = ("\n* Same-study partners ranked within R, by relation: " + "; ".join(
            f"{k} {v['within_r']:.1%} (median rank {v['median_rank']:g})" for k, v in rel.items()) + ".") if rel else ""
        views = _embedding_views(b.get("embedder") or {})
        parts.append(f"""## Privacy checker (`privacy_checker/`)

Siamese re-identification network (`SiameseEmbedder`), {how}, indexed by `mammosynth build-index`.{views}

* Re-identification on the {ver['n_images']} **test** images of {ver['n_studies']} held-out studies:
  P@1 **{ver['precision_at_1']:.3f}**, R-precision **{ver['r_precision']:.3f}**, mAP@R **{mapr:.3f}**
  (target ≥ 0.9: {'met' if mapr >= 0.9 else 'not met'}), verification ROC-AUC **{ver['verification_auc']:.3f}**.{relations}
* Index: {idx['images']:,} {idx['split']} images of {idx['studies']:,} studies ({idx['backend']} search).
  Threshold **{cal['threshold']:.4f}** cosine similarity, calibrated on {cal['n_images']} unseen
  images: false-flag rate {_pct(cal['false_flag_rate'])} (target ≤ 1%; cross-validated
  {_pct(cal.get('cv_false_flag_rate'))}; 95% upper bound {_pct(cal.get('false_flag_upper95'))}).
* Stored in float32 on purpose: the threshold is calibrated to four decimals, and the folder's
  fingerprint check refuses altered weights.
""")
    encoder = ckpt / "feature_extractor" / "config.json"
    if encoder.is_file():
        config = json.loads(encoder.read_text())
        training = config.get("training_info") or {}
        val = training.get("validation") or {}
        acc = ", ".join(f"{k.replace('_accuracy', '')} {v:.3f}" for k, v in val.items()
                        if isinstance(v, (int, float)) and "accuracy" in k)
        parts.append(f"""## Fidelity feature extractor (`feature_extractor/`)

`FidelityEncoder` (multi-task CNN: density, lesion type, view, cancer, lesion heat map), trained on
the real training split by `mammosynth train-encoder` ({(training.get('recipe') or {}).get('epochs', '?')} epochs,
{(training.get('seconds') or 0) / 60:.1f} min). Test-split accuracy: {acc or 'see config.json'}.
Used by `mammosynth evaluate` for FID/KID, precision/recall, density/coverage and adherence.
""")
    privacy = ckpt / "reports" / "privacy.json"
    if privacy.is_file():
        from ..privacy.audit import audit_summary

        report = json.loads(privacy.read_text())
        lines = "\n".join(f"* {line}" for line in audit_summary(report).splitlines())
        parts.append(f"""## Privacy audit (`reports/privacy.json`, plots beside it)

{report.get('command', '`mammosynth privacy-audit`')} on {report.get('n_synthetic', 'the')} synthetic images:

{lines}
""")
    student, tiny = ckpt / "reports" / "student.json", ckpt / "reports" / "tiny_decoder.json"
    if student.is_file() or tiny.is_file():
        lines = []
        if student.is_file():
            st = json.loads(student.read_text())
            lines.append(
                f"* **Student** (`student_unet/`, `student_condition_encoder/`, `student_scheduler/`): latent "
                f"consistency distillation of `unet/` by `mammosynth distill` ({st.get('steps')} steps, "
                f"{st.get('train_minutes') or 0:.0f} min on {st.get('device', 'cpu')}, batch "
                f"{st.get('train_batch_size')}, guidance w ∈ [{st.get('w_min')}, {st.get('w_max')}] as an input, "
                f"{st.get('solver_steps')} DDIM solver steps, final loss {st.get('final_loss')}). Sample with "
                "`--scheduler lcm` (1–4 steps, default 2).")
        if tiny.is_file():
            td = json.loads(tiny.read_text())
            rec = td.get("reconstruction") or {}
            vs = rec.get("tiny_vs_full") or {}
            cost = (td.get("cost") or {}).get("tiny") or {}
            lines.append(
                f"* **Tiny decoder** (`tiny_vae/`, diffusers `AutoencoderTiny`, {td.get('parameters', 0):,} "
                f"parameters): distilled from `vae/`'s decoder by `mammosynth distill-decoder` ({td.get('steps')} "
                f"steps, {td.get('train_minutes') or 0:.0f} min); on {rec.get('images')} {rec.get('split')} "
                f"images PSNR {vs.get('psnr')} dB / SSIM {vs.get('ssim')} against the full decoder, "
                f"{cost.get('gflop_per_image', 0):.2f} GFLOP per image. Softer than the full decoder: for "
                "previews and fast sets (`--decoder tiny`).")
        parts.append("## Fast parts (issue 21)\n\n" + "\n".join(lines) + "\n\nThe audit and evaluation "
                     "below measure the teacher (DPM-Solver++, `unet/` and `vae/`); `benchmarks/bench_sampling.py "
                     "--quality 800` measures the student and the tiny decoder beside it.\n")
    metrics = ckpt / "reports" / "eval" / "metrics.json"
    if metrics.is_file():
        summary = (metrics.parent / "summary.md").read_text() if (metrics.parent / "summary.md").is_file() else ""
        # the summary's own title goes; its sections become subsections of this one
        body = "\n".join("#" + line if line.startswith("## ") else line
                         for line in summary.splitlines() if not line.startswith("# "))
        parts.append(f"""## Evaluation (`reports/eval/`: metrics.json, plots, summary.md)

{body.strip()}
""")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="model_card", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--vae_run", required=True)
    parser.add_argument("--ldm_run", required=True)
    parser.add_argument("--decoder_run", default=None,
                        help="train-vae --freeze_encoder run whose decoder the checkpoint ships (mammosynth swap-decoder)")
    parser.add_argument("--wide_vae_run", default=None,
                        help="train-vae --latent_channels run whose widened VAE the checkpoint ships; --ldm_run is "
                             "then the LDM trained on its latents and --base_ldm_run the ones it started from")
    parser.add_argument("--base_ldm_run", nargs="+", default=[],
                        help="the LDM runs --ldm_run was warm-started from (train-ldm --init_pipeline), first one "
                             "first: the first is the LDM on the VAE's own latents, the rest (on --wide_vae_run's "
                             "latents, if given) each started from the one before")
    parser.add_argument("--data", default=None, help="prepared dataset (for split sizes)")
    parser.add_argument("--command", default="bash scripts/train_bundled.sh")
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=6, help="seeds per lesion type in the conditioning check")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip_samples", action="store_true")
    parser.add_argument("--notes", default=None,
                        help="Markdown file of observed weaknesses, quoted under 'Intended use and limits'")
    parser.add_argument("--card_only", action="store_true",
                        help="only re-render README.md from training_summary.json and the component/report files "
                             "(after build-index, train-encoder, privacy-audit or evaluate); no sampling")
    args = parser.parse_args(argv)
    ckpt = Path(args.checkpoint)
    if args.card_only:
        info = json.loads((ckpt / "training_summary.json").read_text())
        if args.notes:
            info["weaknesses"] = Path(args.notes).read_text()
            (ckpt / "training_summary.json").write_text(json.dumps(info, indent=2, default=str))
        card = render_model_card(info) + "\n" + component_sections(ckpt)
        (ckpt / "README.md").write_text(card)
        print(f"wrote {ckpt / 'README.md'}")
        return info
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    from ..pipelines.pipeline_mammo_ldm import MammoLDMPipeline

    ckpt, vae_run, ldm_run = Path(args.checkpoint), Path(args.vae_run), Path(args.ldm_run)
    # The card's sample grids and conditioning check are made before build-index adds the gate.
    pipe = MammoLDMPipeline.from_pretrained(ckpt, requires_privacy_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ldm_info = json.loads((ldm_run / "run.json").read_text())
    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    vae = {**_stage_summary(vae_run, "crop", "lesion_weight", "lesion_crop_prob"),
           "block_out_channels": pipe.vae.config.block_out_channels, "params_m": n(pipe.vae)}
    decoder = _stage_summary(Path(args.decoder_run), "crop", "adv_weight", "adv_adaptive") if args.decoder_run else None
    wide = None
    if args.wide_vae_run:
        wide = _stage_summary(Path(args.wide_vae_run), "crop", "adv_weight", "latent_channels")
    bases = [_stage_summary(Path(run), ldm=True) for run in args.base_ldm_run]
    ldm = {**ldm_info.get("metrics", {}), "block_out_channels": pipe.unet.config.block_out_channels,
           "latent_channels": pipe.unet.config.out_channels,
           "params_m": n(pipe.unet), "encoder_params_m": n(pipe.condition_encoder),
           "batch": ldm_info.get("config", {}).get("train_batch_size"),
           "loss_label": ldm_loss_label(ldm_info.get("invocations", [])), "latent_norm": latent_norm_label(pipe.vae)}
    data = dict(ldm_info.get("data", {}))
    prepared = None
    if args.data:
        from ..data.prepared import load_prepared

        prepared = load_prepared(args.data)
        manifest = prepared.manifest
        data.update({"training": int((manifest["split"] == "training").sum()), "test": int((manifest["split"] == "test").sum())})
    gen = torch.Generator().manual_seed(0)
    pipe(birads=3, num_inference_steps=2, generator=gen)  # warm-up
    start = time.perf_counter()
    pipe(birads=4, lesion="mass", num_inference_steps=args.steps, guidance_scale=3.0, generator=gen)
    timing = {"seconds": time.perf_counter() - start, "steps": args.steps, "threads": torch.get_num_threads()}
    conditioning = None
    if not args.skip_samples:
        sample_grids(pipe, ckpt, steps=args.steps)
        conditioning = conditioning_check(pipe, num_seeds=args.seeds, steps=args.steps)
        (ckpt / "conditioning.json").write_text(json.dumps(conditioning, indent=2))
    spread = closeups = None
    if prepared is not None and not args.skip_samples:
        spread = latent_spread(pipe, prepared, steps=args.steps)
        closeups = lesion_closeups(pipe, prepared, ckpt, steps=args.steps)
        side_by_side(pipe, prepared, ckpt, steps=args.steps)
    info = {"vae": vae, "decoder": decoder, "wide_vae": wide, "base_ldm": bases, "ldm": ldm, "data": data,
            "conditioning": conditioning, "timing": timing,
            "latent_spread": spread, "lesion_closeups": closeups,
            "command": args.command, "git_sha": ldm_info.get("git_sha"), "versions": ldm_info.get("versions"),
            "sizes_mb": {k: weights_mb(ckpt).get(k, 0.0) for k in ("vae", "unet", "condition_encoder")},
            "weaknesses": Path(args.notes).read_text() if args.notes else ""}
    (ckpt / "README.md").write_text(render_model_card(info) + "\n" + component_sections(ckpt))
    (ckpt / "training_summary.json").write_text(json.dumps(info, indent=2, default=str))
    print(f"wrote {ckpt / 'README.md'}; VAE+UNet fp16 {info['sizes_mb']['vae'] + info['sizes_mb']['unet']:.1f} MB; "
          f"sampling {timing['seconds']:.2f} s")
    if conditioning:
        for lesion, v in conditioning["lesions"].items():
            print(f"  {lesion:26s} contrast {v['contrast']:+.2f} (control {conditioning['control_contrast']:+.2f}) "
                  f"localisation {v['localisation_ratio']:.2f}")
    return info


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
