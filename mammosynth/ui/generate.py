"""The Generate tab: §7 conditions in, 16-bit images with privacy verdicts and downloads out.

Pure functions first (:func:`check_conditions`, :func:`run_generation`, :func:`render_gallery`,
:func:`box_from_annotation` ...), then :func:`build_generate_tab`, which lays out the
components and wires the events. The public endpoint is ``generate``; the helpers behind
window/level, presets and box drawing are private (browser only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
import numpy as np

from ..conditions import ConditionError, Conditions, Laterality, Lesion, View, canonical_box, parse_box
from .auth import generator_refusal, username_of
from .choices import ANY, BIRADS_CHOICES, DENSITY_CHOICES, LATERALITY_CHOICES, LESION_CHOICES, VIEW_CHOICES
from .display import Window, apply_window, auto_window, breast_outline, write_png8
from ..pipelines.checkpoint import checkpoint_image_size
from .model import GeneratedImage, parse_generation_request, write_batch_outputs
from .pacs import build_pacs_controls
from .services import Services, new_output_folder

if TYPE_CHECKING:
    from ..privacy.checker import PrivacyVerdict

logger = logging.getLogger("mammosynth.app")

__all__ = [
    "PRESETS", "SAMPLER_CHOICES", "FAILED_NOTE", "box_problem", "check_conditions", "box_from_annotation",
    "annotation_value", "run_generation", "run_preview", "render_gallery", "verdict_table", "build_generate_tab",
]

SAMPLER_CHOICES = [("DPM-Solver++ (fast, default)", "dpm"), ("UniPC", "unipc"), ("DDIM", "ddim"),
                   ("Euler", "euler"), ("DDPM (slow, needs many steps)", "ddpm")]
#: Offered when the checkpoint ships the distilled student (student_unet/).
STUDENT_CHOICE = ("LCM student (1–4 steps, fastest)", "lcm")

#: One-click presets: (label, birads, density, view, laterality, lesion, box).
PRESETS: list[tuple[str, str, str, str, str, str, str]] = [
    ("Normal screening · L-CC, density B", "1", "B", "CC", "L", "none", ""),
    ("Dense breast · R-MLO, density D", "2", "D", "MLO", "R", "none", ""),
    ("Suspicious mass · L-MLO", "4", "C", "MLO", "L", "mass", "0.30,0.36,0.46,0.50"),
    ("Calcifications · R-CC", "4", "C", "CC", "R", "calcification", "0.50,0.40,0.64,0.52"),
    ("Highly suspicious mass · L-CC", "5", "B", "CC", "L", "mass", "0.40,0.42,0.56,0.58"),
    ("Anything (all unspecified)", ANY, ANY, ANY, ANY, ANY, ""),
]

#: What the verdicts panel says after a failed generation (the previous result is cleared).
FAILED_NOTE = ("⚠ **The last generation failed** (the message says why): no image is shown, and the previous "
               "result was cleared so that it is not taken for these conditions.")

_BOX_COLOUR = (255, 96, 64)
_VIEWS = {v.value for v in View}
_SIDES = {side.value for side in Laterality}


# ---- pure helpers ---------------------------------------------------------------------------


def box_problem(box: Any) -> str | None:
    """Why the typed lesion box is wrong, or ``None`` if it is a box or empty (the default place)."""
    try:
        parse_box(box)
    except ConditionError as error:
        return str(error)
    return None


def check_conditions(birads: Any, density: Any, view: Any, laterality: Any, lesion: Any, box: Any) -> str:
    """A one-line Markdown verdict on the chosen conditions (never raises).

    A wrong box is reported as such (never read as "no box", which would mean the default place).
    """
    problem = box_problem(box)
    if problem is not None:
        return (f"⚠ **The lesion box `{str(box).strip()}` is wrong:** {problem}. Fix it, or press *Clear box* "
                "for the default place; Generate refuses it until then.")
    try:
        c = Conditions.create(birads=birads, density=density, view=view, laterality=laterality, lesion=lesion, box=box)
    except ConditionError as error:
        return f"⚠ **These conditions cannot be generated:** {error}"
    note = ""
    if c.lesion is not None and c.lesion is not Lesion.NONE and not str(box or "").strip():
        note = " The lesion goes to the default place (upper-outer breast); draw a box to choose."
    elif c.box is not None:
        note = " Lesion box {:.2f},{:.2f},{:.2f},{:.2f}.".format(*c.box.as_tuple())
    return f"✓ Conditions are consistent.{note}"


def box_from_annotation(value: dict | None) -> str:
    """The drawn box as ``"x0,y0,x1,y1"`` in normalised display coordinates (``""`` if none)."""
    if not value or not value.get("boxes"):
        return ""
    image = value.get("image")
    if isinstance(image, np.ndarray):
        height, width = image.shape[:2]
    else:
        from PIL import Image

        with Image.open(image) as opened:
            width, height = opened.size
    box = value["boxes"][-1]
    coords = [box["xmin"] / width, box["ymin"] / height, box["xmax"] / width, box["ymax"] / height]
    coords = [min(max(v, 0.0), 1.0) for v in coords]
    return ",".join(f"{v:.3f}" for v in coords)


def annotation_value(outline: np.ndarray, box: str | None) -> dict:
    """The annotator's value: the outline and the box (if ``box`` parses)."""
    height, width = outline.shape[:2]
    boxes = []
    try:
        parsed = parse_box(box) if box else None
    except ConditionError:
        parsed = None
    if parsed is not None:
        boxes.append({"xmin": int(round(parsed.x0 * width)), "ymin": int(round(parsed.y0 * height)),
                      "xmax": int(round(parsed.x1 * width)), "ymax": int(round(parsed.y1 * height)),
                      "label": "lesion", "color": _BOX_COLOUR})
    return {"image": outline, "boxes": boxes}


def same_box(drawn: str, typed: str, value: dict | None) -> bool:
    """True if a drawn box equals the typed one up to the drawing's pixel rounding."""
    try:
        a, b = parse_box(drawn), parse_box(typed)
    except ConditionError:
        return False
    if a is None or b is None:
        return a is b
    image = (value or {}).get("image")
    height, width = image.shape[:2] if isinstance(image, np.ndarray) else (100, 100)
    tolerance = (1.5 / width, 1.5 / height, 1.5 / width, 1.5 / height)
    return all(abs(p - q) <= t for p, q, t in zip(a.as_tuple(), b.as_tuple(), tolerance))


def mirror_box_text(box: str, old_laterality: str, new_laterality: str) -> str:
    """Keep a drawn box on the same anatomy when the side flips between left and right."""
    if not box or {old_laterality, new_laterality} != _SIDES:
        return box
    try:
        parsed = parse_box(box)
    except ConditionError:
        return box
    return ",".join(f"{v:.3f}" for v in canonical_box(parsed, Laterality.R).as_tuple())


def verdict_line(verdict: PrivacyVerdict | None) -> tuple[str, str]:
    """(short status, similarity text) of a privacy verdict."""
    if verdict is None:
        return "— not checked", "no privacy checker in this checkpoint"
    mark = "⚠ **flagged**" if verdict.flagged else "✓ pass"

    def compared(value: float, threshold: float) -> str:
        return f"{value:.3f} {'>' if value > threshold else '≤'} {threshold:.3f}"

    text = compared(verdict.similarity, verdict.threshold)
    if verdict.copy_similarity is not None:   # the copy sketch: each score against its own threshold
        text += f"; sketch {compared(verdict.copy_similarity, verdict.copy_threshold)}"
        if verdict.local_similarity is not None:
            text += f", local {compared(verdict.local_similarity, verdict.local_threshold)}"
    return mark, text


def verdict_table(images: list[GeneratedImage], show_neighbours: bool = False) -> str:
    """Markdown table: one row per image with its privacy verdict; the nearest training ids only
    with ``show_neighbours`` (the operator's ``--show-neighbours``: they name training-set members)."""
    if not images:
        return ""
    header = "| # | seed | privacy | similarity vs threshold |" + (" nearest training images |" if show_neighbours else "")
    lines = [header, "|---" * (5 if show_neighbours else 4) + "|"]
    for i, image in enumerate(images, start=1):
        mark, similarity = verdict_line(image.verdict)
        row = f"| {i} | {image.recipe.seed} | {mark} | {similarity} |"
        if show_neighbours:
            neighbours = "—"
            if image.verdict is not None and image.verdict.neighbours:
                neighbours = ", ".join(f"`{nid[:10]}` ({sim:.2f})" for nid, sim in image.verdict.neighbours)
            row += f" {neighbours} |"
        lines.append(row)
    if any(im.verdict is not None and im.verdict.flagged for im in images):
        lines.append("\n⚠ A flagged image is too similar to a training image: do not share it; generate again "
                     "with another seed.")
    if any(im.verdict is None for im in images):
        lines.append("\n⚠ This checkpoint has no privacy checker: the images were **not** checked against the "
                     "training set. Do not share them outside your institution.")
    return "\n".join(lines)


def render_gallery(items: list[dict], window: Window, folder: Path) -> list[tuple[str, str]]:
    """8-bit windowed PNGs for the gallery from the 16-bit PNGs in ``items``."""
    from ..data.export import read_png16

    out = []
    for k, item in enumerate(items):
        frame = read_png16(item["png16"])
        path = write_png8(apply_window(frame, window), folder / f"view_{k}_{window.centre:g}_{window.width:g}.png")
        out.append((str(path), item["caption"]))
    return out


@dataclass
class GenerationOutcome:
    """What one generation produced, ready for the UI and the API."""

    images: list[GeneratedImage]
    files: list[str]
    items: list[dict]  # per image: png16 path, caption
    details: dict
    window: Window
    folder: Path


def run_generation(services: Services, birads: Any, density: Any, view: Any, laterality: Any, lesion: Any, box: Any,
                   seed: Any, steps: Any, guidance: Any, sampler: Any, num_images: Any,
                   progress: Callable[[int, int], None] | None = None) -> GenerationOutcome:
    """Validate, generate, write the downloads; raises ``ValueError`` for bad input."""
    config = services.config
    request = parse_generation_request(birads, density, view, laterality, lesion, box, seed, steps, guidance, sampler,
                                       num_images, max_images=config.max_images, max_steps=config.max_steps)
    images = services.model.generate(request, progress=progress)
    folder = new_output_folder(config.temp_dir, "generated")
    files, items, per_image = [], [], []
    batch = write_batch_outputs(images, folder)  # the DICOMs: one synthetic study, also zipped
    for image, paths in zip(images, batch.images):
        files += [str(paths["png"]), str(paths["dicom"]), str(paths["json"])]
        mark, similarity = verdict_line(image.verdict)
        caption = f"seed {image.recipe.seed} · privacy {mark.replace('*', '')} ({similarity})"
        items.append({"png16": str(paths["png"]), "caption": caption})
        per_image.append({"seed": image.recipe.seed, "recipe": image.recipe.to_dict(),
                          "privacy": image.recipe.privacy, "files": {k: p.name for k, p in paths.items()}})
    files.append(str(batch.zip))
    details = {"checkpoint": services.model.checkpoint.name, "fingerprint": services.model.fingerprint,
               "conditions": request.conditions.to_dict(), "seed": request.seed, "steps": request.num_inference_steps,
               "guidance": request.guidance_scale, "sampler": request.scheduler, "images": per_image}
    return GenerationOutcome(images, files, items, details, auto_window(images[0].frame), folder)


def run_preview(services: Services, birads: Any, density: Any, view: Any, laterality: Any, lesion: Any, box: Any,
                seed: Any, guidance: Any) -> tuple[str | None, str]:
    """The live preview: an inline 8-bit view (:func:`preview_html`) and a one-line note (never raises: a
    preview is optional).

    Seed −1 (random) previews with seed 0, so that what changes between previews is the
    conditions, not the noise. A flagged preview is not shown.
    """
    if box_problem(box) is not None:
        return None, "Preview: fix the lesion box first."
    try:
        request = parse_generation_request(birads, density, view, laterality, lesion, box, seed, 1, guidance, "dpm", 1,
                                           max_images=1, max_steps=1)
        seed_value = 0 if float(seed if seed not in (None, "") else -1) < 0 else request.seed
        preview = services.model.preview(request.conditions, seed_value, request.guidance_scale)
    except ValueError as error:
        return None, f"Preview: {error}"
    except Exception as error:  # noqa: BLE001 - the preview must never break the tab
        logger.exception("preview failed")
        return None, f"Preview failed ({type(error).__name__}); Generate still works."
    how = (f"{'student' if preview.scheduler == 'lcm' else 'teacher'} {preview.steps} step"
           f"{'s' if preview.steps > 1 else ''}, {preview.decoder} decoder, {preview.seconds * 1000:.0f} ms")
    if preview.verdict is not None and preview.verdict.flagged:
        return None, f"Preview withheld: the privacy gate flagged it ({how}); change the seed or conditions."
    mark = "privacy ✓" if preview.verdict is not None else "⚠ not privacy-checked"
    view8 = apply_window(preview.frame, auto_window(preview.frame))
    return preview_html(view8), f"Live preview · seed {seed_value} · {how} · {mark}. **Generate** makes the full-quality images."


def preview_html(view8: np.ndarray) -> str:
    """The 8-bit view as an inline PNG (a data URI): it arrives with the event's answer, with no
    file written to the cache and no second request for it (a fifth of a refresh)."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(view8, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="live preview" '
            'style="max-height:320px;max-width:100%;display:block;margin:auto">')


# ---- the tab --------------------------------------------------------------------------------


def _outline_cache(services: Services) -> Callable[[str, str], np.ndarray]:
    height, width = checkpoint_image_size(services.config.checkpoint)
    cache: dict[tuple[str, str], np.ndarray] = {}

    def outline(view: str, laterality: str) -> np.ndarray:
        key = (view if view in _VIEWS else View.CC.value, laterality if laterality in _SIDES else Laterality.L.value)
        if key not in cache:
            cache[key] = breast_outline(height, width, key[0], key[1], scale=max(1, round(480 / height)))
        return cache[key]

    return outline


def model_banner(services: Services) -> str:
    """A one-line description of the loaded (or not yet loaded) model."""
    info = services.model.info()
    if not info["exists"]:
        return (f"⚠ **No checkpoint at `{info['checkpoint']}`.** Train one (`mammosynth train-ldm`) or start the "
                "app with `--checkpoint DIR`. Generation will fail until then.")
    if not info["loaded"]:
        return f"Model **{info['name']}** · loads on first use (a few seconds)."
    checker = (f"privacy checker on (threshold {info['privacy_threshold']:.3f})" if info.get("privacy_checker")
               else "⚠ **no privacy checker**")
    return (f"Model **{info['name']}** · {info['size'][0]}×{info['size'][1]} px · fingerprint `{(info['fingerprint'] or '')[:16]}` · "
            f"{checker} · synthetic images, trained on phantom data unless the model card says otherwise.")


def build_generate_tab(services: Services) -> gr.State:
    """Lay out the Generate tab inside the current ``gr.Blocks`` and wire its events.

    Returns the per-session state of the images shown (their 16-bit PNGs), which the Edit tab
    offers as "the last generated image".
    """
    from gradio_image_annotation import image_annotator

    config = services.config
    outline = _outline_cache(services)
    banner = gr.Markdown(model_banner(services), label="Model", elem_id="model-banner")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            gr.Markdown("### Conditions")
            with gr.Row():
                birads = gr.Dropdown(BIRADS_CHOICES, value=ANY, label="BI-RADS", elem_id="gen-birads", allow_custom_value=True)
                density = gr.Dropdown(DENSITY_CHOICES, value=ANY, label="Breast density", elem_id="gen-density", allow_custom_value=True)
            with gr.Row():
                view = gr.Radio(VIEW_CHOICES, value=ANY, label="View", elem_id="gen-view")
                laterality = gr.Radio(LATERALITY_CHOICES, value=ANY, label="Side", elem_id="gen-laterality")
            lesion = gr.Dropdown(LESION_CHOICES, value=ANY, label="Lesion type", elem_id="gen-lesion", allow_custom_value=True)
            annotator = image_annotator(
                value=annotation_value(outline(View.CC.value, Laterality.L.value), ""), label="Lesion location: drag a box on the breast",
                image_type="numpy", single_box=True, sources=[], show_download_button=False, show_clear_button=False,
                show_remove_button=True, disable_edit_boxes=True, label_list=["lesion"], label_colors=[_BOX_COLOUR],
                use_default_label=True, height=360, elem_id="gen-annotator",
            )
            with gr.Row():
                box = gr.Textbox("", label="Lesion box x0,y0,x1,y1 (0–1, as displayed; empty = default place)",
                                 placeholder="e.g. 0.30,0.38,0.46,0.52", scale=4, elem_id="gen-box")
                clear_box = gr.Button("Clear box", size="sm", scale=1, elem_id="gen-clear-box")
            validity = gr.Markdown(check_conditions(ANY, ANY, ANY, ANY, ANY, ""), elem_id="gen-validity")
            gr.Markdown("### Sampling")
            with gr.Row():
                seed = gr.Number(value=-1, precision=0, label="Seed (−1 = random)", minimum=-1, elem_id="gen-seed")
                num_images = gr.Slider(1, config.max_images, value=1, step=1, label="Images", elem_id="gen-num")
            with gr.Row():
                steps = gr.Slider(1, config.max_steps, value=config.default_steps, step=1, label="Steps",
                                  elem_id="gen-steps")
                guidance = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="Guidance (1 = none)", elem_id="gen-guidance")
            choices = SAMPLER_CHOICES + ([STUDENT_CHOICE] if _has_student(config.checkpoint) else [])
            sampler = gr.Dropdown(choices, value="dpm", label="Sampler", elem_id="gen-sampler", allow_custom_value=True)
            live = gr.Checkbox(value=config.live_preview, label="Live preview (refreshes as you change the conditions)",
                               elem_id="gen-live")
            go = gr.Button("Generate", variant="primary", elem_id="gen-go")
            gr.Markdown("**Presets** (one click sets the conditions):")
            with gr.Row():
                preset_buttons = [gr.Button(p[0], size="sm", elem_classes=["preset"]) for p in PRESETS]
        with gr.Column(scale=3, min_width=360):
            with gr.Row(visible=config.live_preview) as preview_row:
                preview = gr.HTML("", label="Live preview", elem_id="gen-preview")
            preview_note = gr.Markdown("", elem_id="gen-preview-note")
            gallery = gr.Gallery(label="Generated images (8-bit view through the window below; downloads are 16-bit)",
                                 format="png", columns=2, height="auto", object_fit="contain", preview=False,
                                 buttons=["fullscreen"], elem_id="gen-gallery", interactive=False)
            with gr.Row():
                centre = gr.Slider(0, 100, value=50, step=0.5, label="Window centre (%)", elem_id="gen-wl-centre")
                width = gr.Slider(0.5, 200, value=100, step=0.5, label="Window width (%)", elem_id="gen-wl-width")
                auto = gr.Button("Auto window", size="sm", elem_id="gen-wl-auto")
            verdicts = gr.Markdown(label="Privacy verdicts", elem_id="gen-verdicts")
            neighbours = gr.Gallery(label="Nearest training images (shown because the server allows it)",
                                    format="png", columns=6, height=160, visible=config.show_neighbours,
                                    elem_id="gen-neighbours", buttons=[], interactive=False)
            files = gr.File(label="Downloads: 16-bit PNG, DICOM (marked synthetic), JSON recipe; the study's zip",
                            file_count="multiple", interactive=False, elem_id="gen-files")
            pacs = build_pacs_controls(services)  # Send to PACS, with --pacs-url only
            details = gr.JSON(label="Recipe and privacy details", open=False, elem_id="gen-details")
            last_seed = gr.Button("Reuse the seed of image 1", size="sm", elem_id="gen-reuse-seed")
    shown = gr.State([])  # this session's generated images: 16-bit PNG paths and captions
    side = gr.State(ANY)
    if pacs is not None:
        pacs.wire(shown)

    # -- live validation and the box ----------------------------------------------------------
    condition_inputs = [birads, density, view, laterality, lesion, box]
    for component in condition_inputs:
        component.change(check_conditions, condition_inputs, validity, queue=False, api_visibility="private",
                         show_progress="hidden")

    def on_draw(value: dict | None, current: str) -> Any:
        drawn = box_from_annotation(value)
        if not drawn and box_problem(current) is not None:
            return gr.update()  # the annotator's echo of a wrong typed box (no box drawn): keep the text
        return gr.update() if same_box(drawn, current, value) else drawn

    annotator.change(on_draw, [annotator, box], box, queue=False, api_visibility="private", show_progress="hidden")

    def mark_box(text: str) -> dict:
        return gr.update(elem_classes=["box-invalid"] if box_problem(text) is not None else [])

    box.change(mark_box, box, box, queue=False, api_visibility="private", show_progress="hidden")

    def on_box_typed(text: str, view_value: str, side_value: str) -> dict:
        return annotation_value(outline(view_value, side_value), text)

    box.submit(on_box_typed, [box, view, laterality], annotator, queue=False, api_visibility="private")
    box.blur(on_box_typed, [box, view, laterality], annotator, queue=False, api_visibility="private")

    def on_clear(view_value: str, side_value: str) -> tuple[dict, str]:
        return annotation_value(outline(view_value, side_value), ""), ""

    clear_box.click(on_clear, [view, laterality], [annotator, box], queue=False, api_visibility="private")

    def on_orientation(view_value: str, side_value: str, previous: str, text: str) -> tuple[dict, str, str]:
        text = mirror_box_text(text, previous, side_value)
        return annotation_value(outline(view_value, side_value), text), text, side_value

    for component in (view, laterality):
        component.input(on_orientation, [view, laterality, side, box], [annotator, box, side], queue=False,
                        api_visibility="private")

    # -- the live preview: debounced by coalescing (only the latest pending change runs) -------------
    previewed = gr.State(None)   # the inputs of the preview on screen: a repeated event is a no-op

    def on_preview(live_value: bool, birads: str, density: str, view: str, laterality: str, lesion: str, box: str,
                   seed: float, guidance: float, last: Any, request: gr.Request) -> tuple:
        key = (birads, density, view, laterality, lesion, str(box).strip(), seed, guidance)
        if not live_value or key == last or generator_refusal(services, username_of(request)) is not None:
            return gr.update(), gr.update(), last
        return (*run_preview(services, birads, density, view, laterality, lesion, box, seed, guidance), key)

    preview_inputs = [live, birads, density, view, laterality, lesion, box, seed, guidance, previewed]
    preview_event = dict(fn=on_preview, inputs=preview_inputs, outputs=[preview, preview_note, previewed],
                         trigger_mode="always_last", queue=False,
                         api_visibility="private", show_progress="hidden")
    # what the user changes by hand (.input: not the programmatic echoes of a preset, which would
    # queue one preview per field); the box on every change; presets chain one preview below
    for component in (birads, density, view, laterality, lesion, seed, guidance, live):
        component.input(**preview_event)
    box.change(**preview_event)   # typed, drawn (on_draw writes it) or set by a preset: repeats are no-ops
    live.change(lambda on: (gr.update(visible=bool(on)), None), live, [preview_row, previewed], queue=False,
                api_visibility="private")

    def on_sampler(name: str) -> dict:
        from ..pipelines.pipeline_mammo_ldm import default_steps

        return gr.update(value=min(default_steps(name), config.max_steps))

    sampler.input(on_sampler, sampler, steps, queue=False, api_visibility="private")

    presets = []
    for button, preset in zip(preset_buttons, PRESETS):
        def apply(preset: tuple = preset) -> tuple:
            _, b, d, v, lat, les, bx = preset
            return b, d, v, lat, les, bx, annotation_value(outline(v, lat), bx), lat

        presets.append(button.click(apply, None, [birads, density, view, laterality, lesion, box, annotator, side],
                                    queue=False, api_visibility="private"))
    for chained in presets:   # a preset without a box (or the same box) changes no box
        chained.then(**preview_event)

    # -- generation -------------------------------------------------------------------------
    def generate(birads: str, density: str, view: str, laterality: str, lesion: str, box: str, seed: float,
                 steps: float, guidance: float, sampler: str, num_images: float, request: gr.Request,
                 progress: gr.Progress = gr.Progress()) -> tuple:
        """Generate mammograms for the given conditions (each may be "any").

        Returns the gallery (8-bit views), a Markdown table of privacy verdicts, the downloads
        (16-bit PNG, DICOM, JSON per image), the recipe details, the window and neighbours.
        """
        if (refusal := generator_refusal(services, username_of(request))) is not None:  # blinding (DESIGN §11)
            raise gr.Error(refusal, title="Not allowed", print_exception=False)
        progress(0, desc="Loading the model…" if not services.model.loaded else "Starting…")

        def step(done: int, total: int) -> None:
            progress((done, total), desc="Sampling", unit="steps")

        try:
            outcome = run_generation(services, birads, density, view, laterality, lesion, box, seed, steps, guidance,
                                     sampler, num_images, progress=step)
        except ValueError as error:  # bad input, incl. ConditionError and CheckpointError
            raise gr.Error(str(error), title="Cannot generate", print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - a failure is a message, never a crash
            logger.exception("generation failed")
            raise gr.Error(f"Generation failed ({type(error).__name__}: {error}). The server log has the details.",
                           title="Generation failed", print_exception=False) from None
        verdicts = verdict_table(outcome.images, config.show_neighbours)
        thumbs = []
        if config.show_neighbours:  # training pixels leave the server only when the operator said so
            thumbs = _neighbour_thumbnails(services, outcome)
            if not thumbs and any(im.verdict is not None and im.verdict.neighbours for im in outcome.images):
                verdicts += ("\n\nThumbnails of the nearest training images are not available: the training data "
                             "the privacy index was built from is not on this server.")
        images = render_gallery(outcome.items, outcome.window, outcome.folder)
        return (images, verdicts, outcome.files, outcome.details, outcome.window.centre,
                outcome.window.width, thumbs, outcome.items, model_banner(services))

    inputs = [birads, density, view, laterality, lesion, box, seed, steps, guidance, sampler, num_images]
    generation = go.click(generate, inputs,
                          [gallery, verdicts, files, details, centre, width, neighbours, shown, banner],
                          api_name="generate", concurrency_limit=config.max_concurrent_generations,
                          concurrency_id="generate", show_progress_on=[gallery])

    def clear_after_failure() -> tuple:
        """Nothing of the previous result stays beside the conditions that failed."""
        return [], FAILED_NOTE, None, None, [], []

    generation.failure(clear_after_failure, None, [gallery, verdicts, files, details, neighbours, shown],
                       queue=False, api_visibility="private", show_progress="hidden")

    # -- window / level (re-renders the 8-bit views from the 16-bit files) ---------------------
    def rewindow(items: list[dict], centre_value: float, width_value: float) -> list:
        if not items:
            return []
        window = Window(float(centre_value), float(width_value))
        return render_gallery(items, window, new_output_folder(config.temp_dir, "views"))

    centre.release(rewindow, [shown, centre, width], gallery, api_visibility="private", show_progress="hidden")
    width.release(rewindow, [shown, centre, width], gallery, api_visibility="private", show_progress="hidden")

    def auto_level(items: list[dict]) -> tuple:
        from ..data.export import read_png16

        if not items:
            return 50, 100, []
        window = auto_window(read_png16(items[0]["png16"]))
        return window.centre, window.width, render_gallery(items, window, new_output_folder(config.temp_dir, "views"))

    auto.click(auto_level, shown, [centre, width, gallery], api_visibility="private")

    def reuse_seed(current: dict | None, fallback: float) -> float:
        images = (current or {}).get("images") or []
        return images[0]["seed"] if images else fallback

    last_seed.click(reuse_seed, [details, seed], seed, queue=False, api_visibility="private")
    return shown


def _has_student(checkpoint: Path) -> bool:
    """Whether the checkpoint folder registers the distilled student (without loading it)."""
    import json

    try:
        index = json.loads((Path(checkpoint) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(index.get("student_unet")) and (Path(checkpoint) / "student_unet").is_dir()


def _neighbour_thumbnails(services: Services, outcome: GenerationOutcome) -> list[tuple[str, str]]:
    ids = [nid for im in outcome.images if im.verdict is not None for nid, _ in im.verdict.neighbours]
    try:
        frames = services.model.neighbour_frames(ids)
    except Exception:  # noqa: BLE001 - thumbnails are optional
        logger.exception("could not load neighbour thumbnails")
        frames = {}
    thumbs = []
    for k, image_id in enumerate(dict.fromkeys(ids)):
        if image_id in frames:
            frame = frames[image_id]
            path = write_png8(apply_window(frame, auto_window(frame)), outcome.folder / f"neighbour_{k}.png")
            thumbs.append((str(path), f"training {image_id[:10]}"))
    return thumbs
