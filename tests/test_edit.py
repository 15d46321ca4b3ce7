"""Lesion insertion ("edit", issue 22.3): the pipeline method, the upload path and ``mammosynth edit``.

Tiny random pipelines make noise, not lesions: these tests check the contract (what may change,
what must not, the gate, the files and the errors), not the quality (benchmarks/bench_edit.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import PHI, breast_image, write_mg_dicom
from mammosynth.conditions import Box, ConditionError
from mammosynth.data.export import EditRecipe, read_png16, read_recipe, write_png16, write_recipe
from mammosynth.data.upload import EditInputError, load_for_edit
from mammosynth.pipelines.inpainting import default_margin, edit_region
from mammosynth.pipelines.pipeline_mammo_ldm import PrivacyGateMissingError, load_pipeline
from mammosynth.pipelines.testing import tiny_pipeline

H, W = 64, 48
BOX = "0.05,0.35,0.40,0.65"  # on the breast of a left (chest wall left) frame


def frame(side: str = "left", seed: int = 0) -> np.ndarray:
    """A 16-bit displayed 'breast' at the tiny model's size (chest wall at ``side``)."""
    return breast_image(H, W, side, np.random.default_rng(seed)).astype(np.uint16) * 16


def outside(box: Box, margin: int) -> np.ndarray:
    """Pixels farther than ``margin`` from ``box`` (computed here, not by the code under test)."""
    x0, y0, x1, y1 = box.to_pixels(H, W)
    keep = np.ones((H, W), bool)
    keep[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = False
    return keep


@pytest.mark.parametrize("side, laterality, box", [("left", "L", BOX), ("right", "R", "0.60,0.35,0.95,0.65")])
def test_edit_keeps_every_pixel_outside_the_box_and_margin_and_changes_the_box(tiny_pipe, side, laterality, box):
    image = frame(side)
    out = tiny_pipe.edit(image, lesion="mass", box=box, laterality=laterality, num_inference_steps=3,
                         generator=torch.Generator().manual_seed(0))
    edited, mask = out.images[0], out.masks[0]
    assert edited.dtype == np.uint16 and edited.shape == (H, W)
    keep = outside(Box(*map(float, box.split(","))), default_margin(H))
    assert np.array_equal(edited[keep], image[keep])  # bit for bit away from the margin
    assert np.array_equal(edited[mask == 0], image[mask == 0])
    x0, y0, x1, y1 = Box(*map(float, box.split(","))).to_pixels(H, W)
    assert (edited[y0:y1, x0:x1] != image[y0:y1, x0:x1]).mean() > 0.9  # the box is regenerated
    assert out.conditions[0].lesion.value == "mass" and out.privacy is None  # ungated on purpose


def test_edit_is_deterministic_for_a_seed_and_differs_between_seeds(tiny_pipe):
    image = frame()
    run = lambda seed: tiny_pipe.edit(image, lesion="calcification", box=BOX, laterality="L", num_inference_steps=2,
                                      generator=torch.Generator().manual_seed(seed)).images[0]  # noqa: E731
    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_without_the_paste_latent_blending_alone_changes_pixels_outside_the_box(tiny_pipe):
    image = frame()
    kept = tiny_pipe.edit(image, lesion="mass", box=BOX, laterality="L", num_inference_steps=2,
                          generator=torch.Generator().manual_seed(0), paste=False).images[0]
    keep = outside(Box(0.05, 0.35, 0.40, 0.65), default_margin(H))
    assert not np.array_equal(kept[keep], image[keep])  # the VAE alone does not keep them: the paste does


def test_the_latent_region_covers_the_box_and_margin():
    region = edit_region(Box(0.3, 0.3, 0.6, 0.6), 256, 192, margin=8, vae_scale_factor=8)
    ys, xs = np.nonzero(region.changed)
    assert region.latent_mask[ys // 8, xs // 8].all()  # every pixel that may change is regenerated
    assert region.weights.max() == 1.0 and region.latent_mask.mean() < 0.5


def test_the_privacy_gate_judges_the_edited_image(tmp_path):
    from mammosynth.ui.testing import make_tiny_checkpoint

    pipe = load_pipeline(make_tiny_checkpoint(tmp_path / "ckpt"))
    image = frame()
    out = pipe.edit(image, lesion="mass", box=BOX, laterality="L", num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0))
    assert out.privacy is not None and len(out.privacy) == 1
    direct = pipe.privacy_checker.check(np.stack([out.images[0]]))[0]  # the result, not the input
    assert out.privacy[0].similarity == pytest.approx(direct.similarity)
    assert out.privacy[0].similarity != pytest.approx(pipe.privacy_checker.check(image[None])[0].similarity)


def test_an_edit_without_a_gate_is_refused_unless_disabled_on_purpose():
    gated = tiny_pipeline(requires_privacy_checker=True)
    with pytest.raises(PrivacyGateMissingError, match="no privacy checker"):
        gated.edit(frame(), lesion="mass", box=BOX, laterality="L", num_inference_steps=1)


@pytest.mark.parametrize("image, kwargs, message", [
    (np.zeros((32, 48), np.uint16), {}, r"`image` has to be 64x48 \(the model's size\) but is 32x48"),
    (np.zeros((64, 48), np.uint8), {}, r"16-bit \(uint16\) grayscale array \(H, W\) but is uint8"),
    ("frame", {"box": "0.80,0.02,0.99,0.20"}, r"lies outside the breast: 0% of it is on breast tissue"),
    ("frame", {"box": "0.1,0.2,1.3,0.5"}, r"outside the image: every coordinate must be in \[0, 1\]"),
    ("frame", {"lesion": "tumour"}, r"lesion must be one of 'none', 'mass'"),
    ("frame", {"lesion": "none"}, r"a lesion box was given without a lesion type"),
    ("frame", {"lesion": None, "box": None}, r"an edit inserts a lesion: `lesion` has to be one of 'mass'"),
])
def test_bad_edit_inputs_are_refused_saying_what_was_expected(tiny_pipe, image, kwargs, message):
    image = frame() if isinstance(image, str) else image
    args = {"lesion": "mass", "box": BOX, **kwargs}
    with pytest.raises(ValueError, match=message):
        tiny_pipe.edit(image, laterality="L", num_inference_steps=1, **args)


# ---- uploads: the ingest's path ---------------------------------------------------------------


def test_a_dicom_upload_goes_through_the_ingest_and_a_box_follows_the_crop(tmp_path):
    stored = breast_image(200, 160, "right", np.random.default_rng(1))  # a right breast, chest wall at the right
    path = write_mg_dicom(tmp_path / "r.dcm", stored, laterality="R", view="MLO", window=(2048, 4096), phi=PHI)
    source = load_for_edit(path, (H, W))
    assert source.kind == "uploaded-dicom" and (source.laterality, source.view) == ("R", "MLO")
    assert source.frame.shape == (H, W) and source.frame.dtype == np.uint16
    assert source.frame[:, -4:].mean() > source.frame[:, :4].mean()  # displayed as stored: chest wall right
    box = source.frame_box("0.60,0.40,0.90,0.60")  # near the chest wall of the stored image
    assert box.x1 > 0.8  # ... stays near the chest wall (the right edge) of the displayed frame
    with pytest.raises(ConditionError, match="outside the breast"):
        source.frame_box("0.00,0.00,0.05,0.05")


def test_uploads_that_cannot_be_edited_are_refused_naming_the_file(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((64, 48), np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(EditInputError, match=r"eight.png: a 8-bit grayscale PNG; expected a 16-bit grayscale PNG"):
        load_for_edit(tmp_path / "eight.png", (H, W))
    write_png16(np.ones((40, 30), np.uint16), tmp_path / "small.png")
    with pytest.raises(EditInputError, match=r"small.png: the image is 40x30 pixels; expected 64x48"):
        load_for_edit(tmp_path / "small.png", (H, W))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(EditInputError, match="notes.txt: not a PNG or DICOM file"):
        load_for_edit(tmp_path / "notes.txt", (H, W))
    ct = write_mg_dicom(tmp_path / "ct.dcm", breast_image(64, 48, "left", np.random.default_rng(0)), modality="CT")
    with pytest.raises(ValueError, match=r"ct.dcm: \(0008,0060\) Modality is 'CT', expected 'MG'"):
        load_for_edit(ct, (H, W))


def test_a_generated_png_brings_its_conditions_from_the_recipe_beside_it(tmp_path, tiny_pipe):
    out = tiny_pipe(birads=1, density="D", view="CC", laterality="R", num_inference_steps=1,
                    generator=torch.Generator().manual_seed(0))
    from mammosynth.data.export import Recipe

    write_png16(out.images[0], tmp_path / "g.png")
    write_recipe(Recipe(conditions=out.conditions[0], seed=0, num_inference_steps=1, guidance_scale=3.0,
                        scheduler="dpm", checkpoint="tiny", height=H, width=W), tmp_path / "g.json")
    source = load_for_edit(tmp_path / "g.png", (H, W))
    assert source.kind == "generated" and (source.laterality, source.view) == ("R", "CC")
    assert source.conditions.density.value == "D" and source.frame_box(BOX) == Box(0.05, 0.35, 0.40, 0.65)
    from mammosynth.pipelines.editing import edit_conditions

    cond = edit_conditions(source, "mass", BOX)  # BI-RADS 1 + a lesion would contradict: it is dropped
    assert cond.birads is None and cond.density.value == "D" and cond.lesion.value == "mass"


# ---- mammosynth edit ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mammosynth.ui.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("edit") / "ckpt")


def run_cli(*argv: str) -> int:
    from mammosynth.cli import main

    return main(["edit", *map(str, argv)])


def test_cli_edits_a_png_and_writes_png_recipe_and_input(tmp_path, checkpoint, capsys):
    image = frame()
    write_png16(image, tmp_path / "in.png")
    assert run_cli("--checkpoint", checkpoint, "--image", tmp_path / "in.png", "--lesion", "mass", "--box", BOX,
                   "--out", tmp_path / "out", "--steps", 2, "--seed", 7) == 0
    edited = read_png16(tmp_path / "out" / "edit_seed000007.png")
    assert np.array_equal(read_png16(tmp_path / "out" / "input.png"), image)
    keep = outside(Box(0.05, 0.35, 0.40, 0.65), default_margin(H))
    assert np.array_equal(edited[keep], image[keep]) and not np.array_equal(edited, image)
    recipe = read_recipe(tmp_path / "out" / "edit_seed000007.json")
    assert isinstance(recipe, EditRecipe) and recipe.source == "uploaded-png" and recipe.seed == 7
    assert recipe.conditions.lesion.value == "mass" and recipe.conditions.laterality.value == "L"  # side from tissue
    assert recipe.privacy is not None and set(recipe.privacy) == {"flagged", "similarity", "threshold", "checker"}
    assert "latent blending" in recipe.method and recipe.margin == default_margin(H)
    with pytest.raises(ValueError, match="cannot make its image alone"):
        recipe.pipeline_kwargs()


def test_cli_edits_a_dicom_through_the_ingest_and_writes_a_dicom_without_phi(tmp_path, checkpoint):
    import pydicom

    stored = breast_image(200, 160, "left", np.random.default_rng(3))
    path = write_mg_dicom(tmp_path / "in.dcm", stored, laterality="L", view="CC", window=(2048, 4096), phi=PHI)
    assert run_cli("--checkpoint", checkpoint, "--image", path, "--lesion", "asymmetry", "--box", "0.10,0.35,0.45,0.60",
                   "--out", tmp_path / "out", "--steps", 2, "--dicom") == 0
    out = tmp_path / "out"
    image, edited = read_png16(out / "input.png"), read_png16(out / "edit_seed000000.png")
    recipe = read_recipe(out / "edit_seed000000.json")
    assert recipe.source == "uploaded-dicom" and recipe.box_in_input == [0.10, 0.35, 0.45, 0.60]
    keep = outside(recipe.conditions.box, recipe.margin)
    assert np.array_equal(edited[keep], image[keep]) and not np.array_equal(edited, image)
    ds = pydicom.dcmread(out / "edit_seed000000.dcm")
    assert np.array_equal(ds.pixel_array, edited)
    assert ds.ConversionType == "SYN" and ds.Modality == "MG" and ds.ImageLaterality == "L"
    assert "EDITED" in ds.SeriesDescription and "uploaded mammogram" in ds.DerivationDescription
    assert "SYNTHETIC LESION" in ds.StudyDescription
    raw = b"".join(p.read_bytes() for p in out.iterdir())
    for value in PHI.values():  # nothing identifying of the uploaded study leaves with the edit
        assert value.encode() not in raw
    assert ds.StudyInstanceUID not in path.read_bytes().decode("latin-1")


@pytest.mark.parametrize("args, message", [
    (["--lesion", "tumour"], "mammosynth edit: error: lesion must be one of"),
    (["--box", "0.1,0.2,0.3"], "box must have 4 numbers x0,y0,x1,y1 in [0, 1]"),
    (["--box", "0.85,0.02,0.99,0.15"], "lies outside the breast"),
])
def test_cli_errors_are_one_clear_line(tmp_path, checkpoint, capsys, args, message):
    write_png16(frame(), tmp_path / "in.png")
    base = {"--lesion": "mass", "--box": BOX}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["--checkpoint", checkpoint, "--image", tmp_path / "in.png", "--out", tmp_path / "out", "--steps", 1]
    assert run_cli(*argv, *[x for kv in base.items() for x in kv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_8_bit_png_naming_it(tmp_path, checkpoint, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(tmp_path / "photo.png")
    assert run_cli("--checkpoint", checkpoint, "--image", tmp_path / "photo.png", "--lesion", "mass", "--box", BOX,
                   "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "photo.png: a 8-bit RGB PNG; expected a 16-bit grayscale PNG (mode I;16)" in err


# ---- the app's Edit tab, through its API ----------------------------------------------------------


def test_the_app_edit_endpoint_inserts_a_lesion_gated_and_refuses_bad_files(tmp_path, checkpoint):
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from test_app_api import launch

    demo, url, services = launch(tmp_path, checkpoint, None, demo_study=False)
    try:
        image = frame()
        write_png16(image, tmp_path / "in.png")
        c = Client(url, auth=("admin", "admin") if services.accounts.enabled else None, verbose=False)
        gallery, verdict, files, details = c.predict(handle_file(str(tmp_path / "in.png")), "mass", BOX, 3, 2, 3.0,
                                                     "dpm", api_name="/edit")
        assert len(gallery) == 2 and "Privacy:** ✓ pass" in verdict
        png = next(f for f in files if f.endswith(".png"))
        edited = read_png16(png)
        keep = outside(Box(0.05, 0.35, 0.40, 0.65), default_margin(H))
        assert np.array_equal(edited[keep], image[keep]) and not np.array_equal(edited, image)
        assert details["recipe"]["format"] == "mammosynth-edit/1" and details["recipe"]["seed"] == 3
        assert any(f.endswith(".dcm") for f in files) and any(f.endswith(".json") for f in files)
        with pytest.raises(AppError, match="lies outside the breast"):
            c.predict(handle_file(str(tmp_path / "in.png")), "mass", "0.85,0.02,0.99,0.15", 3, 2, 3.0, "dpm",
                      api_name="/edit")
        from PIL import Image

        Image.fromarray(np.zeros((64, 48), np.uint8)).save(tmp_path / "eight.png")
        with pytest.raises(AppError, match="8-bit grayscale PNG; expected a 16-bit grayscale PNG"):
            c.predict(handle_file(str(tmp_path / "eight.png")), "mass", BOX, 3, 2, 3.0, "dpm", api_name="/edit")
    finally:
        demo.close()
