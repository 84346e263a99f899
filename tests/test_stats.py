"""Small-sample statistics of multi-seed results: the t distribution (against closed forms, and against scipy
where the test environment has it, else against printed tables), summaries, paired differences, Holm's
correction, the TOST and the comparisons of one table."""

from __future__ import annotations

import math

import pytest
from conftest import EXACT

from qucnn.utils.stats import (
    betainc,
    compare_pairs,
    equivalence_bound,
    holm,
    paired_difference,
    summarise,
    t_cdf,
    t_quantile,
    tost,
    verdict,
)

#: Printed t tables (two-sided 95 % and one-sided 95 % quantiles), used where scipy is not installed.
T_TABLE = {(0.975, 1): 12.706, (0.975, 2): 4.303, (0.975, 4): 2.776, (0.975, 9): 2.262, (0.975, 30): 2.042,
           (0.95, 1): 6.314, (0.95, 4): 2.132, (0.95, 9): 1.833, (0.95, 30): 1.697}


def test_t_cdf_matches_closed_forms():
    # df = 1: Cauchy, 1/2 + atan(t)/pi; df = 2: 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-40.0, -3.1, -1e-9, 0.0, 0.3, 1.0, 2.5, 1e3):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-14)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-14)
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0
    # the incomplete beta against a binomial tail: I_x(a, n - a + 1) = P(Bin(n, x) >= a)
    n, x = 9, 0.37
    for a in range(1, n + 1):
        tail = sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
        assert betainc(a, n - a + 1, x) == pytest.approx(tail, abs=1e-13)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, 0)


def test_t_quantile_against_scipy_or_the_tables():
    try:
        from scipy import stats  # installed with qiskit by the test extra
    except ImportError:
        stats = None
    if stats is not None:
        for df in (1, 2, 3, 4, 5, 9, 29, 200, 10_000):
            for p in (0.001, 0.025, 0.05, 0.5, 0.9, 0.95, 0.975, 0.999):
                assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-9), (p, df)
            for t in (-7.0, -2.0, -0.1, 0.0, 0.5, 2.776, 12.0):
                assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-9), (t, df)
    for (p, df), value in T_TABLE.items():
        assert t_quantile(p, df) == pytest.approx(value, abs=6e-4), (p, df)
    assert t_cdf(t_quantile(0.975, 4), 4) == pytest.approx(0.975, abs=1e-12)
    with pytest.raises(ValueError, match="0 < p < 1"):
        t_quantile(1.0, 3)


def test_summary_and_paired_difference():
    s = summarise([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3, abs=EXACT) and s["n"] == 3
    assert s["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2), abs=EXACT)
    assert s["sem"] == pytest.approx(s["std"] / math.sqrt(3), abs=EXACT)
    assert s["ci95"][1] - s["mean"] == pytest.approx(t_quantile(0.975, 2) * s["sem"], abs=EXACT)
    assert summarise([0.5])["std"] is None
    d = paired_difference([0.9, 0.8, 0.85], [0.7, 0.6, 0.66], margin=0.01)
    assert d["per_seed"] == pytest.approx([0.2, 0.2, 0.19]) and d["significant"] is True
    # two-sided p of t = mean / sem with 2 degrees of freedom
    t = d["mean"] / d["sem"]
    assert d["p"] == pytest.approx(2 * (1 - t_cdf(t, 2)), abs=EXACT) and d["p"] < 0.05
    assert d["tost"]["equivalent"] is False  # 0.2 is far outside +-0.01
    flat = paired_difference([0.9, 0.7], [0.8, 0.8])
    assert flat["significant"] is False and flat["p"] == pytest.approx(1.0)  # mean 0
    assert paired_difference([0.5], [0.4])["p"] is None


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.2, 0.3, 0.9]) == pytest.approx([0.6, 0.6, 0.9])  # monotone, capped at 1
    assert holm([]) == []


def test_tost_and_its_smallest_margin():
    mean, sem, n = 0.001, 0.002, 10
    bound = equivalence_bound(mean, sem, n)
    assert bound == pytest.approx(abs(mean) + t_quantile(0.95, n - 1) * sem, abs=EXACT)
    # at exactly that margin the larger one-sided p is 0.05; a little more passes, a little less fails
    assert tost(mean, sem, n, bound)["p"] == pytest.approx(0.05, abs=1e-9)
    assert tost(mean, sem, n, bound * 1.01)["equivalent"] and not tost(mean, sem, n, bound * 0.99)["equivalent"]
    assert tost(0.0, 0.0, 5, 0.005)["equivalent"] and not tost(0.01, 0.0, 5, 0.005)["equivalent"]
    with pytest.raises(ValueError, match="margin must be > 0"):
        tost(0.0, 0.1, 5, 0.0)


def test_compare_pairs_corrects_across_the_table_and_words_the_verdict():
    values = {"a": [0.970, 0.975, 0.972, 0.978, 0.971], "b": [0.960, 0.964, 0.961, 0.966, 0.962],
              "c": [0.9701, 0.9749, 0.9722, 0.9779, 0.9712], "d": [0.95, 0.99, 0.96, 0.99, 0.94]}
    rows = compare_pairs(values, [("a", "b"), ("a", "c"), ("a", "d")], margin=0.005)
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("a", "d")]
    assert {"a", "b", "mean", "ci95", "p_holm", "equivalent_at"} <= set(rows[0])
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p"] for r in rows]))
    assert [r["tost_p_holm"] for r in rows] == pytest.approx(holm([r["tost_p"] for r in rows]))
    ab, ac, ad = rows
    assert ab["significant"] and verdict(ab) == "a > b"
    assert not ac["significant"] and ac["equivalent"] and verdict(ac) == "equivalent within +-0.5 points"
    assert not ad["significant"] and not ad["equivalent"] and verdict(ad) == "not resolved"
    assert ad["equivalent_at"] > 0.005 > ac["equivalent_at"]
    with pytest.raises(ValueError, match="no values for"):
        compare_pairs(values, [("a", "z")], 0.005)
