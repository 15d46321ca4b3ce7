"""The Reader study tab and the ``study_next`` / ``study_answer`` / ``study_progress`` endpoints.

Blinding: a reader receives the case file exactly as the study stored it (a 16-bit PNG of
content-independent size, named by an opaque random id, served straight from the study's
``cases/`` folder), its position, the total and the study's confidence scale, nothing else.
The truth key is never read here. Identity is the logged-in user
(``gr.Request.username``); a reader only ever sees their own cases and progress.

Pure functions (:func:`next_case_payload`, :func:`submit_answer`, :func:`progress_payload`)
hold the logic; :func:`build_study_tab` lays out the tab and wires the browser events and
the API events to them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gradio as gr

from .auth import AccessDenied, require_role, username_of
from .api import FileData, api_endpoint, file_payload
from .choices import BIRADS_ASSESSMENT_CHOICES, NOT_ASSESSED
from .services import Services
from .studies import StudyUnavailable

if TYPE_CHECKING:
    from ..study.study import CaseView, Progress, Study

logger = logging.getLogger("mammosynth.app")

__all__ = ["next_case_payload", "submit_answer", "progress_payload", "build_study_tab", "keyboard_help",
           "uses_slider", "VIEWER_SVG"]

#: The SVG filter the viewer's window/level uses (a linear transfer function per channel).
VIEWER_SVG = """
<svg width="0" height="0" style="position:absolute" aria-hidden="true">
  <filter id="ms-wl-filter" color-interpolation-filters="sRGB">
    <feComponentTransfer>
      <feFuncR type="linear" slope="1" intercept="0"/>
      <feFuncG type="linear" slope="1" intercept="0"/>
      <feFuncB type="linear" slope="1" intercept="0"/>
    </feComponentTransfer>
  </filter>
</svg>
<div class="ms-viewer-tools">
  <button type="button" data-ms="zoom-out" title="Zoom out (−)">−</button>
  <button type="button" data-ms="zoom-in" title="Zoom in (+)">+</button>
  <button type="button" data-ms="reset" title="Reset zoom and window (0)">reset</button>
  <label>level <input type="range" id="ms-wl-centre" min="0" max="100" step="0.5" value="50"></label>
  <label>window <input type="range" id="ms-wl-width" min="2" max="100" step="0.5" value="100"></label>
  <span class="ms-hint">wheel: zoom · drag: pan</span>
</div>
"""


def uses_slider(low: int, high: int) -> bool:
    """A confidence scale wider than ten steps (0–100) is a slider; a short one (1–5) is buttons."""
    return high - low >= 10


def keyboard_help(low: int, high: int) -> str:
    """The shortcut line under the answer buttons, for the study's confidence scale."""
    if uses_slider(low, high):
        quarters = " / ".join(str(v) for v in _slider_keys(low, high))
        confidence = f"`1`–`5` confidence {quarters} · `←`/`→` ±{max(1, (high - low) // 20)}"
    else:
        confidence = f"`{low}`–`{high}` confidence"
    return f"**Keys:** `R` real · `S` synthetic · {confidence} · `Enter` submit · `+`/`−` zoom · `0` reset view"


def _slider_keys(low: int, high: int) -> list[int]:
    """The values keys 1–5 set on a slider scale: its ends and quarters (0 / 25 / 50 / 75 / 100)."""
    return [round(low + k * (high - low) / 4) for k in range(5)]


def _scale(study: Study) -> tuple[str, int, int]:
    low, high = study.settings.confidence_range
    return study.settings.confidence_scale, int(low), int(high)


def _reader(services: Services, username: str | None) -> tuple[Study, str]:
    require_role(services, username, "reader", "read study cases")
    return services.studies.study(), str(username)


def case_dict(view: CaseView, scale: str) -> dict:
    """The blinded description of a case: opaque id, position, total, label, the confidence scale."""
    return {"case_id": view.case_id, "position": view.position, "total": view.total, "label": view.label,
            "finished": False, "confidence_scale": scale}


def finished_dict(progress: Progress, scale: str) -> dict:
    return {"case_id": None, "position": progress.answered, "total": progress.total,
            "label": f"{progress.answered} / {progress.total}", "finished": True, "confidence_scale": scale}


def next_case_payload(services: Services, username: str | None) -> tuple[str | None, dict]:
    """``(image path or None, case dict)`` of the reader's current case (resumes where they were).

    Raises:
        AccessDenied: not a reader account. StudyUnavailable: no study (yet).
    """
    study, reader = _reader(services, username)
    scale = study.settings.confidence_scale
    view = study.next_case(reader)
    if view is None:
        return None, finished_dict(study.progress(reader), scale)
    services.studies.mark_shown(reader, view.case_id)
    return str(view.image_path), case_dict(view, scale)


def submit_answer(services: Services, username: str | None, case_id: Any, answer: Any, confidence: Any,
                  birads: Any = None, seconds_on_case: Any = None) -> tuple[str | None, dict]:
    """Store an answer for the reader's current case, then return the next case.

    ``seconds_on_case`` empty/negative → measured on the server since the case was shown.
    Raises ``StudyError`` (bad answer), :class:`AccessDenied`, :class:`StudyUnavailable`.
    """
    from ..study import StudyError

    study, reader = _reader(services, username)
    if not case_id:
        raise StudyError("no case id was sent: call study_next first")
    if answer is None or str(answer).strip() == "":
        raise StudyError("choose whether the image is real or synthetic (keys R / S)")
    _, low, high = _scale(study)
    if confidence is None or confidence == "":
        how = "move the slider or press 1–5" if uses_slider(low, high) else "keys 1–5"
        raise StudyError(f"choose how confident you are, {low} to {high} ({how})")
    try:
        confidence = float(confidence)
        confidence = int(confidence) if confidence.is_integer() else confidence
    except (TypeError, ValueError):
        raise StudyError(f"confidence must be a whole number from {low} to {high}, got {confidence!r}") from None
    if birads in ("", NOT_ASSESSED, "not assessed"):
        birads = None
    if birads is not None:
        try:
            birads = int(float(birads))
        except (TypeError, ValueError):
            raise StudyError(f"BI-RADS must be 1–5 or empty, got {birads!r}") from None
    seconds = None if seconds_on_case in (None, "") else float(seconds_on_case)
    if seconds is None or seconds < 0:
        seconds = services.studies.seconds_on(reader, str(case_id))
    receipt = study.answer(reader, str(case_id), str(answer).strip().lower(), confidence, birads, seconds)
    logger.info("answer stored: reader %s case %d/%d%s", reader, receipt.position, receipt.total,
                " (duplicate)" if receipt.duplicate else "")
    image, case = next_case_payload(services, username)
    case["stored"] = {"case_id": receipt.case_id, "position": receipt.position, "duplicate": receipt.duplicate}
    return image, case


def progress_payload(services: Services, username: str | None) -> dict:
    """The reader's own progress: answered, total, label, done, and the study's confidence scale."""
    study, reader = _reader(services, username)
    p = study.progress(reader)
    return {"reader_id": reader, "answered": p.answered, "total": p.total, "label": f"{p.answered} / {p.total}",
            "done": p.done, "confidence_scale": study.settings.confidence_scale}


def _refusal(error: Exception) -> gr.Error:
    from ..study import StudyError

    if isinstance(error, AccessDenied):
        return gr.Error(str(error), title="Not allowed", print_exception=False)
    if isinstance(error, StudyUnavailable):
        return gr.Error(str(error), title="Study not available", print_exception=False)
    if isinstance(error, StudyError):
        return gr.Error(str(error), title="Answer not stored", print_exception=False)
    logger.exception("study request failed")
    return gr.Error(f"The study request failed ({type(error).__name__}: {error}).", title="Error",
                    print_exception=False)


def _status_html(services: Services, username: str | None, case: dict | None, note: str = "") -> str:
    name = services.accounts.display_name(username)
    if case is None:
        return f"<div class='ms-study-status'>{note}</div>"
    total = max(int(case["total"]), 1)
    answered = case["position"] - (0 if case["finished"] else 1)
    pct = 100.0 * answered / total
    head = ("<b>All cases read — thank you!</b> Your answers are stored." if case["finished"]
            else f"Case <b id='ms-case-label'>{case['label']}</b>")
    return (f"<div class='ms-study-status'><span>{name}</span> · {head} {note}"
            f"<div class='ms-progress'><div style='width:{pct:.1f}%'></div></div></div>")


def build_study_tab(services: Services) -> dict[str, Any]:
    """Lay out the Reader study tab; returns components the app wires to page load."""
    status = gr.HTML(elem_id="study-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=360):
            image = gr.Image(type="filepath", format="png", interactive=False, show_label=False, height=720,
                             buttons=["fullscreen"], elem_id="case-image")
            gr.HTML(VIEWER_SVG, elem_id="case-tools")
        with gr.Column(scale=1, min_width=240):
            answer = gr.Radio([("Real  (R)", "real"), ("Synthetic  (S)", "synthetic")], label="This image is…",
                              elem_id="answer")
            # The study's scale decides which one shows (on page load): buttons for 1–5, a slider for 0–100.
            confidence = gr.Radio([("1 · guessing", 1), ("2", 2), ("3", 3), ("4", 4), ("5 · certain", 5)],
                                  label="Confidence", elem_id="confidence")
            confidence_slider = gr.Slider(0, 100, value=None, step=1, visible=False, elem_id="confidence-slider",
                                          label="Confidence: 0 = guessing … 100 = certain (set it for every case)")
            # Carries "the reader set the slider for this case" from the page to on_submit (the page
            # keeps the mark; Submit's js step fills this in): an untouched slider is no answer.
            confidence_set = gr.Checkbox(False, visible=False)
            birads = gr.Dropdown(BIRADS_ASSESSMENT_CHOICES, value=NOT_ASSESSED, label="BI-RADS assessment (optional)", elem_id="answer-birads",
                                 visible=False)
            submit = gr.Button("Submit answer  (Enter)", variant="primary", elem_id="submit-answer")
            # why an answer was not stored (gr.Warning toasts need the queue; this event skips it)
            notice = gr.Markdown("", elem_id="study-notice")
            keys = gr.Markdown(keyboard_help(1, 5), elem_id="study-keys")
    case_id = gr.Textbox(visible=False, elem_id="case-id")
    poll = gr.Timer(3.0, active=False)

    def show(username: str | None, case: tuple[str | None, dict] | None = None, note: str = "") -> tuple:
        """UI outputs for the reader's current state (a new case clears the answer and the confidence)."""
        role = services.role(username)
        keep = gr.update()
        idle = (keep, keep, "")  # confidence slider, the key help, the notice
        if role == "admin":
            msg = "You are logged in as a study admin: admins read no cases. See the <b>Results</b> tab."
            return (None, "", _status_html(services, username, None, msg), None, None, keep, gr.Timer(active=False),
                    *idle)
        try:
            path, info = case if case is not None else next_case_payload(services, username)
        except StudyUnavailable as error:
            waiting = services.studies.state in ("preparing", "pending")
            return (None, "", _status_html(services, username, None, str(error)), None, None, keep,
                    gr.Timer(active=waiting), *idle)
        except AccessDenied as error:
            return (None, "", _status_html(services, username, None, str(error)), None, None, keep,
                    gr.Timer(active=False), *idle)
        study = services.studies.study()
        ask = bool(study.settings.ask_birads)
        _, low, high = _scale(study)
        slider = uses_slider(low, high)
        return (path, info["case_id"] or "", _status_html(services, username, info, note), None,
                gr.update(value=None, visible=not slider), gr.update(visible=ask, value=NOT_ASSESSED),
                gr.Timer(active=False), gr.update(value=None, minimum=low, maximum=high, visible=slider),
                keyboard_help(low, high), "")

    outputs = [image, case_id, status, answer, confidence, birads, poll, confidence_slider, keys, notice]

    def on_load(request: gr.Request) -> tuple:
        return show(username_of(request))

    def on_submit(case: str, answer_value: str, choice: Any, slid: Any, slid_set: bool, birads_value: str,
                  request: gr.Request) -> tuple:
        username = username_of(request)
        try:
            _, low, high = _scale(services.studies.study())
            confidence = (slid if slid_set else None) if uses_slider(low, high) else choice
            result = submit_answer(services, username, case, answer_value, confidence,
                                   None if birads_value in (None, NOT_ASSESSED) else birads_value, None)
        except Exception as error:  # noqa: BLE001 - shown to the reader, never a trace
            refusal = _refusal(error)
            return (*(gr.update() for _ in outputs[:-1]), f"⚠ **{refusal.title}:** {refusal.message}")
        return show(username, result, note="<span class='ms-saved'>✓ saved</span>")

    # the slider's value and "set for this case" mark come from the page at the moment of the click
    submit.click(on_submit, [case_id, answer, confidence, confidence_slider, confidence_set, birads], outputs,
                 js="(c, a, ch, slid, given, b) => [c, a, ch, ...window.msConfidence(slid, given), b]",
                 api_visibility="private", queue=False, concurrency_limit=None, show_progress="hidden")
    poll.tick(on_load, None, outputs, api_visibility="private", show_progress="hidden")

    _register_api(services)
    return {"outputs": outputs, "on_load": on_load}


def _register_api(services: Services) -> None:
    """The ``study_next`` / ``study_answer`` / ``study_progress`` endpoints (same handlers, identity and roles).

    Quick (a SQLite read or write): they skip the queue (``queue=False``), so gradio_client,
    which always goes through the queue, is not held to the queue's default limit.
    """

    def study_next(request: gr.Request) -> tuple[FileData | None, dict]:
        """The logged-in reader's current case: (16-bit PNG file, {case_id, position, total, label, finished,
        confidence_scale})."""
        try:
            image, case = next_case_payload(services, username_of(request))
        except Exception as error:  # noqa: BLE001
            raise _refusal(error) from None
        return file_payload(image), case

    def study_answer(case_id: str = "", answer: str = "", confidence: float | None = None, birads: float | None = None,
                     seconds_on_case: float | None = None, request: gr.Request | None = None,
                     ) -> tuple[FileData | None, dict]:
        """Store an answer ('real'/'synthetic'; a whole-number confidence on the study's ``confidence_scale``,
        1–5 or 0–100; optional BI-RADS; optional seconds on the case); returns the next case."""
        try:
            image, case = submit_answer(services, username_of(request), case_id, answer, confidence, birads,
                                        seconds_on_case)
        except Exception as error:  # noqa: BLE001
            raise _refusal(error) from None
        return file_payload(image), case

    def study_progress(request: gr.Request) -> dict:
        """The logged-in reader's own progress: {reader_id, answered, total, label, done, confidence_scale}."""
        try:
            return progress_payload(services, username_of(request))
        except Exception as error:  # noqa: BLE001
            raise _refusal(error) from None

    for endpoint in (study_next, study_answer, study_progress):
        api_endpoint(endpoint, queue=False, concurrency_limit=None)
