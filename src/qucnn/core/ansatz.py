"""The filter ansatz of Fig. 1: ``L`` layers of RX then RZ on every qubit, then a ring of CNOTs.

Parameters ``theta`` have shape ``(..., layers, n_qubits, 2)``: ``theta[..., l, q, 0]`` is the RX angle
and ``theta[..., l, q, 1]`` the RZ angle of qubit ``q`` in layer ``l``. The CNOTs of a layer run
``q -> (q + 1) mod n`` for ``q = 0 .. n-1`` in that order (none when ``n = 1``; one, ``0 -> 1``, when
``n = 2``, since the ring's second CNOT ``1 -> 0`` is distinct and kept).

Two ways to the state ``U(theta)|0>``, tested against each other: ``"gates"`` simulates :meth:`FilterAnsatz.ops`
gate by gate (the reference); ``"closed"`` (:func:`ansatz_state`) writes a layer as
``U = P (M_0 x ... x M_{n-1})`` with ``M_q = RZ(b_q) RX(a_q)`` (2x2) and ``P`` the CNOT ring as ONE fixed
basis permutation. Small batches build every layer's ``d x d`` unitary at once and apply it with one
matrix-vector product; large batches apply the 2x2 factors qubit by qubit (memory ``B * d``). Its gradient
is one autograd node whose backward is the adjoint method (one sweep back over the layers).

Example:
    >>> ansatz = FilterAnsatz(n_qubits=4, layers=3)
    >>> ansatz.n_params
    24
    >>> ansatz.state(torch.zeros(5, 3, 4, 2)).shape
    torch.Size([5, 16])
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..utils.checks import UsageError, positive_int
from .gates import GATES, Op, complex_dtype, real_dtype
from .simulator import check_register, simulate, zero_state

#: The registry gates of one qubit's two parameters, in ``theta[..., q, :]`` order.
PARAMETER_GATES = ("RX", "RZ")
STATE_METHODS = ("closed", "gates")


def ring_pairs(n_qubits: int) -> list[tuple[int, int]]:
    """The (control, target) pairs of one layer's CNOT ring."""
    return [] if n_qubits == 1 else [(q, (q + 1) % n_qubits) for q in range(n_qubits)]


class FilterAnsatz:
    """The Fig. 1 ansatz on ``n_qubits`` qubits with ``layers`` layers (``2 * n_qubits * layers`` angles)."""

    def __init__(self, n_qubits: int, layers: int) -> None:
        self.n_qubits = positive_int(n_qubits, "n_qubits")
        self.layers = positive_int(layers, "layers")

    @property
    def n_params(self) -> int:
        """Angles per filter: ``2 * n_qubits * layers``."""
        return 2 * self.n_qubits * self.layers

    @property
    def param_shape(self) -> tuple[int, int, int]:
        """``(layers, n_qubits, 2)``: the shape of one filter's angles."""
        return (self.layers, self.n_qubits, 2)

    def __repr__(self) -> str:
        return f"FilterAnsatz(n_qubits={self.n_qubits}, layers={self.layers})"

    def shifts(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """The parameter-shift ``s`` of every angle, ``(layers, n_qubits, 2)``: each gate's registered
        :attr:`~qucnn.core.gates.Gate.shift` (``pi/2`` for RX and RZ)."""
        values = torch.tensor([GATES[g].shift for g in PARAMETER_GATES], dtype=dtype, device=device)
        return values.expand(self.param_shape)

    def _check(self, theta: Tensor) -> Tensor:
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if tuple(theta.shape[-3:]) != self.param_shape or theta.dim() < 3:
            raise UsageError(f"theta must have shape (..., {self.layers}, {self.n_qubits}, 2), "
                             f"got {tuple(theta.shape)}")
        if not theta.is_floating_point():
            raise TypeError(f"theta must be a real floating tensor, got {theta.dtype}")
        return theta.reshape((-1,) + self.param_shape)

    def ops(self, theta: Tensor, wires: tuple[int, ...] | None = None) -> list[Op]:
        """The circuit as registry ops; rotation angles are batched ``(B, 1)`` over filters."""
        flat = self._check(theta)
        wires = tuple(range(self.n_qubits)) if wires is None else tuple(wires)
        ops: list[Op] = []
        for layer in range(self.layers):
            for q in range(self.n_qubits):
                for k, gate in enumerate(PARAMETER_GATES):
                    ops.append(Op(gate, (wires[q],), flat[:, layer, q, k:k + 1]))
            ops.extend(Op("CNOT", (wires[c], wires[t])) for c, t in ring_pairs(self.n_qubits))
        return ops

    def state(self, theta: Tensor, method: str = "closed") -> Tensor:
        """The filter states ``U(theta)|0>``: complex ``(..., 2**n_qubits)``, differentiable in ``theta``.

        ``method="closed"``: :func:`ansatz_state`; ``"gates"``: :meth:`ops` simulated gate by gate.
        """
        flat = self._check(theta)
        if method not in STATE_METHODS:
            raise UsageError(f"method must be one of {STATE_METHODS}, got {method!r}")
        if method == "gates":
            init = zero_state(self.n_qubits, flat.shape[0], complex_dtype(flat.dtype), flat.device)
            out = simulate(self.ops(flat), state=init)
        else:
            if flat.shape[0] << self.n_qubits > 1 << 20:  # the memory check costs a system call
                check_register(self.n_qubits, flat.shape[0], complex_dtype(flat.dtype), flat.device)
            out = ansatz_state(flat)
        return out.reshape(theta.shape[:-3] + (2**self.n_qubits,))


# -- the closed form --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _tables(n: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """Index tables of one layer on ``n`` qubits: ``src`` (``new[i] = old[src[i]]`` for the whole CNOT ring
    ``q -> (q+1) mod n``), its inverse ``image``, ``flip`` (``p ^ bit_q``, row-major ``(2**n, n)``) and
    ``signs`` (``(-1)**bit_q(p)``, row-major ``(2**n, n)``)."""
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


def device_tables(n: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
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
    src = device_tables(n, theta.device, theta.dtype)[0]
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
    """Closed-form forward; adjoint-method backward (one sweep back over the layers, no graph). A backward
    that must itself be differentiable (``create_graph=True``) differentiates the closed form instead."""

    @staticmethod
    def forward(ctx, theta: Tensor) -> Tensor:
        state, ctx.dense, mats, psis = _ansatz_forward(theta, keep=True)
        _, image, flip, signs = device_tables(theta.shape[2], theta.device, theta.dtype)
        ctx.save_for_backward(mats, psis, image, flip, signs, theta)
        return state

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        if torch.is_grad_enabled():  # create_graph=True: differentiate the differentiable closed form instead
            theta = ctx.saved_tensors[-1]
            with torch.enable_grad():
                state = _ansatz_forward(theta, keep=False)[0]
            return torch.autograd.grad(state, theta, grad, create_graph=True)[0]
        # psi_l = P K_l psi_{l-1} with K_l = kron_q RZ(b_q) RX(a_q) and P the CNOT ring. With lambda_l the
        # gradient with respect to psi_l (lambda_{l-1} = K_l^dagger P^T lambda_l), a real loss has
        #   dL/db_q = Im <lambda_l| Z_q' |psi_l> / 2      (Z_q' = P Z_q P^T: signs permuted by the ring)
        #   dL/da_q = Im <lambda_{l-1}| X_q |psi_{l-1}> / 2
        # The sweep carries c_l = conj(lambda_l): c_{l-1} = c_l U_l (a row vector times U_l = P K_l).
        mats, psis, image, flip, half_signs, _ = ctx.saved_tensors
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

    The same numbers as simulating :meth:`FilterAnsatz.ops` gate by gate (float64: to ~1e-15). One
    autograd node whose backward is the adjoint method; double backward differentiates the closed form.

    Example:
        >>> ansatz_state(torch.zeros(1, 1, 2, 2)).abs()
        tensor([[1., 0., 0., 0.]])
    """
    if theta.dim() != 4 or theta.shape[-1] != 2:
        raise UsageError(f"theta must have shape (B, L, n, 2), got {tuple(theta.shape)}")
    theta = theta.to(real_dtype(complex_dtype(theta.dtype)))  # half precision computes in float32
    if torch.is_grad_enabled() and theta.requires_grad:
        return _AnsatzState.apply(theta)
    return _ansatz_forward(theta, keep=False)[0]


__all__ = ["DENSE_LAYER_ELEMENTS", "FilterAnsatz", "PARAMETER_GATES", "STATE_METHODS", "ansatz_state", "device_tables", "ring_pairs"]
