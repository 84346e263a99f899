"""The reference backend: the plain autograd composition, nothing fused.

Filter states come from simulating the ansatz gate by gate (:meth:`qucnn.FilterAnsatz.ops`), and the fidelity
maps from :func:`plain_fidelity`: ``|<f|x>|^2 = |sum_p conj(f_p) x_p|^2 / ||x||^2`` (Eq. 3) as one ``conv2d``
with the real and minus imaginary parts of the filter states as weights, a ``conv2d`` of ``x**2`` with ones for
the squared norms, and a safe division, all differentiated by autograd (to any order). Amplitudes past the
``C*kh*kw`` patch values meet the zero padding of the encoding and drop out. The torch backend is tested
against this one on every geometry.

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
from ..core.windows import norm_lift, prepare_input
from .simulator import SimulatorBackend


def plain_norms(x: Tensor, spec: ConvSpec) -> Tensor:
    """Squared norms ``||x_patch||^2`` of every window: ``(B, 1, H', W')`` (exactly 0 for all-zero patches)."""
    ones = torch.ones((1, 1) + tuple(spec.kernel), dtype=x.dtype, device=x.device)
    return F.conv2d((x * x).sum(1, keepdim=True), ones, stride=spec.stride, padding=spec.padding,
                    dilation=spec.dilation)


def _safe_rsqrt(norms: Tensor) -> Tensor:
    """``1 / sqrt(norms)``, 0 where ``norms`` is 0, with finite derivatives everywhere (no ``inf * 0``)."""
    valid = norms > 0
    return torch.where(valid, torch.where(valid, norms, torch.ones_like(norms)).rsqrt(), torch.zeros_like(norms))


def plain_inverse_norms(x: Tensor, spec: ConvSpec) -> Tensor:
    """``1 / ||x_patch||`` ``(B, 1, H', W')`` of a prepared input, 0 on all-zero patches, differentiable to any
    order; the squared norms are summed from ``x`` lifted by :func:`~qucnn.core.windows.norm_lift`, so that faint
    patches keep every digit."""
    if x.numel() == 0:
        return plain_norms(x, spec)
    lift = norm_lift(x.detach().abs().amax(dim=(1, 2, 3), keepdim=True))
    return _safe_rsqrt(plain_norms(x * lift, spec)) * lift


def plain_fidelity(x: Tensor, states: Tensor, spec: ConvSpec) -> Tensor:
    """``(B, K, H', W')`` fidelities of a prepared input ``x`` ``(B, C, H, W)`` (symmetric zero padding in
    ``spec``; :func:`~qucnn.core.windows.prepare_input` scales it) with ``states`` ``(K, d)`` (``d >= C*kh*kw``),
    0 on all-zero patches; differentiable to any order."""
    m = spec.patch_size(x.shape[1])
    real = states.real if states.is_complex() else states
    imag = -states.imag if states.is_complex() else torch.zeros_like(states)
    weight = torch.cat([real[:, :m], imag[:, :m]], 0).to(x.dtype).reshape(-1, x.shape[1], *spec.kernel)
    both = F.conv2d(x, weight, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)
    z = both * plain_inverse_norms(x, spec)
    k = states.shape[0]
    return z[:, :k] ** 2 + z[:, k:] ** 2


class ReferenceBackend(SimulatorBackend):
    """``"reference"``: gate-by-gate ansatz simulation and autograd-composed maps (slow, simple, exact)."""

    name = "reference"

    def filter_states(self, theta: Tensor) -> Tensor:
        return FilterAnsatz(int(theta.shape[-2]), int(theta.shape[-3])).state(theta, method="gates")

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
        prepared, spec = spec.prepare(x)
        prepared = prepare_input(prepared)
        fid = plain_fidelity(prepared, states, spec)
        valid = plain_inverse_norms(prepared.detach(), spec) > 0
        return fid.to(x.dtype), valid


__all__ = ["ReferenceBackend", "plain_fidelity", "plain_inverse_norms", "plain_norms"]
