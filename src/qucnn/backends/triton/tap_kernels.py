"""Tap-loop kernels beside the measured ones of :mod:`.kernels`, chosen by the plan where a GPU measured them
faster (:data:`qucnn.backends.triton.plan.MEASURED_PATHS`).

- :func:`forward_taps_kernel`: the forward of :func:`.kernels.forward_kernel` (the same tap loop, the same
  epilogue) with the filter chunks on a second grid axis, and two layouts: ``IMAGE=False`` the flattened
  ``(image, row, column)`` axis, ``IMAGE=True`` one image per program and ``BLOCK`` consecutive positions of it
  (the image and its scale are scalars of the program, a position's row is a division by the constant ``WOC``,
  and without a partial tile (``EVEN``) no lane is masked). ``SAVE_Z`` keeps the normalised overlaps and the
  inverse norms for the backward; ``MIXED`` draws shots with :func:`.binomial.binomial_mixed`.
- :func:`backward_taps_kernel`: the filter-state gradient (and ``A``, ``e`` for :func:`.kernels.input_grad_kernel`)
  without ``tl.dot`` for the overlaps: they come from the tap loop, or from what the forward saved (``SAVED``);
  ``dL/dW = A X^T`` is added per tap (a lane sum per tap, ``REDUCE_DOT=False``) or as a ``tl.dot`` of the
  gathered patches. The slices are summed by torch as for the measured kernel (no atomics).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .kernels import _filter_column, _inverse_norms, _patches, _tap_value, _write_maps


@triton.jit
def _overlaps(x_ptr, lane, y0, x0, live, sc, s_ptr, k, part, kmask, lift, H, W, sxc, sxh, sxw, ssk, sst, DH, DW,
              KH: tl.constexpr, KW: tl.constexpr, M: tl.constexpr, KC: tl.constexpr, BLOCK: tl.constexpr,
              COMPLEX: tl.constexpr, HAS_SCALE: tl.constexpr, ACC: tl.constexpr, PADDED: tl.constexpr,
              UNROLL: tl.constexpr):
    """``(Z, N)``: the overlaps ``W X`` ``(2 KC, BLOCK)`` tap by tap (outer products in registers) and the squared
    norms of the lifted patches, ``UNROLL`` taps per loop step."""
    z = tl.zeros((2 * KC, BLOCK), dtype=ACC)
    n = tl.zeros((BLOCK,), dtype=ACC)
    for step in range(M // UNROLL):
        for j in tl.static_range(UNROLL):
            t = step * UNROLL + j
            xt = _tap_value(t, x_ptr, lane, y0, x0, live, sc, H, W, sxc, sxh, sxw, DH, DW, KH, KW, HAS_SCALE, ACC,
                            PADDED)
            wt = _filter_column(t, s_ptr, k, part, kmask, ssk, sst, COMPLEX, ACC)
            xl = xt * lift
            z += wt[:, None] * xt[None, :]
            n += xl * xl
    return z, n


@triton.jit
def _positions(pid, B, P, WO, TILES, BLOCK: tl.constexpr, IMAGE: tl.constexpr, WOC: tl.constexpr,
               EVEN: tl.constexpr, IDX64: tl.constexpr):
    """``(b, pos, oy, live)`` of program ``pid``: image (a scalar with ``IMAGE``, else per lane), position in
    the image, its output row, and which lanes hold a position."""
    if IMAGE:
        b = pid // TILES
        pos = (pid % TILES) * BLOCK + tl.arange(0, BLOCK)
        if EVEN:
            live = tl.full((BLOCK,), True, tl.int1)
        else:
            live = pos < P
        oy = pos // WOC
    else:
        if IDX64:
            items = (tl.zeros((BLOCK,), tl.int64) + pid) * BLOCK + tl.arange(0, BLOCK)
        else:
            items = pid * BLOCK + tl.arange(0, BLOCK)
        live = items < B * P
        b = items // P
        pos = (items - b * P).to(tl.int32)
        oy = pos // WO
    return b, pos, oy, live


@triton.jit
def forward_taps_kernel(x_ptr, scale_ptr, s_ptr, out_ptr, valid_ptr, up_ptr, mask_ptr, key_ptr, tail_ptr, lift_ptr,
                        zs_ptr, isq_ptr, B, K, O, H, W, WO, P, TILES, shots, sxb, sxc, sxh, sxw, ssk, sst,
                        SH, SW, PH, PW, DH, DW, KH: tl.constexpr, KW: tl.constexpr, M: tl.constexpr,
                        KC: tl.constexpr, BLOCK: tl.constexpr, COMPLEX: tl.constexpr, HAS_SCALE: tl.constexpr,
                        WRITE_VALID: tl.constexpr, HAS_UP: tl.constexpr, HAS_MASK: tl.constexpr,
                        SHOTS: tl.constexpr, ACC: tl.constexpr, PADDED: tl.constexpr, IDX64: tl.constexpr,
                        UNROLL: tl.constexpr, IMAGE: tl.constexpr, WOC: tl.constexpr, EVEN: tl.constexpr,
                        SAVE_Z: tl.constexpr, MIXED: tl.constexpr):
    """:func:`.kernels.forward_kernel` on the grid ``(blocks of positions, filter chunks)``; ``TILES``: blocks per
    image (``IMAGE``). ``SAVE_Z``: ``zs[b, 2k + part, pos]`` the normalised overlaps, ``isq[b, pos]`` the
    inverse norms."""
    kc = tl.program_id(1)
    b, pos, oy, live = _positions(tl.program_id(0), B, P, WO, TILES, BLOCK, IMAGE, WOC, EVEN, IDX64)
    y0 = oy * SH - PH
    x0 = (pos - oy * WO) * SW - PW
    lane = b.to(tl.int64) * sxb + y0 * sxh + x0 * sxw
    rows = tl.arange(0, 2 * KC)
    kr = kc * KC + rows // 2
    part = rows % 2
    sc = 1.0
    if HAS_SCALE:
        if IMAGE:
            sc = tl.load(scale_ptr + b).to(ACC)
        else:
            sc = tl.load(scale_ptr + b, mask=live, other=1.0).to(ACC)
    lift = tl.load(lift_ptr)
    z, n = _overlaps(x_ptr, lane, y0, x0, live, sc, s_ptr, kr, part, kr < K, lift, H, W, sxc, sxh, sxw, ssk, sst,
                     DH, DW, KH, KW, M, KC, BLOCK, COMPLEX, HAS_SCALE, ACC, PADDED, UNROLL)
    image = b.to(tl.int64) * P + pos  # (b, pos) flattened
    zs, isq, first = _write_maps(z, n, lift, kc, b, pos, image, live, B, K, O, P, out_ptr, valid_ptr, up_ptr,
                                 mask_ptr, key_ptr, tail_ptr, shots, KC, BLOCK, WRITE_VALID, HAS_UP, HAS_MASK, SHOTS,
                                 ACC, MIXED)
    if SAVE_Z:
        z_offs = ((kc * 2 * KC + rows).to(tl.int64) * P)[:, None] + (b.to(tl.int64) * 2 * K * P + pos)[None, :]
        tl.store(zs_ptr + z_offs, zs, mask=(kr < K)[:, None] & live[None, :])
        tl.store(isq_ptr + image, isq, mask=live & first)


@triton.jit
def backward_taps_kernel(x_ptr, scale_ptr, s_ptr, g_ptr, zs_ptr, isq_ptr, part_ptr, a_ptr, e_ptr, lift_ptr,
                         B, K, H, W, WO, P, NKC, NPROG, sxb, sxc, sxh, sxw, ssk, sst, sgb, sgk, sgh, sgw,
                         SH, SW, PH, PW, DH, DW, KH: tl.constexpr, KW: tl.constexpr, M: tl.constexpr,
                         M_PAD: tl.constexpr, KC: tl.constexpr, BLOCK: tl.constexpr, COMPLEX: tl.constexpr,
                         HAS_SCALE: tl.constexpr, NEED_X: tl.constexpr, ACC: tl.constexpr, PADDED: tl.constexpr,
                         IDX64: tl.constexpr, UNROLL: tl.constexpr, SAVED: tl.constexpr,
                         REDUCE_DOT: tl.constexpr):
    """Program ``(slice, filter chunk)``: for each block of its slice, ``A = 2 g Z / N`` from the tap loop's
    overlaps (or the saved ``zs``, ``isq``: ``SAVED``), and ``dL/dW += A X^T`` in a register accumulator written
    once to ``part[slice * NKC + chunk]``; ``NEED_X``: ``A`` and ``e`` as :func:`.kernels.backward_kernel` writes
    them."""
    slot = tl.program_id(0)
    kc = tl.program_id(1)
    rows = tl.arange(0, 2 * KC)
    k = kc * KC + rows // 2
    part = rows % 2
    kmask = k < K
    taps = tl.arange(0, M_PAD)
    acc = tl.zeros((2 * KC, M_PAD), dtype=ACC)
    lift = tl.load(lift_ptr)
    for blk in range(slot, tl.cdiv(B * P, BLOCK), NPROG):
        b, pos, oy, live = _positions(blk, B, P, WO, 1, BLOCK, False, 1, False, IDX64)
        y0 = oy * SH - PH
        x0 = (pos - oy * WO) * SW - PW
        lane = b.to(tl.int64) * sxb + y0 * sxh + x0 * sxw
        sc = 1.0
        if HAS_SCALE:
            sc = tl.load(scale_ptr + b, mask=live, other=1.0).to(ACC)
        image = b.to(tl.int64) * P + pos
        z_offs = ((kc * 2 * KC + rows).to(tl.int64) * P)[:, None] + (b.to(tl.int64) * 2 * K * P + pos)[None, :]
        zmask = kmask[:, None] & live[None, :]
        if SAVED:
            zs = tl.load(zs_ptr + z_offs, mask=zmask, other=0.0)
            isq = tl.load(isq_ptr + image, mask=live, other=0.0)
        else:
            z, n = _overlaps(x_ptr, lane, y0, x0, live, sc, s_ptr, k, part, kmask, lift, H, W, sxc, sxh, sxw, ssk,
                             sst, DH, DW, KH, KW, M, KC, BLOCK, COMPLEX, HAS_SCALE, ACC, PADDED, UNROLL)
            isq = _inverse_norms(n, lift)
            zs = z * isq[None, :]
        g_lane = b.to(tl.int64) * sgb + oy * sgh + (pos - oy * WO) * sgw
        g = tl.load(g_ptr + ((k.to(tl.int64) * sgk)[:, None] + g_lane[None, :]), mask=zmask, other=0.0).to(ACC)
        a = 2.0 * g * zs * isq[None, :]
        if REDUCE_DOT:
            xs = _patches(x_ptr, scale_ptr, b, pos, live, H, W, WO, sxb, sxc, sxh, sxw, SH, SW, PH, PW, DH, DW, KH,
                          KW, M, M_PAD, HAS_SCALE, ACC, PADDED)
            acc += tl.dot(a, tl.trans(xs), input_precision="ieee")
        else:
            for t in range(M):
                xt = _tap_value(t, x_ptr, lane, y0, x0, live, sc, H, W, sxc, sxh, sxw, DH, DW, KH, KW, HAS_SCALE,
                                ACC, PADDED)
                column = tl.sum(a * xt[None, :], axis=1)
                acc += tl.where(taps[None, :] == t, column[:, None], 0.0)
        if NEED_X:
            tl.store(a_ptr + z_offs, a, mask=zmask)
            e = 2.0 * isq * isq * tl.sum(g * zs * zs, axis=0)
            tl.store(e_ptr + kc.to(tl.int64) * B * P + image, e, mask=live)
    offs = (slot * NKC + kc) * (2 * KC * M_PAD) + rows[:, None] * M_PAD + taps[None, :]
    tl.store(part_ptr + offs, acc)
