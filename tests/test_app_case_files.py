"""The study's case images over HTTP, as a reader's page fetches them (issue 23.7).

Case files are answered from memory by :class:`~mammosynth.ui.case_files.CaseFileMiddleware`,
past Gradio's file route: only to logged-in users, byte for byte the stored file, the same
headers for every case (no file times), and nothing outside ``cases/`` (the key stays blocked).
"""

from __future__ import annotations

import contextlib

import httpx
import pytest

from test_app_api import launch


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from mammosynth.ui.testing import make_tiny_checkpoint, make_tiny_study

    tmp = tmp_path_factory.mktemp("case-files")
    study = make_tiny_study(tmp / "study", tmp / "study-src")
    demo, url, _ = launch(tmp, make_tiny_checkpoint(tmp / "checkpoint"), study)
    yield {"url": url.rstrip("/"), "study": study}
    demo.close()


@contextlib.contextmanager
def _reader(url: str, user: str = "reader1"):
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/login", data={"username": user, "password": user}).raise_for_status()
        yield client


def _next(client: httpx.Client, session: str) -> tuple[str, dict]:
    response = client.post("/gradio_api/run/study_next", json={"data": [], "session_hash": session})
    response.raise_for_status()
    image, case = response.json()["data"]
    return image["url"], case


def test_a_logged_in_reader_gets_the_exact_case_file_with_blind_headers(app):
    with _reader(app["url"]) as client:
        url, case = _next(client, "s1")
        first = client.get(url)
        again = client.get(url)
        assert first.status_code == 200 and first.headers["content-type"] == "image/png"
        assert first.content == (app["study"] / "cases" / f"{case['case_id']}.png").read_bytes() == again.content
        assert "last-modified" not in first.headers and "etag" not in first.headers
        answered = client.post("/gradio_api/run/study_answer",
                               json={"data": [case["case_id"], "real", 3, None, None], "session_hash": "s1"})
        answered.raise_for_status()
        second = client.get(answered.json()["data"][0]["url"])
        assert second.status_code == 200
        assert {k: v for k, v in second.headers.items() if k != "content-disposition"} == \
            {k: v for k, v in first.headers.items() if k != "content-disposition"}


def test_no_login_no_case_file_and_the_key_stays_blocked(app):
    with _reader(app["url"]) as client:
        url, _ = _next(client, "s2")
        key = f"/gradio_api/file={app['study'].resolve() / 'key' / 'truth.json'}"
        assert client.get(key).status_code in (403, 404)
        sideways = url.replace("/cases/", "/cases/../key/").replace(".png", ".json")
        assert client.get(sideways).status_code in (403, 404)
    with httpx.Client(base_url=app["url"], timeout=60) as anonymous:
        refused = anonymous.get(url)
        assert refused.status_code in (401, 403) and not refused.content.startswith(b"\x89PNG")
        forged = anonymous.get(url, cookies={"access-token-x": "forged"})
        assert forged.status_code in (401, 403)
