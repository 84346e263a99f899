"""Fast paths for the two hot spots of :class:`qucnn.QuConv2d`, each tested against a plain reference,
and the switch that turns them off.

1. :func:`ansatz_state` (here): the Fig. 1 filter state in closed form. A layer is ``U = P (M_0 x ... x M_{n-1})``
   with ``M_q = RZ(b_q) RX(a_q)`` (2x2) and ``P`` the CNOT ring as ONE fixed basis permutation. Small
   batches build every layer's ``d x d`` unitary at once (``n - 1`` broadcast products and one row
   gather) and apply it with one matrix-vector product; large batches apply the 2x2 factors qubit by
   qubit (memory ``B * d``). The gradient is one autograd node whose backward is the adjoint method
   (one sweep back over the layers), instead of a graph of ~3n simulator ops per layer (each several
   reshapes and a ``movedim``). The reference is ``simulate(ansatz.ops(theta))``.
2. :func:`qucnn.fastconv.fidelity_conv`: the fidelity maps as one autograd node with a hand-written
   backward (see :mod:`qucnn.fastconv`). The reference is autograd through
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
from torch import Tensor

from .gates import complex_dtype, real_dtype

Pair = tuple[int, int]

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
    """``M = RZ(b) RX(a)`` for every angle pair of ``theta`` ``(..., 2)``: complex ``(..., 2, 2)``."""
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
    """``U_l = P (M_0 x ... x M_{n-1})`` for ``m`` ``(L, B, n, 2, 2)``: ``(L, B, d, d)`` (rows permuted by the ring)."""
    layers, b, n = m.shape[:3]
    per_qubit = m.movedim(2, 0).contiguous()  # one copy, so that every factor below is a view
    k = per_qubit[0]
    for q in range(1, n):
        a = k.shape[-1]
        k = (k.view(layers, b, a, 1, a, 1) * per_qubit[q].view(layers, b, 1, 2, 1, 2)).view(layers, b, 2 * a, 2 * a)
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


def _ansatz_forward(theta: Tensor, keep: bool) -> tuple[Tensor, bool, Tensor, Tensor | None]:
    """The closed form: ``(state, dense, mats, psis)``, layer-major inside. ``mats``: the dense layer
    unitaries ``(L, B, d, d)`` or the 2x2 factors ``(L, B, n, 2, 2)``; ``psis`` ``(L+1, B, d)``: every
    layer's input state and the output, only when ``keep``."""
    b, layers, n, _ = theta.shape
    m = _layer_matrices(theta.transpose(0, 1))  # (L, B, n, 2, 2)
    src = _device_tables(n, theta.device, theta.dtype)[0]
    dense = b * layers * 4**n <= DENSE_LAYER_ELEMENTS
    if dense:
        mats = _layer_unitaries(m, src)
        psis = [mats[0, :, :, 0]]  # the first layer acts on |0...0>: its first column
        for layer in range(1, layers):
            psis.append(torch.bmm(mats[layer], psis[-1].unsqueeze(-1)).squeeze(-1))
    else:
        mats = m
        chi = m[0, :, 0, :, 0]  # the first layer on |0...0>: the product state of the first columns
        for q in range(1, n):
            chi = (chi.unsqueeze(-1) * m[0, :, q, :, 0].unsqueeze(1)).reshape(b, -1)
        psis = [chi.index_select(1, src)]  # the CNOT ring: one permutation
        for layer in range(1, layers):
            psis.append(_apply_kron(m[layer], psis[-1]).index_select(1, src))
    if not keep:
        return psis[-1], dense, mats, None
    psi0 = torch.zeros_like(psis[0])
    psi0[:, 0] = 1
    return psis[-1], dense, mats, torch.stack([psi0] + psis)


class _AnsatzState(torch.autograd.Function):
    """Closed-form forward; adjoint-method backward (one sweep back over the layers, no graph)."""

    @staticmethod
    def forward(ctx, theta: Tensor) -> Tensor:
        state, ctx.dense, mats, psis = _ansatz_forward(theta, keep=True)
        _, image, flip, signs = _device_tables(theta.shape[2], theta.device, theta.dtype)
        ctx.save_for_backward(mats, psis, image, flip, signs)
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
        layers, n = mats.shape[0], half_signs.shape[1]
        cs = [grad.to(psis.dtype).conj().resolve_conj()]
        for layer in range(layers - 1, -1, -1):
            if ctx.dense:
                cs.append(torch.matmul(cs[-1].unsqueeze(1), mats[layer]).squeeze(1))
            else:
                cs.append(_apply_kron(mats[layer].transpose(-1, -2), cs[-1].index_select(1, image)))
        lam = torch.stack(cs[::-1])  # (L+1, B, d): conj(lambda_0) .. conj(lambda_L)
        db = (lam[1:] * psis[1:]).imag @ half_signs
        flipped = psis[:-1].index_select(2, flip).unflatten(2, (-1, n))  # (X_q psi)_p = psi_{p ^ bit_q}
        da = torch.matmul(lam[:-1].unsqueeze(2), flipped).squeeze(2).imag * 0.5
        return torch.stack([da, db], -1).transpose(0, 1)


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


__all__ = ["ansatz_state", "enabled", "disabled", "DENSE_LAYER_ELEMENTS"]
