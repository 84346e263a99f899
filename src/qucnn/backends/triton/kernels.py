"""Triton kernels of the fidelity maps ``F = (Re^2 + Im^2) / ||x||^2``: the forward (with the shot draws fused
into its epilogue), the filter-state gradient (slices summed by torch in a fixed order), and the input gradient.

Layout of one program: ``BLOCK`` consecutive output positions of the flattened ``(image, row, column)`` axis
(so small images share a program and no lane idles at an image's edge) x ``KC`` filters. The forward walks the
patch's taps: for each it loads that value of every window straight from ``x`` (the windows overlap, so
neighbouring values come from cache, and ``x`` is read from memory about once), scales it by its image's power
of two, and adds the outer product with the filters' column to the overlaps ``Z`` (filter rows interleaved:
``W[2k] = Re f_k``, ``W[2k+1] = -Im f_k``), so ``F_k = (Z[2k]^2 + Z[2k+1]^2) / N`` with ``N = sum_t x_t^2`` (0 for
all-zero patches). One read of ``x``, one write of ``F``; nothing else. The backward gathers the patch matrix
``X`` ``(M_PAD, BLOCK)`` and takes ``Z = W X`` and ``A X^T`` as products.

Products run with ``input_precision="ieee"``: full float32 (or float64), never TF32. Kernels trust their
inputs; :mod:`qucnn.backends.triton.ops` checks and launches them.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .binomial import shot_estimates, shot_estimates_mixed


@triton.jit
def _patches(x_ptr, scale_ptr, b, pos, live, H, W, WO, sxb, sxc, sxh, sxw, SH, SW, PH, PW, DH, DW,
             KH: tl.constexpr, KW: tl.constexpr, M: tl.constexpr, M_PAD: tl.constexpr, HAS_SCALE: tl.constexpr,
             ACC: tl.constexpr, PADDED: tl.constexpr):
    """The scaled patch matrix ``(M_PAD, BLOCK)`` at images ``b`` and output positions ``pos`` (``live`` lanes):
    tap ``t = (c, i, j)`` (channel, then kernel row, then column, as a state's amplitudes), zeros for padding,
    ``t >= M`` and dead lanes. The address is one offset per lane (the window's corner) plus one per tap, so a
    value costs one add; ``PADDED=False`` (no padding: every window lies inside the image) drops the bounds
    checks."""
    taps = tl.arange(0, M_PAD)
    ci = taps // (KH * KW)
    ki = (taps // KW) % KH
    kj = taps % KW
    oy = pos // WO
    y0 = oy * SH - PH
    x0 = (pos - oy * WO) * SW - PW
    lane = b.to(tl.int64) * sxb + y0 * sxh + x0 * sxw
    tap = ci * sxc + ki * (DH * sxh) + kj * (DW * sxw)
    inside = (taps < M)[:, None] & live[None, :]
    if PADDED:
        yy = y0[None, :] + (ki * DH)[:, None]
        xx = x0[None, :] + (kj * DW)[:, None]
        inside = inside & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    xs = tl.load(x_ptr + (lane[None, :] + tap[:, None]), mask=inside, other=0.0).to(ACC)
    if HAS_SCALE:
        xs = xs * tl.load(scale_ptr + b, mask=live, other=1.0).to(ACC)[None, :]
    return xs


@triton.jit
def _filter_rows(s_ptr, kc, K, ssk, sst, KC: tl.constexpr, M: tl.constexpr, M_PAD: tl.constexpr,
                 COMPLEX: tl.constexpr, ACC: tl.constexpr):
    """``W`` ``(2 KC, M_PAD)`` of filter chunk ``kc``: row ``2k`` the real part, row ``2k + 1`` minus the imaginary
    part of state ``kc * KC + k`` (read from ``torch.view_as_real`` of complex states; real states give 0)."""
    rows = tl.arange(0, 2 * KC)
    k = kc * KC + rows // 2
    part = rows % 2
    taps = tl.arange(0, M_PAD)
    ok = (k < K)[:, None] & (taps < M)[None, :]
    if COMPLEX:
        w = tl.load(s_ptr + k[:, None] * ssk + taps[None, :] * sst + part[:, None], mask=ok, other=0.0).to(ACC)
        return tl.where(part[:, None] == 1, -w, w)
    return tl.load(s_ptr + k[:, None] * ssk + taps[None, :] * sst, mask=ok & (part[:, None] == 0), other=0.0).to(ACC)


@triton.jit
def _tap_value(t, x_ptr, lane, y0, x0, live, sc, H, W, sxc, sxh, sxw, DH, DW, KH: tl.constexpr,
               KW: tl.constexpr, HAS_SCALE: tl.constexpr, ACC: tl.constexpr, PADDED: tl.constexpr):
    """Tap ``t`` (channel, kernel row, kernel column) of every lane's window, scaled, 0 outside the image."""
    ci = t // (KH * KW)
    ki = (t // KW) % KH
    kj = t % KW
    m = live
    if PADDED:
        yy = y0 + ki * DH
        xx = x0 + kj * DW
        m = m & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    xt = tl.load(x_ptr + (lane + (ci * sxc + ki * (DH * sxh) + kj * (DW * sxw))), mask=m, other=0.0).to(ACC)
    if HAS_SCALE:
        xt = xt * sc
    return xt


@triton.jit
def _filter_column(t, s_ptr, k, part, kmask, ssk, sst, COMPLEX: tl.constexpr, ACC: tl.constexpr):
    """Column ``t`` of ``W`` (rows ``2k``: ``Re f_k``, ``2k + 1``: ``-Im f_k``)."""
    if COMPLEX:  # one return at the end: the branches are resolved at compile time
        wt = tl.load(s_ptr + k * ssk + t * sst + part, mask=kmask, other=0.0).to(ACC)
        wt = tl.where(part == 1, -wt, wt)
    else:
        wt = tl.load(s_ptr + k * ssk + t * sst, mask=kmask & (part == 0), other=0.0).to(ACC)
    return wt


@triton.jit
def _tap(z, n, t, x_ptr, lane, y0, x0, live, sc, s_ptr, k, part, kmask, H, W, sxc, sxh, sxw, ssk, sst, DH, DW,
         KH: tl.constexpr, KW: tl.constexpr, COMPLEX: tl.constexpr, HAS_SCALE: tl.constexpr, ACC: tl.constexpr,
         PADDED: tl.constexpr, lift):
    """Add tap ``t`` (channel, kernel row, kernel column) of every window: ``z += w[:, t] x_t`` (an outer product of
    the filter column and the lanes' values, in registers: no layout change, no shared memory) and
    ``n += (lift x_t)^2`` (the squared norm of the lifted patch: see :data:`qucnn.core.windows.NORM_EXPONENT`)."""
    xt = _tap_value(t, x_ptr, lane, y0, x0, live, sc, H, W, sxc, sxh, sxw, DH, DW, KH, KW, HAS_SCALE, ACC, PADDED)
    wt = _filter_column(t, s_ptr, k, part, kmask, ssk, sst, COMPLEX, ACC)
    xl = xt * lift
    return z + wt[:, None] * xt[None, :], n + xl * xl


@triton.jit
def _inverse_norms(n, lift):
    """``1 / ||x||`` from the squared norms ``n`` of the patches lifted by ``lift``, 0 for all-zero patches."""
    return tl.where(n > 0, lift / tl.sqrt(tl.where(n > 0, n, 1.0)), 0.0)


@triton.jit
def _write_maps(z, n, lift, kc, b, pos, items, live, B, K, O, P, out_ptr, valid_ptr, up_ptr, mask_ptr, key_ptr,
                tail_ptr, shots, KC: tl.constexpr, BLOCK: tl.constexpr, WRITE_VALID: tl.constexpr, HAS_UP: tl.constexpr,
                HAS_MASK: tl.constexpr, SHOTS: tl.constexpr, ACC: tl.constexpr, MIXED: tl.constexpr):
    """The forward kernels' epilogue: the fidelities from the overlaps ``z`` ``(2 KC, BLOCK)`` and squared norms
    ``n``, times ``delta`` (``HAS_UP``), exact or from ``shots`` shots (``MIXED``: drawn by
    :func:`.binomial.binomial_mixed`), written to ``out[g, b, o, p]`` for filters ``k = g O + o``, 0 where nothing
    runs; ``valid[items]`` (``WRITE_VALID``). Returns the normalised overlaps, the inverse norms and which lanes
    belong to the first filter chunk (``(zs, isq, first)``) for a kernel that keeps them."""
    isq = _inverse_norms(n, lift)
    zs = z * isq[None, :]  # normalised before squaring: the overlaps of a faint patch would underflow
    fid = tl.sum(tl.reshape(zs * zs, (KC, 2, BLOCK)), axis=1)
    valid = isq > 0
    k = kc * KC + tl.arange(0, KC)
    g = (k // O).to(tl.int64)
    o = (k % O).to(tl.int64)
    omask = (k < K)[:, None] & live[None, :]
    # ((g B + b) O + o) P + pos, as one offset per filter row plus one per lane
    lane = b.to(tl.int64) * O * P + pos
    out_offs = ((g * B * O + o) * P)[:, None] + lane[None, :]
    in_offs = (o * P)[:, None] + lane[None, :]
    run = valid[None, :] & omask
    value = fid
    if HAS_UP:
        delta = tl.load(up_ptr + in_offs, mask=omask, other=0.0).to(ACC)
        value = value * delta
        run = run & (delta != 0)
    if HAS_MASK:
        run = run & (tl.load(mask_ptr + in_offs, mask=omask, other=0) != 0)
    if SHOTS:
        if MIXED:
            value = shot_estimates_mixed(value, run, shots, key_ptr, tail_ptr, out_offs).to(ACC)
        else:
            value = shot_estimates(value, run, shots, key_ptr, tail_ptr, out_offs).to(ACC)
    value = tl.where(run, value, 0.0)
    tl.store(out_ptr + out_offs, value.to(out_ptr.dtype.element_ty), mask=omask)
    first = (pos * 0 + kc) == 0  # the first filter chunk writes what does not depend on the filters
    if WRITE_VALID:
        tl.store(valid_ptr + items, valid.to(tl.int8), mask=live & first)
    return zs, isq, first


@triton.jit
def forward_kernel(x_ptr, scale_ptr, s_ptr, out_ptr, valid_ptr, up_ptr, mask_ptr, key_ptr, tail_ptr, lift_ptr,
                   B, K, O, H, W, WO, P, NKC, shots, sxb, sxc, sxh, sxw, ssk, sst, SH, SW, PH, PW, DH, DW,
                   KH: tl.constexpr, KW: tl.constexpr, M: tl.constexpr, M_PAD: tl.constexpr, KC: tl.constexpr,
                   BLOCK: tl.constexpr, COMPLEX: tl.constexpr, HAS_SCALE: tl.constexpr, WRITE_VALID: tl.constexpr,
                   HAS_UP: tl.constexpr, HAS_MASK: tl.constexpr, SHOTS: tl.constexpr, ACC: tl.constexpr,
                   PADDED: tl.constexpr, IDX64: tl.constexpr, UNROLL: tl.constexpr):
    """Fidelities (or ``<Z_a>`` of the Eq. 15 circuit with upstream ``delta``, exact or from ``shots`` shots) of
    filters ``k = g O + o`` written to ``out[g, b, o, p]``; 0 where nothing runs (all-zero patch, ``delta = 0``,
    outside ``mask``); ``valid_ptr`` (``WRITE_VALID``): whether each patch is not all zero. ``IDX64``: the flattened positions need 64-bit integers (``B P >= 2**31``); else they are divided in 32 bits.
    ``UNROLL``: taps per loop step, unrolled (1, or ``KW``: a kernel row), which divides ``M``."""
    pid = tl.program_id(0)
    kc = pid % NKC
    if IDX64:
        items = (pid // NKC).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        items = (pid // NKC) * BLOCK + tl.arange(0, BLOCK)
    live = items < B * P
    b = items // P
    pos = (items - b * P).to(tl.int32)
    # the overlaps Z = W X tap by tap (x_t of every lane from cache, neighbouring windows sharing it)
    oy = pos // WO
    y0 = oy * SH - PH
    x0 = (pos - oy * WO) * SW - PW
    lane = b.to(tl.int64) * sxb + y0 * sxh + x0 * sxw
    rows = tl.arange(0, 2 * KC)
    kr = kc * KC + rows // 2
    part = rows % 2
    kmask = kr < K
    sc = tl.full((BLOCK,), 1.0, ACC)
    if HAS_SCALE:
        sc = tl.load(scale_ptr + b, mask=live, other=1.0).to(ACC)
    z = tl.zeros((2 * KC, BLOCK), dtype=ACC)
    n = tl.zeros((BLOCK,), dtype=ACC)
    lift = tl.load(lift_ptr)  # the norms' lift, a power of two in ACC
    # a loop over the taps, UNROLL at a time: their loads issue together while only their filter columns are
    # live (unrolling all 16 taps of a 4x4 patch spills registers)
    for step in range(M // UNROLL):
        for j in tl.static_range(UNROLL):
            z, n = _tap(z, n, step * UNROLL + j, x_ptr, lane, y0, x0, live, sc, s_ptr, kr, part, kmask, H, W, sxc,
                        sxh, sxw, ssk, sst, DH, DW, KH, KW, COMPLEX, HAS_SCALE, ACC, PADDED, lift)
    _write_maps(z, n, lift, kc, b, pos, items, live, B, K, O, P, out_ptr, valid_ptr, up_ptr, mask_ptr, key_ptr,
                tail_ptr, shots, KC, BLOCK, WRITE_VALID, HAS_UP, HAS_MASK, SHOTS, ACC, False)


@triton.jit
def backward_kernel(x_ptr, scale_ptr, s_ptr, g_ptr, part_ptr, a_ptr, e_ptr, lift_ptr,
                    B, K, H, W, WO, P, NKC, NPROG, sxb, sxc, sxh, sxw, ssk, sst, sgb, sgk, sgh, sgw,
                    SH, SW, PH, PW, DH, DW, KH: tl.constexpr, KW: tl.constexpr, M: tl.constexpr,
                    M_PAD: tl.constexpr, KC: tl.constexpr, BLOCK: tl.constexpr, COMPLEX: tl.constexpr,
                    HAS_SCALE: tl.constexpr, NEED_X: tl.constexpr, ACC: tl.constexpr, PADDED: tl.constexpr,
                    IDX64: tl.constexpr):
    """One program per (slice of the blocks, filter chunk): for each block of its slice it recomputes ``Z`` and
    ``N`` and adds ``dL/dW = A X^T`` with ``A = 2 g Z / N`` to a register accumulator, written once to
    ``part_ptr[pid]`` (the slices are summed by torch's reduction, in a fixed order: no atomics, then written out
    by :func:`states_grad_kernel`).
    ``NEED_X``: also writes ``A`` ``(B, 2K, P)`` and ``e = 2 (sum_k g_k F_k) / N`` per chunk ``(NKC, B, P)`` for
    :func:`input_grad_kernel`."""
    pid = tl.program_id(0)
    kc = pid % NKC
    rows = tl.arange(0, 2 * KC)
    k = kc * KC + rows // 2
    kmask = k < K
    w = _filter_rows(s_ptr, kc, K, ssk, sst, KC, M, M_PAD, COMPLEX, ACC)
    acc = tl.zeros((2 * KC, M_PAD), dtype=ACC)
    lift = tl.load(lift_ptr)
    for blk in range(pid // NKC, tl.cdiv(B * P, BLOCK), NPROG):
        if IDX64:
            items = (tl.zeros((BLOCK,), tl.int64) + blk) * BLOCK + tl.arange(0, BLOCK)
        else:
            items = blk * BLOCK + tl.arange(0, BLOCK)
        live = items < B * P
        b = items // P
        pos = (items - b * P).to(tl.int32)
        xs = _patches(x_ptr, scale_ptr, b, pos, live, H, W, WO, sxb, sxc, sxh, sxw, SH, SW, PH, PW, DH, DW, KH, KW,
                      M, M_PAD, HAS_SCALE, ACC, PADDED)
        z = tl.dot(w, xs, input_precision="ieee")
        xl = xs * lift
        isq = _inverse_norms(tl.sum(xl * xl, axis=0), lift)
        oy = pos // WO
        g_lane = b.to(tl.int64) * sgb + oy * sgh + (pos - oy * WO) * sgw
        g = tl.load(g_ptr + ((k.to(tl.int64) * sgk)[:, None] + g_lane[None, :]), mask=kmask[:, None] & live[None, :],
                    other=0.0).to(ACC)
        a = 2.0 * g * (z * isq[None, :]) * isq[None, :]
        acc += tl.dot(a, tl.trans(xs), input_precision="ieee")
        if NEED_X:
            a_offs = ((kc * 2 * KC + rows).to(tl.int64) * P)[:, None] + (b.to(tl.int64) * 2 * K * P + pos)[None, :]
            tl.store(a_ptr + a_offs, a, mask=kmask[:, None] & live[None, :])
            zs = z * isq[None, :]
            e = 2.0 * isq * isq * tl.sum(g * zs * zs, axis=0)
            tl.store(e_ptr + kc.to(tl.int64) * B * P + items, e, mask=live)
    offs = pid * (2 * KC * M_PAD) + rows[:, None] * M_PAD + tl.arange(0, M_PAD)[None, :]
    tl.store(part_ptr + offs, acc)


@triton.jit
def states_grad_kernel(part_ptr, grad_ptr, K, sgk, sgt, KC: tl.constexpr, M: tl.constexpr, M_PAD: tl.constexpr,
                       COMPLEX: tl.constexpr):
    """The write-out: ``dL/dW`` of filter chunk ``program_id(0)`` (the slices' partial sums, already added by
    torch) as the gradient of the states (``view_as_real``: ``dL/dRe + i dL/dIm``; the rows hold ``Re`` and
    ``-Im``)."""
    kc = tl.program_id(0)
    rows = tl.arange(0, 2 * KC)
    taps = tl.arange(0, M_PAD)
    acc = tl.load(part_ptr + kc * (2 * KC * M_PAD) + rows[:, None] * M_PAD + taps[None, :])
    k = kc * KC + rows // 2
    part = rows % 2
    ok = (k < K)[:, None] & (taps < M)[None, :]
    if COMPLEX:
        value = tl.where(part[:, None] == 1, -acc, acc)
        tl.store(grad_ptr + k[:, None] * sgk + taps[None, :] * sgt + part[:, None], value, mask=ok)
    else:
        tl.store(grad_ptr + k[:, None] * sgk + taps[None, :] * sgt, acc, mask=ok & (part[:, None] == 0))


@triton.jit
def input_grad_kernel(x_ptr, scale_ptr, s_ptr, a_ptr, e_ptr, gx_ptr, B, C, K, H, W, HO, WO, P, NKC,
                      sxb, sxc, sxh, sxw, ssk, sst, SH, SW, PH, PW, DH, DW,
                      KH: tl.constexpr, KW: tl.constexpr, R_PAD: tl.constexpr, BLOCK: tl.constexpr,
                      COMPLEX: tl.constexpr, HAS_SCALE: tl.constexpr, ACC: tl.constexpr):
    """``dL/dx`` of ``BLOCK`` values of one channel plane ``(b, c)``, gathered (no atomics): the sum over the
    windows that hold a value of ``sum_r W[r, t] A[r, window] - x e[window]`` (``t`` its tap there), times the
    image's scale. One tap at a time: its filter column is a vector, its ``A`` a ``(R_PAD, BLOCK)`` gather."""
    pid = tl.program_id(0)
    nblk = tl.cdiv(H * W, BLOCK)
    plane = pid // nblk
    b = plane // C
    ci = plane % C
    q = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    live = q < H * W
    y = q // W
    xc = q % W
    rows = tl.arange(0, R_PAD)
    rmask = rows < 2 * K
    kf = rows // 2
    part = rows % 2
    acc = tl.zeros((BLOCK,), dtype=ACC)
    esum = tl.zeros((BLOCK,), dtype=ACC)
    for tap in range(KH * KW):
        i = tap // KW
        j = tap % KW
        ty = y + PH - i * DH
        tx = xc + PW - j * DW
        ok = live & (ty >= 0) & (tx >= 0) & (ty % SH == 0) & (tx % SW == 0)
        r = tl.where(ok, ty // SH, 0)
        c = tl.where(ok, tx // SW, 0)
        ok = ok & (r < HO) & (c < WO)
        win = b.to(tl.int64) * P + r * WO + c
        t = ci * (KH * KW) + tap
        if COMPLEX:
            w = tl.load(s_ptr + kf * ssk + t * sst + part, mask=rmask, other=0.0).to(ACC)
            w = tl.where(part == 1, -w, w)
        else:
            w = tl.load(s_ptr + kf * ssk + t * sst, mask=rmask & (part == 0), other=0.0).to(ACC)
        a = tl.load(a_ptr + (b.to(tl.int64) * 2 * K + rows)[:, None] * P + (r * WO + c)[None, :],
                    mask=rmask[:, None] & ok[None, :], other=0.0)
        acc += tl.sum(w[:, None] * a.to(ACC), axis=0)
        for chunk in range(NKC):
            esum += tl.load(e_ptr + chunk * B * P + win, mask=ok, other=0.0).to(ACC)
    xv = tl.load(x_ptr + b.to(tl.int64) * sxb + ci * sxc + y * sxh + xc * sxw, mask=live, other=0.0).to(ACC)
    if HAS_SCALE:
        scale = tl.load(scale_ptr + b).to(ACC)
        grad = (acc - xv * scale * esum) * scale
    else:
        grad = acc - xv * esum
    tl.store(gx_ptr + plane.to(tl.int64) * H * W + q, grad.to(gx_ptr.dtype.element_ty), mask=live)
