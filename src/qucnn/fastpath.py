"""Fast paths for the two hot spots of :class:`qucnn.QuConv2d`, each tested against a plain reference.

1. :func:`ansatz_state`: the Fig. 1 filter state in closed form. A layer is ``U = P (M_0 x ... x M_{n-1})``
   with ``M_q = RZ(b_q) RX(a_q)`` (2x2) and ``P`` the CNOT ring as ONE fixed basis permutation. Small
   batches build every layer's ``d x d`` unitary at once (``n - 1`` broadcast products and one row
   gather) and apply it with one matrix-vector product; large batches apply the 2x2 factors qubit by
   qubit (memory ``B * d``). The gradient is one autograd node whose backward is the adjoint method
   (one sweep back over the layers), instead of a graph of ~3n simulator ops per layer (each several
   reshapes and a ``movedim``). The reference is ``simulate(ansatz.ops(theta))``.
2. :func:`fidelity_conv`: ``F = (Re^2 + Im^2) / ||x||^2`` as one autograd node with a hand-written
   backward: one weight-gradient convolution (and an input one only when ``x`` needs a gradient)
   instead of autograd's chain of ``where``/``mul``/``pow`` nodes. Above :data:`SAVE_ELEMENTS`
   overlap elements it runs over chunks of the batch (:data:`CHUNK_ELEMENTS` each) and keeps only ``x``
   for the backward (recomputing the overlaps), so neither the unfolded patches nor the
   ``(B, 2K, H', W')`` overlaps of a large input are ever held at once. The reference is autograd through
   :func:`qucnn.fidelity.overlap_maps` / ``patch_norms`` / ``safe_ratio``.

Both fast paths are on by default; ``with disabled(): ...`` runs the references (tests and the
before/after rows of ``qucnn bench``). Device and dtype follow the inputs, so the same code runs on GPU.

Example:
    >>> import torch
    >>> theta = torch.rand(2, 3, 4, 2, dtype=torch.float64)
    >>> ansatz_state(theta).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .gates import complex_dtype, real_dtype

Pair = tuple[int, int]

#: Overlap elements ``(b, 2K, H', W')`` computed at once when nothing is kept for a backward (about 2 MB
#: in float32: a chunk stays in cache for the elementwise passes, and its buffers are reused by the
#: allocator instead of being fresh, page-faulting memory on every call).
CHUNK_ELEMENTS = 1 << 19
#: Largest overlap tensor kept for the backward; bigger inputs run in chunks of :data:`CHUNK_ELEMENTS`
#: and the backward recomputes the overlaps chunk by chunk (memory: the input and the output only).
SAVE_ELEMENTS = 1 << 22

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("qucnn_fastpath", default=True)


def enabled() -> bool:
    """Whether the fast paths are in use (the default)."""
    return _ENABLED.get()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the plain reference implementations inside this block (for tests and before/after timings).

    The switch is a context variable: it covers the calling thread (CPU autograd runs its backward
    there), not autograd's device threads (a CUDA backward called outside the block takes the fast path).

    Example:
        >>> with disabled():
        ...     enabled()
        False
    """
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


# -- 1. the ansatz state ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _tables(n: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """Index tables of one layer on ``n`` qubits: ``src`` (``new[i] = old[src[i]]`` for the whole CNOT ring
    ``q -> (q+1) mod n``), its inverse ``image``, ``flip`` (``p ^ bit_q``, row-major ``(2**n, n)``) and
    ``signs`` (``(-1)**bit_q(p)``, row-major ``(2**n, n)``)."""
    from .ansatz import ring_pairs

    d = 2**n
    image = []
    for p in range(d):  # where the ring sends basis state |p>
        for c, t in ring_pairs(n):
            if (p >> (n - 1 - c)) & 1:
                p ^= 1 << (n - 1 - t)
        image.append(p)
    src = [0] * d
    for p, i in enumerate(image):
        src[i] = p
    bits = [(p, q, 1 << (n - 1 - q)) for p in range(d) for q in range(n)]
    return (tuple(src), tuple(image), tuple(p ^ f for p, _, f in bits),
            tuple(-1.0 if p & f else 1.0 for p, _, f in bits))


#: ``M = RZ(b) RX(a)`` = [[c cb - i c sb, -s sb - i s cb], [s sb - i s cb, c cb + i c sb]] with
#: ``c, s = cos, sin(a/2)`` and ``cb, sb = cos, sin(b/2)``: (re, im) of the four entries as indices into
#: ``[c cb, c sb, s cb, s sb]`` and their signs.
_M_INDEX = (0, 1, 3, 2, 3, 2, 0, 1)
_M_SIGN = (1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0, 1.0)


def _layer_matrices(theta: Tensor) -> Tensor:
    """``M = RZ(b) RX(a)`` for every (filter, layer, qubit): complex ``(B, L, n, 2, 2)``."""
    half = theta / 2
    trig = torch.cat([torch.cos(half), torch.sin(half)], -1)  # c, cb, s, sb
    products = (trig[..., 0::2].unsqueeze(-1) * trig[..., 1::2].unsqueeze(-2)).flatten(-2)
    index, sign = _matrix_tables(theta.device, theta.dtype)
    parts = (products.index_select(-1, index) * sign).reshape(theta.shape[:-1] + (2, 2, 2))
    return torch.view_as_complex(parts)


@functools.lru_cache(maxsize=None)
def _matrix_tables(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return torch.tensor(_M_INDEX, device=device), torch.tensor(_M_SIGN, dtype=dtype, device=device)


def _apply_kron(mats: Tensor, state: Tensor) -> Tensor:
    """``(M_0 x ... x M_{n-1}) state`` for ``mats`` ``(B, n, 2, 2)`` and ``state`` ``(B, 2**n)``: one
    batched 2x2 product per qubit over the (before, after) blocks, never the ``2**n x 2**n`` matrix."""
    b, n = mats.shape[:2]
    for q in range(n):
        blocks = state.reshape(b, 2**q, 2, 2 ** (n - 1 - q))
        state = torch.matmul(mats[:, q].unsqueeze(1), blocks).reshape(b, -1)
    return state


def _layer_unitaries(m: Tensor, src: Tensor) -> Tensor:
    """``U_l = P (M_0 x ... x M_{n-1})`` for every layer at once: ``(B, L, d, d)`` (rows permuted by the ring)."""
    b, layers, n = m.shape[:3]
    k = m[:, :, 0]
    for q in range(1, n):
        a = k.shape[-1]
        k = k.reshape(b, layers, a, 1, a, 1) * m[:, :, q].reshape(b, layers, 1, 2, 1, 2)
        k = k.reshape(b, layers, 2 * a, 2 * a)
    return k.index_select(2, src)


#: Largest ``B * L * d * d`` for which the layers are applied as dense ``d x d`` unitaries (few large ops);
#: above it, qubit by qubit (more, smaller ops; memory ``B * d`` per state).
DENSE_LAYER_ELEMENTS = 1 << 15

_TABLE_CACHE: dict[tuple[int, str, torch.dtype], tuple[Tensor, ...]] = {}


def _device_tables(n: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """:func:`_tables` as tensors on ``device``: ``src``, ``image``, ``flip`` and half the ring-permuted
    signs ``(2**n, n)`` in ``dtype`` (``(-1)**bit_q(src[i]) / 2``: ``Z_q`` seen after the ring)."""
    key = (n, str(device), dtype)
    if key not in _TABLE_CACHE:
        src, image, flip, signs = _tables(n)
        src_t = torch.tensor(src, device=device)
        _TABLE_CACHE[key] = (src_t, torch.tensor(image, device=device), torch.tensor(flip, device=device),
                             torch.tensor(signs, dtype=dtype, device=device).reshape(2**n, n)[src_t] / 2)
    return _TABLE_CACHE[key]


def _ansatz_forward(theta: Tensor, keep: bool) -> tuple[Tensor, bool, Tensor | None, list[Tensor]]:
    """The closed form: ``(state, dense, mats, psis)``. ``psis`` (every layer's input state and the output)
    only when ``keep``; ``mats`` are the dense layer unitaries ``(B, L, d, d)`` or the 2x2 factors."""
    b, layers, n, _ = theta.shape
    m = _layer_matrices(theta)
    src = _device_tables(n, theta.device, theta.dtype)[0]
    dense = b * layers * 4**n <= DENSE_LAYER_ELEMENTS
    if dense:
        mats = _layer_unitaries(m, src)
        psis = [mats[:, 0, :, 0]]  # the first layer acts on |0...0>: its first column
        for layer in range(1, layers):
            psis.append(torch.bmm(mats[:, layer], psis[-1].unsqueeze(-1)).squeeze(-1))
    else:
        mats = m
        chi = m[:, 0, 0, :, 0]  # the first layer on |0...0>: the product state of the first columns
        for q in range(1, n):
            chi = (chi.unsqueeze(-1) * m[:, 0, q, :, 0].unsqueeze(1)).reshape(b, -1)
        psis = [chi.index_select(1, src)]  # the CNOT ring: one permutation
        for layer in range(1, layers):
            psis.append(_apply_kron(m[:, layer], psis[-1]).index_select(1, src))
    if keep:
        psi0 = torch.zeros_like(psis[0])
        psi0[:, 0] = 1
        psis.insert(0, psi0)
    return psis[-1], dense, mats, psis


class _AnsatzState(torch.autograd.Function):
    """Closed-form forward; adjoint-method backward (one sweep back over the layers, no graph)."""

    @staticmethod
    def forward(ctx, theta: Tensor) -> Tensor:
        state, ctx.dense, mats, psis = _ansatz_forward(theta, keep=True)
        _, image, flip, signs = _device_tables(theta.shape[2], theta.device, theta.dtype)
        ctx.save_for_backward(mats, torch.stack(psis, 1), image, flip, signs)
        return state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        # psi_l = P K_l psi_{l-1} with K_l = kron_q RZ(b_q) RX(a_q) and P the CNOT ring. With lambda_l the
        # gradient with respect to psi_l (lambda_{l-1} = K_l^dagger P^T lambda_l), a real loss has
        #   dL/db_q = Im <lambda_l| Z_q' |psi_l> / 2      (Z_q' = P Z_q P^T: signs permuted by the ring)
        #   dL/da_q = Im <lambda_{l-1}| X_q |psi_{l-1}> / 2
        # The sweep carries c_l = conj(lambda_l): c_{l-1} = c_l U_l (a row vector times U_l = P K_l).
        mats, psis, image, flip, half_signs = ctx.saved_tensors
        layers, n = mats.shape[1], half_signs.shape[1]
        cs = [grad.to(psis.dtype).conj().resolve_conj()]
        for layer in range(layers - 1, -1, -1):
            if ctx.dense:
                cs.append(torch.matmul(cs[-1].unsqueeze(1), mats[:, layer]).squeeze(1))
            else:
                cs.append(_apply_kron(mats[:, layer].transpose(-1, -2), cs[-1].index_select(1, image)))
        lam = torch.stack(cs[::-1], 1)  # (B, L+1, d): conj(lambda_0) .. conj(lambda_L)
        db = (lam[:, 1:] * psis[:, 1:]).imag @ half_signs
        flipped = psis[:, :-1].index_select(2, flip).unflatten(2, (-1, n))  # (X_q psi)_p = psi_{p ^ bit_q}
        da = torch.matmul(lam[:, :-1].unsqueeze(2), flipped).squeeze(2).imag * 0.5
        return torch.stack([da, db], -1)


def ansatz_state(theta: Tensor) -> Tensor:
    """Closed-form ``U(theta)|0>`` for ``theta`` ``(B, L, n, 2)`` real: complex ``(B, 2**n)``.

    The same numbers as simulating :meth:`qucnn.FilterAnsatz.ops` gate by gate (float64: to ~1e-15).
    One autograd node whose backward is the adjoint method (first derivatives only).

    Example:
        >>> ansatz_state(torch.zeros(1, 1, 2, 2))
        tensor([[1.+0.j, 0.+0.j, 0.+0.j, 0.+0.j]])
    """
    if theta.dim() != 4 or theta.shape[-1] != 2:
        raise ValueError(f"theta must have shape (B, L, n, 2), got {tuple(theta.shape)}")
    theta = theta.to(real_dtype(complex_dtype(theta.dtype)))  # half precision computes in float32
    if torch.is_grad_enabled() and theta.requires_grad:
        return _AnsatzState.apply(theta)
    return _ansatz_forward(theta, keep=False)[0]


# -- 2. fidelity maps as one autograd node -------------------------------------------------------------
def filter_weight(states: Tensor, channels: int, kernel: Pair, dtype: torch.dtype) -> Tensor:
    """Conv weights ``(2K, C, kh, kw)``: real parts then minus imaginary parts of the first ``C*kh*kw``
    amplitudes of ``states`` ``(K, d)``, so that ``conv2d(x, w)`` gives ``Re`` and ``Im`` of
    ``sum_p conj(f_p) x_p`` (real states get zero imaginary parts)."""
    m = channels * kernel[0] * kernel[1]
    imag = -states.imag[:, :m] if states.is_complex() else torch.zeros_like(states[:, :m])
    return torch.cat([states.real[:, :m], imag], 0).to(dtype).reshape(-1, channels, *kernel)


def _states_grad(gw: Tensor, states: Tensor) -> Tensor:
    """The gradient of ``states`` ``(K, d)`` from that of :func:`filter_weight`'s output ``(2K, ...)``:
    PyTorch's complex gradient is ``dL/dRe + i dL/dIm``, and the weight holds ``Re`` and ``-Im``."""
    k = states.shape[0]
    flat = gw.reshape(2 * k, -1)
    grad = torch.zeros_like(states)
    if states.is_complex():
        grad[:, : flat.shape[1]] = torch.complex(flat[:k], -flat[k:]).to(states.dtype)
    else:
        grad[:, : flat.shape[1]] = flat[:k].to(states.dtype)
    return grad


#: Inputs up to this many bytes take two strided-view reductions, larger ones ``kh + kw`` shifted adds
#: (the crossover measured on CPU: ~48 KB in float32 and float64 alike).
_SMALL_WINDOW_BYTES = 48 << 10


def window_sums(x2: Tensor, kernel: Pair, stride: Pair = (1, 1), padding: Pair = (0, 0)) -> Tensor:
    """Sums of ``x2`` ``(B, 1, H, W)`` over every window: ``(B, 1, H', W')`` (Conv2d's output size).

    Separable (rows, then columns) instead of a one-output-channel ``conv2d``, which oneDNN pads to 16
    output channels; sums of zeros stay exactly zero, so all-zero patches are still detected exactly.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x2 = F.pad(x2, (pw, pw, ph, ph))
    if x2.numel() * x2.element_size() <= _SMALL_WINDOW_BYTES:
        return x2.unfold(3, kw, sw).sum(-1).unfold(2, kh, sh).sum(-1)
    rows = _shifted_sum(x2, kw, sw, 3)
    return _shifted_sum(rows, kh, sh, 2)


def _shifted_sum(t: Tensor, k: int, step: int, dim: int) -> Tensor:
    """``sum_{j<k} t[..., j + step * i, ...]`` along ``dim``: ``k`` strided slices added."""
    count = (t.shape[dim] - k) // step + 1

    def part(j: int) -> Tensor:
        return t.narrow(dim, j, (count - 1) * step + 1)[(slice(None),) * dim + (slice(None, None, step),)]

    if k == 1:
        return part(0).contiguous()
    out = part(0) + part(1)
    for j in range(2, k):
        out += part(j)
    return out


def squared_norms(x: Tensor, kernel: Pair, stride: Pair = (1, 1), padding: Pair = (0, 0)) -> Tensor:
    """``||x_patch||^2`` of every window, ``(B, 1, H', W')``: the fast :func:`qucnn.fidelity.patch_norms`.

    Large inputs run in chunks of the batch (:data:`CHUNK_ELEMENTS` input elements each), so the
    temporaries (``x**2``, the row sums) stay small and reused instead of input-sized and fresh.
    """
    def sums(part: Tensor) -> Tensor:
        x2 = part * part
        return window_sums(x2 if part.shape[1] == 1 else x2.sum(1, keepdim=True), kernel, stride, padding)

    per_image = x[0].numel() if x.shape[0] else 1
    spans = _chunks(x.shape[0], per_image)
    if len(spans) <= 1:
        return sums(x)
    first = sums(x[: spans[0][1]])
    out = torch.empty((x.shape[0],) + first.shape[1:], dtype=first.dtype, device=first.device)
    out[: spans[0][1]] = first
    for i, j in spans[1:]:
        out[i:j] = sums(x[i:j])
    return out


def _inverse(norms: Tensor) -> Tensor:
    """``1 / norms`` with 0 where a patch is all zero (no state: fidelity 0 by definition)."""
    return torch.where(norms > 0, norms.reciprocal(), 0.0)


def _parts(x: Tensor, weight: Tensor, geometry: tuple, norms: Tensor | None, out: Tensor | None = None,
           grad: bool = True, fid: bool = True, zn_out: Tensor | None = None
           ) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """``(zn, inv, F)`` for one chunk of the batch.

    ``z = conv2d(x, weight)`` ``(b, 2K, H', W')`` holds the real and (minus) imaginary overlaps,
    ``inv = 1 / ||x||^2`` ``(b, 1, H', W')`` (0 on all-zero patches), ``zn = z * inv`` (scaled in place
    and kept for the backward, where ``dF/dz = 2 zn``; ``None`` unless ``grad``) and
    ``F = (Re^2 + Im^2) inv = (zn_re^2 + zn_im^2) ||x||^2`` ``(b, K, H', W')``, written into ``out``
    when given (``None`` when ``fid`` is false). ``zn`` is scaled in place, or written into ``zn_out``.
    """
    kernel, stride, padding = geometry
    k = weight.shape[0] // 2
    z = F.conv2d(x, weight, stride=stride, padding=padding)
    if norms is None:
        norms = squared_norms(x, kernel, stride, padding)
    inv = _inverse(norms)
    if not grad:
        fid = torch.mul(z[:, :k], z[:, :k], out=out) if out is not None else z[:, :k] * z[:, :k]
        return None, inv, fid.addcmul_(z[:, k:], z[:, k:]).mul_(inv)
    zn = z.mul_(inv) if zn_out is None else torch.mul(z, inv, out=zn_out)
    if not fid:
        return zn, inv, None
    f = torch.mul(zn[:, :k], zn[:, :k], out=out) if out is not None else zn[:, :k] * zn[:, :k]
    return zn, inv, f.addcmul_(zn[:, k:], zn[:, k:]).mul_(norms)


def _chunks(batch: int, per_item: int, limit: int | None = None) -> list[tuple[int, int]]:
    step = max(1, (CHUNK_ELEMENTS if limit is None else limit) // max(per_item, 1))
    return [(i, min(i + step, batch)) for i in range(0, batch, step)]


def _output(x: Tensor, weight: Tensor, geometry: tuple) -> tuple[int, int, int, int]:
    (kh, kw), (sh, sw), (ph, pw) = geometry
    return (x.shape[0], weight.shape[0] // 2, (x.shape[2] + 2 * ph - kh) // sh + 1,
            (x.shape[3] + 2 * pw - kw) // sw + 1)


def _fidelity_nograd(x: Tensor, weight: Tensor, geometry: tuple, norms: Tensor | None) -> Tensor:
    shape = _output(x, weight, geometry)
    spans = _chunks(x.shape[0], 2 * shape[1] * shape[2] * shape[3])
    if len(spans) == 1:
        return _parts(x, weight, geometry, norms, grad=False)[2]
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    for i, j in spans:
        _parts(x[i:j], weight, geometry, None if norms is None else norms[i:j], out=out[i:j], grad=False)
    return out


class _FidelityConv(torch.autograd.Function):
    """``F(x, states)`` with a hand-written backward: one weight-gradient convolution per chunk.

    The work runs in chunks of the batch (:data:`CHUNK_ELEMENTS` overlap elements: the convolution's
    buffers stay small, cache-resident and reused by the allocator). Inputs up to :data:`SAVE_ELEMENTS`
    keep the scaled overlaps ``zn`` on ``ctx`` and the first backward turns them into ``dF/dz`` in place;
    a second backward (``retain_graph``) or a larger input recomputes them chunk by chunk.
    """

    @staticmethod
    def forward(ctx, x: Tensor, states: Tensor, norms: Tensor | None, geometry: tuple) -> Tensor:
        weight = filter_weight(states, x.shape[1], geometry[0], x.dtype)
        ctx.weight = weight  # an intermediate: kept on ctx
        shape = _output(x, weight, geometry)
        per_item = 2 * shape[1] * shape[2] * shape[3]
        spans = _chunks(x.shape[0], per_item)
        ctx.geometry, ctx.spans = geometry, spans
        ctx.own_norms = norms is None  # given norms are constants, as in the reference
        ctx.zn = ctx.inv = None
        if x.shape[0] * per_item > SAVE_ELEMENTS:  # large input: keep only x, recompute in the backward
            ctx.save_for_backward(x, states, norms, None)
            return _fidelity_nograd(x, weight, geometry, norms)
        x_term = ctx.needs_input_grad[0] and ctx.own_norms
        if len(spans) == 1:
            zn, inv, fid = _parts(x, weight, geometry, norms)
        else:
            fid = torch.empty(shape, dtype=x.dtype, device=x.device)
            zn = torch.empty((shape[0], 2 * shape[1]) + shape[2:], dtype=x.dtype, device=x.device)
            inv = torch.empty((shape[0], 1) + shape[2:], dtype=x.dtype, device=x.device) if x_term else None
            for i, j in spans:
                _, inv_c, _ = _parts(x[i:j], weight, geometry, None if norms is None else norms[i:j],
                                     out=fid[i:j], zn_out=zn[i:j])
                if inv is not None:
                    inv[i:j] = inv_c
        ctx.zn, ctx.inv = zn, inv  # intermediates: kept on ctx (an output would make a cycle there)
        ctx.save_for_backward(x, states, norms, fid if x_term else None)
        return fid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        geometry, spans = ctx.geometry, ctx.spans
        kernel, stride, padding = geometry
        need_x, need_w = ctx.needs_input_grad[:2]
        x, states, norms, fid_saved = ctx.saved_tensors
        weight = ctx.weight
        k = weight.shape[0] // 2
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        zn_all, inv_all = ctx.zn, ctx.inv
        ctx.zn = ctx.inv = None  # used up in place below: a second backward recomputes
        for i, j in spans:
            if zn_all is not None:
                zn = zn_all[i:j]
                inv = None if inv_all is None else inv_all[i:j]
                fid = None if fid_saved is None else fid_saved[i:j]
            else:
                zn, inv, fid = _parts(x[i:j], weight, geometry, None if norms is None else norms[i:j],
                                      fid=need_x and ctx.own_norms)
            gi = g[i:j]
            dz = zn.unflatten(1, (2, k)).mul_(gi.unsqueeze(1)).flatten(1, 2)  # dF/dz = 2 zn g (2 applied below)
            gx, gw, _ = torch.ops.aten.convolution_backward(
                dz, x[i:j], weight, None, stride, padding, (1, 1), False, (0, 0), 1, (need_x, need_w, False))
            if need_w:
                grad_w.add_(gw, alpha=2)
            if need_x and not ctx.own_norms:
                torch.mul(gx, 2, out=grad_x[i:j])
            elif need_x:
                # the ||x||^2 term: dF/dN = -F / N, and dN/dx = 2 x summed over the windows
                dn = (gi * fid).sum(1, keepdim=True).mul_(inv).neg_()
                ones = torch.ones((1, 1) + tuple(kernel), dtype=x.dtype, device=x.device)
                gn, _, _ = torch.ops.aten.convolution_backward(  # x[:, :1] lends only its shape
                    dn, x[i:j, :1], ones, None, stride, padding, (1, 1), False, (0, 0), 1, (True, False, False))
                torch.mul(gx.addcmul_(x[i:j], gn), 2, out=grad_x[i:j])
        return grad_x, None if grad_w is None else _states_grad(grad_w, states), None, None


def fidelity_conv(x: Tensor, states: Tensor, kernel: Pair, stride: Pair = (1, 1),
                  padding: Pair = (0, 0), norms: Tensor | None = None) -> Tensor:
    """``|<f|x_patch>|^2 = (Re^2 + Im^2) / ||x_patch||^2`` with ``Re, Im = conv2d(x, filter_weight(states))``.

    Args:
        x: real images ``(B, C, H, W)``.
        states: filter states ``(K, d)``, complex or real, ``d >= C*kh*kw``.
        norms: optional precomputed ``||x_patch||^2`` ``(B, 1, H', W')``, treated as constants.

    Returns:
        ``(B, K, H', W')``; 0 on all-zero patches. One autograd node (first derivatives only). Inputs
        with more than :data:`SAVE_ELEMENTS` overlap elements (any input, without gradients) run in
        chunks of the batch.

    Example:
        >>> fidelity_conv(torch.rand(2, 1, 5, 5), torch.full((3, 4), 0.5), (2, 2)).shape
        torch.Size([2, 3, 4, 4])
    """
    geometry = (tuple(kernel), tuple(stride), tuple(padding))
    if torch.is_grad_enabled() and (x.requires_grad or states.requires_grad):
        return _FidelityConv.apply(x, states, norms, geometry)
    return _fidelity_nograd(x, filter_weight(states, x.shape[1], geometry[0], x.dtype), geometry, norms)


__all__ = ["ansatz_state", "fidelity_conv", "filter_weight", "window_sums", "squared_norms", "enabled",
           "disabled", "CHUNK_ELEMENTS", "SAVE_ELEMENTS"]
