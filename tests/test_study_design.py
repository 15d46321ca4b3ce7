"""Study design: label matching, reading orders, reader accounts and password hashes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mammosynth.study.design import allocate_strata, match_cases, reading_order, stratum_of
from mammosynth.study.errors import StudyError
from mammosynth.study.readers import check_password, hash_password, read_readers_csv


def _rows(counts: dict[tuple, int]) -> list[dict]:
    rows = []
    for (density, lesion, view, lat), n in counts.items():
        rows += [{"density": density, "lesion": lesion, "view": view, "laterality": lat}] * n
    return rows


def test_matching_gives_identical_label_mix():
    real = _rows({("A", "none", "CC", "L"): 30, ("B", "mass", "MLO", "R"): 10, ("C", "none", "CC", "R"): 5})
    synth = _rows({("A", "none", "CC", "L"): 8, ("B", "mass", "MLO", "R"): 40, ("D", "none", "CC", "L"): 9})
    r_idx, s_idx, report = match_cases(real, synth, 30, 0.5, np.random.default_rng(0))
    assert len(r_idx) == 15 and len(s_idx) == 15 and len(set(r_idx)) == 15
    mix_r = Counter(stratum_of(real[i]) for i in r_idx)
    mix_s = Counter(stratum_of(synth[i]) for i in s_idx)
    assert mix_r == mix_s  # unmatched strata (C…, D…) are never used
    assert report.max_proportion_difference == 0


def test_matching_with_unequal_fraction_keeps_proportions():
    real = _rows({("A", "none", "CC", "L"): 50, ("B", "mass", "MLO", "R"): 50})
    synth = _rows({("A", "none", "CC", "L"): 50, ("B", "mass", "MLO", "R"): 50})
    r_idx, s_idx, report = match_cases(real, synth, 40, 0.25, np.random.default_rng(1))
    assert (len(r_idx), len(s_idx)) == (30, 10)
    assert report.max_proportion_difference <= 0.1 + 1e-9


def test_matching_refuses_when_labels_cannot_be_matched():
    real = _rows({("A", "none", "CC", "L"): 50})
    synth = _rows({("A", "none", "CC", "L"): 3, ("D", "mass", "MLO", "R"): 50})
    with pytest.raises(ValueError, match="can be matched"):
        match_cases(real, synth, 20, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="between 0 and 1"):
        match_cases(real, synth, 20, 1.0, np.random.default_rng(0))


def test_allocate_strata_sums_and_caps():
    r, s = allocate_strata([5, 100, 0], [100, 5, 7], 10, 10)
    assert r.sum() == 10 and s.sum() == 10 and (r <= [5, 100, 0]).all() and (s <= [100, 5, 7]).all()
    assert r.tolist() == s.tolist()


def test_reading_order_is_deterministic_per_reader_and_spaces_repeats():
    ids = [f"{i:03x}" for i in range(40)]
    pairs = [("000", "027"), ("005", "013")]
    a1 = reading_order(ids, 7, "alice", pairs)
    assert a1 == reading_order(ids, 7, "alice", pairs)
    assert sorted(a1) == sorted(ids)
    assert a1 != reading_order(ids, 7, "bob", pairs)
    assert a1 != reading_order(ids, 8, "alice", pairs)
    pos = {c: i for i, c in enumerate(a1)}
    assert all(abs(pos[x] - pos[y]) >= 5 for x, y in pairs)


def test_password_hash_is_salted_and_verifies():
    h1, h2 = hash_password("s3cret"), hash_password("s3cret")
    assert h1 != h2 and h1.startswith("scrypt$") and "s3cret" not in h1
    assert check_password(h1, "s3cret") and not check_password(h1, "S3cret")
    assert not check_password("garbage", "s3cret")
    import base64, hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000)
    enc = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
    assert check_password(f"pbkdf2_sha256$1000${enc(salt)}${enc(digest)}", "pw")


def test_readers_csv_validation(tmp_path):
    good = hash_password("x")
    path = tmp_path / "r.csv"
    path.write_text(f"id,display_name,role,password_hash\nr1,Dr One,reader,{good}\nboss,Boss,admin,{good}\n")
    readers = read_readers_csv(path)
    assert [r.id for r in readers] == ["r1", "boss"] and readers[1].role == "admin"
    refused = (
        ("id,display_name,role,password\nr1,Dr One,reader,hunter2\n", "plain passwords"),
        (f"id,display_name,role,password_hash\nr1,Dr One,radiologist,{good}\n", "line 2: role"),
        ("id,display_name,role,password_hash\nr1,Dr One,reader,hunter2\n", "not a scrypt/pbkdf2 hash"),
        (f"id,display_name,role,password_hash\nr1,A,reader,{good}\nr1,B,reader,{good}\n", "appears twice"),
    )
    for text, message in refused:
        path.write_text(text)
        with pytest.raises(StudyError, match=message):
            read_readers_csv(path)
