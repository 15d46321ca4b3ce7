"""A malformed lesion box is an error everywhere, never the default place (issue 23, item 1).

The Generate tab's verdict line (:func:`check_conditions`), the request parser and the public
``generate`` endpoint (gradio_client against a launched app) all refuse a box outside [0, 1],
an inverted box and plain text, naming the box and what was expected; only an empty box means
the default place. The browser side is in ``test_app_browser_generate.py``.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

WRONG_BOXES = [
    ("0.2,0.3,1.4,0.5", "outside the image"),
    ("0.6,0.3,0.4,0.5", "inverted"),
    ("upper outer", "4 numbers x0,y0,x1,y1"),
    ("0.2,0.3,0.4", "4 numbers x0,y0,x1,y1"),
    ("nan,0.3,0.4,0.5", "finite numbers"),
]


@pytest.mark.parametrize("box, reason", WRONG_BOXES)
def test_the_verdict_line_names_a_wrong_box_and_never_says_default(box, reason):
    from mammosynth.ui.generate import box_problem, check_conditions

    line = check_conditions("4", "C", "MLO", "L", "mass", box)
    assert line.startswith("⚠") and "lesion box" in line and reason in line and "Clear box" in line
    assert "consistent" not in line and reason in box_problem(box)


def test_only_an_empty_box_means_the_default_place():
    from mammosynth.ui.generate import box_problem, check_conditions

    assert box_problem("") is None and box_problem("0.1,0.2,0.3,0.4") is None
    assert "default place" in check_conditions("4", "C", "MLO", "L", "mass", " ")


@pytest.mark.parametrize("box, reason", WRONG_BOXES)
def test_the_request_parser_refuses_a_wrong_box(box, reason):
    from mammosynth.conditions import ConditionError
    from mammosynth.ui.model import parse_generation_request

    with pytest.raises(ConditionError, match="box") as info:
        parse_generation_request("4", "C", "MLO", "L", "mass", box)
    assert reason in str(info.value)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import make_tiny_checkpoint, serve_app

    tmp = tmp_path_factory.mktemp("generate-input")
    config = AppConfig(checkpoint=make_tiny_checkpoint(tmp / "checkpoint"), work_dir=tmp / "work",
                       temp_dir=tmp / "temp", default_steps=2)
    demo, url, _ = serve_app(config, start_demo=False)
    yield {"url": url, "temp": tmp / "temp"}
    demo.close()


@pytest.fixture(scope="module")
def admin(app):
    from gradio_client import Client

    return Client(app["url"], auth=("admin", "admin"), verbose=False)


def generate(client, box: str):
    return client.predict(birads="4", density="C", view="MLO", laterality="L", lesion="mass", box=box, seed=1,
                          steps=2, guidance=3.0, sampler="dpm", num_images=1, api_name="/generate")


@pytest.mark.parametrize("box, reason", WRONG_BOXES)
def test_the_api_refuses_a_wrong_box_and_makes_no_image(app, admin, box, reason):
    from gradio_client.exceptions import AppError

    before = sorted((app["temp"] / "generated").glob("*/*.dcm"))
    with pytest.raises(AppError) as info:
        generate(admin, box)
    assert "box" in str(info.value) and reason in str(info.value) and "Traceback" not in str(info.value)
    assert sorted((app["temp"] / "generated").glob("*/*.dcm")) == before


def test_the_api_puts_an_empty_box_at_the_default_place(admin):
    from mammosynth.conditions import DEFAULT_LESION_BOX

    details = generate(admin, "")[3]
    assert details["conditions"]["box"] == pytest.approx(list(DEFAULT_LESION_BOX))
