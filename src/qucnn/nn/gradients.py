"""Quantum-side gradient estimators for the filter angles of a QuCNN layer, written once for every backend.

All use the parameter-shift rule (Eq. 4-6), exact for rotations ``exp(-i t G / 2)`` with ``G**2 = 1``:
``dF/dt = (F(t + s) - F(t - s)) / (2 sin s)``, with each gate's registered shift ``s`` (``pi/2`` for RX and
RZ). The circuits run on the backend (:meth:`~qucnn.backends.Backend.expectations`); the classical
post-processing and the count of the circuits run are here, and only here.

- :func:`parameter_shift`: post-processed (Eq. 6): ``sum_j g_j (F+_j - F-_j) / (2 sin s)``, each ``F`` exact or
  estimated with ``shots`` (variance ``(1 - F^2) / S``).
- :func:`entanglement`: Eq. 16-17: ``delta_j = g_j / c`` with ``c = max_j |g_j|`` is folded into each circuit
  by the ``RY(arccos delta_j)`` ancilla; ``<Z_a> = delta_j F_j`` (Eq. 15), estimated with ``shots`` (variance
  ``(1 - delta_j^2 F_j^2) / S``); the gradient is ``c sum_j (<Z>+ - <Z>-) / (2 sin s)``. The ancilla is only
  rotated and then controls one CNOT, so measuring it and multiplying classically gives the same statistics:
  this estimator is a classical post-processing in disguise, with variance ``c^2 (1 - delta^2) / S`` above
  post-processed parameter shift per circuit (see ``docs/math.md``).
- :func:`sampled`: importance-sampled, doubly stochastic parameter shift (Sweke et al., Quantum 4, 314
  (2020); Arrasmith et al., arXiv 2004.06252) batched over this layer's patches and filters: a budget of
  ``N`` single-shot circuits ``(j, t, sign)`` drawn with probability ``|g_j| / A`` (``A = sum_j |g_j|``)
  times ``1 / (2P)``, each with ``delta = sign(g_j)``; unbiased, with ``Var = (A P A_o - G_{o,t}^2) / N``
  for angle ``t`` of filter ``o`` (``A_o`` its share of ``A``), for ``s = pi/2``.

Circuits whose result is known without running them (an all-zero patch, or ``g_j = 0``) are not run and not
counted. ``x`` is as the user gave it (the backend applies ``spec``'s padding); ``valid``, when given, is
:func:`qucnn.core.windows.valid_patches` of it, computed once per call by the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backends.base import Backend, Filters
from ..core.ansatz import FilterAnsatz
from ..core.geometry import ConvSpec, gather_patches
from ..core.windows import valid_patches

#: Shifted expectations ``(2, p, B, O, H', W')`` computed at once (bounds backward memory).
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Estimate:
    """A gradient ``(O, P)`` and what it cost: circuits (an int or a 0-dim tensor), total shots (``None`` when
    exact) and the qubits of one circuit."""

    grad: Tensor
    circuits: Tensor | int
    shots: Tensor | int | None
    qubits: int


def shifted_thetas(theta: Tensor, params: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``theta`` ``(O, L, n, 2)`` shifted by ``+-s`` in one angle each: ``(2, p, O, L, n, 2)`` for the ``p``
    angles ``params`` (indices into one filter's flattened angles; default all), and ``2 sin s`` ``(p,)``."""
    shape = theta.shape[1:]
    shifts = FilterAnsatz(int(shape[1]), int(shape[0])).shifts(theta.dtype, theta.device).reshape(-1)
    total = shifts.numel()
    index = torch.arange(total, device=theta.device) if params is None else params.to(theta.device)
    eye = torch.zeros(len(index), total, dtype=theta.dtype, device=theta.device)
    eye[torch.arange(len(index), device=theta.device), index] = shifts[index]
    eye = eye.reshape((len(index), 1) + tuple(shape))
    base = theta.detach().unsqueeze(0)
    return torch.stack([base + eye, base - eye]), 2 * torch.sin(shifts[index])


def _blocks(x: Tensor, spec: ConvSpec, o: int, p: int):
    ho, wo = spec.output_size(*x.shape[-2:])
    per_param = 2 * x.shape[0] * o * ho * wo
    step = max(1, CHUNK_ELEMENTS // max(per_param, 1))
    return [(t0, min(t0 + step, p)) for t0 in range(0, p, step)]


def _param_index(params: Tensor | None, total: int, device: torch.device) -> Tensor:
    return torch.arange(total, device=device) if params is None else params.to(device)


def _runs(x: Tensor, spec: ConvSpec, g: Tensor, valid: Tensor | None) -> Tensor:
    """Outputs whose circuits run: the patch is not all zero and ``g != 0`` (a 0-dim int64 device tensor)."""
    valid = valid_patches(x, spec) if valid is None else valid
    return torch.count_nonzero(valid & (g != 0))


def parameter_shift(backend: Backend, x: Tensor, theta: Tensor, spec: ConvSpec, g: Tensor,
                    shots: int | None = None, generator: torch.Generator | None = None,
                    params: Tensor | None = None, valid: Tensor | None = None) -> Estimate:
    """Post-processed parameter shift (Eq. 6) of ``L`` with ``dL/dF = g`` ``(B, O, H', W')``: ``(O, P)``
    (angles outside ``params`` stay 0 and cost nothing)."""
    o, total = theta.shape[0], theta[0].numel()
    index = _param_index(params, total, theta.device)
    shifted, denom = shifted_thetas(theta, index)
    grad = torch.zeros(o, total, dtype=g.dtype, device=g.device)
    wanted = g != 0
    for t0, t1 in _blocks(x, spec, o, len(index)):
        block = Filters(theta=shifted[:, t0:t1].reshape((-1, o) + theta.shape[1:]))
        values = backend.expectations(x, block, spec, mask=wanted, shots=shots, generator=generator).values
        values = values.unflatten(0, (2, t1 - t0))
        diff = (values[0] - values[1]).to(g.dtype) / denom[t0:t1].to(g.dtype).view(-1, 1, 1, 1, 1)
        grad[:, index[t0:t1]] = torch.einsum("pbohw,bohw->op", diff, g)
    circuits = 2 * len(index) * _runs(x, spec, g, valid)
    return Estimate(grad, circuits, None if shots is None else circuits * shots, 2 * theta.shape[2] + 1)


def entanglement(backend: Backend, x: Tensor, theta: Tensor, spec: ConvSpec, g: Tensor,
                 shots: int | None = None, generator: torch.Generator | None = None,
                 scale: float | Tensor | None = None, params: Tensor | None = None,
                 valid: Tensor | None = None) -> Estimate:
    """Entanglement-based backpropagation (Eq. 16-17) with ``c = scale`` (default ``max_j |g_j|``, which must
    bound every ``|g_j|``): ``(O, P)``."""
    o, total = theta.shape[0], theta[0].numel()
    index = _param_index(params, total, theta.device)
    shifted, denom = shifted_thetas(theta, index)
    c = g.abs().amax() if scale is None else torch.as_tensor(scale, dtype=g.dtype, device=g.device)
    delta = torch.where(c > 0, g / torch.where(c > 0, c, torch.ones_like(c)), torch.zeros_like(g))
    grad = torch.zeros(o, total, dtype=g.dtype, device=g.device)
    for t0, t1 in _blocks(x, spec, o, len(index)):
        block = Filters(theta=shifted[:, t0:t1].reshape((-1, o) + theta.shape[1:]))
        values = backend.expectations(x, block, spec, upstream=delta, shots=shots, generator=generator).values
        values = values.unflatten(0, (2, t1 - t0)).to(g.dtype)
        summed = (values[0] - values[1]).sum((1, 3, 4))  # (p, O)
        grad[:, index[t0:t1]] = (c * summed / denom[t0:t1].to(g.dtype)[:, None]).T
    circuits = 2 * len(index) * _runs(x, spec, delta, valid)
    return Estimate(grad, circuits, None if shots is None else circuits * shots, 2 * theta.shape[2] + 2)


def sampled(backend: Backend, x: Tensor, theta: Tensor, spec: ConvSpec, g: Tensor, budget: int,
            generator: torch.Generator | None = None, valid: Tensor | None = None) -> Estimate:
    """Shot-frugal estimator: ``budget`` single-shot sign-only Eq. 17 circuits, importance-sampled by ``|g_j|``."""
    o, p = theta.shape[0], theta[0].numel()
    qubits = 2 * theta.shape[2] + 2
    weights = (g.abs() * (valid_patches(x, spec) if valid is None else valid)).flatten()
    grad = torch.zeros(o, p, dtype=g.dtype, device=g.device)
    total = weights.sum()
    if not bool(total > 0):  # nothing to sample from (a host read: this estimator draws on the host anyway)
        return Estimate(grad, 0, 0, qubits)
    dev = g.device
    home = dev if generator is None else generator.device  # draw where the generator lives
    j = torch.multinomial(weights.double().to(home), budget, replacement=True, generator=generator).to(dev)
    t = torch.randint(p, (budget,), generator=generator, device=home).to(dev)
    sign_idx = torch.randint(2, (budget,), generator=generator, device=home).to(dev)
    hw = g.shape[-1] * g.shape[-2]
    b, rem = j // (o * hw), j % (o * hw)
    f_idx, pos = rem // hw, rem % hw
    row, col = pos // g.shape[-1], pos % g.shape[-1]
    shifted, denom = shifted_thetas(theta)  # (2, P, O, L, n, 2)
    with torch.no_grad():
        states = backend.filter_states(shifted)  # prepared once: 2 P O states, gathered below
    filters = Filters(theta=shifted, states=states).take((sign_idx * p + t) * o + f_idx)
    patches = gather_patches(x.detach(), spec, b, row, col)
    upstream = torch.sign(g.flatten()[j])
    z = backend.circuit_expectations(patches, filters, upstream=upstream, shots=1, generator=generator).values
    shift_sign = 1 - 2 * sign_idx.to(z.dtype)  # + for theta + s, - for theta - s
    contrib = (total * p / budget) * shift_sign * z * (2 / denom[t].to(z.dtype))
    grad.view(-1).index_add_(0, f_idx * p + t, contrib.to(g.dtype))
    return Estimate(grad, budget, budget, qubits)


def sampled_variance(g: Tensor, grad_exact: Tensor, valid: Tensor, n_params: int, budget: int) -> Tensor:
    """Theoretical variance ``(A P A_o - G_{o,t}^2) / N`` of :func:`sampled` (shift ``pi/2``), shape ``(O, P)``."""
    w = g.abs() * valid
    a_o = w.sum((0, 2, 3))  # (O,)
    return (w.sum() * n_params * a_o[:, None] - grad_exact**2) / budget


ESTIMATORS = {"parameter-shift": parameter_shift, "entanglement": entanglement}

__all__ = ["CHUNK_ELEMENTS", "ESTIMATORS", "Estimate", "entanglement", "parameter_shift", "sampled",
           "sampled_variance", "shifted_thetas"]
