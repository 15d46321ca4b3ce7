"""The app through its public API (gradio_client): every endpoint, auth, roles and blinding.

One server (tiny random checkpoint, tiny study) is launched for the module on a free port of
127.0.0.1 with ``prevent_thread_lock=True``; clients log in like a browser does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

STEPS = 3


def launch(tmp: Path, checkpoint: Path, study: Path | None, **config):
    """Launch the app; returns (demo, url, services)."""
    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import serve_app

    cfg = AppConfig(checkpoint=checkpoint, study=study, work_dir=tmp / "work", temp_dir=tmp / "temp", **config)
    return serve_app(cfg)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from mammosynth.ui.testing import make_tiny_checkpoint, make_tiny_study

    tmp = tmp_path_factory.mktemp("app")
    checkpoint = make_tiny_checkpoint(tmp / "checkpoint")
    (checkpoint / "reports").mkdir()
    (checkpoint / "reports" / "privacy_audit.json").write_text(json.dumps({"reid_map_at_r": 0.005}))
    study = make_tiny_study(tmp / "study", tmp / "study-src")
    demo, url, services = launch(tmp, checkpoint, study)
    yield {"url": url, "services": services, "study": study, "checkpoint": checkpoint, "tmp": tmp}
    demo.close()


def client(app, user: str) -> Client:
    return Client(app["url"], auth=(user, user), verbose=False)


@pytest.fixture(scope="module")
def reader1(app):
    return client(app, "reader1")


@pytest.fixture(scope="module")
def maker(app):
    """The account that generates: while a study runs, readers may not (blinding), admins may."""
    return client(app, "admin")


def generate(c: Client, **overrides):
    args = dict(birads="4", density="C", view="MLO", laterality="R", lesion="mass", box="0.50,0.40,0.70,0.60",
                seed=42, steps=STEPS, guidance=3.0, sampler="dpm", num_images=1)
    args.update(overrides)
    return c.predict(**args, api_name="/generate")


# ---- auth ---------------------------------------------------------------------------------------


def test_every_endpoint_needs_a_login(app):
    import httpx

    with pytest.raises(Exception):
        Client(app["url"], verbose=False)
    with pytest.raises(Exception):
        Client(app["url"], auth=("reader1", "wrong password"), verbose=False)
    # the raw HTTP API refuses too
    response = httpx.post(app["url"] + "gradio_api/call/study_next", json={"data": []}, timeout=10)
    assert response.status_code in (401, 403)


def test_api_names_are_stable(reader1):
    endpoints = reader1.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/study_next", "/study_answer", "/study_progress", "/results"} <= set(endpoints)
    # the API-only endpoints keep their parameters and their outputs (a file and a dict, not one list)
    assert [p["parameter_name"] for p in endpoints["/study_answer"]["parameters"]] == [
        "case_id", "answer", "confidence", "birads", "seconds_on_case"]
    assert {name: len(endpoints[name]["returns"]) for name in ("/study_next", "/study_answer", "/study_progress",
                                                               "/results")} == {
        "/study_next": 2, "/study_answer": 2, "/study_progress": 1, "/results": 2}


# ---- generate -----------------------------------------------------------------------------------


def test_generate_returns_images_verdicts_and_16_bit_downloads(app, maker):
    from mammosynth.data.export import read_png16, read_recipe

    gallery, verdicts, files, details, centre, width, neighbours, banner = generate(maker, num_images=2)
    assert len(gallery) == 2 and all(Path(item["image"]).suffix == ".png" for item in gallery)
    assert "privacy" in gallery[0]["caption"] and "seed 42" in gallery[0]["caption"]
    assert "| 1 | 42 | ✓ pass |" in verdicts and "| 2 | 43 |" in verdicts
    names = sorted(Path(f).name for f in files)
    assert names == sorted([f"mammosynth_RMLO_seed{s}.{e}" for s in (42, 43) for e in ("png", "dcm", "json")]
                           + ["mammosynth_study.zip"])
    png = next(Path(f) for f in files if f.endswith("seed42.png"))
    frame = read_png16(png)
    assert frame.dtype == np.uint16 and frame.shape == (64, 48)
    recipe = read_recipe(next(f for f in files if f.endswith("seed42.json")))
    assert recipe.seed == 42 and recipe.conditions.lesion.value == "mass" and recipe.privacy["flagged"] is False
    assert details["images"][1]["seed"] == 43 and details["sampler"] == "dpm"
    assert 0 <= centre <= 100 and 0 < width <= 200
    assert neighbours == []  # not shown unless --show-neighbours


def test_the_dicom_download_is_valid_and_synthetic(maker):
    import pydicom

    files = generate(maker, num_images=2)[2]
    path, other = [f for f in files if f.endswith(".dcm")]
    ds = pydicom.dcmread(path)
    assert ds.ConversionType == "SYN" and "seed 42" in ds.DerivationDescription and ds.ImageLaterality == "R"
    assert ds.Modality == "MG" and ds.ViewPosition == "MLO" and ds.ViewCodeSequence[0].CodeValue == "399368009"
    assert pydicom.dcmread(other).StudyInstanceUID == ds.StudyInstanceUID, "one generation is one study"
    if shutil.which("dciodvfy"):
        result = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
        assert result.returncode == 0 and "Error" not in result.stdout + result.stderr


def test_the_json_recipe_makes_the_same_image_again(maker):
    from mammosynth.data.export import read_png16, read_recipe

    first = generate(maker, seed=-1, sampler="unipc")
    recipe = read_recipe(next(f for f in first[2] if f.endswith(".json")))
    c = recipe.conditions
    again = generate(maker, birads=str(c.birads), density=c.density.value, view=c.view.value,
                     laterality=c.laterality.value, lesion=c.lesion.value,
                     box=",".join(map(str, c.box.as_tuple())), seed=recipe.seed, steps=recipe.num_inference_steps,
                     guidance=recipe.guidance_scale, sampler=recipe.scheduler)
    a = read_png16(next(f for f in first[2] if f.endswith(".png")))
    b = read_png16(next(f for f in again[2] if f.endswith(".png")))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("overrides, message", [
    (dict(birads="1", lesion="mass"), "BI-RADS 1"),
    (dict(box="0.5,0.4,1.7,0.6"), "outside the image"),
    (dict(lesion="none"), "without a lesion type"),
    (dict(steps=0), "less than minimum value 1"),
    (dict(sampler="magic"), "sampler must be one of"),
    (dict(birads="9"), "birads must be one of 1..5"),
])
def test_invalid_input_is_explained_not_a_trace(maker, overrides, message):
    with pytest.raises(AppError) as info:
        generate(maker, **overrides)
    assert message in str(info.value) and "Traceback" not in str(info.value)


def test_a_missing_checkpoint_is_a_message_not_a_crash(app, tmp_path):
    demo, url, _ = launch(tmp_path, tmp_path / "no-such-checkpoint", app["study"])
    try:
        with pytest.raises(AppError, match="does not exist"):
            generate(Client(url, auth=("admin", "admin"), verbose=False))
        c = Client(url, auth=("reader1", "reader1"), verbose=False)
        assert c.predict(api_name="/study_progress")["total"] == 16  # the rest of the app still works
    finally:
        demo.close()


def test_a_checkpoint_without_a_gate_is_refused_unless_the_operator_opts_out(tmp_path):
    import app as app_py
    from mammosynth.conditions import Conditions
    from mammosynth.ui.generate import verdict_table
    from mammosynth.ui.model import GenerationRequest
    from mammosynth.ui.services import AppConfig, create_services
    from mammosynth.ui.testing import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path / "ungated", privacy=False)
    request = GenerationRequest(conditions=Conditions.create(birads=4, lesion="mass"), seed=0, num_images=1,
                                num_inference_steps=2, guidance_scale=2.0, scheduler="dpm")
    config = dict(checkpoint=checkpoint, work_dir=tmp_path, temp_dir=tmp_path / "tmp", demo_study=False)
    gated = create_services(AppConfig(**config))
    with pytest.raises(ValueError, match="no privacy checker.*build-index.*--no-privacy-gate"):
        gated.model.generate(request)
    args = app_py.parse_args(["--checkpoint", str(checkpoint), "--no-privacy-gate"])
    assert app_py.config_from_args(args).privacy_gate is False
    ungated = create_services(AppConfig(**config, privacy_gate=False))
    images = ungated.model.generate(request)
    assert len(images) == 1 and images[0].verdict is None
    assert "**not** checked" in verdict_table(images)


def test_the_app_and_the_cli_record_the_same_checkpoint_fingerprint(app, maker, tmp_path):
    from mammosynth.cli import main as cli
    from mammosynth.data.export import read_recipe
    from mammosynth.pipelines.checkpoint import fingerprint

    expected = fingerprint(app["checkpoint"])
    from_app = read_recipe(next(f for f in generate(maker)[2] if f.endswith(".json")))
    assert cli(["sample", "--checkpoint", str(app["checkpoint"]), "--out", str(tmp_path), "--steps", "2"]) == 0
    from_cli = read_recipe(next(tmp_path.glob("*.json")))
    assert from_app.checkpoint_sha256 == from_cli.checkpoint_sha256 == expected
    assert app["services"].model.info()["fingerprint"] == expected
    # the checkpoint's reports are not part of the model (the app fixture wrote reports/privacy_audit.json)
    assert (app["checkpoint"] / "reports").is_dir()


def test_condition_choices_are_the_vocabulary_of_mammosynth_conditions():
    from mammosynth import conditions
    from mammosynth.ui import choices
    from mammosynth.ui.generate import PRESETS

    def values(options):
        return [value for _, value in options]

    assert choices.ANY in conditions.UNSPECIFIED_WORDS
    assert values(choices.BIRADS_CHOICES) == [choices.ANY, *map(str, conditions.BIRADS_VALUES)]
    for options, vocabulary in ((choices.DENSITY_CHOICES, conditions.Density), (choices.VIEW_CHOICES, conditions.View),
                                (choices.LATERALITY_CHOICES, conditions.Laterality),
                                (choices.LESION_CHOICES, conditions.Lesion)):
        assert values(options) == [choices.ANY, *(member.value for member in vocabulary)]
    assert values(choices.BIRADS_ASSESSMENT_CHOICES)[1:] == list(map(str, conditions.BIRADS_VALUES))
    for _, *fields, box in PRESETS:
        conditions.Conditions.create(**dict(zip(("birads", "density", "view", "laterality", "lesion"), fields)),
                                     box=box)


# ---- the reader study ---------------------------------------------------------------------------


def test_a_reader_answers_and_resumes_after_logging_in_again(app):
    c = client(app, "reader2")
    image, case = c.predict(api_name="/study_next")
    assert case["position"] == 1 and case["total"] == 16 and Path(image).name == f"{case['case_id']}.png"
    for _ in range(3):
        image, nxt = c.predict(case["case_id"], "synthetic", 4, None, None, api_name="/study_answer")
        assert nxt["stored"]["case_id"] == case["case_id"]
        case = nxt
    assert case["position"] == 4
    again = client(app, "reader2")  # a new session (reload, other machine)
    assert again.predict(api_name="/study_next")[1]["case_id"] == case["case_id"]
    assert again.predict(api_name="/study_progress") == {"reader_id": "reader2", "answered": 3, "total": 16,
                                                         "label": "3 / 16", "done": False, "confidence_scale": "1-5"}
    # another reader sees only their own progress
    assert client(app, "reader3").predict(api_name="/study_progress")["answered"] == 0


def test_answers_are_checked_and_nothing_bad_is_stored(app):
    c = client(app, "reader3")
    case = c.predict(api_name="/study_next")[1]
    with pytest.raises(AppError, match="real' or 'synthetic"):
        c.predict(case["case_id"], "maybe", 3, None, None, api_name="/study_answer")
    with pytest.raises(AppError, match="confidence must be a whole number from 1 to 5"):
        c.predict(case["case_id"], "real", 9, None, None, api_name="/study_answer")
    with pytest.raises(AppError, match="not in the reading list"):
        c.predict("0123456789ab", "real", 3, None, None, api_name="/study_answer")
    with pytest.raises(AppError, match="does not ask for a BI-RADS"):
        c.predict(case["case_id"], "real", 3, 4, None, api_name="/study_answer")
    assert c.predict(api_name="/study_progress")["answered"] == 0


def test_roles_are_enforced_through_the_api(app, reader1):
    admin = client(app, "admin")
    with pytest.raises(AppError, match="Only study readers"):
        admin.predict(api_name="/study_next")
    with pytest.raises(AppError, match="Only study admins may see study results"):
        reader1.predict(api_name="/results")


def test_readers_may_not_generate_while_a_study_runs(app, reader1, maker):
    """Blinding (DESIGN §11): the generator would show readers the model's look before they read."""
    with pytest.raises(AppError, match="reader account and a blinded reader study is running.*"
                                       "--readers-may-generate") as info:
        generate(reader1)
    assert "Traceback" not in str(info.value)
    assert len(generate(maker)[0]) == 1  # admins may


def test_the_operator_may_let_readers_generate(app, tmp_path):
    import app as app_py
    from mammosynth.ui.auth import generator_refusal
    from mammosynth.ui.services import AppConfig, create_services

    assert app_py.config_from_args(app_py.parse_args([])).readers_may_generate is False
    assert app_py.config_from_args(app_py.parse_args(["--readers-may-generate"])).readers_may_generate is True
    config = dict(checkpoint=app["checkpoint"], study=app["study"], work_dir=tmp_path, temp_dir=tmp_path / "t")
    assert "blinded reader study" in generator_refusal(create_services(AppConfig(**config)), "reader1")
    allowed = create_services(AppConfig(**config, readers_may_generate=True))
    assert generator_refusal(allowed, "reader1") is None
    # without a study there is nothing to blind
    no_study = create_services(AppConfig(**{**config, "study": None}, demo_study=False,
                                         auth=app["study"] / "readers.csv"))
    assert generator_refusal(no_study, "reader1") is None and generator_refusal(no_study, "admin") is None


def test_admin_results_have_statistics_exports_and_checkpoint_reports(app):
    c = client(app, "reader1")
    case = c.predict(api_name="/study_next")[1]
    c.predict(case["case_id"], "real", 2, None, None, api_name="/study_answer")
    payload, files = client(app, "admin").predict(api_name="/results")
    analysis = payload["analysis"]
    assert analysis["study"]["n_answers"] >= 1 and "reader1" in analysis["per_reader"]
    assert payload["reports"]["privacy_audit.json"] == {"reid_map_at_r": 0.005}
    names = {Path(f).name for f in files}
    assert {"report.json", "report.md", "responses.csv", "imrmc.txt"} <= names
    imrmc = Path(next(f for f in files if f.endswith("imrmc.txt"))).read_text()
    assert "BEGIN DATA:" in imrmc


def test_blinded_payloads_are_identical_in_shape_format_and_metadata(app):
    """Everything study_next / study_answer sends for real and synthetic cases looks the same."""
    from mammosynth.study import Study

    truth = {c: e["truth"] for c, e in Study.open(app["study"]).key()["cases"].items()}  # the test's view only
    c = client(app, "reader1")
    image, case = c.predict(api_name="/study_next")
    seen: dict[str, list] = {"real": [], "synthetic": []}
    while not case["finished"]:
        data = Path(image).read_bytes()
        seen[truth[case["case_id"]]].append({
            "keys": tuple(sorted(case)), "types": tuple(type(case[k]).__name__ for k in sorted(case) if k != "stored"),
            "name_length": len(Path(image).name), "bytes": len(data), "header": data[:33], "suffix": Path(image).suffix,
        })
        assert set(case) <= {"case_id", "position", "total", "label", "finished", "stored", "confidence_scale"}
        assert truth[case["case_id"]] not in json.dumps(case)
        image, case = c.predict(case["case_id"], "real", 3, None, None, api_name="/study_answer")
    assert seen["real"] and seen["synthetic"]
    for field in ("types", "name_length", "bytes", "header", "suffix"):
        values = {str(item[field]) for group in seen.values() for item in group}
        assert len(values) == 1, f"{field} differs between cases: {values}"


def test_case_images_are_served_from_the_study_folder_as_stored(app):
    """No per-request copy or re-encoding: the reader gets the study's own bytes, the key stays blocked."""
    import httpx

    c = client(app, "reader3")
    image, case = c.predict(api_name="/study_next")
    stored = app["study"] / "cases" / f"{case['case_id']}.png"
    assert Path(image).read_bytes() == stored.read_bytes()
    with httpx.Client(base_url=app["url"].rstrip("/"), timeout=30) as http:
        assert http.get(f"/gradio_api/file={stored.resolve()}").status_code in (401, 403)  # not logged in
        assert http.post("/login", data={"username": "reader3", "password": "reader3"}).status_code == 200
        served = http.get(f"/gradio_api/file={stored.resolve()}")
        assert served.status_code == 200 and served.content == stored.read_bytes()
        key = (app["study"] / "key" / "truth.json").resolve()
        assert key.is_file() and http.get(f"/gradio_api/file={key}").status_code == 403
        # a real and a synthetic case come with the same headers (file times are random by design)
        from mammosynth.study import Study

        truth = {e["truth"]: c for c, e in Study.open(app["study"]).key()["cases"].items()}
        headers = []
        for case_id in (truth["real"], truth["synthetic"]):
            got = http.get(f"/gradio_api/file={(app['study'] / 'cases' / f'{case_id}.png').resolve()}")
            headers.append({k: v.replace(case_id, "ID") for k, v in got.headers.items()
                            if k not in ("date", "etag", "last-modified")})
        assert headers[0] == headers[1] and headers[0]["content-type"] == "image/png"


# ---- a study on the 0–100 confidence scale ------------------------------------------------------


@pytest.fixture(scope="module")
def app_0_100(app, tmp_path_factory):
    from mammosynth.ui.testing import make_tiny_study

    tmp = tmp_path_factory.mktemp("app-0-100")
    study = make_tiny_study(tmp / "study", tmp / "study-src", confidence_scale="0-100")
    demo, url, services = launch(tmp, app["checkpoint"], study)
    yield {"url": url, "study": study}
    demo.close()


def test_a_0_to_100_study_takes_any_whole_confidence_from_0_to_100(app_0_100):
    from mammosynth.study import Study

    c = client(app_0_100, "reader1")
    assert c.predict(api_name="/study_progress")["confidence_scale"] == "0-100"
    image, case = c.predict(api_name="/study_next")
    assert case["confidence_scale"] == "0-100"
    for bad, message in ((101, "from 0 to 100"), (-1, "from 0 to 100"), (12.5, "from 0 to 100"),
                         ("high", "from 0 to 100"), (None, "choose how confident you are, 0 to 100")):
        with pytest.raises(AppError, match=message):
            c.predict(case["case_id"], "real", bad, None, None, api_name="/study_answer")
    seen = []
    for confidence in (0, 73, 100):
        seen.append(case["case_id"])
        image, case = c.predict(case["case_id"], "synthetic", confidence, None, None, api_name="/study_answer")
        assert case["stored"]["case_id"] == seen[-1] and case["confidence_scale"] == "0-100"
    answers = Study.open(app_0_100["study"]).store.answers("reader1")
    assert [(a.case_id, a.confidence) for a in answers] == list(zip(seen, (0, 73, 100)))


# ---- nearest training images (--show-neighbours) -------------------------------------------------


@pytest.fixture(scope="module")
def neighbour_checkpoint(tmp_path_factory):
    """A checkpoint whose privacy index records its (tiny) training data, as a real one does."""
    from mammosynth.ui.testing import make_tiny_checkpoint

    tmp = tmp_path_factory.mktemp("neighbours")
    return make_tiny_checkpoint(tmp / "checkpoint", training_data=tmp / "training-data")


def training_thumbnails(checkpoint: Path) -> dict[str, np.ndarray]:
    """What a thumbnail of each training image looks like (8-bit, auto window), by image id."""
    from mammosynth.data.prepared import load_prepared
    from mammosynth.ui.display import apply_window, auto_window

    index_meta = json.loads((checkpoint / "privacy_checker" / "config.json").read_text())["index_meta"]
    data = load_prepared(index_meta["data"])
    frames = {r.image_id: np.asarray(data.images[int(r.index)]) for r in data.manifest.itertuples()}
    return {i: apply_window(f, auto_window(f)) for i, f in frames.items()}


@pytest.mark.parametrize("show", [True, False], ids=["with-show-neighbours", "without"])
def test_neighbour_thumbnails_only_with_show_neighbours(app, neighbour_checkpoint, tmp_path, monkeypatch, show):
    """With the flag, the verdict comes with the nearest training images; without, no training pixel leaves.

    The app's temp folder is outside the working directory and the system temp folder (as the
    default ~/.cache/mammosynth/tmp is), so its downloads must be allowed explicitly.
    """
    import tempfile

    from PIL import Image

    for name in ("cwd", "systemp"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systemp"))
    demo, url, _ = launch(tmp_path, neighbour_checkpoint, app["study"], show_neighbours=show)
    try:
        c = Client(url, auth=("admin", "admin"), verbose=False)
        gallery, verdicts, files, details, _, _, neighbours, _ = generate(c)
    finally:
        demo.close()
    thumbs = training_thumbnails(neighbour_checkpoint)
    assert "neighbours" not in details["images"][0]["privacy"]  # the recipe names no training image
    if show:  # ids and thumbnails, because the operator asked for them
        nearest = [item["caption"].removeprefix("training ") for item in neighbours]
        assert len(nearest) == 3 and all(f"`{nid}`" in verdicts for nid in nearest)
        for item, nid in zip(neighbours, nearest):
            full = [t for t in thumbs if t.startswith(nid)]
            assert len(full) == 1 and np.array_equal(np.asarray(Image.open(item["image"])), thumbs[full[0]])
    else:  # neither the ids nor the pixels
        assert neighbours == []
        assert not [t for t in thumbs if t[:10] in verdicts or t[:10] in json.dumps(details)]
        sent = [item["image"] for item in gallery] + [f for f in files if f.endswith(".png")]
        for path in sent:
            pixels = np.asarray(Image.open(path))
            assert not any(pixels.shape == t.shape and np.array_equal(pixels, t) for t in thumbs.values())
        assert not list((tmp_path / "temp").rglob("neighbour_*"))


def test_app_py_shows_neighbours_only_when_asked():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mammosynth_app_main", Path(__file__).parents[1] / "app.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    assert main.config_from_args(main.parse_args([])).show_neighbours is False
    assert main.config_from_args(main.parse_args(["--show-neighbours"])).show_neighbours is True


def test_without_a_study_the_demo_study_is_prepared_in_the_background(app, tmp_path):
    """``python app.py`` with no --study: demo accounts work at once; the study says it is preparing."""
    from mammosynth.ui.services import AppConfig, start_demo_study
    from mammosynth.ui.testing import serve_app

    cfg = AppConfig(checkpoint=app["checkpoint"], study=None, work_dir=tmp_path / "work", temp_dir=tmp_path / "t")
    demo, url, services = serve_app(cfg, start_demo=False)
    try:
        c = Client(url, auth=("reader1", "reader1"), verbose=False)
        with pytest.raises(AppError, match="No reader study is loaded"):
            c.predict(api_name="/study_next")
        thread = start_demo_study(services, studies=2, steps=2)
        assert services.studies.state == "preparing"
        with pytest.raises(AppError, match="Preparing the demo study"):
            c.predict(api_name="/study_next")
        thread.join(timeout=240)
        assert services.studies.state == "ready", services.studies.message
        image, case = c.predict(api_name="/study_next")
        assert case["position"] == 1 and case["total"] == 16 and Path(image).is_file()
        from mammosynth.study import Study

        key = Study.open(tmp_path / "work" / "demo-study").key()["cases"].values()
        assert sorted({e["truth"] for e in key}) == ["real", "synthetic"]
        assert all(e["dataset"].endswith(("real", "synthetic")) for e in key)
    finally:
        demo.close()
