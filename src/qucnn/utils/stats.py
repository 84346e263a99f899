"""Small-sample summaries for results over a few seeds: mean, standard deviation, standard error, and
Student-t confidence intervals of means and of paired differences.

Example:
    >>> summarise([0.97, 0.98, 0.99])["mean"]
    0.98
    >>> round(t_quantile(0.975, 4), 3)
    2.776
"""

from __future__ import annotations

import math
from typing import Sequence

from .checks import UsageError

#: Two-sided 95 % (``p = 0.975``) and one-sided 95 % (``p = 0.95``) quantiles of Student's t for 1..30
#: degrees of freedom (standard tables; tests check them against scipy). Beyond 30: the normal quantile.
_T = {
    0.975: (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
            2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
            2.045, 2.042),
    0.95: (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771, 1.761,
           1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701,
           1.699, 1.697),
}
_NORMAL = {0.975: 1.960, 0.95: 1.645}


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom, for ``p`` in {0.95, 0.975}."""
    if p not in _T:
        raise UsageError(f"t_quantile knows p = 0.95 and 0.975, got {p!r}")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise UsageError(f"degrees of freedom must be an int >= 1, got {df!r}")
    return _T[p][df - 1] if df <= len(_T[p]) else _NORMAL[p]


def summarise(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n", "sem", "ci95"}`` of ``values``: sample standard deviation (``n - 1``), standard
    error ``std / sqrt(n)`` and the two-sided 95 % t interval of the mean; ``std``, ``sem``, ``ci95`` are
    ``None`` for a single value."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise UsageError("summarise needs at least one value")
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "std": None, "n": 1, "sem": None, "ci95": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    sem = std / math.sqrt(n)
    half = t_quantile(0.975, n - 1) * sem
    return {"mean": mean, "std": std, "n": n, "sem": sem, "ci95": [mean - half, mean + half]}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """:func:`summarise` of ``a_i - b_i`` (paired: same seed, same data order), plus ``per_seed`` and
    ``significant``: the 95 % interval excludes 0 (``None`` for one pair)."""
    if len(a) != len(b):
        raise UsageError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    out = summarise(diffs)
    out["per_seed"] = diffs
    out["significant"] = None if out["ci95"] is None else not out["ci95"][0] <= 0 <= out["ci95"][1]
    return out


def one_sided_above(diffs: Sequence[float]) -> dict:
    """Is the mean of ``diffs`` above 0 at one-sided 95 %? ``{"mean", "sem", "n", "lower95", "above"}`` with
    ``lower95 = mean - t(0.95, n-1) sem`` (``None`` and ``above=None`` for one value)."""
    s = summarise(diffs)
    if s["sem"] is None:
        return {"mean": s["mean"], "sem": None, "n": 1, "lower95": None, "above": None}
    lower = s["mean"] - t_quantile(0.95, s["n"] - 1) * s["sem"]
    return {"mean": s["mean"], "sem": s["sem"], "n": s["n"], "lower95": lower, "above": lower > 0}


__all__ = ["one_sided_above", "paired_difference", "summarise", "t_quantile"]
