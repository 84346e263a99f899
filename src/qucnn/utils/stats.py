"""Small-sample statistics of results over a few seeds, as every table of qucnn reports them: means with
Student-t intervals, paired differences with two-sided 95 % t intervals and p-values, Holm's correction
across the comparisons of one table, and equivalence tests (TOST) with a stated margin behind every
"no difference".

The t distribution is computed here (its CDF through the regularised incomplete beta function, its
quantiles by bisection of the CDF), so the package needs no scipy.

Example:
    >>> summarise([0.97, 0.98, 0.99])["mean"]
    0.98
    >>> round(t_quantile(0.975, 4), 3)
    2.776
    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from typing import Sequence

from .checks import UsageError

#: Default equivalence margin of the TOST, in accuracy points (0.5 points = 0.005 as a fraction).
DEFAULT_MARGIN_POINTS = 0.5
ALPHA = 0.05
_CF_ITERATIONS = 500
_CF_EPS = 1e-15


def _check_df(df: float) -> float:
    if isinstance(df, bool) or not isinstance(df, (int, float)) or not df > 0 or not math.isfinite(df):
        raise UsageError(f"degrees of freedom must be a positive number, got {df!r}")
    return float(df)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), for ``x < (a+1)/(a+b+2)``."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, _CF_ITERATIONS + 1):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``.

    Example:
        >>> round(betainc(2.0, 3.0, 0.4), 6)   # 1 - sum_{j<2} C(4, j) 0.4^j 0.6^(4-j)
        0.5248
    """
    if not (a > 0 and b > 0):
        raise UsageError(f"betainc needs a, b > 0, got a={a!r}, b={b!r}")
    if not 0.0 <= x <= 1.0:
        raise UsageError(f"betainc needs 0 <= x <= 1, got {x!r}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom.

    Example:
        >>> t_cdf(0.0, 3)
        0.5
        >>> round(t_cdf(2.776445, 4), 4)
        0.975
    """
    df = _check_df(df)
    if math.isnan(t):
        raise UsageError("t_cdf: t is NaN")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    near = t * t / (df + t * t)
    if near < 0.5:  # |t| small: 1 - I_x(df/2, 1/2) = I_{1-x}(1/2, df/2) without cancellation
        half = 0.5 * betainc(0.5, df / 2.0, near)
        return 0.5 + half if t > 0 else 0.5 - half
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0 < p < 1``), by bisection of
    :func:`t_cdf` to full float precision.

    Example:
        >>> round(t_quantile(0.95, 4), 4)
        2.1318
    """
    df = _check_df(df)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise UsageError(f"t_quantile needs 0 < p < 1, got {p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


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


def t_test_p(mean: float, sem: float, n: int) -> float:
    """Two-sided p-value of ``mean = 0`` for a mean of ``n`` values with standard error ``sem`` (t, ``n - 1``
    degrees of freedom). ``sem = 0``: 1 for a zero mean, else 0."""
    if sem == 0:
        return 1.0 if mean == 0 else 0.0
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(mean) / sem, n - 1)))


def tost(mean: float, sem: float, n: int, margin: float) -> dict:
    """Two one-sided t tests of equivalence: is the true mean inside ``(-margin, +margin)``?

    Returns ``{"margin", "p", "equivalent"}`` with ``p`` the larger of the two one-sided p-values and
    ``equivalent = p < 0.05`` (the 90 % t interval lies inside the margin).

    Example:
        >>> tost(0.001, 0.001, 10, 0.005)["equivalent"]
        True
    """
    if not margin > 0:
        raise UsageError(f"the equivalence margin must be > 0, got {margin!r}")
    if sem == 0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        p_low = 1.0 - t_cdf((mean + margin) / sem, n - 1)  # H0: mean <= -margin
        p_high = t_cdf((mean - margin) / sem, n - 1)        # H0: mean >= +margin
        p = max(p_low, p_high)
    return {"margin": margin, "p": p, "equivalent": p < ALPHA}


def equivalence_bound(mean: float, sem: float, n: int) -> float:
    """The smallest margin at which :func:`tost` declares equivalence at 5 %: ``|mean| + t(0.95, n-1) sem``
    (the far end of the 90 % t interval)."""
    return abs(mean) + (0.0 if sem == 0 else t_quantile(0.95, n - 1) * sem)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the order given: the ``i``-th smallest
    ``p`` becomes ``max_{j <= i} min(1, (m - j) p_(j))``."""
    p = [float(v) for v in p_values]
    order = sorted(range(len(p)), key=p.__getitem__)
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def paired_difference(a: Sequence[float], b: Sequence[float], margin: float | None = None) -> dict:
    """:func:`summarise` of ``a_i - b_i`` (paired: same seed, same data order), plus ``per_seed``, the two-sided
    ``p`` of a zero mean, ``significant`` (the 95 % interval excludes 0) and, with ``margin``, the TOST
    (``tost``) and ``equivalent_at`` (:func:`equivalence_bound`). ``None`` entries for one pair."""
    if len(a) != len(b):
        raise UsageError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    out = summarise(diffs)
    out["per_seed"] = diffs
    single = out["sem"] is None
    out["p"] = None if single else t_test_p(out["mean"], out["sem"], out["n"])
    out["significant"] = None if single else not out["ci95"][0] <= 0 <= out["ci95"][1]
    out["equivalent_at"] = None if single else equivalence_bound(out["mean"], out["sem"], out["n"])
    if margin is not None:
        out["tost"] = None if single else tost(out["mean"], out["sem"], out["n"], margin)
    return out


def compare_pairs(values: dict[str, Sequence[float]], pairs: Sequence[tuple[str, str]],
                  margin: float) -> list[dict]:
    """The comparisons of one table: for every ``(a, b)`` in ``pairs`` the paired difference ``values[a] -
    values[b]`` with its two-sided 95 % t interval, and the p-values Holm-corrected across the table.

    Each entry: ``{"a", "b", "mean", "ci95", "p", "p_holm", "significant", "equivalent_at", "tost_p",
    "tost_p_holm", "equivalent", "margin", "std", "sem", "n", "per_seed"}``. ``significant``: ``p_holm <
    0.05``. ``equivalent``: the TOST at ``margin`` passes after Holm's correction (``tost_p_holm < 0.05``);
    only then may the table say "no difference". ``equivalent_at``: the smallest margin the uncorrected TOST
    would accept.

    Example:
        >>> rows = compare_pairs({"q": [0.97, 0.98, 0.975], "f": [0.96, 0.97, 0.962]}, [("q", "f")], 0.005)
        >>> rows[0]["significant"], round(rows[0]["mean"], 4)
        (True, 0.011)
    """
    if not margin > 0:
        raise UsageError(f"the equivalence margin must be > 0, got {margin!r}")
    missing = sorted({name for pair in pairs for name in pair} - set(values))
    if missing:
        raise UsageError(f"compare_pairs: no values for {missing}; have {sorted(values)}")
    rows = []
    for a, b in pairs:
        d = paired_difference(values[a], values[b], margin)
        t = d.pop("tost")
        rows.append({"a": a, "b": b, "mean": d["mean"], "ci95": d["ci95"], "p": d["p"], "p_holm": None,
                     "significant": None, "equivalent_at": d["equivalent_at"],
                     "tost_p": None if t is None else t["p"], "tost_p_holm": None, "equivalent": None,
                     "margin": margin, "std": d["std"], "sem": d["sem"], "n": d["n"], "per_seed": d["per_seed"]})
    tested = [r for r in rows if r["p"] is not None]
    for r, p, q in zip(tested, holm([r["p"] for r in tested]), holm([r["tost_p"] for r in tested])):
        r.update(p_holm=p, significant=p < ALPHA, tost_p_holm=q, equivalent=q < ALPHA)
    return rows


def verdict(row: dict, scale: float = 100.0, unit: str = "points") -> str:
    """How a table may word a :func:`compare_pairs` entry: ``"a > b"`` / ``"a < b"`` where the Holm-corrected
    test resolves it, ``"equivalent within +-m"`` where the corrected TOST does, else ``"not resolved"``."""
    if row.get("significant"):
        return f"{row['a']} {'>' if row['mean'] > 0 else '<'} {row['b']}"
    if row.get("equivalent"):
        return f"equivalent within +-{scale * row['margin']:g} {unit}"
    return "not resolved"


__all__ = ["ALPHA", "DEFAULT_MARGIN_POINTS", "betainc", "compare_pairs", "equivalence_bound", "holm",
           "paired_difference", "summarise", "t_cdf", "t_quantile", "t_test_p", "tost", "verdict"]
