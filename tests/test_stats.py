"""Small-sample statistics of multi-seed results: the t table against scipy, summaries, paired differences."""

from __future__ import annotations

import math

import pytest
from conftest import EXACT

from qucnn.utils.stats import one_sided_above, paired_difference, summarise, t_quantile


def test_t_table_matches_scipy():
    from scipy import stats  # a dependency of qiskit, which the test extra installs

    for p in (0.95, 0.975):
        for df in range(1, 31):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=6e-4), (p, df)
        assert t_quantile(p, 200) == pytest.approx(stats.norm.ppf(p), abs=6e-4)
    with pytest.raises(ValueError, match="p = 0.95 and 0.975"):
        t_quantile(0.9, 3)


def test_summary_and_paired_difference():
    s = summarise([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3, abs=EXACT) and s["n"] == 3
    assert s["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2), abs=EXACT)
    assert s["sem"] == pytest.approx(s["std"] / math.sqrt(3), abs=EXACT)
    assert s["ci95"][1] - s["mean"] == pytest.approx(4.303 * s["sem"], abs=EXACT)
    assert summarise([0.5])["std"] is None
    d = paired_difference([0.9, 0.8, 0.85], [0.7, 0.6, 0.66])
    assert d["per_seed"] == pytest.approx([0.2, 0.2, 0.19]) and d["significant"] is True
    assert paired_difference([0.9, 0.7], [0.8, 0.8])["significant"] is False
    above = one_sided_above([0.01, 0.02, 0.03])
    assert above["above"] and above["lower95"] == pytest.approx(0.02 - 2.920 * 0.01 / math.sqrt(3), abs=EXACT)
    assert one_sided_above([0.01, -0.02, 0.03])["above"] is False
