"""Quantum-side gradient estimators for the filter parameters of a QuCNN layer.

All three use the parameter-shift rule (Eq. 4-6), exact for RX/RZ angles: ``dF/dt = (F(t + pi/2) -
F(t - pi/2)) / 2``. The shifted filter states depend only on the filters, so they are prepared once per
backward (``2 * P * O`` states) and convolved with every patch.

- :func:`parameter_shift_grad`: post-processed (Eq. 6): ``sum_j g_j (F+_j - F-_j) / 2``, each ``F`` exact
  or estimated with ``shots`` (variance ``(1 - F^2) / S``).
- :func:`entanglement_grad`: Eq. 16-17: ``delta_j = g_j / c`` with ``c = max_j |g_j|`` is folded into
  each circuit by the ``RY(arccos delta_j)`` ancilla; ``<Z_a> = delta_j F_j`` (Eq. 15), estimated with
  ``shots`` (variance ``(1 - delta_j^2 F_j^2) / S``); the gradient is ``(c / 2) sum_j (<Z>+ - <Z>-)``.
- :func:`sampled_grad`: a budget of ``N`` single-shot circuits ``(j, t, sign)`` drawn with probability
  ``|g_j| / A`` (``A = sum_j |g_j|``) times ``1 / (2P)``, each with ``delta = sign(g_j)``; unbiased,
  with ``Var = (A P A_o - G_{o,t}^2) / N`` for parameter ``t`` of filter ``o`` (``A_o`` its share of ``A``).

Circuits whose result is known without running them (an all-zero patch, or ``g_j = 0`` in the
entanglement circuit, where ``<Z_a> = 0``) are not run and not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .fidelity import fidelity_maps, gather_patches, patch_norms
from .swap_test import estimate_z

#: Elements of the shifted-fidelity block computed at once (bounds backward memory).
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Geometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Estimate:
    """A gradient ``(O, P)`` and what it would cost on a quantum computer."""

    grad: Tensor
    circuits: int
    shots: int | None


def shifted_thetas(theta: Tensor, shift: float = math.pi / 2) -> Tensor:
    """``theta`` ``(O, L, n, 2)`` shifted by ``+-shift`` in one parameter each: ``(2, P, O, L, n, 2)``."""
    o = theta.shape[0]
    p = theta[0].numel()
    eye = torch.eye(p, dtype=theta.dtype, device=theta.device).reshape((p, 1) + theta.shape[1:])
    base = theta.detach().unsqueeze(0).expand((p,) + theta.shape)
    return torch.stack([base + shift * eye, base - shift * eye]).reshape((2, p, o) + theta.shape[1:])


def _shifted_fidelities(x: Tensor, shifted: Tensor, geom: Geometry, norms: Tensor):
    """Yield ``(t0, F+, F-)`` blocks, each ``(B, p, O, H', W')``, over chunks of parameters."""
    _, p, o, d = shifted.shape
    per_param = 4 * x.shape[0] * o * norms.shape[-2] * norms.shape[-1]  # re, im for both signs
    chunk = max(1, CHUNK_ELEMENTS // max(per_param, 1))
    for t0 in range(0, p, chunk):
        block = shifted[:, t0:t0 + chunk]
        pc = block.shape[1]
        fid = fidelity_maps(x, block.reshape(-1, d), geom.kernel, geom.stride, geom.padding, norms)
        fid = fid.reshape(x.shape[0], 2, pc, o, *fid.shape[-2:])
        yield t0, fid[:, 0], fid[:, 1]


def parameter_shift_grad(x: Tensor, shifted: Tensor, g: Tensor, geom: Geometry, shots: int | None = None,
                         generator: torch.Generator | None = None) -> Estimate:
    """Post-processed parameter shift; ``shifted`` states ``(2, P, O, d)``, upstream ``g`` ``(B, O, H', W')``."""
    norms = patch_norms(x, geom.kernel, geom.stride, geom.padding)
    valid = (norms > 0).unsqueeze(1)  # (B, 1, 1, H', W')
    grad = torch.zeros(shifted.shape[2], shifted.shape[1], dtype=g.dtype, device=g.device)
    for t0, f_plus, f_minus in _shifted_fidelities(x, shifted, geom, norms):
        if shots is not None:
            f_plus = torch.where(valid, estimate_z(f_plus, shots, generator), 0)
            f_minus = torch.where(valid, estimate_z(f_minus, shots, generator), 0)
        diff = (f_plus - f_minus) / 2  # (B, p, O, H', W')
        grad[:, t0:t0 + diff.shape[1]] = torch.einsum("bpohw,bohw->op", diff.to(g.dtype), g)
    circuits = 2 * shifted.shape[1] * shifted.shape[2] * int(valid.sum())
    return Estimate(grad, circuits, None if shots is None else circuits * shots)


def entanglement_grad(x: Tensor, shifted: Tensor, g: Tensor, geom: Geometry, shots: int | None = None,
                      generator: torch.Generator | None = None) -> Estimate:
    """Entanglement-based backpropagation (Eq. 16-17) with ``c = max_j |g_j|``."""
    norms = patch_norms(x, geom.kernel, geom.stride, geom.padding)
    grad = torch.zeros(shifted.shape[2], shifted.shape[1], dtype=g.dtype, device=g.device)
    scale = g.abs().max() if g.numel() else g.new_zeros(())  # an empty shard has nothing to run
    if scale == 0:
        return Estimate(grad, 0, None if shots is None else 0)
    delta = (g / scale).unsqueeze(1)  # (B, 1, O, H', W')
    run = (delta != 0) & (norms > 0).unsqueeze(1)
    for t0, f_plus, f_minus in _shifted_fidelities(x, shifted, geom, norms):
        z_plus, z_minus = delta * f_plus, delta * f_minus  # Eq. 15
        if shots is not None:
            z_plus = torch.where(run, estimate_z(z_plus, shots, generator), 0)
            z_minus = torch.where(run, estimate_z(z_minus, shots, generator), 0)
        grad[:, t0:t0 + z_plus.shape[1]] = (scale / 2) * (z_plus - z_minus).sum((0, 3, 4)).T.to(g.dtype)
    circuits = 2 * shifted.shape[1] * int(run.sum())
    return Estimate(grad, circuits, None if shots is None else circuits * shots)


def sampled_grad(x: Tensor, shifted: Tensor, g: Tensor, geom: Geometry, budget: int,
                 generator: torch.Generator | None = None) -> Estimate:
    """Shot-frugal estimator: ``budget`` single-shot sign-only Eq. 17 circuits, importance-sampled by ``|g_j|``."""
    _, p, o, d = shifted.shape
    norms = patch_norms(x, geom.kernel, geom.stride, geom.padding)  # (B, 1, H', W')
    weights = (g.abs() * (norms > 0)).flatten()
    total = weights.sum()
    grad = torch.zeros(o, p, dtype=g.dtype, device=g.device)
    if total == 0:
        return Estimate(grad, 0, 0)
    dev = g.device
    home = dev if generator is None else generator.device  # draw where the generator lives
    j = torch.multinomial(weights.double().to(home), budget, replacement=True, generator=generator).to(dev)
    t = torch.randint(p, (budget,), generator=generator, device=home).to(dev)
    sign_idx = torch.randint(2, (budget,), generator=generator, device=home).to(dev)
    hw = g.shape[-1] * g.shape[-2]
    b, rem = j // (o * hw), j % (o * hw)
    f_idx, pos = rem // hw, rem % hw
    row, col = pos // g.shape[-1], pos % g.shape[-1]
    patches = gather_patches(x, b, row, col, geom.kernel, geom.stride, geom.padding)
    patches = patches / patches.norm(dim=-1, keepdim=True)
    states = shifted[sign_idx, t, f_idx, : patches.shape[-1]]
    overlap = (states.conj() * patches.to(states.dtype)).sum(-1)
    fid = overlap.real**2 + overlap.imag**2
    expectation = torch.sign(g.flatten()[j]).to(fid.dtype) * fid  # <Z_a> with delta = sign(g_j)
    z = estimate_z(expectation, 1, generator)  # one shot: +-1
    shift_sign = 1 - 2 * sign_idx.to(z.dtype)  # + for theta + pi/2, - for theta - pi/2
    contrib = (total * p / budget) * shift_sign * z
    grad.view(-1).index_add_(0, f_idx * p + t, contrib.to(g.dtype))
    return Estimate(grad, budget, budget)


def sampled_variance(g: Tensor, grad_exact: Tensor, valid: Tensor, n_params: int, budget: int) -> Tensor:
    """Theoretical variance ``(A P A_o - G_{o,t}^2) / N`` of :func:`sampled_grad`, shape ``(O, P)``."""
    w = g.abs() * valid
    a_o = w.sum((0, 2, 3))  # (O,)
    return (w.sum() * n_params * a_o[:, None] - grad_exact**2) / budget
