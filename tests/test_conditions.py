"""The §7 vocabulary: parsing, validation, encoding, orientation."""

from __future__ import annotations

import numpy as np
import pytest

from mammosynth.conditions import (
    DEFAULT_LESION_BOX,
    NUM_CLASSES,
    Box,
    ConditionError,
    Conditions,
    Density,
    Laterality,
    Lesion,
    View,
    box_mask,
    canonical_box,
    parse_birads,
    parse_box,
    parse_density,
    parse_finding_categories,
    parse_lesion,
    primary_lesion,
)


@pytest.mark.parametrize("text,expected", [("BI-RADS 4", 4), ("BI-RADS 1", 1), (5, 5), ("3", 3), (2.0, 2), ("birads5", 5)])
def test_parse_birads_vindr_strings(text, expected):
    assert parse_birads(text) == expected


@pytest.mark.parametrize("bad", ["BI-RADS 6", "BI-RADS 0", 0, "four", 4.5, True])
def test_parse_birads_rejects(bad):
    with pytest.raises(ConditionError, match="birads"):
        parse_birads(bad)


def test_parse_density_and_unspecified():
    assert parse_density("DENSITY C") is Density.C
    assert parse_density("b") is Density.B
    for word in (None, "", "any", "ANY", float("nan")):
        assert parse_density(word) is None
    with pytest.raises(ConditionError, match="density must be one of 'A', 'B', 'C', 'D'"):
        parse_density("DENSITY E")


def test_parse_lesion_accepts_vindr_categories():
    assert parse_lesion("Mass") is Lesion.MASS
    assert parse_lesion("Suspicious Calcification") is Lesion.CALCIFICATION
    assert parse_lesion("Focal Asymmetry") is Lesion.ASYMMETRY
    assert parse_lesion("architectural distortion") is Lesion.ARCHITECTURAL_DISTORTION
    assert parse_lesion("No Finding") is Lesion.NONE
    assert parse_lesion("none") is Lesion.NONE
    assert parse_lesion("any") is None
    with pytest.raises(ConditionError, match="lesion must be one of"):
        parse_lesion("tumour")


def test_parse_finding_categories_stringified_lists():
    assert parse_finding_categories("['Mass', 'Skin Retraction']") == ["Mass", "Skin Retraction"]
    assert parse_finding_categories("['No Finding']") == ["No Finding"]
    assert parse_finding_categories("Mass") == ["Mass"]
    assert parse_finding_categories("") == []
    with pytest.raises(ConditionError):
        parse_finding_categories("['Mass'")


def test_primary_lesion_priority():
    assert primary_lesion([Lesion.ASYMMETRY, "mass"]) is Lesion.MASS
    assert primary_lesion([]) is Lesion.NONE
    assert primary_lesion(["none", None]) is Lesion.NONE


@pytest.mark.parametrize(
    "bad,match",
    [
        ("0.5,0.5,0.4,0.6", "x0 < x1"),
        ("0.1,0.1,1.2,0.3", "outside the image"),
        ("-0.1,0.1,0.2,0.3", "outside the image"),
        ("0.1,0.2,0.3", "4 numbers"),
        ("a,b,c,d", "4 numbers"),
    ],
)
def test_box_errors(bad, match):
    with pytest.raises(ConditionError, match=match):
        parse_box(bad)


def test_create_rules():
    with pytest.raises(ConditionError, match="BI-RADS 1"):
        Conditions.create(birads=1, lesion="mass")
    with pytest.raises(ConditionError, match="without a lesion type"):
        Conditions.create(lesion="none", box="0.1,0.1,0.2,0.2")
    with pytest.raises(ConditionError, match="without a lesion type"):
        Conditions.create(box="0.1,0.1,0.2,0.2")
    c = Conditions.create(birads=1, lesion="none", density="A")
    assert c.box is None and c.cancer is False


def test_default_box_for_lesion_follows_laterality():
    left = Conditions.create(lesion="mass", laterality="L")
    right = Conditions.create(lesion="mass", laterality="R")
    assert left.box.as_tuple() == DEFAULT_LESION_BOX
    assert right.box == Box(*DEFAULT_LESION_BOX).mirrored()
    # Both land on the same canonical location.
    assert left.canonical_box() == right.canonical_box() == Box(*DEFAULT_LESION_BOX)


def test_canonical_box_is_an_involution():
    box = Box(0.1, 0.2, 0.3, 0.5)
    assert canonical_box(canonical_box(box, "R"), "R") == box
    assert canonical_box(box, "L") == box
    assert canonical_box(box, None) == box
    assert canonical_box(box, Laterality.R) == Box(0.7, 0.2, 0.9, 0.5)


def test_encode_decode_round_trip_and_sizes():
    c = Conditions.create(birads=4, density="D", view="MLO", laterality="R", lesion="calcification", box=(0.5, 0.5, 0.6, 0.6))
    codes = c.encode()
    assert codes == {"birads": 4, "density": 4, "view": 2, "laterality": 2, "lesion": 3}
    for field, code in codes.items():
        assert 0 <= code < NUM_CLASSES[field]
    assert Conditions.decode(codes, box=c.box) == c
    assert Conditions.create().encode() == dict.fromkeys(codes, 0)


def test_dict_round_trip_and_unknown_keys():
    c = Conditions.create(birads="BI-RADS 5", density="C", view=View.CC, laterality="left", lesion="mass", box="0.4,0.3,0.6,0.5")
    assert Conditions.from_dict(c.to_dict()) == c
    assert c.to_dict()["density"] == "C"
    with pytest.raises(ConditionError, match="unknown condition field"):
        Conditions.from_dict({"birads": 2, "colour": "red"})


def test_mask_is_in_canonical_frame():
    c = Conditions.create(lesion="mass", laterality="R", box=(0.75, 0.0, 1.0, 0.5))
    mask = c.mask(8, 8)
    # The displayed box is at the right; in the canonical frame it is at the left.
    assert mask[:4, :2].all() and mask[:, 2:].sum() == 0 and mask[4:].sum() == 0
    assert box_mask([], 4, 4).sum() == 0


def test_box_pixels_round_trip():
    box = Box.from_pixels((10, 20, 30, 60), height=100, width=50)
    assert box.as_tuple() == pytest.approx((0.2, 0.2, 0.6, 0.6))
    assert box.to_pixels(100, 50) == (10, 20, 30, 60)
    tiny = Box(0.5, 0.5, 0.5001, 0.5001).to_pixels(10, 10)
    assert tiny[2] > tiny[0] and tiny[3] > tiny[1]
    assert np.isclose(Box.from_pixels((-5, -5, 500, 500), 100, 50).x1, 1.0)
