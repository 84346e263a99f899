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
from ..core.windows import compute_dtype, power_of_two_scale
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


def unit_patches(x: Tensor, spec: ConvSpec) -> Tensor:
    """Every patch of ``x`` ``(B, C, H, W)`` (symmetric zero padding in ``spec``) divided by its norm: ``(B, m, L)``,
    zero columns for all-zero patches. Each patch is first scaled by the power of two that brings its own largest
    value near 1, so that no patch, however faint beside the others, loses a digit; differentiable to any order."""
    patches = F.unfold(x, spec.kernel, dilation=spec.dilation, padding=spec.padding, stride=spec.stride)
    top = patches.detach().abs().amax(1, keepdim=True)
    scaled = patches * power_of_two_scale(top)
    return scaled * _safe_rsqrt((scaled * scaled).sum(1, keepdim=True))


def plain_fidelity(x: Tensor, states: Tensor, spec: ConvSpec) -> Tensor:
    """``(B, K, H', W')`` fidelities ``|<f|x_patch>|^2`` of ``x`` ``(B, C, H, W)`` (symmetric zero padding in
    ``spec``) with ``states`` ``(K, d)`` (``d >= C*kh*kw``), 0 on all-zero patches; differentiable to any order."""
    unit = unit_patches(x, spec)  # (B, m, L)
    filters = states[:, : unit.shape[1]]
    overlap = filters.conj().to(torch.promote_types(filters.dtype, unit.dtype)) @ unit.to(filters.dtype)  # (B, K, L)
    fid = overlap.real**2 + overlap.imag**2 if overlap.is_complex() else overlap**2
    return fid.unflatten(2, spec.output_size(*x.shape[-2:])).to(x.dtype)


class ReferenceBackend(SimulatorBackend):
    """``"reference"``: gate-by-gate ansatz simulation and autograd-composed maps (slow, simple, exact)."""

    name = "reference"

    def filter_states(self, theta: Tensor) -> Tensor:
        return FilterAnsatz(int(theta.shape[-2]), int(theta.shape[-3])).state(theta, method="gates")

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
        prepared, spec = spec.prepare(x)
        prepared = prepared.to(compute_dtype(prepared.dtype))
        fid = plain_fidelity(prepared, states, spec)
        valid = plain_norms((prepared.detach() != 0).to(prepared.dtype), spec) > 0
        return fid.to(x.dtype), valid


__all__ = ["ReferenceBackend", "plain_fidelity", "plain_norms", "unit_patches"]
