"""ORH MRMC analysis checked against the published Van Dyke (1993) results.

Data: ``tests/data/vandyke_1993.lrc`` (RJafroc ``inst/extdata/datasets/VD.lrc`` = RJafroc
``dataset02``; see ``tests/data/vandyke_1993.README.md``). Reference numbers: OR-DBM MRMC 2.51
(Build 20181028) output "VanDyke trap area jackknife anova", stored in RJafroc as
``inst/IowaResults/VanDyke.txt`` (2 treatments) and ``inst/IowaResults/VanDyke1T.txt``
(treatment 1 only). These are the numbers the RJafroc, iMRMC and OR-DBM MRMC documentation
quote: F = 4.46, ddf = 15.26, p = 0.0517; AUCs 0.89703704 and 0.94083736.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammosynth.study.mrmc import auc_matrix, orh_analysis

DATA = Path(__file__).parent / "data" / "vandyke_1993.lrc"


def read_lrc(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the OR-DBM MRMC LRC file into ratings (t, r, c) and truth (c,)."""
    lines = [ln.strip() for ln in path.read_text().splitlines()][1:]
    readers: list[dict] = []
    state = None
    for ln in lines:
        if ln == "#":
            break
        fields = ln.split()
        if state is None and len(fields) == 1:  # reader id
            readers.append({"normal": {}, "abnormal": {}})
            state = "normal"
        elif ln == "*":
            state = "abnormal" if state == "normal" else None
        elif fields and fields[0].startswith('"') or fields[:1] == ["L"]:
            continue
        else:
            *scores, case = fields
            readers[-1][state][int(case)] = [float(s) for s in scores]
    cases = sorted(readers[0]["normal"]) + sorted(readers[0]["abnormal"])
    truth = np.array([0] * len(readers[0]["normal"]) + [1] * len(readers[0]["abnormal"]))
    t = len(next(iter(readers[0]["normal"].values())))
    ratings = np.empty((t, len(readers), len(cases)))
    for j, reader in enumerate(readers):
        merged = {**reader["normal"], **reader["abnormal"]}
        for k, case in enumerate(cases):
            ratings[:, j, k] = merged[case]
    return ratings, truth


@pytest.fixture(scope="module")
def vandyke():
    ratings, truth = read_lrc(DATA)
    assert ratings.shape == (2, 5, 114) and truth.sum() == 45
    return ratings, truth


def test_vandyke_reader_aucs(vandyke):
    expected = np.array([
        [0.91964573, 0.85877617, 0.90386473, 0.97310789, 0.82979066],
        [0.94782609, 0.90531401, 0.92173913, 0.99935588, 0.92995169],
    ])
    np.testing.assert_allclose(auc_matrix(*vandyke), expected, atol=5e-8)


def test_vandyke_orh_rrrc_matches_or_dbm_mrmc(vandyke):
    res = orh_analysis(*vandyke)
    np.testing.assert_allclose(res.treatment_means, [0.89703704, 0.94083736], atol=5e-8)
    # ANOVA of AUCs and OR covariances (jackknife)
    assert res.ms_t == pytest.approx(0.00479617, abs=5e-9)
    assert res.ms_r == pytest.approx(0.00383620, abs=5e-9)
    assert res.ms_tr == pytest.approx(0.00055103, abs=5e-9)
    assert res.var_error == pytest.approx(0.00080229, abs=5e-9)
    assert res.cov1 == pytest.approx(0.00034661, abs=5e-9)
    assert res.cov2 == pytest.approx(0.00034407, abs=5e-9)
    assert res.cov3 == pytest.approx(0.00023903, abs=5e-9)
    assert res.var_r == pytest.approx(0.00153500, abs=5e-9)
    assert res.var_tr == pytest.approx(0.00020040, abs=5e-9)
    # Analysis 1 (RRRC): F(1, 15.26) = 4.46, p = .0517
    assert res.f_stat == pytest.approx(0.00479617 / 0.00107626, rel=1e-5)
    assert round(res.f_stat, 2) == 4.46
    assert res.ddf == pytest.approx(15.26, abs=0.005)
    assert res.p_value == pytest.approx(0.0517, abs=5e-5)
    (diff,) = res.differences
    assert diff["difference"] == pytest.approx(-0.04380032, abs=5e-8)
    assert diff["se"] == pytest.approx(0.02075, abs=5e-6)
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx((-0.08796, 0.00036), abs=5e-6)
    # single-treatment CIs (ddf_H_single, Hillis 2007)
    t1, t2 = res.single_treatment
    assert t1["se"] == pytest.approx(0.03317360, abs=5e-9)
    assert t1["df"] == pytest.approx(12.74, abs=5e-3)
    assert t1["cov2"] == pytest.approx(0.00048396, abs=5e-9)
    assert (t1["ci_low"], t1["ci_high"]) == pytest.approx((0.82522360, 0.96885048), abs=5e-8)
    assert t2["se"] == pytest.approx(0.02156637, abs=5e-9)
    assert t2["df"] == pytest.approx(12.71, abs=5e-3)
    assert t2["cov2"] == pytest.approx(0.00020419, abs=5e-9)
    assert (t2["ci_low"], t2["ci_high"]) == pytest.approx((0.89413783, 0.98753689), abs=5e-8)
    assert t1["var_error"] == pytest.approx(0.00101410, abs=5e-9)


def test_vandyke_orh_frrc_matches_or_dbm_mrmc(vandyke):
    res = orh_analysis(*vandyke)
    assert res.frrc_chisq == pytest.approx(5.47595, abs=5e-6)
    assert res.frrc_p_value == pytest.approx(0.0193, abs=5e-5)
    f1, f2 = res.single_treatment_frrc
    assert (f1["se"], f1["ci_low"], f1["ci_high"]) == pytest.approx((0.02428971, 0.84943008, 0.94464399), abs=5e-8)
    assert (f2["se"], f2["ci_low"], f2["ci_high"]) == pytest.approx((0.01677632, 0.90795637, 0.97371835), abs=5e-8)


def test_vandyke_single_treatment_matches_published_one_treatment_run(vandyke):
    ratings, truth = vandyke
    res = orh_analysis(ratings[:1], truth)  # OR-DBM MRMC run on treatment 1 alone (VanDyke1T)
    assert np.isnan(res.f_stat)
    (single,) = res.single_treatment
    assert single["auc"] == pytest.approx(0.89703704, abs=5e-8)
    assert single["se"] == pytest.approx(0.03317360, abs=5e-9)
    assert single["df"] == pytest.approx(12.74, abs=5e-3)
    assert (single["ci_low"], single["ci_high"]) == pytest.approx((0.82522360, 0.96885048), abs=5e-8)
    assert res.cov2 == pytest.approx(0.00048396, abs=5e-9)
    assert res.var_error == pytest.approx(0.00101410, abs=5e-9)
    assert single["p_vs_null"] < 1e-4  # these readers are far better than chance


def test_orh_input_errors():
    with pytest.raises(ValueError, match="shape"):
        orh_analysis(np.zeros((5, 10)), np.zeros(10))
    with pytest.raises(ValueError, match="2 positive"):
        orh_analysis(np.zeros((1, 2, 4)), [1, 0, 0, 0])
    ratings = np.zeros((1, 2, 4))
    ratings[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="missing"):
        orh_analysis(ratings, [1, 1, 0, 0])
