"""The Generate tab in a real browser when the input is wrong or the generation fails.

* a wrong lesion box (outside [0, 1], inverted, plain text) stays in the field, is marked
  wrong with the reason, and Generate refuses it: no image is made at the default box;
* a failed generation does not leave the previous result (gallery, verdicts, recipe,
  downloads) beside the new conditions.

Uses the browser and helpers of ``test_app_browser``; the app here has no study (the demo
accounts log in; admin generates).
"""

from __future__ import annotations

import re

import pytest

from test_app_browser import browser, login, shot  # noqa: F401 - fixture

BOX = "#gen-box textarea, #gen-box input"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import make_tiny_checkpoint, serve_app

    tmp = tmp_path_factory.mktemp("browser-generate")
    config = AppConfig(checkpoint=make_tiny_checkpoint(tmp / "checkpoint"), work_dir=tmp / "work",
                       temp_dir=tmp / "temp", default_steps=2)
    demo, url, services = serve_app(config, start_demo=False)
    yield {"url": url, "temp": tmp / "temp"}
    demo.close()


@pytest.fixture
def page(app, browser):  # noqa: F811 - the imported fixture
    context, page = login(browser, app["url"], "admin")
    yield page
    context.close()


def generated_files(app) -> list:
    return sorted((app["temp"] / "generated").glob("*/*.dcm"))


def choose_mass_preset(page) -> None:
    page.get_by_role("button", name="Suspicious mass · L-MLO").click()
    page.locator("#gen-validity").get_by_text("Lesion box 0.30,0.36,0.46,0.50").wait_for()


def type_box(page, text: str) -> None:
    """Type ``text`` into the box field and leave it (the blur that used to clear it)."""
    field = page.locator(BOX).first
    field.fill(text)
    page.locator("#gen-seed input").first.click()


def wait_for_error(page, pattern: str) -> None:
    page.locator(".toast-body").filter(has_text=re.compile(pattern)).first.wait_for()


@pytest.mark.parametrize("typed, reason", [
    ("0.2,0.3,1.4,0.5", "outside the image"),
    ("0.6,0.3,0.4,0.5", "inverted"),
    ("upper outer", "4 numbers x0,y0,x1,y1"),
])
def test_a_wrong_box_stays_marked_wrong_and_generate_refuses_it(app, page, typed, reason):
    choose_mass_preset(page)
    before = generated_files(app)
    type_box(page, typed)
    validity = page.locator("#gen-validity")
    validity.get_by_text(re.compile("lesion box .* is wrong")).wait_for(timeout=20_000)
    page.wait_for_timeout(1500)  # the annotator's echo of the blur used to arrive here and clear the field
    assert page.locator(BOX).first.input_value() == typed
    text = validity.inner_text()
    assert "✓" not in text and "consistent" not in text
    assert reason in text and "Clear box" in text
    assert page.locator("#gen-box.box-invalid").count() == 1
    page.locator("#gen-go").click()
    wait_for_error(page, "box")
    page.wait_for_timeout(500)
    assert generated_files(app) == before, "an image was generated for a wrong box"
    assert page.locator(BOX).first.input_value() == typed
    shot(page, f"generate-wrong-box-{reason.split()[0]}")
    # cleared on purpose: the default place, and Generate works again
    page.locator("#gen-clear-box").click()
    validity.get_by_text(re.compile("default place")).wait_for()
    page.locator("#gen-box.box-invalid").wait_for(state="detached", timeout=10_000)
    page.locator("#gen-go").click()
    page.locator("#gen-gallery img").first.wait_for()
    assert len(generated_files(app)) == len(before) + 1


def test_a_failed_generation_clears_the_previous_result(app, page):
    choose_mass_preset(page)
    page.locator("#gen-go").click()
    page.locator("#gen-gallery img").first.wait_for()
    page.locator("#gen-verdicts").get_by_text(re.compile("pass")).first.wait_for()
    page.locator("#gen-files tr", has_text=".dcm").first.wait_for()
    # BI-RADS 1 with a mass cannot be generated: the generation fails
    page.locator("#gen-birads input").first.fill("1")
    page.locator("#gen-birads input").first.press("Enter")
    page.locator("#gen-validity").get_by_text(re.compile("contradictory")).wait_for()
    page.locator("#gen-go").click()
    wait_for_error(page, "contradictory")
    page.locator("#gen-verdicts").get_by_text(re.compile("generation failed", re.I)).wait_for(timeout=20_000)
    assert page.locator("#gen-gallery img").count() == 0
    assert page.locator("#gen-files tr", has_text=".dcm").count() == 0
    assert "seed" not in page.locator("#gen-details").inner_text()
    assert "pass" not in page.locator("#gen-verdicts").inner_text()
    shot(page, "generate-failed")
