"""The reference backend: the plain autograd composition, nothing fused.

Filter states come from simulating the ansatz gate by gate (:meth:`qucnn.FilterAnsatz.ops`), and the
fidelity maps from :func:`plain_fidelity`: ``|<f|x>|^2 = |sum_p conj(f_p) x_p|^2 / ||x||^2`` (Eq. 3) as one
``conv2d`` with the real and minus imaginary parts of the filter states as weights, a ``conv2d`` of ``x**2``
with ones for the squared norms, and a safe division, all differentiated by autograd (to any order).
Amplitudes past the ``C*kh*kw`` patch values meet the zero padding of the encoding and drop out. The torch
backend is tested against this one on every geometry.

Example:
    >>> from qucnn.core.geometry import ConvSpec
    >>> plain_fidelity(torch.rand(2, 1, 5, 5), torch.full((3, 4), 0.5), ConvSpec.make(2)).shape
    torch.Size([2, 3, 4, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.ansatz import FilterAnsatz
from ..core.geometry import ConvSpec
from .simulated import SimulatorBackend


def plain_norms(x: Tensor, spec: ConvSpec) -> Tensor:
    """Squared norms ``||x_patch||^2`` of every window: ``(B, 1, H', W')`` (exactly 0 for all-zero patches)."""
    ones = torch.ones((1, 1) + tuple(spec.kernel), dtype=x.dtype, device=x.device)
    return F.conv2d((x * x).sum(1, keepdim=True), ones, stride=spec.stride, padding=spec.padding,
                    dilation=spec.dilation)


def plain_fidelity(x: Tensor, states: Tensor, spec: ConvSpec) -> Tensor:
    """``(B, K, H', W')`` fidelities of ``x`` ``(B, C, H, W)`` with ``states`` ``(K, d)`` (``d >= C*kh*kw``),
    0 on all-zero patches; differentiable to any order (no ``inf * 0`` at the zero patches)."""
    m = spec.patch_size(x.shape[1])
    real = states.real if states.is_complex() else states
    imag = -states.imag if states.is_complex() else torch.zeros_like(states)
    weight = torch.cat([real[:, :m], imag[:, :m]], 0).to(x.dtype).reshape(-1, x.shape[1], *spec.kernel)
    both = F.conv2d(x, weight, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)
    norms = plain_norms(x, spec)
    valid = norms > 0
    inverse = torch.where(valid, torch.where(valid, norms, torch.ones_like(norms)).rsqrt(), torch.zeros_like(norms))
    z = both * inverse
    k = states.shape[0]
    return z[:, :k] ** 2 + z[:, k:] ** 2


class ReferenceBackend(SimulatorBackend):
    """``"reference"``: gate-by-gate ansatz simulation and autograd-composed maps (slow, simple, exact)."""

    name = "reference"

    def filter_states(self, theta: Tensor) -> Tensor:
        return FilterAnsatz(int(theta.shape[-2]), int(theta.shape[-3])).state(theta, method="gates")

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec,
             want_mask: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        valid = plain_norms(x.detach(), spec) > 0
        return plain_fidelity(x, states, spec), torch.count_nonzero(valid), valid if want_mask else None


__all__ = ["ReferenceBackend", "plain_fidelity", "plain_norms"]
