"""PACS round-trip with a real Orthanc (issue 22.2): generate → STOW-RS → QIDO-RS → WADO-RS.

One Orthanc per module, started by :class:`mammosynth.pacs.orthanc.OrthancServer` on a free
port of 127.0.0.1 with a temporary storage folder and basic authentication, stopped at the
end. Skipped when the ``Orthanc`` binary is absent (CI installs it and fails instead).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammosynth.pacs.orthanc import INSTALL_HINT, find_orthanc, free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

if find_orthanc() is None:
    if os.environ.get("CI"):
        pytest.fail(f"the Orthanc binary is missing: CI must {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"the PACS round-trip needs Orthanc: {INSTALL_HINT}", allow_module_level=True)

from mammosynth.pacs.client import PacsClient, PacsError, redact_url, value  # noqa: E402
from mammosynth.pacs.orthanc import OrthancServer  # noqa: E402

USER, PASSWORD = "radiologist", "s3cret-Pw!"
#: Attributes that mark an image synthetic; the PACS must hand every one back unchanged.
MARKERS = ("ConversionType", "ImageType", "BurnedInAnnotation", "PatientName", "PatientID", "StudyDescription",
           "SeriesDescription", "DerivationDescription", "ImageComments", "Modality", "ImageLaterality",
           "ViewPosition", "PatientOrientation", "PixelSpacing", "StudyInstanceUID", "SeriesInstanceUID")


@pytest.fixture(scope="module")
def pacs():
    with OrthancServer(username=USER, password=PASSWORD) as server:
        yield server
    assert not server.folder.exists() if server.folder else True


@pytest.fixture(scope="module")
def study(tiny_pipe, tmp_path_factory):
    """Two images from the tiny pipeline (L-CC and R-MLO) exported as one synthetic study."""
    import torch

    from mammosynth.conditions import Conditions
    from mammosynth.data.export import Recipe
    from mammosynth.data.study import export_study

    images = []
    for seed, (view, side) in enumerate([("CC", "L"), ("MLO", "R")]):
        conditions = Conditions.create(view=view, laterality=side, birads=1, lesion="none")
        out = tiny_pipe(conditions=conditions, num_images=1, num_inference_steps=2,
                        generator=torch.Generator().manual_seed(seed))
        frame = np.asarray(out.images[0])
        images.append((frame, Recipe(conditions=conditions, seed=seed, num_inference_steps=2, guidance_scale=3.0,
                                     scheduler="dpm", checkpoint="tiny", height=frame.shape[0],
                                     width=frame.shape[1])))
    folder = tmp_path_factory.mktemp("pacs") / "study"
    return export_study(images, folder)


def client(pacs: OrthancServer, **kwargs) -> PacsClient:
    return PacsClient(pacs.dicomweb_url, **({"username": USER, "password": PASSWORD} | kwargs))


def test_round_trip_keeps_pixels_and_synthetic_markers(pacs, study):
    pacs_client = client(pacs)
    report = pacs_client.send(study.files)
    assert report.ok and report.sent == study.files, report.summary()
    found = [s for s in pacs_client.studies() if value(s, "0020000D") == study.study_uid]
    assert len(found) == 1 and value(found[0], "00100020") == study.patient_id
    assert value(found[0], "00081030").startswith("SYNTHETIC") and value(found[0], "00080061") == "MG"
    instances = pacs_client.instances(study.study_uid)
    assert len(instances) == len(study.files)
    sent = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in study.files}
    for item in instances:
        back = pacs_client.retrieve(study.study_uid, value(item, "0020000E"), value(item, "00080018"))
        original = sent[back.SOPInstanceUID]
        assert back.pixel_array.dtype == np.uint16 and np.array_equal(back.pixel_array, original.pixel_array)
        for keyword in MARKERS:
            assert back.get(keyword) == original.get(keyword), keyword
        assert back.ViewCodeSequence[0].CodeValue == original.ViewCodeSequence[0].CodeValue
        assert back.ConversionType == "SYN" and "SYNTHETIC" in back.SeriesDescription


def test_cli_send_and_list(pacs, study, capsys, monkeypatch):
    from mammosynth.cli import main

    monkeypatch.setenv("MAMMOSYNTH_PACS_PASSWORD", PASSWORD)
    assert main(["pacs", "send", "--url", pacs.dicomweb_url, "--username", USER, str(study.folder)]) == 0
    assert f"sent {len(study.files)} DICOM file(s)" in capsys.readouterr().out
    assert main(["pacs", "list", "--url", pacs.dicomweb_url, "--username", USER]) == 0
    out = capsys.readouterr().out
    assert study.study_uid in out and study.patient_id in out and "SYNTHETIC MAMMOGRAM" in out
    assert PASSWORD not in out


@pytest.mark.parametrize("case", ["server down", "wrong password", "wrong URL"])
def test_errors_name_the_url_and_lose_nothing(pacs, study, case, capsys, monkeypatch):
    from mammosynth.cli import main

    url = {"server down": f"http://127.0.0.1:{closed_port()}/dicom-web",
           "wrong password": pacs.dicomweb_url, "wrong URL": pacs.url + "/not-dicomweb"}[case]
    words = {"server down": "cannot reach", "wrong password": "refused", "wrong URL": "not a DICOMweb endpoint"}[case]
    monkeypatch.setenv("MAMMOSYNTH_PACS_PASSWORD", "wrong" if case == "wrong password" else PASSWORD)
    before = {f: f.read_bytes() for f in study.files}
    assert main(["pacs", "send", "--url", url, "--username", USER, *map(str, study.files)]) == 1
    err = capsys.readouterr().err
    assert url in err and words in err and "nothing was lost" in err and str(study.files[0]) in err
    assert {f: f.read_bytes() for f in study.files} == before
    assert main(["pacs", "list", "--url", url, "--username", USER]) == 2
    assert url in capsys.readouterr().err


def closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_credentials_in_the_url_are_used_and_never_shown(pacs, study):
    url = pacs.dicomweb_url.replace("http://", f"http://{USER}:{PASSWORD}@")
    assert PASSWORD not in redact_url(url)
    pacs_client = PacsClient(url)
    assert pacs_client.url == pacs.dicomweb_url and PASSWORD not in pacs_client.url
    assert any(value(s, "0020000D") for s in pacs_client.studies())
    with pytest.raises(PacsError) as info:
        PacsClient(url.replace(PASSWORD, "nope")).studies()
    assert "nope" not in str(info.value) and pacs.dicomweb_url in str(info.value)


def test_orthanc_answers_loopback_only_and_needs_the_password(pacs):
    import requests

    assert requests.get(pacs.url + "/system", timeout=5).status_code == 401
    assert requests.get(pacs.url + "/system", auth=(USER, PASSWORD), timeout=5).status_code == 200
    config = pacs.configuration()
    assert config["RemoteAccessAllowed"] is False and config["DicomServerEnabled"] is False
    assert (pacs.folder / "orthanc.json").stat().st_mode & 0o077 == 0, "the config holds the password"


def test_app_send_to_pacs(pacs, tmp_path, tiny_pipe):
    """The Generate tab's button: what it sends is this session's last generation, as one study."""
    from mammosynth.ui.model import GeneratedImage, write_batch_outputs
    from mammosynth.ui.pacs import send_to_pacs
    from mammosynth.ui.services import AppConfig, create_services

    config = AppConfig(checkpoint=tmp_path / "none", work_dir=tmp_path / "work", temp_dir=tmp_path / "temp",
                       demo_study=False, pacs_url=pacs.dicomweb_url)
    services = create_services(config, loader=lambda _: tiny_pipe)
    assert pacs.dicomweb_url not in repr(config), "the URL may hold credentials: kept out of repr"
    assert "Generate images first" in send_to_pacs(services, [])
    folder = Path(config.temp_dir) / "generated" / "one"
    images = [GeneratedImage(frame, r, None) for frame, r in _two_images()]
    batch = write_batch_outputs(images, folder)
    items = [{"png16": str(paths["png"]), "caption": ""} for paths in batch.images]
    assert "wrong or missing" in send_to_pacs(services, items, USER, "wrong")
    message = send_to_pacs(services, items, USER, PASSWORD)
    assert message.startswith("✓ **Sent** 2 DICOM file(s)") and PASSWORD not in message
    study_uid = pydicom.dcmread(batch.images[0]["dicom"]).StudyInstanceUID
    assert len(client(pacs).instances(study_uid)) == 2
    outside = tmp_path / "elsewhere.png"
    (tmp_path / "elsewhere.dcm").write_bytes(batch.images[0]["dicom"].read_bytes())
    assert "Generate images first" in send_to_pacs(services, [{"png16": str(outside)}], USER, PASSWORD)


def _two_images():
    from mammosynth.conditions import Conditions
    from mammosynth.data.export import Recipe

    rng = np.random.default_rng(1)
    for seed, view in enumerate(("CC", "MLO")):
        conditions = Conditions.create(view=view, laterality="L")
        frame = (rng.random((64, 48)) * 65535).astype(np.uint16)
        yield frame, Recipe(conditions=conditions, seed=seed, num_inference_steps=2, guidance_scale=3.0,
                            scheduler="dpm", checkpoint="tiny", height=64, width=48)


def test_app_has_the_button_only_with_a_pacs_url(tmp_path, tiny_pipe):
    from mammosynth.ui.app import build_app
    from mammosynth.ui.services import AppConfig, create_services

    def ids(pacs_url):
        config = AppConfig(checkpoint=tmp_path / "none", work_dir=tmp_path / "w", temp_dir=tmp_path / "t",
                           demo_study=False, pacs_url=pacs_url)
        demo = build_app(create_services(config, loader=lambda _: tiny_pipe))
        return {getattr(block, "elem_id", None) for block in demo.blocks.values()}

    assert "gen-pacs-send" in ids("http://127.0.0.1:9/dicom-web")
    assert "gen-pacs-send" not in ids(None)
    with pytest.raises(PacsError, match="not an http"):
        ids("ftp://127.0.0.1/dicom-web")
