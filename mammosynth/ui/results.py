"""The Results tab (admins only) and the ``results`` endpoint.

Live reader-study statistics (DESIGN §12, from :mod:`mammosynth.study.analysis`): the headline
and plots on top, then sub-tabs — *Study* (CSV / iMRMC / report downloads, progress, tables),
*Privacy* and *Model* (figures and raw JSON downloads of the reports found in the loaded
checkpoint folder: ``*.json``, ``*.md``, ``*.png`` in it or in ``reports/``; the model card).
*Privacy* also makes the privacy report for sign-off (one HTML page, :mod:`mammosynth.privacy.report`)
from the served checkpoint, on demand.
A reader who asks — in the browser or through the API — is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from .api import FileData, api_endpoint, file_payload
from .auth import AccessDenied, require_role, username_of
from .reports import SECTIONS, checkpoint_reports, copy_for_download, read_json_report, report_section
from .services import Services, new_output_folder
from .studies import StudyUnavailable

logger = logging.getLogger("mammosynth.app")

__all__ = ["compute_results", "make_privacy_report", "headline_text", "build_results_tab"]


def compute_results(services: Services, username: str | None) -> dict[str, Any]:
    """Analyse the study and collect checkpoint reports (admins only).

    Returns:
        ``{"analysis": dict | None, "study_message": str, "files": [paths], "plots": [paths],
        "markdown": str, "status": [rows], "reports": {name: json}, "report_images": [paths],
        "model_card": str, "sections": {"privacy" | "model": {"json": [paths], "png": [paths]}}}``;
        the section JSON files are copies in the app's results folder, for download.

    Raises:
        AccessDenied: the user is not an admin.
    """
    require_role(services, username, "admin", "see study results")
    out: dict[str, Any] = {"analysis": None, "study_message": "", "files": [], "plots": [], "markdown": "",
                           "status": [], "reports": {}, "report_images": [], "model_card": ""}
    folder = new_output_folder(services.config.temp_dir, "results")
    try:
        out.update(_study_results(services.studies.study(), folder))
    except StudyUnavailable as error:
        out["study_message"] = str(error)
    out.update(_checkpoint_results(services, folder / "reports"))
    return out


def make_privacy_report(services: Services, username: str | None) -> Path:
    """The served checkpoint's privacy report (``mammosynth privacy-report``) as an HTML file to download.

    Raises:
        AccessDenied: the user is not an admin.
        PrivacyAuditMissingError: the checkpoint has no ``reports/privacy.json`` (the message says how to make it).
    """
    from ..pipelines.checkpoint import fingerprint
    from ..privacy.report import write_privacy_report

    require_role(services, username, "admin", "make the privacy report")
    checkpoint = services.config.checkpoint
    folder = new_output_folder(services.config.temp_dir, "results")
    return write_privacy_report(checkpoint, folder / "privacy-report.html",
                                checkpoint_fingerprint=services.model.fingerprint or fingerprint(checkpoint),
                                command=f"the app's Results tab (Privacy: Make the privacy report), by {username}")


def _study_results(study: Any, folder: Path) -> dict[str, Any]:
    from ..study.export import export_csv, export_imrmc
    from ..study.report import markdown_report, write_report

    analysis = write_report(study, folder)
    plots = [p for p in (folder / f"{name}.png" for name in ("roc", "accuracy", "confidence")) if p.is_file()]
    files = [folder / "report.json", folder / "report.md", export_csv(study, folder / "responses.csv"),
             export_imrmc(study, folder / "imrmc.txt")]
    return dict(analysis=analysis, files=[str(p) for p in files], plots=[str(p) for p in plots],
                markdown=markdown_report(analysis, {}).split("## Plots")[0], status=study.status())


def _checkpoint_results(services: Services, folder: Path) -> dict[str, Any]:
    found = checkpoint_reports(services.config.checkpoint, services.config.reports)
    sections = {name: {"json": [], "png": []} for name in SECTIONS}
    for kind in ("json", "png"):
        for path in found[kind]:
            sections[report_section(path)][kind].append(path)
    for section in sections.values():
        section["json"] = [str(p) for p in copy_for_download(section["json"], folder)]
        section["png"] = [str(p) for p in section["png"]]
    cards = [p for p in found["md"] if p.name.lower() == "readme.md"] or found["md"]
    card = "\n\n".join(Path(p).read_text(encoding="utf-8", errors="replace") for p in cards[:2])
    return {"reports": {p.name: read_json_report(p) for p in found["json"]},
            "report_images": [str(p) for p in found["png"]], "model_card": card, "sections": sections}


def _refuse(error: Exception) -> gr.Error:
    if isinstance(error, AccessDenied):
        return gr.Error(str(error), title="Not allowed", print_exception=False)
    logger.exception("results failed")
    return gr.Error(f"Results could not be computed ({type(error).__name__}: {error}).", title="Error",
                    print_exception=False)


def headline_text(result: dict) -> str:
    """The study's one-line summary (or why there is none)."""
    analysis = result["analysis"]
    if analysis is None:
        return f"{result['study_message']}"
    mrmc = analysis.get("mrmc", {})
    pooled = analysis.get("pooled") or {}
    parts = [f"**{analysis['study']['name']}** · {analysis['study']['n_answers']} answers"]
    if pooled.get("accuracy") is not None:
        parts.append(f"pooled accuracy {pooled['accuracy']:.2f} (0.5 = readers cannot tell)")
    if mrmc.get("available"):
        parts.append(f"MRMC AUC {mrmc['auc']:.2f} (95% CI {mrmc['ci_low']:.2f}–{mrmc['ci_high']:.2f})")
    return " · ".join(parts)


def _report_section(name: str, what: str) -> tuple[gr.Gallery, gr.File]:
    """The figures and JSON downloads of one report section (inside the current tab)."""
    images = gr.Gallery(label=f"{what} figures", format="png", columns=3, height=300, object_fit="contain",
                        elem_id=f"results-{name}-images", interactive=False)
    files = gr.File(label=f"{what} reports (raw JSON)", file_count="multiple", interactive=False,
                    elem_id=f"results-{name}-files")
    return images, files


def build_results_tab(services: Services) -> dict[str, Any]:
    """Lay out the Results tab; returns the refresh function and its outputs for page load.

    The study's headline and plots stay on top; below, one sub-tab each for the study's
    details and downloads, the privacy audit and the model (figures, model card, JSON files).
    """
    with gr.Row():
        refresh = gr.Button("Refresh", variant="primary", size="sm", elem_id="results-refresh", scale=0)
        headline = gr.Markdown(elem_id="results-headline")
    plots = gr.Gallery(label="Study plots", format="png", columns=3, height=300, object_fit="contain",
                       elem_id="results-plots", interactive=False)
    with gr.Tabs(elem_id="results-sections"):
        with gr.Tab("Study", id="results-study", elem_id="results-study"):
            downloads = gr.File(label="Downloads: report.json, report.md, responses.csv, iMRMC input",
                                file_count="multiple", interactive=False, elem_id="results-files")
            progress = gr.Dataframe(headers=["reader_id", "display_name", "answered", "total"],
                                    label="Reader progress", interactive=False, elem_id="results-progress")
            summary = gr.Markdown(elem_id="results-summary")
        with gr.Tab("Privacy", id="results-privacy", elem_id="results-privacy"):
            privacy_images, privacy_files = _report_section("privacy", "Privacy audit")
            with gr.Row():
                make_report = gr.Button("Make the privacy report (HTML)", size="sm", scale=0,
                                        elem_id="results-privacy-report-make")
                report_file = gr.File(label="Privacy report (HTML, for sign-off)", interactive=False,
                                      elem_id="results-privacy-report")
        with gr.Tab("Model", id="results-model", elem_id="results-model"):
            model_images, model_files = _report_section("model", "Model and evaluation")
            with gr.Accordion("Model card (README.md of the checkpoint)", open=False, elem_id="results-model-card-box"):
                card = gr.Markdown(elem_id="results-model-card")

    outputs = [headline, summary, progress, plots, downloads, privacy_images, privacy_files, model_images,
               model_files, card]

    def on_refresh(request: gr.Request) -> tuple:
        username = username_of(request)
        if services.role(username) != "admin":
            return ("", "Results are for study admins only.", None, [], [], [], [], [], [], "")
        try:
            result = compute_results(services, username)
        except Exception as error:  # noqa: BLE001
            gr.Warning(_refuse(error).message)
            return tuple(gr.update() for _ in outputs)
        return _refreshed(result)

    def on_make_report(request: gr.Request) -> str | None:
        try:
            return str(make_privacy_report(services, username_of(request)))
        except Exception as error:  # noqa: BLE001
            gr.Warning(str(error) if isinstance(error, FileNotFoundError) else _refuse(error).message)
            return None

    refresh.click(on_refresh, None, outputs, api_visibility="private")
    make_report.click(on_make_report, None, report_file, api_visibility="private")
    _register_api(services)
    return {"outputs": outputs, "on_refresh": on_refresh}


def _refreshed(result: dict) -> tuple:
    """The Results tab's outputs for ``result`` (in the order of ``build_results_tab``'s outputs)."""
    rows = [[r["reader_id"], r["display_name"], r["answered"], r["total"]] for r in result["status"]]
    privacy, model = result["sections"]["privacy"], result["sections"]["model"]

    def gallery(paths: list[str]) -> gr.Gallery:
        return gr.Gallery(paths, visible=bool(paths))

    return (headline_text(result), result["markdown"], rows, gallery(result["plots"]), result["files"],
            gallery(privacy["png"]), privacy["json"], gallery(model["png"]), model["json"],
            result["model_card"] or "*No model card (README.md) in the checkpoint folder.*")


def _register_api(services: Services) -> None:
    def results(request: gr.Request) -> tuple[dict, list[FileData]]:
        """Study statistics (§12) and checkpoint reports, admins only: (JSON, files)."""
        try:
            result = compute_results(services, username_of(request))
        except Exception as error:  # noqa: BLE001
            raise _refuse(error) from None
        payload = {k: result[k] for k in ("analysis", "study_message", "status", "reports")}
        return payload, [file_payload(path) for path in result["files"] + result["plots"]]

    api_endpoint(results)
