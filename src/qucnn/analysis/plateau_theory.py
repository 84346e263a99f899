"""The statistics and the Haar-random references of the barren-plateau study (:mod:`.plateau`): sample
variances with their standard errors, the decay fit ``log Var = a - n log b``, and what a Haar-random (2-design)
filter state gives (derivations in ``docs/plateau.md``).

Example:
    >>> round(fit_decay([2, 4, 6], [4.0**-2, 4.0**-4, 4.0**-6])["decay_base"], 6)
    4.0
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.ansatz import ring_pairs
from ..core.gates import Op
from ..core.simulator import as_state, expval_z, simulate
from ..utils.checks import UsageError


def variance_with_stderr(values: Tensor) -> tuple[float, float]:
    """The unbiased sample variance of ``values`` ``(S,)`` and its standard error
    ``sqrt((m4 - s**4) / S)`` (``m4`` the fourth central moment), from the samples themselves."""
    v = values.double().flatten()
    if v.numel() < 2:
        raise UsageError(f"a variance needs at least 2 samples, got {v.numel()}")
    var = float(v.var())
    m4 = float(((v - v.mean()) ** 4).mean())
    return var, math.sqrt(max(m4 - var * var, 0.0) / v.numel())


def fit_decay(qubits: Sequence[int], variances: Sequence[float]) -> dict:
    """Least-squares fit of ``log Var = a - n log b``: ``{decay_base, decay_base_stderr, log_intercept}``.

    The standard error of ``b`` comes from the residuals (delta method, ``se_b = b * se_slope``); it is
    ``None`` with fewer than three points. Non-positive variances cannot be fitted (``ValueError``).
    """
    n = np.asarray(qubits, dtype=float)
    v = np.asarray(variances, dtype=float)
    if n.size < 2 or n.size != v.size:
        raise UsageError(f"a decay fit needs >= 2 (qubits, variance) pairs, got {n.size} and {v.size}")
    if not np.all(v > 0):
        raise UsageError(f"variances must be positive to fit log Var, got {v.tolist()}")
    y = np.log(v)
    (slope, intercept), resid, *_ = np.polyfit(n, y, 1, full=True)
    base = math.exp(-slope)
    stderr = None
    if n.size > 2:
        rss = float(resid[0]) if len(resid) else 0.0
        se_slope = math.sqrt(rss / (n.size - 2) / float(((n - n.mean()) ** 2).sum()))
        stderr = base * se_slope
    return {"decay_base": base, "decay_base_stderr": stderr, "log_intercept": float(intercept)}


def haar_fidelity_mean(d: int) -> float:
    """``E[|<f|x>|^2] = 1/d`` for a Haar-random ``f`` and any fixed unit ``x``."""
    return 1.0 / d


def haar_fidelity_variance(d: int) -> float:
    """``Var[|<f|x>|^2] = (d - 1) / (d**2 (d + 1))`` for a Haar-random ``f`` (``F ~ Beta(1, d - 1)``)."""
    return (d - 1) / (d * d * (d + 1))


def haar_grad_variance_first(d: int) -> float:
    """``Var[dF/dtheta] = 1 / (2 d (d + 1))`` for the first parameter when the rest is a 2-design."""
    return 1.0 / (2 * d * (d + 1))


def last_generator_overlap(data: Tensor) -> Tensor:
    """``g = <x| W Z_{n-1} W^dag |x>`` ``(S,)`` for data states ``(S, 2**n)``; ``W`` is one CNOT ring."""
    n = data.shape[-1].bit_length() - 1
    undo_ring = [Op("CNOT", pair) for pair in reversed(ring_pairs(n))]  # CNOTs are self-inverse
    state = simulate(undo_ring, state=as_state(data.to(torch.complex128)))
    return expval_z(state, n - 1)


def haar_grad_variance_last(data: Tensor) -> float:
    """``Var[dF/dtheta]`` of the last parameter for a 2-design before it, averaged over ``data``
    ``(S, 2**n)``: ``mean_s (1 - g_s**2) / (2 d (d + 1))`` (see :func:`last_generator_overlap`)."""
    d = data.shape[-1]
    g = last_generator_overlap(data)
    return float((1 - g**2).mean()) / (2 * d * (d + 1))


def shot_noise_variance(shots: int) -> float:
    """Variance ``1 / (2 S)`` of a parameter-shift gradient ``(F+ - F-)/2`` from ``S`` shots per circuit
    (each ``F`` estimate has variance ``(1 - F**2)/S <= 1/S``; the bound is tight for small ``F``)."""
    return 1.0 / (2 * shots)


__all__ = ["fit_decay", "haar_fidelity_mean", "haar_fidelity_variance", "haar_grad_variance_first",
           "haar_grad_variance_last", "last_generator_overlap", "shot_noise_variance", "variance_with_stderr"]
