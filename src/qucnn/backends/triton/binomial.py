"""Exact binomial shot draws in Triton: ``n0 ~ Binomial(S, p)`` for every ``S`` up to ``2**31 - 1``, from a
counter-based generator (Philox-4x32-10, ``tl.philox``), in float64.

With ``q = min(p, 1 - p)`` (and ``n0 = S - k`` where ``q = 1 - p``), two exact methods, as ``torch.binomial``
chooses them (``aten/src/ATen/native/Distributions.h``), vectorised over a block:

- ``S q >= 10``: Hormann's transformed rejection with squeeze (BTRS, 1993), the constants torch uses; about
  1.2 proposals of two uniforms each; the acceptance test is exact up to the Stirling series of ``log k!``
  (tabulated for ``k <= 9``, the series error is below 3e-11 above);
- ``S q < 10``: inversion of the distribution function with ONE uniform, ``P(k + 1) = P(k) (S - k) / (k + 1)
  q / (1 - q)`` from ``P(0) = (1 - q)^S`` (at least ``e^-14``: no underflow), about ``S q + 1`` cheap steps.
  (torch sums geometric waiting times here, one uniform per step; the distribution is the same.)

No normal approximation. Lanes that are done keep their value while the others of their block iterate.

:func:`binomial_mixed` draws the same numbers from the same Philox stream (bit for bit) spending float64 only
where needed: the uniforms, the squeeze and ``k``'s rounding stay in float64 (exact, and cheap: no division,
no transcendental function), the division of the proposal and the logarithms of the acceptance test run in
float32 with an error bound, and where float32 cannot decide (``k`` within the bound of an integer, the test
within the bound of its boundary: rare) the whole block takes that proposal again in float64; the inversion
runs only in blocks that hold such a lane.

Random numbers: draw ``i`` of element ``e`` is ``philox(key, (e mod 2**32, e div 2**32, i, stream))`` with
``(key, stream)`` two 64-bit integers drawn from a ``torch.Generator`` once per call
(:func:`qucnn.backends.triton.ops.philox_key`), so a seeded generator gives the same draws, and successive
calls (which advance the generator) never reuse numbers.
"""

from __future__ import annotations

import triton
import triton.language as tl

#: 2**-32: a uint32 ``r`` gives the uniform ``(r + 1/2) 2**-32`` in the open interval (0, 1).
_TWO_M32 = tl.constexpr(2.0**-32)
#: Bound of the float32 evaluation's error, relative to the magnitudes it sums: its worst case is about 2**-20
#: (float32 rounds at 2**-24, sm_90's float32 division errs by 2 units, its logarithm by 1, and each term takes
#: a few such steps), so 2**-18 leaves a factor of 4; and of float64's own error per unit of ``n`` (its
#: logarithms of ratios near 1 are multiplied by ``n + 1`` and ``k + 1/2``). Where float32 cannot decide within
#: the bound, float64 decides: 4e-4 of the proposals at ``S = 1000``, 1.4e-3 at ``10**4`` (``p`` near 1/2),
#: 5.2e-3 at ``2**17``, 1.4e-2 at ``10**6``, 0.15 at ``10**9`` (``benchmarks/triton_mixed_sampler.py``, in
#: Triton's interpreter, ``benchmarks/triton_mixed_sampler.json``): hence
#: :data:`~qucnn.backends.triton.plan.MIXED_MAX_SHOTS`.
_F32_ERROR = tl.constexpr(2.0**-18)
_F64_ERROR = tl.constexpr(2.0**-48)


@triton.jit
def _stirling_tail(k, tail_ptr):
    """``log k! - [(k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2]`` for integer-valued ``k >= 0`` (float64):
    ``tail_ptr[k]`` for ``k <= 9`` (:data:`qucnn.backends.triton.ops.STIRLING_TAILS`), the series in
    ``1 / (k + 1)`` above (error < 3e-11 at 10)."""
    kp1 = k + 1.0
    sq = kp1 * kp1
    series = (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / 1260.0 / sq) / sq) / kp1
    small = k <= 9.0
    table = tl.load(tail_ptr + tl.where(small, k, 0.0).to(tl.int32), mask=small, other=0.0)
    return tl.where(small, table, series)


@triton.jit
def _uniform(r):
    """``(r + 1/2) 2**-32`` in float64: a uniform on the open interval (0, 1) from a uint32."""
    return (r.to(tl.float64) + 0.5) * _TWO_M32


@triton.jit
def _btrs_try(ru, rv, n, q, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr):
    """One BTRS proposal from two uint32: ``(k, accepted)``."""
    u = _uniform(ru) - 0.5
    v = _uniform(rv)
    us = 0.5 - tl.abs(u)
    k = tl.floor((2.0 * aa / us + bb) * u + cc)
    inside = (k >= 0.0) & (k <= n)
    k = tl.minimum(tl.maximum(k, 0.0), n)
    lhs = tl.log(v * alpha / (aa / (us * us) + bb))
    bound = (bound0 + (n + 1.0) * tl.log((n - mode + 1.0) / (n - k + 1.0))
             + (k + 0.5) * tl.log(rr * (n - k + 1.0) / (k + 1.0))
             - _stirling_tail(k, tail_ptr) - _stirling_tail(n - k, tail_ptr))
    return k, inside & (((us >= 0.07) & (v <= vr)) | (lhs <= bound))


@triton.jit
def _draw_setup(shots, p, active, key_ptr, counter):
    """What both samplers start from: ``n``; ``q = min(p, 1 - p)`` and whether it was flipped; the lanes to draw
    (``todo``) and those drawn by BTRS; the Philox key, stream and the counter's two words."""
    n = tl.zeros_like(p) + shots
    flip = p > 0.5
    q = tl.where(flip, 1.0 - p, p)
    todo = active & (q > 0.0)
    btrs = n * q >= 10.0
    key = tl.load(key_ptr)
    stream = (tl.zeros_like(counter) + tl.load(key_ptr + 1)).to(tl.uint32)
    c0 = counter.to(tl.uint32)
    c1 = (counter >> 32).to(tl.uint32)
    return n, flip, q, todo, btrs, key, stream, c0, c1


@triton.jit
def _btrs_constants(n, q, btrs, tail_ptr):
    """The BTRS constants ``(nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0)``, taken at ``(n, q) = (40, 1/2)``
    off the ``btrs`` lanes so that every value stays finite."""
    nb = tl.where(btrs, n, 40.0)
    qb = tl.where(btrs, q, 0.5)
    spq = tl.sqrt(nb * qb * (1.0 - qb))
    bb = 1.15 + 2.53 * spq
    aa = -0.0873 + 0.0248 * bb + 0.01 * qb
    cc = nb * qb + 0.5
    vr = 0.92 - 4.2 / bb
    rr = qb / (1.0 - qb)
    alpha = (2.83 + 5.1 / bb) * spq
    mode = tl.floor((nb + 1.0) * qb)
    bound0 = ((mode + 0.5) * tl.log((mode + 1.0) / (rr * (nb - mode + 1.0)))
              + _stirling_tail(mode, tail_ptr) + _stirling_tail(nb - mode, tail_ptr))
    return nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0


@triton.jit
def _inversion(n, q, walking, key, c0, c1, stream):
    """Inversion of the distribution function with one uniform (draw 0) on the ``walking`` lanes (float64)."""
    qi = tl.where(walking, q, 0.5)
    log1mq = tl.where(qi < 1e-4, -qi * (1.0 + qi * (0.5 + qi / 3.0)), tl.log(1.0 - qi))
    ratio = qi / (1.0 - qi)
    u = _uniform(tl.philox(key, c0, c1, tl.zeros_like(c0), stream)[0])
    prob = tl.exp(tl.where(walking, n, 0.0) * log1mq)
    cdf = prob
    k = tl.zeros_like(q)
    walking = walking & (u > cdf)
    while tl.max(walking.to(tl.int32)) > 0:
        prob = prob * (n - k) / (k + 1.0) * ratio
        k = tl.where(walking, k + 1.0, k)
        cdf = cdf + prob
        walking = walking & (u > cdf) & (k < n)
    return k


@triton.jit
def _finish(result, n, q, flip, todo, btrs, active, key, c0, c1, stream):
    """Both samplers' last step: the lanes that did not run BTRS drawn by inversion, the draw of ``q`` flipped
    back where ``p > 1/2``, and 0 on inactive lanes."""
    walking = todo & ~btrs
    if tl.max(walking.to(tl.int32)) > 0:
        result = tl.where(btrs, result, _inversion(n, q, walking, key, c0, c1, stream))
    result = tl.where(flip, n - result, result)
    return tl.where(active, result, 0.0)


@triton.jit
def binomial(shots, p, active, key_ptr, tail_ptr, counter):
    """``Binomial(shots, p)`` draws (float64, the shape of ``p``) where ``active``; 0 elsewhere. ``counter``
    (int64, the shape of ``p``) numbers the elements: distinct elements must have distinct counters."""
    n, flip, q, todo, btrs, key, stream, c0, c1 = _draw_setup(shots, p, active, key_ptr, counter)
    draw = tl.zeros_like(c0)
    result = tl.zeros_like(p)
    nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0 = _btrs_constants(n, q, btrs, tail_ptr)
    pending = todo & btrs
    while tl.max(pending.to(tl.int32)) > 0:  # two proposals per Philox call
        r0, r1, r2, r3 = tl.philox(key, c0, c1, draw, stream)
        k, ok = _btrs_try(r0, r1, nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
        result = tl.where(pending & ok, k, result)
        pending = pending & ~ok
        k, ok = _btrs_try(r2, r3, nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
        result = tl.where(pending & ok, k, result)
        pending = pending & ~ok
        draw = draw + 1
    return _finish(result, n, q, flip, todo, btrs, active, key, c0, c1, stream)


@triton.jit
def _stirling_tail32(k, tail_ptr):
    """:func:`_stirling_tail` of float64 ``k`` evaluated in float32."""
    kp1 = (k + 1.0).to(tl.float32)
    sq = kp1 * kp1
    series = (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / 1260.0 / sq) / sq) / kp1
    small = k <= 9.0
    table = tl.load(tail_ptr + tl.where(small, k, 0.0).to(tl.int32), mask=small, other=0.0).to(tl.float32)
    return tl.where(small, table, series)


@triton.jit
def _log1p32(x):
    """``log(1 + x)`` in float32 to a few units of its last place for ``x > -1`` (the series of ``2 atanh(x /
    (2 + x))`` for ``|x| <= 1/4``, whose ``log`` would lose digits near 1)."""
    s = x / (2.0 + x)
    s2 = s * s
    series = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))))
    return tl.where(tl.abs(x) <= 0.25, series, tl.log(1.0 + x))


@triton.jit
def _btrs_try_mixed(ru, rv, n, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr):
    """:func:`_btrs_try` with its division and logarithms in float32: ``(k, accepted, unsure)``, equal to
    :func:`_btrs_try`'s ``(k, accepted)`` wherever ``unsure`` is false."""
    u = _uniform(ru) - 0.5
    v = _uniform(rv)
    us = 0.5 - tl.abs(u)
    us32 = us.to(tl.float32)
    aa32 = aa.to(tl.float32)
    d = (2.0 * aa32 / us32 + bb.to(tl.float32)) * u.to(tl.float32)
    t = d.to(tl.float64) + cc
    k = tl.floor(t)
    # float64 forms (2 aa / us + bb) u + cc to within a few units of t's last place; float32 to |d| 2**-21
    slack = tl.abs(d.to(tl.float64)) * 2.0**-19 + tl.abs(cc) * 2.0**-50
    unsure = tl.minimum(t - k, k + 1.0 - t) <= slack
    inside = (k >= 0.0) & (k <= n)
    k = tl.minimum(tl.maximum(k, 0.0), n)
    squeeze = (us >= 0.07) & (v <= vr)
    lhs = tl.log(v.to(tl.float32) * alpha.to(tl.float32) / (aa32 / (us32 * us32) + bb.to(tl.float32)))
    # (n + 1) log((n - mode + 1) / (n - k + 1)) and (k + 1/2) log(rr (n - k + 1) / (k + 1)) as log1p of their
    # distances from 1 (numerators in float64: products and sums, exact to float64 rounding)
    term1 = (n + 1.0).to(tl.float32) * _log1p32((k - mode).to(tl.float32) / (n - k + 1.0).to(tl.float32))
    term2 = (k + 0.5).to(tl.float32) * _log1p32((rr * (n - k + 1.0) - (k + 1.0)).to(tl.float32)
                                                 / (k + 1.0).to(tl.float32))
    tails = _stirling_tail32(k, tail_ptr) + _stirling_tail32(n - k, tail_ptr)
    b0 = bound0.to(tl.float32)
    bound = b0 + term1 + term2 - tails
    error = ((tl.abs(lhs) + tl.abs(b0) + tl.abs(term1) + tl.abs(term2) + tails + 1.0) * _F32_ERROR
             + ((n + k + 2.0) * _F64_ERROR).to(tl.float32))
    unsure = unsure | (inside & ~squeeze & (tl.abs(lhs - bound) <= error))
    return k, inside & (squeeze | (lhs <= bound)), unsure


@triton.jit
def binomial_mixed(shots, p, active, key_ptr, tail_ptr, counter):
    """:func:`binomial` (the same draws, bit for bit) with float64 only where float32 cannot decide."""
    n, flip, q, todo, btrs, key, stream, c0, c1 = _draw_setup(shots, p, active, key_ptr, counter)
    draw = tl.zeros_like(c0)
    result = tl.zeros_like(p)
    nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0 = _btrs_constants(n, q, btrs, tail_ptr)
    pending = todo & btrs
    while tl.max(pending.to(tl.int32)) > 0:  # two proposals per Philox call
        r0, r1, r2, r3 = tl.philox(key, c0, c1, draw, stream)
        k, ok, unsure = _btrs_try_mixed(r0, r1, nb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
        if tl.max((pending & unsure).to(tl.int32)) > 0:
            k64, ok64 = _btrs_try(r0, r1, nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
            k = tl.where(unsure, k64, k)
            ok = tl.where(unsure, ok64, ok)
        result = tl.where(pending & ok, k, result)
        pending = pending & ~ok
        k, ok, unsure = _btrs_try_mixed(r2, r3, nb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
        if tl.max((pending & unsure).to(tl.int32)) > 0:
            k64, ok64 = _btrs_try(r2, r3, nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
            k = tl.where(unsure, k64, k)
            ok = tl.where(unsure, ok64, ok)
        result = tl.where(pending & ok, k, result)
        pending = pending & ~ok
        draw = draw + 1
    return _finish(result, n, q, flip, todo, btrs, active, key, c0, c1, stream)


@triton.jit
def shot_estimates(z, run, shots, key_ptr, tail_ptr, counter):
    """``2 n0 / S - 1`` with ``n0 ~ Binomial(S, (1 + z) / 2)`` (float64) where ``run``, 0 elsewhere: the ``S``-shot
    estimate of ``<Z> = z``, unbiased with variance ``(1 - z^2) / S``."""
    p = tl.minimum(tl.maximum((1.0 + z.to(tl.float64)) * 0.5, 0.0), 1.0)
    n0 = binomial(shots, p, run, key_ptr, tail_ptr, counter)
    return tl.where(run, 2.0 * n0 / shots - 1.0, 0.0)


@triton.jit
def shot_estimates_mixed(z, run, shots, key_ptr, tail_ptr, counter):
    """:func:`shot_estimates` drawn by :func:`binomial_mixed` (the same values)."""
    p = tl.minimum(tl.maximum((1.0 + z.to(tl.float64)) * 0.5, 0.0), 1.0)
    n0 = binomial_mixed(shots, p, run, key_ptr, tail_ptr, counter)
    return tl.where(run, 2.0 * n0 / shots - 1.0, 0.0)


@triton.jit
def sample_kernel(z_ptr, valid_ptr, out_ptr, key_ptr, tail_ptr, numel, shots, VK, VP, BLOCK: tl.constexpr,
                  VALID: tl.constexpr, MIXED: tl.constexpr = False):
    """Shot estimates of the flat expectations ``z``: ``VALID`` 0 (all run), 1 (``valid`` of the same shape) or 2
    (``valid`` ``(B, 1, P)`` broadcast over the ``VK`` filters of ``z`` ``(B, VK, P)``); ``MIXED``: drawn by
    :func:`binomial_mixed`."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < numel
    run = inside
    if VALID == 1:
        run = run & (tl.load(valid_ptr + offs, mask=inside, other=0) != 0)
    if VALID == 2:
        run = run & (tl.load(valid_ptr + (offs // (VK * VP)) * VP + offs % VP, mask=inside, other=0) != 0)
    z = tl.load(z_ptr + offs, mask=inside, other=0.0)
    if MIXED:
        est = shot_estimates_mixed(z, run, shots, key_ptr, tail_ptr, offs)
    else:
        est = shot_estimates(z, run, shots, key_ptr, tail_ptr, offs)
    tl.store(out_ptr + offs, est.to(out_ptr.dtype.element_ty), mask=inside)
