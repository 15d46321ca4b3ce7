"""The Generate tab's live preview in a real browser: changing a condition refreshes it by itself
(the distilled student, 1 step), Generate still makes the full images, and it can be turned off.

The refresh time (click → new preview image on screen) is printed; ``benchmarks/bench_preview.py``
measures it on the bundled checkpoint.
"""

from __future__ import annotations

import re
import time

import pytest

from test_app_browser import browser, login  # noqa: F401 - fixture

PREVIEW_IMG = "#gen-preview img"
NOTE = "#gen-preview-note"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import make_tiny_checkpoint, serve_app

    tmp = tmp_path_factory.mktemp("browser-preview")
    config = AppConfig(checkpoint=make_tiny_checkpoint(tmp / "checkpoint", fast=True), work_dir=tmp / "work",
                       temp_dir=tmp / "temp", default_steps=2)
    demo, url, services = serve_app(config, start_demo=False)
    yield {"url": url, "services": services}
    demo.close()


@pytest.fixture
def page(app, browser):  # noqa: F811 - the imported fixture
    context, page = login(browser, app["url"], "admin")
    yield page
    context.close()


def preview_src(page) -> str | None:
    images = page.locator(PREVIEW_IMG)
    return images.first.get_attribute("src") if images.count() else None


def wait_for_new_preview(page, before: str | None, timeout_s: float = 30.0) -> float:
    """Seconds until the preview image differs from ``before``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        src = preview_src(page)
        if src and src != before:
            return time.perf_counter() - start
        page.wait_for_timeout(10)
    raise AssertionError(f"the preview did not refresh within {timeout_s} s")


def test_a_condition_change_refreshes_the_preview_by_itself(app, page):
    page.get_by_role("button", name="Suspicious mass · L-MLO").click()
    wait_for_new_preview(page, None)   # the first one also loads the model
    note = page.locator(NOTE)
    note.get_by_text(re.compile(r"Live preview · seed 0 · student 1 step, tiny decoder")).wait_for()
    assert "privacy ✓" in note.inner_text()
    assert page.locator("#gen-gallery img").count() == 0      # nothing was generated: only previewed
    times = []
    for preset in ("Dense breast · R-MLO, density D", "Calcifications · R-CC", "Suspicious mass · L-MLO"):
        before = preview_src(page)
        page.get_by_role("button", name=preset).click()
        times.append(wait_for_new_preview(page, before))
    print(f"\nlive preview refresh in the browser (tiny model, 1 thread): "
          f"{', '.join(f'{t * 1000:.0f} ms' for t in times)}")
    # the box drawn by dragging goes through the box field: typing one refreshes it too
    before = preview_src(page)
    page.locator("#gen-box textarea, #gen-box input").first.fill("0.20,0.20,0.40,0.40")
    wait_for_new_preview(page, before)
    assert page.locator("#gen-gallery img").count() == 0


def test_a_wrong_box_gives_no_preview_and_turning_it_off_stops_it(app, page):
    page.get_by_role("button", name="Suspicious mass · L-MLO").click()
    wait_for_new_preview(page, None)
    page.locator("#gen-box textarea, #gen-box input").first.fill("0.6,0.3,0.4,0.5")
    page.locator(NOTE).get_by_text("fix the lesion box first").wait_for()
    page.locator("#gen-live input").first.uncheck()
    page.locator("#gen-preview").wait_for(state="hidden")
    page.wait_for_timeout(500)

    def note_text() -> str:   # the note without Gradio's transient status timer ("0.2s")
        return page.locator(NOTE).inner_text().strip().splitlines()[-1]

    before_note = note_text()
    page.get_by_role("button", name="Dense breast · R-MLO, density D").click()
    page.wait_for_timeout(1500)
    assert note_text() == before_note == "Preview: fix the lesion box first."   # no preview ran
