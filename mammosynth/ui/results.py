"""The Results tab (admins only) and the ``results`` endpoint.

Live reader-study statistics (DESIGN §12, from :mod:`mammosynth.study.analysis`) with plots
and CSV / iMRMC / report downloads, plus the privacy-audit and evaluation reports found in the
loaded checkpoint folder (``*.json``, ``*.md``, ``*.png`` in it or in ``reports/``). A reader
who asks — in the browser or through the API — is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from .api import FileData, api_endpoint, file_payload
from .auth import AccessDenied, require_role, username_of
from .reports import checkpoint_reports, read_json_report
from .services import Services, new_output_folder
from .studies import StudyUnavailable

logger = logging.getLogger("mammosynth.app")

__all__ = ["compute_results", "build_results_tab"]


def compute_results(services: Services, username: str | None) -> dict[str, Any]:
    """Analyse the study and collect checkpoint reports (admins only).

    Returns:
        ``{"analysis": dict | None, "study_message": str, "files": [paths], "plots": [paths],
        "markdown": str, "status": [rows], "reports": {name: json}, "report_images": [paths],
        "model_card": str}``.

    Raises:
        AccessDenied: the user is not an admin.
    """
    require_role(services, username, "admin", "see study results")
    out: dict[str, Any] = {"analysis": None, "study_message": "", "files": [], "plots": [], "markdown": "",
                           "status": [], "reports": {}, "report_images": [], "model_card": ""}
    try:
        study = services.studies.study()
    except StudyUnavailable as error:
        out["study_message"] = str(error)
        study = None
    if study is not None:
        from ..study.export import export_csv, export_imrmc
        from ..study.report import markdown_report, write_report

        folder = new_output_folder(services.config.temp_dir, "results")
        analysis = write_report(study, folder)
        plots = [folder / f"{name}.png" for name in ("roc", "accuracy", "confidence")]
        plots = [p for p in plots if p.is_file()]
        files = [folder / "report.json", folder / "report.md", export_csv(study, folder / "responses.csv"),
                 export_imrmc(study, folder / "imrmc.txt")]
        out.update(analysis=analysis, files=[str(p) for p in files], plots=[str(p) for p in plots],
                   markdown=markdown_report(analysis, {}).split("## Plots")[0], status=study.status())
    found = checkpoint_reports(services.config.checkpoint, services.config.reports)
    out["reports"] = {p.name: read_json_report(p) for p in found["json"]}
    out["report_images"] = [str(p) for p in found["png"]]
    cards = [p for p in found["md"] if p.name.lower() == "readme.md"] or found["md"]
    if cards:
        out["model_card"] = "\n\n".join(Path(p).read_text(encoding="utf-8", errors="replace") for p in cards[:2])
    return out


def _refuse(error: Exception) -> gr.Error:
    if isinstance(error, AccessDenied):
        return gr.Error(str(error), title="Not allowed", print_exception=False)
    logger.exception("results failed")
    return gr.Error(f"Results could not be computed ({type(error).__name__}: {error}).", title="Error",
                    print_exception=False)


def build_results_tab(services: Services) -> dict[str, Any]:
    """Lay out the Results tab; returns the refresh function and its outputs for page load."""
    with gr.Row():
        refresh = gr.Button("Refresh", variant="primary", size="sm", elem_id="results-refresh", scale=0)
        headline = gr.Markdown(elem_id="results-headline")
    summary = gr.Markdown(elem_id="results-summary")
    progress = gr.Dataframe(headers=["reader_id", "display_name", "answered", "total"], label="Reader progress",
                            interactive=False, elem_id="results-progress")
    plots = gr.Gallery(label="Study plots", format="png", columns=3, height=360, object_fit="contain",
                       elem_id="results-plots", interactive=False)
    downloads = gr.File(label="Downloads: report.json, report.md, responses.csv, iMRMC input", file_count="multiple",
                        interactive=False, elem_id="results-files")
    gr.Markdown("### Checkpoint reports (privacy audit, evaluation)")
    reports = gr.JSON(label="Report files of the loaded checkpoint", open=False, elem_id="results-reports")
    report_images = gr.Gallery(label="Report figures", format="png", columns=3, height=300, object_fit="contain",
                               elem_id="results-report-images", interactive=False)
    card = gr.Markdown(elem_id="results-model-card")

    outputs = [headline, summary, progress, plots, downloads, reports, report_images, card]

    def headline_text(result: dict) -> str:
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

    def on_refresh(request: gr.Request) -> tuple:
        username = username_of(request)
        if services.role(username) != "admin":
            return ("", "Results are for study admins only.", None, [], [], None, [], "")
        try:
            result = compute_results(services, username)
        except Exception as error:  # noqa: BLE001
            refusal = _refuse(error)
            gr.Warning(refusal.message)
            return tuple(gr.update() for _ in outputs)
        rows = [[r["reader_id"], r["display_name"], r["answered"], r["total"]] for r in result["status"]]
        return (headline_text(result), result["markdown"], rows,
                gr.Gallery(result["plots"], visible=bool(result["plots"])), result["files"],
                result["reports"] or {"note": "no report files in the checkpoint folder"},
                gr.Gallery(result["report_images"], visible=bool(result["report_images"])), result["model_card"])

    refresh.click(on_refresh, None, outputs, api_visibility="private")

    def results(request: gr.Request) -> tuple[dict, list[FileData]]:
        """Study statistics (§12) and checkpoint reports, admins only: (JSON, files)."""
        try:
            result = compute_results(services, username_of(request))
        except Exception as error:  # noqa: BLE001
            raise _refuse(error) from None
        payload = {k: result[k] for k in ("analysis", "study_message", "status", "reports")}
        return payload, [file_payload(path) for path in result["files"] + result["plots"]]

    api_endpoint(results)
    return {"outputs": outputs, "on_refresh": on_refresh}
