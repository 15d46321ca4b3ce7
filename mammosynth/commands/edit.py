"""``mammosynth edit``: insert a lesion into an existing image (a generated PNG, or a 16-bit PNG / MG DICOM)."""

from __future__ import annotations

import argparse

from ..conditions import BIRADS_VALUES, Density, Laterality, Lesion, View
from ..pipelines.checkpoint import BUNDLED_CHECKPOINT


def register(subparsers: argparse._SubParsersAction) -> None:
    lesions = ", ".join(k.value for k in Lesion if k is not Lesion.NONE)
    edit = subparsers.add_parser(
        "edit", help="insert a lesion into an existing image (16-bit PNG or MG DICOM), privacy-gated",
        description="Insert a lesion of the given type into the given box of an existing image and keep the rest "
        "of the breast: masked latent inpainting (latent blending) with the generation model, then the input's own "
        "pixels pasted back outside the box with a feathered margin, so that away from the margin the output is "
        "the input exactly. A DICOM (or a mammogram PNG larger than the model's size) goes through the ingest's "
        "display pipeline, PHI rules, breast crop, flip and resize first. Writes edit_seed<SEED>.png (16-bit), "
        ".json (the recipe with the privacy verdict), input.png (the input at the model's size) and, with "
        "--dicom, a DICOM.")
    edit.add_argument("--checkpoint", default=BUNDLED_CHECKPOINT, help="pipeline folder (default: %(default)s)")
    edit.add_argument("--image", required=True, help="the image to edit: a 16-bit grayscale PNG or an MG DICOM")
    edit.add_argument("--lesion", required=True, help=f"the lesion type to insert: {lesions}")
    edit.add_argument("--box", required=True,
                      help="x0,y0,x1,y1 in [0,1] of the input image as displayed (a DICOM as stored); on the breast")
    edit.add_argument("--out", required=True, help="output folder")
    edit.add_argument("--seed", type=int, default=0, help="seed of the edit")
    edit.add_argument("--steps", type=int, default=20, help="denoising steps")
    edit.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (>= 1)")
    edit.add_argument("--scheduler", default="dpm", help="dpm, ddim, unipc, euler or ddpm")
    edit.add_argument("--margin", type=int, default=None,
                      help="feathered margin in pixels around the box (default: 3%% of the image height)")
    for name, values in (("birads", BIRADS_VALUES), ("density", Density), ("view", View), ("laterality", Laterality)):
        words = [str(getattr(v, "value", v)) for v in values]
        edit.add_argument(f"--{name}", default=None,
                          help=f"{', '.join(words)} (default: what the image's recipe or DICOM header says, else "
                               "unspecified; the side is otherwise read from where the breast touches the edge)")
    edit.add_argument("--dicom", action="store_true", help="also write a DICOM (marked as an edit with a synthetic lesion)")
    edit.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")
    edit.add_argument("--no-privacy-gate", dest="privacy_gate", action="store_false",
                      help="edit without the privacy checker on purpose (warns; the recipe records privacy: null)")
    edit.set_defaults(handler=_edit)


def _edit(args: argparse.Namespace) -> int:
    from ..pipelines.editing import edit_to_folder

    written = edit_to_folder(args)
    print("\n".join(f"{kind}: {path}" for kind, path in written.items()))
    return 0
