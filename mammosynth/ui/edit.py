"""The Edit tab: insert a lesion of a chosen type into an existing image, privacy-gated (DESIGN §11).

The image is an upload (a 16-bit PNG or an MG DICOM, through the ingest's display pipeline, PHI
rules, crop, flip and resize: :func:`mammosynth.data.upload.load_for_edit`) or the first image of
the last generation in this session. The box is drawn with the Generate tab's box tool on the
image as the model sees it; :meth:`MammoLDMPipeline.edit` does the rest.

Pure functions first (:func:`load_upload`, :func:`run_edit`), then :func:`build_edit_tab`. The
public endpoint is ``edit`` (file, lesion, box, seed, steps, guidance); its box is in the
coordinates of the image the tab shows (for a PNG at the model's size: the file itself).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import numpy as np

from ..conditions import Lesion
from .auth import generator_refusal, username_of
from .choices import LESION_LABEL
from .display import Window, apply_window, auto_window, write_png8
from .generate import _BOX_COLOUR, SAMPLER_CHOICES, box_from_annotation, box_problem, same_box, verdict_line
from .model import GeneratedImage, parse_generation_request, write_outputs
from .services import Services, new_output_folder

logger = logging.getLogger("mammosynth.app")

__all__ = ["EDIT_LESION_CHOICES", "load_upload", "run_edit", "EditOutcome", "build_edit_tab"]

#: Lesion types an edit can insert (not "none", not "any").
EDIT_LESION_CHOICES = [(LESION_LABEL.get(k, k.value.replace("_", " ")), k.value) for k in Lesion if k is not Lesion.NONE]

_SOURCE_WORDS = {"generated": "a generated image (its recipe gives the conditions)",
                 "uploaded-png": "an uploaded 16-bit PNG", "uploaded-dicom": "an uploaded MG DICOM (de-identified)"}


def _file_path(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    return None if value is None else str(getattr(value, "name", value))


def load_upload(services: Services, value: Any) -> Any:
    """The :class:`~mammosynth.data.upload.EditSource` of an uploaded file, its box in the frame's coordinates.

    Raises ``ValueError`` naming the file and what was expected.
    """
    from ..data.upload import load_for_edit
    from ..pipelines.checkpoint import checkpoint_image_size

    path = _file_path(value)
    if path is None:
        raise ValueError("upload an image first: a 16-bit grayscale PNG or an MG DICOM")
    source = load_for_edit(path, checkpoint_image_size(services.config.checkpoint))
    return dataclasses.replace(source, transform=None)  # the box is drawn on the frame itself


def annotator_value(frame: np.ndarray, box: str | None, window: Window | None = None) -> dict:
    """The box tool's value: the frame through a window (RGB, enlarged) and the box if it parses."""
    from .generate import annotation_value

    view = apply_window(frame, window or auto_window(frame))
    scale = max(1, round(480 / frame.shape[0]))
    rgb = np.repeat(np.repeat(np.stack([view] * 3, axis=-1), scale, axis=0), scale, axis=1)
    return annotation_value(rgb, box)


@dataclass
class EditOutcome:
    """What one edit produced, ready for the UI and the API."""

    image: GeneratedImage
    files: list[str]
    gallery: list[tuple[str, str]]
    details: dict


def run_edit(services: Services, value: Any, lesion: Any, box: Any, seed: Any, steps: Any, guidance: Any,
             sampler: Any = "dpm", progress: Callable[[int, int], None] | None = None) -> EditOutcome:
    """Validate, edit, write the downloads (16-bit PNG, DICOM, JSON); raises ``ValueError`` for bad input."""
    config = services.config
    source = load_upload(services, value)
    if str(lesion or "").strip().lower() in ("", "any", "none"):
        raise ValueError("choose the lesion type to insert: " + ", ".join(v for _, v in EDIT_LESION_CHOICES))
    if not str(box or "").strip():
        raise ValueError("draw the lesion box on the breast (or type x0,y0,x1,y1 in [0, 1])")
    request = parse_generation_request(lesion=lesion, box=box, seed=seed, steps=steps, guidance=guidance,
                                       sampler=sampler, max_images=1, max_steps=config.max_steps)
    image = services.model.edit(source, lesion, box, request.seed, request.num_inference_steps,
                                request.guidance_scale, request.scheduler, progress=progress)
    folder = new_output_folder(config.temp_dir, "generated")
    paths = write_outputs(image, folder)
    window = auto_window(source.frame)
    mark, similarity = verdict_line(image.verdict)
    gallery = [(str(write_png8(apply_window(source.frame, window), folder / "view_input.png")), "input"),
               (str(write_png8(apply_window(image.frame, window), folder / "view_edit.png")),
                f"edit · seed {image.recipe.seed} · privacy {mark.replace('*', '')} ({similarity})")]
    details = {"checkpoint": services.model.checkpoint.name, "fingerprint": services.model.fingerprint,
               "source": source.kind, "recipe": image.recipe.to_dict(), "privacy": image.recipe.privacy,
               "files": {k: p.name for k, p in paths.items()}}
    return EditOutcome(image, [str(paths["png"]), str(paths["dicom"]), str(paths["json"])], gallery, details)


def edit_verdict(image: GeneratedImage, kind: str) -> str:
    """Markdown: the privacy verdict of an edit, and what its pixels are."""
    mark, similarity = verdict_line(image.verdict)
    lines = [f"**Privacy:** {mark} · similarity {similarity}"]
    if image.verdict is not None and image.verdict.flagged:
        lines.append("⚠ The edited image is too similar to a training image: do not share it. A new seed will not "
                     "help — the pixels outside the box are the input's.")
    if image.verdict is None:
        lines.append("⚠ This checkpoint has no privacy checker: the edit was **not** checked against the training set.")
    if kind != "generated":
        lines.append("Outside the box the pixels are the uploaded image's: treat the result as that patient's "
                     "(de-identified) image, not as a synthetic one.")
    return "\n\n".join(lines)


# ---- the tab --------------------------------------------------------------------------------


def build_edit_tab(services: Services, generated: gr.State | None = None) -> None:
    """Lay out the Edit tab inside the current ``gr.Blocks`` and wire it.

    Args:
        generated: the Generate tab's per-session list of generated images (``{"png16": ...}``),
            for *Use the last generated image*.
    """
    from gradio_image_annotation import image_annotator

    config = services.config
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            gr.Markdown("### Image to edit\nA 16-bit PNG or an MG DICOM (read like ingested data: display pipeline, "
                        "no identifiers kept, breast cropped and resized to the model's size), or the last image "
                        "you generated.")
            upload = gr.File(label="16-bit PNG or DICOM", file_types=[".png", ".dcm", ".dicom"], type="filepath",
                             elem_id="edit-upload")
            use_last = gr.Button("Use the last generated image", size="sm", elem_id="edit-use-last",
                                 visible=generated is not None)
            about = gr.Markdown("", elem_id="edit-source")
            annotator = image_annotator(
                value=None, label="Lesion location: drag a box on the breast", image_type="numpy", single_box=True,
                sources=[], show_download_button=False, show_clear_button=False, show_remove_button=True,
                disable_edit_boxes=True, label_list=["lesion"], label_colors=[_BOX_COLOUR], use_default_label=True,
                height=360, elem_id="edit-annotator",
            )
            box = gr.Textbox("", label="Lesion box x0,y0,x1,y1 (0–1, on the image shown)", elem_id="edit-box",
                             placeholder="e.g. 0.30,0.38,0.46,0.52")
            lesion = gr.Dropdown(EDIT_LESION_CHOICES, value=Lesion.MASS.value, label="Lesion type to insert",
                                 elem_id="edit-lesion")
            with gr.Row():
                seed = gr.Number(value=-1, precision=0, label="Seed (−1 = random)", minimum=-1, elem_id="edit-seed")
                steps = gr.Slider(1, config.max_steps, value=config.default_steps, step=1, label="Steps",
                                  elem_id="edit-steps")
            with gr.Row():
                guidance = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="Guidance (1 = none)", elem_id="edit-guidance")
                sampler = gr.Dropdown(SAMPLER_CHOICES, value="dpm", label="Sampler", elem_id="edit-sampler")
            go = gr.Button("Insert lesion", variant="primary", elem_id="edit-go")
        with gr.Column(scale=3, min_width=360):
            gallery = gr.Gallery(label="Input and edit (8-bit view, same window; downloads are 16-bit)", format="png",
                                 columns=2, height="auto", object_fit="contain", preview=False, buttons=["fullscreen"],
                                 elem_id="edit-gallery", interactive=False)
            verdict = gr.Markdown(elem_id="edit-verdict")
            files = gr.File(label="Downloads: 16-bit PNG, DICOM (marked as an edit), JSON recipe",
                            file_count="multiple", interactive=False, elem_id="edit-files")
            details = gr.JSON(label="Recipe and privacy details", open=False, elem_id="edit-details")

    def on_upload(value: Any, current: str) -> tuple:
        if _file_path(value) is None:
            return None, "", ""
        try:
            source = load_upload(services, value)
        except (ValueError, OSError) as error:
            raise gr.Error(str(error), title="Cannot edit this file", print_exception=False) from None
        side = {"L": "left", "R": "right"}.get(source.laterality or "", "side unknown")
        text = f"Loaded {_SOURCE_WORDS[source.kind]} · {side} · {source.view or 'view unknown'}."
        return annotator_value(source.frame, current), text, current

    upload.change(on_upload, [upload, box], [annotator, about, box], api_visibility="private", show_progress="hidden")

    if generated is not None:
        def last_generated(items: list[dict]) -> str:
            if not items:
                raise gr.Error("Generate an image in the Generate tab first.", title="Nothing generated yet",
                               print_exception=False)
            return items[0]["png16"]

        use_last.click(last_generated, generated, upload, api_visibility="private")

    def on_draw(value: dict | None, current: str) -> Any:
        drawn = box_from_annotation(value)
        if not drawn and box_problem(current) is not None:
            return gr.update()
        return gr.update() if same_box(drawn, current, value) else drawn

    annotator.change(on_draw, [annotator, box], box, queue=False, api_visibility="private", show_progress="hidden")

    def on_box_typed(value: Any, text: str) -> Any:
        """Show a typed box on the image (a wrong one is refused by *Insert lesion*, with the reason)."""
        try:
            return annotator_value(load_upload(services, value).frame, text)
        except (ValueError, OSError):
            return gr.update()

    box.submit(on_box_typed, [upload, box], annotator, api_visibility="private", show_progress="hidden")
    box.blur(on_box_typed, [upload, box], annotator, api_visibility="private", show_progress="hidden")

    def edit(upload: Any, lesion: str, box: str, seed: float, steps: float, guidance: float, sampler: str,
             request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:
        """Insert a lesion of type ``lesion`` into ``box`` of the uploaded image (privacy-gated).

        Returns the gallery (input and edit, 8-bit views), the privacy verdict (Markdown), the
        downloads (16-bit PNG, DICOM, JSON recipe) and the recipe details.
        """
        if (refusal := generator_refusal(services, username_of(request))) is not None:  # blinding (DESIGN §11)
            raise gr.Error(refusal, title="Not allowed", print_exception=False)
        progress(0, desc="Loading the model…" if not services.model.loaded else "Starting…")

        def step(done: int, total: int) -> None:
            progress((done, total), desc="Inserting the lesion", unit="steps")

        try:
            outcome = run_edit(services, upload, lesion, box, seed, steps, guidance, sampler, progress=step)
        except ValueError as error:  # bad input, incl. ConditionError, DicomReadError and CheckpointError
            raise gr.Error(str(error), title="Cannot edit", print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - a failure is a message, never a crash
            logger.exception("edit failed")
            raise gr.Error(f"The edit failed ({type(error).__name__}: {error}). The server log has the details.",
                           title="Edit failed", print_exception=False) from None
        return (outcome.gallery, edit_verdict(outcome.image, outcome.details["source"]), outcome.files,
                outcome.details)

    run = go.click(edit, [upload, lesion, box, seed, steps, guidance, sampler], [gallery, verdict, files, details],
                   api_name="edit", concurrency_limit=config.max_concurrent_generations, concurrency_id="generate",
                   show_progress_on=[gallery])
    run.failure(lambda: ([], "⚠ **The last edit failed** (the message says why).", None, None), None,
                [gallery, verdict, files, details], queue=False, api_visibility="private", show_progress="hidden")
