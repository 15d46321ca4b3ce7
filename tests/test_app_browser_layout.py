"""The Generate tab's layout in a real browser (issue 23.6).

* the verdict table keeps each header cell and each 10-digit seed on one line, also in a
  narrow window (900 px);
* generated images are shown at least 240 px wide (portrait cells, one column when the panel
  is narrow), not as ~130–160 px pictures in square cells;
* the CC box-drawing outline is one flat breast tone (no grey wedge at the chest wall that
  reads as a pectoral muscle); the MLO outline keeps its pectoral triangle.

Uses the browser of ``test_app_browser`` and the app of ``test_app_browser_generate`` (tiny
checkpoint, no study; admin generates).
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from test_app_browser import TIMEOUT_MS, browser, shot  # noqa: F401 - fixture
from test_app_browser_generate import app  # noqa: F401 - fixture

MIN_THUMB_PX = 240
#: Colours of breast_outline's drawing: the breast, the old "fibroglandular cone", the pectoral muscle.
BREAST, CONE, PECTORAL = (70, 70, 76), (96, 96, 104), (125, 110, 110)


def _login(browser, url: str, width: int, height: int):  # noqa: F811 - the imported fixture
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_label(re.compile("username", re.I)).fill("admin")
    page.get_by_label(re.compile("password", re.I)).fill("admin")
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.locator("#app-user").get_by_text(re.compile("Logged in as")).wait_for()
    return context, page


def _pixels_like(png: bytes, colour: tuple[int, int, int], tolerance: int = 4) -> int:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array(colour)).max(axis=-1) <= tolerance).sum())


def _generate_four(page) -> None:
    page.get_by_role("button", name="Suspicious mass · L-MLO").click()
    page.locator("#gen-validity").get_by_text("Lesion box 0.30,0.36,0.46,0.50").wait_for()
    number = page.locator("#gen-num input[type=number]").first
    number.fill("4")
    number.press("Enter")
    seed = page.locator("#gen-seed input").first
    seed.fill("1234567890")
    seed.press("Enter")
    page.wait_for_timeout(300)
    page.locator("#gen-go").click()
    page.locator("#gen-verdicts").get_by_text("1234567893").wait_for()
    page.locator("#gen-gallery img").nth(3).wait_for()
    page.wait_for_timeout(500)


@pytest.mark.parametrize("width", [900, 1400])
def test_the_verdict_table_does_not_wrap_and_images_are_large(app, browser, width):  # noqa: F811
    context, page = _login(browser, app["url"], width, 1000)
    try:
        _generate_four(page)
        cells = page.evaluate("""() => {
          const lines = (e) => {
            const s = getComputedStyle(e);
            const line = parseFloat(s.lineHeight) || 1.5 * parseFloat(s.fontSize);
            const inner = e.getBoundingClientRect().height - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom);
            return Math.round(inner / line);
          };
          const rows = [...document.querySelectorAll('#gen-verdicts tbody tr')];
          return {
            header: [...document.querySelectorAll('#gen-verdicts th')].map(e => [e.innerText.trim(), lines(e)]),
            seeds: rows.map(r => [r.children[1].innerText.trim(), lines(r.children[1]),
                                  getComputedStyle(r.children[1]).whiteSpace]),
          };
        }""")
        assert [name for name, _ in cells["header"]][:2] == ["#", "seed"]
        wrapped = [name for name, n in cells["header"] if n != 1]
        assert not wrapped, f"header cells wrap at {width} px: {cells['header']}"
        assert [s for s, _, _ in cells["seeds"]] == [str(1234567890 + k) for k in range(4)]
        assert all(n == 1 and space == "nowrap" for _, n, space in cells["seeds"]), cells["seeds"]
        shown = page.evaluate("""() => [...document.querySelectorAll('#gen-gallery img')].map(e => {
          const r = e.getBoundingClientRect(), aspect = e.naturalWidth / e.naturalHeight;
          return Math.round(Math.min(r.width, r.height * aspect));   // object-fit: contain
        })""")
        assert len(shown) == 4 and min(shown) >= MIN_THUMB_PX, f"images shown {shown} px wide at {width} px"
        shot(page, f"generate-layout-{width}")
    finally:
        context.close()


def test_the_cc_outline_has_no_pectoral_like_wedge_and_the_mlo_keeps_its_muscle(app, browser):  # noqa: F811
    context, page = _login(browser, app["url"], 1400, 1000)
    try:
        annotator = page.locator("#gen-annotator")
        page.locator("#gen-annotator canvas, #gen-annotator img").first.wait_for()
        page.wait_for_timeout(800)
        cc = annotator.screenshot()  # the default outline: CC, left
        assert _pixels_like(cc, BREAST) > 5000, "the CC outline shows no breast"
        assert _pixels_like(cc, CONE) == 0, "the CC outline has a grey wedge at the chest wall"
        assert _pixels_like(cc, PECTORAL) == 0
        page.get_by_role("button", name="Suspicious mass · L-MLO").click()
        page.locator("#gen-validity").get_by_text("Lesion box 0.30,0.36,0.46,0.50").wait_for()
        page.wait_for_timeout(800)
        mlo = annotator.screenshot()
        assert _pixels_like(mlo, PECTORAL) > 1000, "the MLO outline lost its pectoral muscle"
        assert _pixels_like(mlo, CONE) == 0
    finally:
        context.close()
