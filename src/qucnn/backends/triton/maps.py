"""The Triton kernels as PyTorch operations:

- :func:`fidelity_maps`: the exact maps ``(F, valid)``, one autograd node; its backward recomputes the overlaps
  (nothing but ``x`` and the states is kept, unless the plan keeps the normalised overlaps:
  :func:`~.ops.overlaps_kept`) and reduces the filter gradient deterministically.
- :func:`expectations`: ``<Z_a>`` of a filter group ``(G, O)``, with upstream deltas, a mask and shots all fused
  into one launch (the no-gradient path of a layer with shots, and every gradient estimator).
- :func:`sample`: shot estimates of given expectations.

Example (on a CUDA tensor, or on the CPU with ``TRITON_INTERPRET=1``)::

    fid, valid = fidelity_maps(x, states, ConvSpec.make(4))
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.geometry import ConvSpec
from ...core.windows import prepare_input
from ..reference import plain_fidelity
from . import binomial, ops
from .plan import INTERPRETER_SAMPLE_BLOCK, SAMPLE_BLOCK, sample_mixed


def _maps_into(x: Tensor, scale: Tensor | None, states: Tensor, spec: ConvSpec, out_dtype: torch.dtype,
               saved: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    fid = torch.empty((x.shape[0], states.shape[0]) + spec.output_size(*x.shape[-2:]), dtype=out_dtype,
                      device=x.device)
    valid = torch.empty((x.shape[0], 1) + fid.shape[-2:], dtype=torch.uint8, device=x.device)
    ops.forward(x, scale, states, spec, fid, 1, valid, saved=saved)
    return fid, valid.view(torch.bool)


def _overlap_buffers(x: Tensor, states: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
    """Empty ``(B, 2K, P)`` normalised overlaps and ``(B, P)`` inverse norms in the accumulation dtype."""
    positions = spec.output_size(*x.shape[-2:])
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    count = positions[0] * positions[1]
    return (torch.empty((x.shape[0], 2 * states.shape[0], count), dtype=acc, device=x.device),
            torch.empty((x.shape[0], count), dtype=acc, device=x.device))


class _Maps(torch.autograd.Function):
    """``(F, valid)`` from ``(x, states)``; the backward recomputes the overlaps from ``x``. A backward that must
    itself be differentiable (``create_graph=True``) differentiates the plain composition instead."""

    @staticmethod
    def forward(ctx, x: Tensor, states: Tensor, spec: ConvSpec, out_dtype: torch.dtype):
        scale = ops.image_scale(x)
        saved = _overlap_buffers(x, states, spec) if ops.overlaps_kept(x, states, spec) else None
        fid, valid = _maps_into(x, scale, states, spec, out_dtype, saved)
        ctx.save_for_backward(x, states, scale, *(saved or ()))
        ctx.spec = spec
        ctx.mark_non_differentiable(valid)
        return fid, valid

    @staticmethod
    def backward(ctx, g: Tensor, _valid_grad):
        x, states, scale, *saved = ctx.saved_tensors
        need_x, need_states = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph=True
            inputs = [t for t, need in ((x, need_x), (states, need_states)) if need]
            with torch.enable_grad():
                out = plain_fidelity(prepare_input(x), states, ctx.spec)
            grads = iter(torch.autograd.grad(out, inputs, g.to(out.dtype), create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_states else None), None, None
        grad_x, grad_states = ops.backward(x, scale, states, ctx.spec, g, need_x, need_states,
                                           tuple(saved) if saved else None)
        return grad_x, grad_states, None, None


def fidelity_maps(x: Tensor, states: Tensor, spec: ConvSpec,
                  out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Exact fidelity maps of images ``x`` ``(B, C, H, W)`` (float16, bfloat16, float32 or float64; not scaled
    beforehand; ``spec`` holds symmetric zero padding only) with filter ``states`` ``(K, d)``, ``d >= C kh kw``,
    differentiable in both.

    Returns ``(F, valid)``: ``F`` ``(B, K, H', W')`` in ``out_dtype`` (default ``x``'s dtype; computed in float32,
    or float64 for float64 input), 0 on all-zero patches; ``valid`` ``(B, 1, H', W')`` which patches are not all
    zero.
    """
    out_dtype = out_dtype or x.dtype
    if torch.is_grad_enabled() and (x.requires_grad or states.requires_grad):
        return _Maps.apply(x, states, spec, out_dtype)
    return _maps_into(x.detach(), ops.image_scale(x), states.detach(), spec, out_dtype)


def expectations(x: Tensor, states: Tensor, groups: int, spec: ConvSpec, upstream: Tensor | None = None,
                 mask: Tensor | None = None, shots: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """``<Z_a>`` of the SWAP test (or, with ``upstream`` ``(B, O, H', W')``, of the Eq. 15 circuit) of every patch
    with every filter of ``states`` ``(G*O, d)`` in ``groups`` groups: ``(G, B, O, H', W')``, exact or from
    ``shots`` shots each, in one launch; 0 where nothing runs (all-zero patch, ``delta = 0``, outside ``mask``
    ``(B, O, H', W')``)."""
    b = x.shape[0]
    o = states.shape[0] // groups
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty((groups, b, o) + spec.output_size(*x.shape[-2:]), dtype=acc, device=x.device)
    key = ops.philox_key(generator, x.device) if shots is not None else None
    up = None if upstream is None else upstream.contiguous()
    mk = None if mask is None else mask.expand(b, o, *out.shape[-2:]).contiguous().view(torch.uint8)
    ops.forward(x.detach(), ops.image_scale(x), states.detach(), spec, out, groups, None, up, mk, shots, key)
    return out


def sample(expectation: Tensor, shots: int, generator: torch.Generator | None = None,
           mixed: bool | None = None) -> Tensor:
    """``S``-shot estimates ``2 n0 / S - 1``, ``n0 ~ Binomial(S, (1 + z) / 2)`` exactly, of the expectations ``z``
    (any shape). Draws come from Philox keyed by ``generator``: the same seed gives the same estimates.
    ``mixed``: the mixed-precision sampler (the same draws; default: where measured faster,
    :func:`~.plan.sample_mixed`)."""
    z = expectation.detach().contiguous()
    est = torch.empty_like(z)
    if z.numel() == 0:
        return est
    key = ops.philox_key(generator, z.device)
    block = INTERPRETER_SAMPLE_BLOCK if ops.interpreting() else SAMPLE_BLOCK
    binomial.sample_kernel[(-(-z.numel() // block),)](z, z, est, key, ops.tails(z.device), z.numel(), shots, 1, 1,
                                                       BLOCK=block, VALID=0,
                                                       MIXED=sample_mixed(shots) if mixed is None else mixed,
                                                       num_warps=4)
    return est


__all__ = ["expectations", "fidelity_maps", "sample"]
