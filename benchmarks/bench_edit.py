"""Lesion insertion ("edit") against generation from scratch: lesion contrast, lesion-type adherence, PSNR outside the box.

For ``--limit`` normal (lesion ``none``) real test images of a prepared dataset, each gets a lesion
type (cycling mass, calcification, architectural distortion, asymmetry) and a box taken from a real
test lesion of that type that lies on this breast. Then, with the same conditions and seed:

* **edit** – :meth:`MammoLDMPipeline.edit` of the real image;
* **scratch** – the pipeline's ordinary generation (``__call__``) of a new image.

Figures (printed, and as JSON with ``--json``):

* *lesion contrast* – mean inside the box minus the mean of a ring around it (``--ring`` pixels wide,
  breast tissue only), in % of the 16-bit range; also for the unedited input (the tissue's own
  contrast there) and for the real lesions the boxes came from;
* *lesion-type accuracy* of the adherence classifier (the fidelity encoder's real-trained lesion head,
  as ``mammosynth evaluate`` uses it) and its heat-map hit rate (peak inside the requested box);
* *outside the box* – PSNR of the edit against the input: beyond box + margin (exact by
  construction: ``inf``), over all pixels outside the box (the feathered ring included) and over
  the ring alone; and the VAE round trip's PSNR outside the box (what latent blending without the
  pixel paste could at best keep).

Run (2 CPU threads, a few minutes)::

    python benchmarks/bench_edit.py --checkpoint checkpoints/mammosynth-phantom-256 \\
        --data data/prepared-256 --limit 12 --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mammosynth.conditions import Box, Conditions, Lesion
from mammosynth.data.prepare import tissue_mask
from mammosynth.data.prepared import load_prepared
from mammosynth.evaluation.classifiers import predict
from mammosynth.evaluation.features import load_fidelity_encoder
from mammosynth.models.classifier import frames_to_input
from mammosynth.pipelines.inpainting import breast_fraction, default_margin, edit_region
from mammosynth.pipelines.pipeline_mammo_ldm import load_pipeline

LESIONS = [Lesion.MASS, Lesion.CALCIFICATION, Lesion.ARCHITECTURAL_DISTORTION, Lesion.ASYMMETRY]


def psnr(reference: np.ndarray, test: np.ndarray, where: np.ndarray) -> float:
    """PSNR in dB over the pixels ``where`` (16-bit peak); ``inf`` when identical there (higher is better)."""
    if not where.any():
        return float("nan")
    error = np.mean((reference[where].astype(np.float64) - test[where].astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * math.log10(65535.0 ** 2 / error))


def contrast(frame: np.ndarray, box: Box, ring: int, tissue: np.ndarray) -> float:
    """Mean inside ``box`` minus mean of the ``ring``-pixel ring around it (tissue pixels), % of the 16-bit range."""
    h, w = frame.shape
    x0, y0, x1, y1 = box.to_pixels(h, w)
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    around = np.zeros((h, w), bool)
    around[max(0, y0 - ring):y1 + ring, max(0, x0 - ring):x1 + ring] = True
    around &= ~inside & tissue
    inside &= tissue
    if not inside.any() or not around.any():
        return float("nan")
    return float((frame[inside].mean() - frame[around].mean()) / 65535.0 * 100.0)


def pick_cases(data, limit: int, min_fraction: float = 0.6):
    """``limit`` (row, lesion, canonical box, donor row) cases: normal test images, each with the box of a real
    test lesion of the type (the donor) that lies on this breast."""
    manifest = data.manifest
    test = manifest[manifest["split"] == "test"]
    normals = test[test["lesion"] == "none"]
    donors = {k: [] for k in LESIONS}
    for row in test[test["lesion"] != "none"].itertuples():
        for finding in json.loads(row.findings):
            lesion = finding.get("lesion")
            if lesion and finding.get("box") and Lesion(lesion) in donors:
                donors[Lesion(lesion)].append((row, Box.from_pixels(finding["box"], *data.images.shape[1:])))
    cases = []
    for k, row in enumerate(normals.itertuples()):
        if len(cases) == limit:
            break
        lesion = LESIONS[len(cases) % len(LESIONS)]
        frame = np.asarray(data.images[int(row.index)])
        pool = donors[lesion]
        start = (len(cases) // len(LESIONS)) * 7  # a different real lesion for each round of types
        for donor, box in pool[start % max(1, len(pool)):] + pool[:start % max(1, len(pool))]:
            if breast_fraction(frame, box) >= min_fraction:
                cases.append((row, lesion, box, donor))
                break
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/mammosynth-phantom-256")
    parser.add_argument("--data", default="data/prepared-256", help="prepared dataset with a test split")
    parser.add_argument("--limit", type=int, default=12, help="images")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--ring", type=int, default=8, help="width (px) of the ring the box is compared with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(args.checkpoint)
    encoder = load_fidelity_encoder(args.checkpoint)
    data = load_prepared(args.data)
    height, width = pipe.default_size
    margin = default_margin(height)
    cases = pick_cases(data, args.limit)
    rows = []
    seconds = {"edit": 0.0, "scratch": 0.0}
    for k, (row, lesion, box, donor) in enumerate(cases):
        canonical = np.asarray(data.images[int(row.index)])
        right = row.laterality == "R"
        shown_box = box.mirrored() if right else box
        cond = Conditions.create(density=row.density, view=row.view, laterality=row.laterality, lesion=lesion,
                                 box=shown_box)
        display = np.ascontiguousarray(canonical[:, ::-1]) if right else canonical
        seed = args.seed + k
        started = time.perf_counter()
        edited = pipe.edit(display, conditions=cond, num_inference_steps=args.steps, guidance_scale=args.guidance,
                           generator=torch.Generator().manual_seed(seed))
        seconds["edit"] += time.perf_counter() - started
        started = time.perf_counter()
        scratch = pipe(conditions=cond, num_inference_steps=args.steps, guidance_scale=args.guidance,
                       generator=torch.Generator().manual_seed(seed))
        seconds["scratch"] += time.perf_counter() - started
        edit_c = edited.images[0][:, ::-1] if right else edited.images[0]
        scratch_c = scratch.images[0][:, ::-1] if right else scratch.images[0]
        region = edit_region(box, height, width, margin, pipe.vae_scale_factor)
        x0, y0, x1, y1 = region.box_pixels
        in_box = np.zeros((height, width), bool)
        in_box[y0:y1, x0:x1] = True
        round_trip = np.rint(pipe.decode_latents(pipe.encode_images(canonical[None])).cpu().numpy()[0] * 65535)
        donor_frame = np.asarray(data.images[int(donor.index)])
        rows.append({
            "image": k, "lesion": lesion.value, "box": [round(v, 3) for v in box.as_tuple()],
            "contrast": {"edit": contrast(edit_c, box, args.ring, tissue_mask(canonical.astype(np.float32))),
                         "scratch": contrast(scratch_c, box, args.ring, tissue_mask(scratch_c.astype(np.float32))),
                         "input": contrast(canonical, box, args.ring, tissue_mask(canonical.astype(np.float32))),
                         "real_lesion": contrast(donor_frame, box, args.ring,
                                                 tissue_mask(donor_frame.astype(np.float32)))},
            "psnr": {"beyond_margin": psnr(canonical, edit_c, ~region.changed),
                     "outside_box": psnr(canonical, edit_c, ~in_box),
                     "margin_ring": psnr(canonical, edit_c, region.changed & ~in_box),
                     "vae_round_trip_outside_box": psnr(canonical, round_trip, ~in_box)},
            "frames": (canonical, edit_c, scratch_c),
            "flagged": bool(edited.privacy[0].flagged) if edited.privacy else None,
        })
        print(f"[{k + 1}/{len(cases)}] {lesion.value:24s} contrast edit {rows[-1]['contrast']['edit']:+.2f} "
              f"scratch {rows[-1]['contrast']['scratch']:+.2f} input {rows[-1]['contrast']['input']:+.2f} % · "
              f"PSNR outside box {rows[-1]['psnr']['outside_box']:.1f} dB", flush=True)

    # adherence: the lesion head of the real-trained fidelity encoder on canonical frames
    size = tuple(encoder.config.sample_size)
    target = np.array([list(Lesion).index(Lesion(r["lesion"])) for r in rows])
    boxes = [Box(*r["box"]) for r in rows]
    adherence = {}
    for j, name in enumerate(("input", "edit", "scratch")):
        probs = predict(encoder.net, frames_to_input(np.stack([r["frames"][j] for r in rows]), size))
        heat = probs["heatmap"][:, 0]
        hits = []
        for m, b in zip(heat, boxes):
            py, px = np.unravel_index(int(np.argmax(m)), m.shape)
            cx, cy = (px + 0.5) / m.shape[1], (py + 0.5) / m.shape[0]
            hits.append(b.x0 <= cx <= b.x1 and b.y0 <= cy <= b.y1)
        adherence[name] = {"lesion_accuracy": float((probs["lesion"].argmax(1) == target).mean()),
                           "lesion_present": float((probs["lesion"].argmax(1) != 0).mean()),
                           "heatmap_hit_rate": float(np.mean(hits))}

    def mean(part: str, key: str) -> float:
        values = [r[part][key] for r in rows if np.isfinite(r[part][key])]
        return float(np.mean(values)) if values else float("nan")

    def minimum(key: str) -> float:
        return float(min(r["psnr"][key] for r in rows))

    summary = {
        "images": len(rows), "steps": args.steps, "guidance": args.guidance, "margin_px": margin, "ring_px": args.ring,
        "contrast_pct": {k: mean("contrast", k) for k in ("edit", "scratch", "input", "real_lesion")},
        "adherence": adherence,
        "psnr_db_min": {k: minimum(k) for k in ("beyond_margin", "outside_box", "margin_ring",
                                                "vae_round_trip_outside_box")},
        "psnr_db_mean": {k: mean("psnr", k) for k in ("outside_box", "margin_ring", "vae_round_trip_outside_box")},
        "flagged": sum(bool(r["flagged"]) for r in rows),
        "seconds_per_image": {k: v / max(1, len(rows)) for k, v in seconds.items()},
    }
    per_type = {}
    for lesion in LESIONS:
        sel = [r for r in rows if r["lesion"] == lesion.value]
        if sel:
            per_type[lesion.value] = {k: float(np.nanmean([r["contrast"][k] for r in sel]))
                                      for k in ("edit", "scratch", "input", "real_lesion")}
    summary["contrast_pct_by_type"] = per_type
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "images": [
            {k: v for k, v in r.items() if k != "frames"} for r in rows]}, indent=2, allow_nan=True))


if __name__ == "__main__":
    main()
