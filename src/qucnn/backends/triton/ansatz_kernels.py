"""The Fig. 1 ansatz in Triton: every filter's state ``U(theta)|0>`` in one launch, and the adjoint-method
gradient of its angles in one more (instead of the ~30 small launches of the closed form in torch).

One program per block of ``FB`` filters. A layer ``U_l = P (M_0 x ... x M_{n-1})`` (``M_q = RZ(b_q) RX(a_q)``,
``P`` the CNOT ring) is built in registers as a dense ``d x d`` tile per filter, ``U[i, j] = prod_q
M_q[bit_q(src[i]), bit_q(j)]`` with ``src`` the ring's permutation (``new[i] = old[src[i]]``), and applied as a
matrix-vector product: for the 4-qubit filters of the paper 16 x 16 tiles, no shuffles through memory, no
barriers. The kernels hold ``d <= 64``
(:data:`qucnn.backends.triton.ops.MAX_ANSATZ_DIM`); larger registers use the closed form in torch.

The backward is the sweep of :class:`qucnn.core.ansatz._AnsatzState` (see the derivation there): it carries
``c_l = conj(lambda_l)`` back through ``c_{l-1} = c_l U_l`` and reads the layer states saved by the forward.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _layer(theta_ptr, base, fmask, src, cols, N: tl.constexpr, N_PAD: tl.constexpr, D: tl.constexpr,
           FB: tl.constexpr, ACC: tl.constexpr):
    """``(Re U, Im U)`` of one layer of each filter of the block, ``(FB, D, D)``; ``base`` ``(FB,)`` points at the
    layer's angles (qubit ``q``: ``base + 2q`` RX, ``base + 2q + 1`` RZ); ``src`` ``(1, D, 1)``, ``cols`` ``(1, 1, D)``.
    The sines and cosines of all qubits come first, on a small ``(FB, N_PAD)`` tile: no function call happens
    while the ``D x D`` tiles are live (a call would save them to memory)."""
    qs = tl.arange(0, N_PAD)
    at = base[:, None] + 2 * qs[None, :]
    ok = fmask[:, None] & (qs < N)[None, :]
    a = tl.load(theta_ptr + at, mask=ok, other=0.0).to(ACC) * 0.5
    z = tl.load(theta_ptr + at + 1, mask=ok, other=0.0).to(ACC) * 0.5
    cos_a, sin_a, cos_z, sin_z = tl.cos(a), tl.sin(a), tl.cos(z), tl.sin(z)
    ure = tl.full((FB, D, D), 1.0, ACC)
    uim = tl.zeros((FB, D, D), ACC)
    for q in tl.static_range(N):
        pick = (qs == q)[None, :]
        c = tl.sum(tl.where(pick, cos_a, 0.0), axis=1)[:, None, None]
        s = tl.sum(tl.where(pick, sin_a, 0.0), axis=1)[:, None, None]
        cz = tl.sum(tl.where(pick, cos_z, 0.0), axis=1)[:, None, None]
        sz = tl.sum(tl.where(pick, sin_z, 0.0), axis=1)[:, None, None]
        # M = RZ(b) RX(a) = [[c cz - i c sz, -s sz - i s cz], [s sz - i s cz, c cz + i c sz]]
        bi = (src >> (N - 1 - q)) & 1
        bj = (cols >> (N - 1 - q)) & 1
        mre = tl.where(bi == 0, tl.where(bj == 0, c * cz, -s * sz), tl.where(bj == 0, s * sz, c * cz))
        mim = tl.where(bi == 0, tl.where(bj == 0, -c * sz, -s * cz), tl.where(bj == 0, -s * cz, c * sz))
        ure, uim = ure * mre - uim * mim, ure * mim + uim * mre
    return ure, uim


@triton.jit
def ansatz_kernel(theta_ptr, src_ptr, out_ptr, psi_ptr, F, L, N: tl.constexpr, N_PAD: tl.constexpr,
                  D: tl.constexpr, FB: tl.constexpr, SAVE: tl.constexpr, ACC: tl.constexpr):
    """``out[f]`` (``view_as_real``, ``(D, 2)``) ``= U_L ... U_1 |0>`` for the filters ``f`` of block ``program_id(0)``
    of angles ``theta`` ``(F, L, N, 2)``; ``SAVE``: every layer's state ``psi[f, l]`` ``(L + 1, D, 2)``."""
    f = tl.program_id(0).to(tl.int64) * FB + tl.arange(0, FB)
    fmask = f < F
    idx = tl.arange(0, D)
    src = tl.load(src_ptr + idx)[None, :, None]
    both = fmask[:, None]
    re = tl.where(idx[None, :] == 0, 1.0, 0.0).to(ACC) + tl.zeros((FB, D), ACC)
    im = tl.zeros((FB, D), ACC)
    if SAVE:
        first = f[:, None] * (L + 1) * D * 2 + idx[None, :] * 2
        tl.store(psi_ptr + first, re, mask=both)
        tl.store(psi_ptr + first + 1, im, mask=both)
    for layer in range(L):
        ure, uim = _layer(theta_ptr, (f * L + layer) * N * 2, fmask, src, idx[None, None, :], N, N_PAD, D, FB, ACC)
        new_re = tl.sum(ure * re[:, None, :] - uim * im[:, None, :], axis=2)
        im = tl.sum(ure * im[:, None, :] + uim * re[:, None, :], axis=2)
        re = new_re
        if SAVE:
            at = (f[:, None] * (L + 1) + layer + 1) * D * 2 + idx[None, :] * 2
            tl.store(psi_ptr + at, re, mask=both)
            tl.store(psi_ptr + at + 1, im, mask=both)
    at = f[:, None] * D * 2 + idx[None, :] * 2
    tl.store(out_ptr + at, re.to(out_ptr.dtype.element_ty), mask=both)
    tl.store(out_ptr + at + 1, im.to(out_ptr.dtype.element_ty), mask=both)


@triton.jit
def ansatz_grad_kernel(theta_ptr, src_ptr, signs_ptr, psi_ptr, grad_ptr, out_ptr, F, L, N: tl.constexpr,
                       N_PAD: tl.constexpr, D: tl.constexpr, FB: tl.constexpr, ACC: tl.constexpr):
    """``dL/dtheta[f]`` ``(L, N, 2)`` from the gradient of the output state ``grad[f]`` (``view_as_real``;
    PyTorch's ``dL/dRe + i dL/dIm``) and the saved layer states. ``signs`` ``(D, N)``: ``(-1)**bit_q(src[p]) / 2``."""
    f = tl.program_id(0).to(tl.int64) * FB + tl.arange(0, FB)
    fmask = f < F
    both = fmask[:, None]
    idx = tl.arange(0, D)
    qs = tl.arange(0, N_PAD)
    src = tl.load(src_ptr + idx)[None, :, None]
    half_signs = tl.load(signs_ptr + idx[:, None] * N + qs[None, :], mask=(qs < N)[None, :], other=0.0).to(ACC)
    at = f[:, None] * D * 2 + idx[None, :] * 2
    cre = tl.load(grad_ptr + at, mask=both, other=0.0).to(ACC)
    cim = -tl.load(grad_ptr + at + 1, mask=both, other=0.0).to(ACC)
    for back in range(L):
        layer = L - 1 - back
        out_base = (f * L + layer) * N * 2
        after = (f[:, None] * (L + 1) + layer + 1) * D * 2 + idx[None, :] * 2
        pre = tl.load(psi_ptr + after, mask=both, other=0.0).to(ACC)
        pim = tl.load(psi_ptr + after + 1, mask=both, other=0.0).to(ACC)
        # dL/db_q = Im <lambda_l| Z_q' |psi_l> / 2 = sum_p Im(c_p psi_p) (+-1/2)
        db = tl.sum((cre * pim + cim * pre)[:, :, None] * half_signs[None, :, :], axis=1)
        tl.store(out_ptr + out_base[:, None] + qs[None, :] * 2 + 1, db.to(out_ptr.dtype.element_ty),
                 mask=both & (qs < N)[None, :])
        ure, uim = _layer(theta_ptr, (f * L + layer) * N * 2, fmask, src, idx[None, None, :], N, N_PAD, D, FB, ACC)
        new_re = tl.sum(cre[:, :, None] * ure - cim[:, :, None] * uim, axis=1)
        cim = tl.sum(cre[:, :, None] * uim + cim[:, :, None] * ure, axis=1)
        cre = new_re
        # dL/da_q = Im <lambda_{l-1}| X_q |psi_{l-1}> / 2, with (X_q psi)_p = psi_{p ^ bit_q}
        before = (f[:, None] * (L + 1) + layer) * D * 2
        for q in tl.static_range(N):
            flip = (idx ^ (1 << (N - 1 - q)))[None, :] * 2
            fre = tl.load(psi_ptr + before + flip, mask=both, other=0.0).to(ACC)
            fim = tl.load(psi_ptr + before + flip + 1, mask=both, other=0.0).to(ACC)
            da = 0.5 * tl.sum(cre * fim + cim * fre, axis=1)
            tl.store(out_ptr + out_base + 2 * q, da.to(out_ptr.dtype.element_ty), mask=fmask)
