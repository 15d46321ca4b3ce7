"""Who sees what in a real browser, the Results tab's layout, and a quiet stdout.

* while a study runs, a reader sees only the Reader study and About tabs (the generator would
  unblind them); an admin sees Generate and Results; ``--readers-may-generate`` lifts the rule;
* the Results tab keeps the study's headline and plots on top, puts the rest in sub-tabs
  (Study, Privacy, Model) and offers the raw JSON reports as downloads: the page is a fraction
  of its old ~8,100 px;
* ``python app.py`` writes nothing to stdout while browsers load its pages (Gradio printed a
  line per custom-component file); its logs go to stderr through the logger.

Uses the browser and helpers of ``test_app_browser``. Screenshots: ``results`` and
``study-reader`` (``MAMMOSYNTH_UPDATE_SCREENSHOTS=1`` copies them to ``docs/screenshots/``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_app_browser import ROOT, browser, free_port, login, open_tab, shot  # noqa: F401 - fixture

#: The old Results page was ~8,100 px with the bundled checkpoint (and ~5,000 px with this test's
#: reports); headline, plots and one sub-tab fit in a bit over one screen.
RESULTS_MAX_HEIGHT = 2200
PRIVACY_REPORT = {"reid_map_at_r": 0.0012, "membership": {"auc": 0.51, "attacks": [{"name": f"attack {k}",
                                                                                    "auc": 0.5} for k in range(40)]}}


def model_card() -> str:
    """A model card as long as a real one (~20 kB of headings, prose and tables)."""
    section = ("The model was trained on phantom mammograms; every number below comes from the held-out "
               "test split. " * 6)
    table = "| metric | value | note |\n|---|---|---|\n" + "".join(f"| m{k} | 0.{k}1 | n |\n" for k in range(8))
    return "# tiny model card\n\n" + "".join(f"## Section {k}\n\n{section}\n\n{table}\n" for k in range(14))


def write_reports(checkpoint: Path) -> None:
    """Reports as a trained checkpoint has them: a model card, privacy and training JSON, figures."""
    import numpy as np
    from PIL import Image

    reports = checkpoint / "reports"
    reports.mkdir(exist_ok=True)
    (checkpoint / "README.md").write_text(model_card())
    (reports / "privacy.json").write_text(json.dumps(PRIVACY_REPORT, indent=2))
    (checkpoint / "training_summary.json").write_text(json.dumps({"steps": 10, "loss": [0.1] * 50}, indent=2))
    pixels = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    for name in ("privacy_similarity.png", "privacy_membership_roc.png"):
        Image.fromarray(pixels).save(reports / name)
    Image.fromarray(pixels).save(checkpoint / "samples.png")


def answered(folder: Path, cases: int = 8) -> Path:
    """Let reader2 answer ``cases`` cases (half right), so the Results tab has statistics and plots."""
    from mammosynth.study import Study

    study = Study.open(folder)
    truth = {c: e["truth"] for c, e in study.key()["cases"].items()}
    for k in range(cases):
        case = study.next_case("reader2")
        guess = truth[case.case_id] if k % 2 else ("real" if truth[case.case_id] == "synthetic" else "synthetic")
        study.answer("reader2", case.case_id, guess, 1 + k % 5)
    return folder


def launch(tmp: Path, checkpoint: Path, study: Path, **config) -> tuple:
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import serve_app

    cfg = AppConfig(checkpoint=checkpoint, study=study, work_dir=tmp / "work", temp_dir=tmp / "temp", **config)
    demo, url, _ = serve_app(cfg)
    return demo, url


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint with reports (or the real one of MAMMOSYNTH_SCREENSHOT_CHECKPOINT) and a study."""
    from mammosynth.ui.testing import make_tiny_checkpoint, make_tiny_study

    tmp = tmp_path_factory.mktemp("browser-roles")
    real = os.environ.get("MAMMOSYNTH_SCREENSHOT_CHECKPOINT")
    checkpoint = Path(real) if real else make_tiny_checkpoint(tmp / "checkpoint")
    if not real:
        write_reports(checkpoint)
    study = answered(make_tiny_study(tmp / "study", tmp / "study-src"))
    return {"tmp": tmp, "checkpoint": checkpoint, "study": study, "real": bool(real)}


@pytest.fixture(scope="module")
def app(setup):
    """The app as started by default: a study runs, readers may not generate."""
    demo, url = launch(setup["tmp"] / "default", setup["checkpoint"], setup["study"])
    yield {"url": url, **setup}
    demo.close()


def tab_names(page) -> list[str]:
    return [name.strip() for name in page.locator("#tabs").get_by_role("tab").all_inner_texts()]


def test_a_reader_sees_only_the_reader_study_and_about_while_a_study_runs(app, browser):
    context, page = login(browser, app["url"], "reader1")
    try:
        assert tab_names(page) == ["Reader study", "About & API"]
        page.locator("#case-image img").wait_for()  # the Reader study tab is the one open
        assert page.locator("#gen-go").count() == 0 or page.locator("#gen-go").is_hidden()
        shot(page, "study-reader", full_page=False)
    finally:
        context.close()


def test_an_admin_sees_generate_and_results_while_a_study_runs(app, browser):
    context, page = login(browser, app["url"], "admin")
    try:
        assert tab_names(page) == ["Generate", "Edit", "Reader study", "Results", "About & API"]
        page.locator("#gen-go").wait_for()  # Generate is the tab open for those who may use it
    finally:
        context.close()


def test_readers_may_generate_when_the_operator_allows_it(app, browser):
    demo, url = launch(app["tmp"] / "allowed", app["checkpoint"], app["study"], readers_may_generate=True)
    try:
        context, page = login(browser, url, "reader3")
        try:
            assert tab_names(page) == ["Generate", "Edit", "Reader study", "About & API"]
            page.locator("#gen-go").wait_for()
        finally:
            context.close()
    finally:
        demo.close()


def page_height(page) -> int:
    return int(page.evaluate("() => document.documentElement.scrollHeight"))


def test_the_results_tab_is_organised_in_sections_with_json_downloads(app, browser, tmp_path):
    context, page = login(browser, app["url"], "admin")
    try:
        open_tab(page, "Results")
        page.locator("#results-headline").get_by_text("answers").wait_for()
        page.wait_for_function("() => (document.querySelector('#results-files')?.innerText || '').includes('imrmc')")
        page.wait_for_timeout(500)  # let the galleries lay out
        height = page_height(page)
        assert height <= RESULTS_MAX_HEIGHT, f"the Results page is {height} px tall"
        # the headline and the plots stay on top, above the sections
        tops = [page.locator(f"#{name}").bounding_box()["y"] for name in ("results-headline", "results-plots",
                                                                             "results-sections")]
        assert tops == sorted(tops), tops
        sections = page.locator("#results-sections").get_by_role("tab").all_inner_texts()
        assert [name.strip() for name in sections] == ["Study", "Privacy", "Model"]
        shot(page, "results", full_page=False)
        page.locator("#results-sections").get_by_role("tab", name="Privacy").click()
        link = page.locator('#results-privacy-files a[download="privacy.json"]')
        with page.expect_download() as info:
            link.click()
        target = tmp_path / "privacy.json"
        info.value.save_as(target)
        expected = json.loads((app["checkpoint"] / "reports" / "privacy.json").read_text())
        assert json.loads(target.read_text()) == expected
        page.locator("#results-sections").get_by_role("tab", name="Model").click()
        page.locator("#results-model-card-box").get_by_text("Model card").first.click()  # collapsed: it is long
        page.wait_for_function("() => (document.querySelector('#results-model-card')?.innerText || '').length > 500")
        page.locator("#results-model-files a[download$='.json']").first.wait_for()
    finally:
        context.close()


def wait_http(url: str, seconds: float) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def test_app_py_writes_nothing_to_stdout_while_pages_load(app, browser, tmp_path):
    port = free_port()
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    command = [sys.executable, str(ROOT / "app.py"), "--checkpoint", str(app["checkpoint"]), "--study",
               str(app["study"]), "--port", str(port), "--work-dir", str(tmp_path / "work"), "--log-level", "DEBUG"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(out, "w") as stdout, open(err, "w") as stderr:
        server = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, 120)
            for user in ("reader1", "admin", "reader2"):
                context, page = login(browser, url, user)
                page.reload()
                page.locator("#app-user").get_by_text("Logged in as").wait_for()
                context.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    printed, logged = out.read_text(), err.read_text()
    assert "environment=client" not in printed
    assert printed.strip() == "", f"app.py printed to stdout:\n{printed[:2000]}"
    # the lines were not lost: they are DEBUG records of the app's logger (so the pages did ask)
    assert "mammosynth.app: gradio: id=" in logged and "environment=client" in logged
    assert "serving on http://127.0.0.1" in logged
