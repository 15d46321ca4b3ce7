"""Reader-study statistics against references (published worked examples or closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mammosynth.study.stats import (
    accuracy_summary,
    answer_rating,
    auc_structural_components,
    binomial_test,
    fleiss_kappa_from_answers,
    pairwise_cohen_kappa,
    roc_auc_delong,
    sensitivity_specificity,
    wilson_interval,
)


def test_wilson_interval_matches_closed_form():
    # Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    for k, n in ((0, 10), (7, 10), (81, 263), (50, 50)):
        z, p = 1.959963984540054, k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        low, high = wilson_interval(k, n)
        assert low == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert high == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_binomial_test_exact_value():
    # P(X <= 1 or X >= 9 | n=10, p=.5) = 22/1024
    assert binomial_test(9, 10) == pytest.approx(22 / 1024, abs=1e-15)
    assert binomial_test(5, 10) == pytest.approx(1.0)


def test_accuracy_and_sensitivity_specificity():
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    acc = accuracy_summary(y_true, y_pred)
    assert (acc["n"], acc["correct"], acc["accuracy"]) == (10, 7, 0.7)
    ss = sensitivity_specificity(y_true, y_pred)
    assert ss["sensitivity"] == 0.75 and ss["specificity"] == pytest.approx(4 / 6)
    assert ss["sensitivity_ci"] == pytest.approx(list(wilson_interval(3, 4)))
    with pytest.raises(ValueError, match="same length"):
        accuracy_summary([1, 0], [1])


def test_answer_rating_orders_real_below_synthetic():
    ratings = [answer_rating("real", c) for c in (5, 4, 3, 2, 1)] + [answer_rating("synthetic", c) for c in (1, 2, 3, 4, 5)]
    assert ratings == sorted(ratings) and len(set(ratings)) == 10
    assert answer_rating("real", 0, confidence_min=0) < answer_rating("synthetic", 0, confidence_min=0)
    with pytest.raises(ValueError, match="real"):
        answer_rating("maybe", 3)


def test_delong_matches_sklearn_auc_and_definition():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = rng.integers(-5, 6, 80) + 1.5 * y  # ties included
    res = roc_auc_delong(y, s)
    assert res["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # DeLong et al. (1988) variance written out from its definition with plain loops
    pos, neg = s[y == 1], s[y == 0]
    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0
    v10 = [sum(psi(a, b) for b in neg) / len(neg) for a in pos]
    v01 = [sum(psi(a, b) for a in pos) / len(pos) for b in neg]
    auc = sum(v10) / len(v10)
    s10 = sum((v - auc) ** 2 for v in v10) / (len(v10) - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (len(v01) - 1)
    assert res["se"] == pytest.approx(math.sqrt(s10 / len(pos) + s01 / len(neg)), rel=1e-12)
    assert res["ci_low"] < res["auc"] < res["ci_high"]
    with pytest.warns(UserWarning, match="undefined"):
        assert math.isnan(roc_auc_delong([1, 1], [0.2, 0.3])["auc"])


def test_fleiss_kappa_wikipedia_worked_example():
    # Fleiss (1971) worked example as given on Wikipedia ("Fleiss' kappa"): 10 subjects,
    # 14 raters, 5 categories, kappa = 0.210. Our wrapper is binary, so check statsmodels'
    # function on the published table and our wrapper on a binary reduction by hand.
    from statsmodels.stats.inter_rater import fleiss_kappa

    table = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    assert round(fleiss_kappa(table), 3) == 0.210
    # binary: 4 cases, 3 readers; hand computation: P_i = (1, 1/3, 1, 1/3) → P̄ = 2/3,
    # p_1 = 6/12 → P̄e = 1/2 → kappa = (2/3 - 1/2) / (1/2) = 1/3
    answers = {"a": {"r1": 1, "r2": 1, "r3": 1}, "b": {"r1": 1, "r2": 0, "r3": 0},
               "c": {"r1": 0, "r2": 0, "r3": 0}, "d": {"r1": 1, "r2": 1, "r3": 0},
               "incomplete": {"r1": 1}}
    assert fleiss_kappa_from_answers(answers) == pytest.approx(1 / 3)
    assert math.isnan(fleiss_kappa_from_answers({"a": {"r1": 1}}))


def test_cohen_kappa_textbook_example():
    # Wikipedia "Cohen's kappa" example: 50 items; yes/yes 20, yes/no 5, no/yes 10, no/no 15 → 0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    answers = {f"c{i}": {"A": a[i], "B": b[i]} for i in range(50)}
    answers["only_a"] = {"A": 1}
    kappas = pairwise_cohen_kappa(answers)
    assert list(kappas) == ["A|B"] and kappas["A|B"] == pytest.approx(0.4)


def test_structural_components_shapes():
    auc, v10, v01 = auc_structural_components([1, 1, 0], [0.9, 0.1, 0.5])
    assert auc == 0.5 and v10.tolist() == [1.0, 0.0] and v01.tolist() == [0.5]
