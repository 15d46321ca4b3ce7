"""The Edit tab in a real browser: upload a 16-bit PNG, put the box on it, insert a lesion, get the files.

Uses the browser and helpers of ``test_app_browser``; the app has no study (the demo accounts log in;
admin edits). The tiny random checkpoint makes noise: this checks the wiring, not the lesion.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_app_browser import browser, login, open_tab, shot  # noqa: F401 - fixture
from test_edit import BOX, frame, outside


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import make_tiny_checkpoint, serve_app

    tmp = tmp_path_factory.mktemp("browser-edit")
    config = AppConfig(checkpoint=make_tiny_checkpoint(tmp / "checkpoint"), work_dir=tmp / "work",
                       temp_dir=tmp / "temp", default_steps=2)
    demo, url, services = serve_app(config, start_demo=False)
    yield {"url": url, "temp": tmp / "temp", "tmp": tmp}
    demo.close()


def test_upload_box_and_insert_a_lesion_in_the_edit_tab(app, browser):  # noqa: F811
    from mammosynth.conditions import Box
    from mammosynth.data.export import read_png16, write_png16
    from mammosynth.pipelines.inpainting import default_margin

    image = frame()
    write_png16(image, app["tmp"] / "upload.png")
    context, page = login(browser, app["url"], "admin")
    try:
        open_tab(page, "Edit")
        page.locator("#edit-upload input[type=file]").set_input_files(str(app["tmp"] / "upload.png"))
        page.locator("#edit-source").get_by_text("Loaded an uploaded 16-bit PNG").wait_for()
        field = page.locator("#edit-box textarea, #edit-box input").first
        field.fill(BOX)
        page.locator("#edit-go").click()
        page.locator("#edit-verdict").get_by_text("Privacy:").wait_for()
        assert page.locator("#edit-gallery img").count() == 2
        shot(page, "edit-tab")
        edits = sorted((app["temp"] / "generated").glob("*/mammosynth_*_edit_seed*.png"))
        assert len(edits) == 1 and sorted(p.suffix for p in edits[0].parent.glob(edits[0].stem + ".*")) == \
            [".dcm", ".json", ".png"]
        edited = read_png16(edits[0])
        keep = outside(Box(0.05, 0.35, 0.40, 0.65), default_margin(image.shape[0]))
        assert np.array_equal(edited[keep], image[keep]) and not np.array_equal(edited, image)
    finally:
        context.close()
