"""The app in a real browser (Playwright driving Debian's Chromium), as a clinician uses it.

* generate: pick conditions (a preset), set a lesion box, generate, see the image and the
  privacy verdict, download the DICOM and validate it with ``dciodvfy``;
* reader study: log in as a reader, answer 3 cases with the keyboard, reload, resume at 4;
  on a 0–100 study the confidence is a slider, set with the keys too (and required);
* results: log in as admin and see the statistics.

Screenshots go to ``test-artifacts/`` (and, with ``MAMMOSYNTH_UPDATE_SCREENSHOTS=1``, to
``docs/screenshots/`` for the README). Skipped with a reason when ``/usr/bin/chromium`` is
absent, unless ``CI`` is set: then missing Chromium is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mammosynth.pacs.orthanc import free_port  # noqa: F401 - the other browser tests import it from here

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = Path(os.environ.get("MAMMOSYNTH_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: CI must install Chromium (apt-get install -y chromium)",
                    pytrace=False)
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def shot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("MAMMOSYNTH_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import make_tiny_checkpoint, make_tiny_study, serve_app

    tmp = tmp_path_factory.mktemp("browser")
    # MAMMOSYNTH_SCREENSHOT_CHECKPOINT=checkpoints/mammosynth-phantom-256 takes the README's
    # screenshots with a real model; by default a tiny random one keeps the test fast.
    real = os.environ.get("MAMMOSYNTH_SCREENSHOT_CHECKPOINT")
    checkpoint = Path(real) if real else make_tiny_checkpoint(tmp / "checkpoint")
    study = make_tiny_study(tmp / "study", tmp / "study-src")
    config = AppConfig(checkpoint=checkpoint, study=study, work_dir=tmp / "work", temp_dir=tmp / "temp",
                       default_steps=20 if real else 3)
    demo, url, services = serve_app(config)
    yield {"url": url, "study": study, "checkpoint": checkpoint}
    demo.close()


@pytest.fixture(scope="module")
def app_0_100(app, tmp_path_factory):
    """A second server: the same app over a study that asks for confidence on 0–100."""
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import make_tiny_study, serve_app

    tmp = tmp_path_factory.mktemp("browser-0-100")
    study = make_tiny_study(tmp / "study", tmp / "study-src", confidence_scale="0-100")
    config = AppConfig(checkpoint=app["checkpoint"], study=study, work_dir=tmp / "work", temp_dir=tmp / "temp")
    demo, url, _ = serve_app(config)
    yield {"url": url, "study": study}
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def login(browser, url: str, user: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_label(re.compile("username", re.I)).fill(user)
    page.get_by_label(re.compile("password", re.I)).fill(user)
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.locator("#app-user").get_by_text(re.compile("Logged in as")).wait_for()
    return context, page


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_generate_with_a_lesion_box_and_download_a_valid_dicom(app, browser, tmp_path):
    context, page = login(browser, app["url"], "admin")  # a study runs: readers may not generate
    try:
        page.get_by_role("button", name="Suspicious mass · L-MLO").click()
        # the preset's own box must have landed before we type ours (else its late update wins)
        page.locator("#gen-validity").get_by_text("Lesion box 0.30,0.36,0.46,0.50").wait_for()
        box = page.locator("#gen-box textarea, #gen-box input").first
        box.fill("0.32,0.40,0.48,0.54")
        box.press("Enter")
        page.locator("#gen-validity").get_by_text("Conditions are consistent").wait_for()
        # a contradictory choice is explained in the page
        page.locator("#gen-birads input").first.fill("1")
        page.locator("#gen-birads input").first.press("Enter")
        page.locator("#gen-validity").get_by_text(re.compile("BI-RADS 1 .* contradictory")).wait_for()
        page.get_by_role("button", name="Suspicious mass · L-MLO").click()
        page.locator("#gen-validity").get_by_text("Lesion box 0.30,0.36,0.46,0.50").wait_for()
        box.fill("0.32,0.40,0.48,0.54")
        box.press("Enter")
        # wait until the server has taken the new box (the verdict names it), then generate
        page.locator("#gen-validity").get_by_text("Lesion box 0.32,0.40,0.48,0.54").wait_for()
        page.locator("#gen-go").click()
        page.locator("#gen-gallery img").first.wait_for()
        page.locator("#gen-verdicts").get_by_text(re.compile("pass")).first.wait_for()
        shot(page, "generate")
        link = page.locator("#gen-files tr", has_text=".dcm").locator("a").first
        with page.expect_download() as info:
            link.click()
        target = tmp_path / "download.dcm"
        info.value.save_as(target)
        import pydicom

        ds = pydicom.dcmread(target)
        assert ds.ConversionType == "SYN" and ds.ImageLaterality == "L" and ds.Modality == "MG" and "SYNTHETIC" in ds.SeriesDescription
        assert '"box":[0.32,0.4,0.48,0.54]' in ds.ImageComments
        if shutil.which("dciodvfy"):
            result = subprocess.run(["dciodvfy", str(target)], capture_output=True, text=True)
            assert result.returncode == 0 and "Error" not in result.stdout + result.stderr, result.stderr
    finally:
        context.close()


def case_label(page) -> str:
    return page.locator("#ms-case-label").inner_text()


def test_a_reader_answers_three_cases_reloads_and_resumes_at_case_4(app, browser):
    context, page = login(browser, app["url"], "reader2")
    try:
        open_tab(page, "Reader study")
        page.locator("#case-image img").wait_for()
        assert case_label(page) == "1 / 16"
        # the results tab is not offered to readers
        assert page.get_by_role("tab", name="Results").count() == 0
        for position in (1, 2, 3):
            page.locator("#case-image").hover()
            page.keyboard.press("s" if position % 2 else "r")
            page.keyboard.press("4")
            page.keyboard.press("Enter")
            page.wait_for_function(
                "n => document.querySelector('#ms-case-label')?.textContent === n", arg=f"{position + 1} / 16")
        shot(page, "study-before-reload")
        page.reload()
        page.locator("#app-user").get_by_text(re.compile("Logged in as")).wait_for()
        open_tab(page, "Reader study")
        page.locator("#case-image img").wait_for()
        assert case_label(page) == "4 / 16"
        page.keyboard.press("+")
        shot(page, "study")
    finally:
        context.close()
    from mammosynth.study import Study

    answers = Study.open(app["study"]).store.answers("reader2")
    assert [a.answer for a in answers] == ["synthetic", "real", "synthetic"]
    assert all(a.confidence == 4 for a in answers)


def test_a_0_to_100_study_shows_a_slider_set_by_keys_and_required(app_0_100, browser):
    context, page = login(browser, app_0_100["url"], "reader1")
    try:
        open_tab(page, "Reader study")
        page.locator("#case-image img").wait_for()
        slider = page.locator("#confidence-slider input[type=range]")
        slider.wait_for()
        assert page.locator("#confidence").is_hidden()
        page.locator("#study-keys").get_by_text(re.compile("0 / 25 / 50 / 75 / 100")).wait_for()
        page.locator("#case-image").hover()
        page.keyboard.press("s")
        page.keyboard.press("Enter")  # the slider was not set: refused, the case stays
        page.locator("#study-notice").get_by_text(re.compile("choose how confident you are, 0 to 100")).wait_for()
        assert case_label(page) == "1 / 16"
        page.keyboard.press("4")  # 75
        assert slider.input_value() == "75"
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#ms-case-label')?.textContent === '2 / 16'")
        assert page.locator("#study-notice").inner_text().strip() == ""  # stored: the notice is gone
        page.locator("#case-image").hover()
        page.keyboard.press("r")
        page.keyboard.press("5")  # 100
        page.keyboard.press("ArrowLeft")  # 95
        assert slider.input_value() == "95"
        shot(page, "study-0-100")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#ms-case-label')?.textContent === '3 / 16'")
        assert slider.input_value() == "0"  # a new case starts unset
        page.locator("#case-image").hover()
        page.keyboard.press("r")
        page.keyboard.press("Enter")  # the mark of the last case does not carry over: refused
        page.locator("#study-notice").get_by_text(re.compile("choose how confident you are")).wait_for()
        assert case_label(page) == "3 / 16"
        page.keyboard.press("3")  # 50, submitted at once by the next key
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#ms-case-label')?.textContent === '4 / 16'")
    finally:
        context.close()
    from mammosynth.study import Study

    answers = Study.open(app_0_100["study"]).store.answers("reader1")
    assert [(a.answer, a.confidence) for a in answers] == [("synthetic", 75), ("real", 95), ("real", 50)]


def test_an_admin_sees_the_results(app, browser):
    context, page = login(browser, app["url"], "admin")
    try:
        open_tab(page, "Results")
        page.locator("#results-headline").get_by_text(re.compile("answers")).wait_for()
        page.wait_for_function("() => (document.querySelector('#results-files')?.innerText || '').includes('imrmc')")
        open_tab(page, "Reader study")
        page.get_by_text("admins read no cases").wait_for()
        open_tab(page, "Results")
        shot(page, "results")
    finally:
        context.close()
