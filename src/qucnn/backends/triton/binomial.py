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
def binomial(shots, p, active, key_ptr, tail_ptr, counter):
    """``Binomial(shots, p)`` draws (float64, the shape of ``p``) where ``active``; 0 elsewhere. ``counter``
    (int64, the shape of ``p``) numbers the elements: distinct elements must have distinct counters."""
    n = tl.zeros_like(p) + shots
    flip = p > 0.5
    q = tl.where(flip, 1.0 - p, p)
    todo = active & (q > 0.0)
    btrs = n * q >= 10.0
    key = tl.load(key_ptr)
    stream = (tl.zeros_like(counter) + tl.load(key_ptr + 1)).to(tl.uint32)
    c0 = counter.to(tl.uint32)
    c1 = (counter >> 32).to(tl.uint32)
    draw = tl.zeros_like(c0)
    result = tl.zeros_like(p)
    # BTRS, with constants taken at (n, q) = (40, 1/2) on the other lanes so that every value stays finite
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
    # inversion with one uniform (draw 0 of a lane that never ran BTRS)
    qi = tl.where(btrs, 0.5, q)
    log1mq = tl.where(qi < 1e-4, -qi * (1.0 + qi * (0.5 + qi / 3.0)), tl.log(1.0 - qi))
    ratio = qi / (1.0 - qi)
    u = _uniform(tl.philox(key, c0, c1, tl.zeros_like(c0), stream)[0])
    prob = tl.exp(tl.where(btrs, 0.0, n) * log1mq)
    cdf = prob
    k = tl.zeros_like(p)
    walking = todo & ~btrs & (u > cdf)
    while tl.max(walking.to(tl.int32)) > 0:
        prob = prob * (n - k) / (k + 1.0) * ratio
        k = tl.where(walking, k + 1.0, k)
        cdf = cdf + prob
        walking = walking & (u > cdf) & (k < n)
    result = tl.where(btrs, result, k)
    result = tl.where(flip, n - result, result)
    return tl.where(active, result, 0.0)


@triton.jit
def shot_estimates(z, run, shots, key_ptr, tail_ptr, counter):
    """``2 n0 / S - 1`` with ``n0 ~ Binomial(S, (1 + z) / 2)`` (float64) where ``run``, 0 elsewhere: the ``S``-shot
    estimate of ``<Z> = z``, unbiased with variance ``(1 - z^2) / S``."""
    p = tl.minimum(tl.maximum((1.0 + z.to(tl.float64)) * 0.5, 0.0), 1.0)
    n0 = binomial(shots, p, run, key_ptr, tail_ptr, counter)
    return tl.where(run, 2.0 * n0 / shots - 1.0, 0.0)


@triton.jit
def sample_kernel(z_ptr, valid_ptr, out_ptr, key_ptr, tail_ptr, numel, shots, VK, VP, BLOCK: tl.constexpr,
                  VALID: tl.constexpr):
    """Shot estimates of the flat expectations ``z``: ``VALID`` 0 (all run), 1 (``valid`` of the same shape) or 2
    (``valid`` ``(B, 1, P)`` broadcast over the ``VK`` filters of ``z`` ``(B, VK, P)``)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < numel
    run = inside
    if VALID == 1:
        run = run & (tl.load(valid_ptr + offs, mask=inside, other=0) != 0)
    if VALID == 2:
        run = run & (tl.load(valid_ptr + (offs // (VK * VP)) * VP + offs % VP, mask=inside, other=0) != 0)
    z = tl.load(z_ptr + offs, mask=inside, other=0.0)
    est = shot_estimates(z, run, shots, key_ptr, tail_ptr, offs)
    tl.store(out_ptr + offs, est.to(out_ptr.dtype.element_ty), mask=inside)
