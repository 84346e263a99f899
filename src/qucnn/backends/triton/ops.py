"""Launches of the fidelity kernels (:mod:`.kernels`): the forward into given outputs, the backward, and what
they share (device checks, per-image scales, Philox keys).

Inputs are raw images with symmetric zero padding in ``spec``: each image's power-of-two scale (the one
:func:`~qucnn.core.windows.prepare_input` applies) is computed on the device and applied as the kernel loads
``x``, so ``x`` is never copied; half precision is read as it is and accumulated in float32. Nothing here reads a value back to the host: a training step can be captured in a CUDA graph.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import triton.language as tl
from torch import Tensor

from ...core.geometry import ConvSpec
from ...core.windows import NORM_EXPONENT, power_of_two_scale
from ...utils.checks import UsageError
from . import kernels, tap_kernels
from .plan import (MIXED_MAX_SHOTS, SAVING_MAX_CHUNK, STIRLING_TAILS, Plan, fit, idx64, input_grad_tiles, padded,
                   plan, pow2, saves_overlaps, slots, with_chunks)


def interpreting() -> bool:
    """Whether the kernels were built for Triton's interpreter (``TRITON_INTERPRET=1`` when this package was
    first imported): they then run on CPU tensors, slowly, with NumPy."""
    return type(kernels.forward_kernel).__name__ == "InterpretedFunction"


def check_device(t: Tensor) -> None:
    """``UsageError`` unless the kernels can run on ``t``'s device."""
    if t.device.type == "cuda" or (t.device.type == "cpu" and interpreting()):
        return
    raise UsageError(f"the Triton engine runs on CUDA tensors, got a tensor on {t.device}; on the CPU it runs only "
                     "in Triton's interpreter, when TRITON_INTERPRET=1 is set before qucnn first uses it (slow: meant "
                     "for tests). Use backend='torch' on the CPU.")


def acc_type(dtype: torch.dtype):
    """The Triton accumulation type of a torch dtype: float64 for float64, else float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def image_scale(x: Tensor) -> Tensor:
    """Per image ``2**-e`` bringing its largest magnitude into ``[0.5, 1)`` (1 for all-zero images), ``(B,)`` in
    the compute dtype (half precision: float32)."""
    top = x.detach().abs().amax(dim=(1, 2, 3)).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return power_of_two_scale(top)


def state_view(states: Tensor) -> tuple[Tensor, bool]:
    """Filter states as the kernels read them (``view_as_real`` of complex ones) and whether they are complex."""
    if states.is_complex():
        return torch.view_as_real(states.resolve_conj()), True
    return states, False


@functools.lru_cache(maxsize=None)
def tails(device: torch.device) -> Tensor:
    """:data:`~.plan.STIRLING_TAILS` on ``device`` (the binomial sampler's table)."""
    return torch.tensor(STIRLING_TAILS, dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=None)
def norm_lift(dtype: torch.dtype, device: torch.device) -> Tensor:
    """``2**E`` of :data:`qucnn.core.windows.NORM_EXPONENT` for the accumulation dtype of ``dtype``, on ``device``:
    the kernels sum the squared norms of the scaled patches (largest value of an image in ``[0.5, 1)``) lifted
    by it, so that a faint patch keeps its digits (an exact power of two, loaded, in float32 or float64)."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.tensor([2.0 ** NORM_EXPONENT[acc]], dtype=acc, device=device)


def _geometry(spec: ConvSpec) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = spec.stride, spec.padding, spec.dilation
    return sh, sw, ph, pw, dh, dw


def philox_key(generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Two random int64 (the Philox key and stream of one call) drawn from ``generator`` (the device's default
    generator when ``None``) and placed on ``device`` without a host synchronisation."""
    home = generator.device if generator is not None else device
    key = torch.randint(-(2**63), 2**63 - 1, (2,), generator=generator, device=home, dtype=torch.int64)
    return key.to(device, non_blocking=True)


def forward(x: Tensor, scale: Tensor | None, states: Tensor, spec: ConvSpec, out: Tensor, groups: int,
            valid: Tensor | None, upstream: Tensor | None = None, mask: Tensor | None = None,
            shots: int | None = None, key: Tensor | None = None,
            saved: tuple[Tensor, Tensor] | None = None) -> None:
    """Launch the forward into ``out`` ``(G, B, O, H', W')`` (and ``valid`` ``(B, P)`` uint8, when given):
    :func:`kernels.forward_kernel`, or :func:`tap_kernels.forward_taps_kernel` where the plan says so or the
    normalised overlaps and inverse norms are to be ``saved`` (``(B, 2K, P)``, ``(B, P)``)."""
    b, c, h, w = x.shape
    if b == 0:
        return
    ho, wo = spec.output_size(h, w)
    k = states.shape[0]
    double = x.dtype == torch.float64
    p = fit(plan(k, spec.patch_size(c), double, "shots" if shots is not None else "forward", interpreting()),
            b * ho * wo)
    if p.kernel == "measured" and saved is not None and p.kc > SAVING_MAX_CHUNK:
        p = with_chunks(p, k, SAVING_MAX_CHUNK)
    if p.kernel == "taps" or p.mixed or saved is not None:
        _forward_taps(p, x, scale, states, spec, out, groups, valid, upstream, mask, shots, key, saved)
        return
    sview, is_complex = state_view(states)
    programs = -(-(b * ho * wo) // p.block) * p.nkc
    dummy = out
    kernels.forward_kernel[(programs,)](
        x, dummy if scale is None else scale, sview, out, dummy if valid is None else valid,
        dummy if upstream is None else upstream, dummy if mask is None else mask, dummy if key is None else key,
        tails(x.device), norm_lift(x.dtype, x.device), b, k, k // groups, h, w, wo, ho * wo, p.nkc, shots or 1, *x.stride(), sview.stride(0),
        sview.stride(1),
        *_geometry(spec), KH=spec.kernel[0], KW=spec.kernel[1], M=spec.patch_size(c), M_PAD=p.m_pad, KC=p.kc,
        BLOCK=p.block, COMPLEX=is_complex, HAS_SCALE=scale is not None, WRITE_VALID=valid is not None,
        HAS_UP=upstream is not None, HAS_MASK=mask is not None, SHOTS=shots is not None,
        ACC=acc_type(x.dtype), PADDED=padded(spec), IDX64=idx64(b * ho * wo, p.block),
        UNROLL=spec.kernel[1] if p.unroll_rows else 1, num_warps=p.warps)


def _forward_taps(p: Plan, x: Tensor, scale: Tensor | None, states: Tensor, spec: ConvSpec, out: Tensor,
                  groups: int, valid: Tensor | None, upstream: Tensor | None, mask: Tensor | None,
                  shots: int | None, key: Tensor | None, saved: tuple[Tensor, Tensor] | None) -> None:
    """Launch :func:`tap_kernels.forward_taps_kernel` on the grid ``(blocks, filter chunks)``."""
    b, c, h, w = x.shape
    ho, wo = spec.output_size(h, w)
    positions, k = ho * wo, states.shape[0]
    block = min(p.block, max(16, pow2(positions))) if p.image else p.block
    tiles = -(-positions // block)
    sview, is_complex = state_view(states)
    dummy = out
    zs, isq = saved if saved is not None else (dummy, dummy)
    tap_kernels.forward_taps_kernel[(b * tiles if p.image else -(-(b * positions) // block), p.nkc)](
        x, dummy if scale is None else scale, sview, out, dummy if valid is None else valid,
        dummy if upstream is None else upstream, dummy if mask is None else mask, dummy if key is None else key,
        tails(x.device), norm_lift(x.dtype, x.device), zs, isq, b, k, k // groups, h, w, wo, positions, tiles,
        shots or 1, *x.stride(), sview.stride(0), sview.stride(1), *_geometry(spec), KH=spec.kernel[0],
        KW=spec.kernel[1], M=spec.patch_size(c), KC=p.kc, BLOCK=block, COMPLEX=is_complex,
        HAS_SCALE=scale is not None, WRITE_VALID=valid is not None, HAS_UP=upstream is not None,
        HAS_MASK=mask is not None, SHOTS=shots is not None, ACC=acc_type(x.dtype), PADDED=padded(spec),
        IDX64=idx64(b * positions, block), UNROLL=spec.kernel[1] if p.unroll_rows else 1, IMAGE=p.image,
        WOC=wo if p.image else 1, EVEN=p.image and positions % block == 0, SAVE_Z=saved is not None,
        MIXED=p.mixed and (shots or 0) <= MIXED_MAX_SHOTS, num_warps=p.warps)


def overlaps_kept(x: Tensor, states: Tensor, spec: ConvSpec) -> bool:
    """Whether the forward of a differentiable call keeps the normalised overlaps for its backward (the backward's
    plan asks for it, and they fit :data:`~.plan.SAVE_Z_MAX_BYTES`)."""
    b, c, h, w = x.shape
    ho, wo = spec.output_size(h, w)
    k, double = states.shape[0], x.dtype == torch.float64
    return saves_overlaps(plan(k, spec.patch_size(c), double, "backward", interpreting()), b * ho * wo, k, double)


def backward(x: Tensor, scale: Tensor | None, states: Tensor, spec: ConvSpec, g: Tensor, need_x: bool,
             need_states: bool, saved: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor | None, Tensor | None]:
    """``(dL/dx, dL/dstates)`` (each when asked) for upstream ``g`` ``(B, K, H', W')``; ``saved``: the normalised
    overlaps and inverse norms the forward kept (then the tap-loop kernel reads them)."""
    b, c, h, w = x.shape
    if b == 0:
        return (torch.zeros_like(x) if need_x else None), (torch.zeros_like(states) if need_states else None)
    ho, wo = spec.output_size(h, w)
    k = states.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    p = plan(k, spec.patch_size(c), acc == torch.float64, "backward", interpreting())
    if need_x and not interpreting():  # it also stores A and e: half the block keeps it free of spills
        p = dataclasses.replace(p, block=max(16, p.block // 2))
    p = fit(p, b * ho * wo)
    sview, is_complex = state_view(states)
    n_slots = slots(-(-(b * ho * wo) // p.block), x.device)
    part = torch.empty((n_slots * p.nkc, 2 * p.kc, p.m_pad), dtype=acc, device=x.device)
    a = torch.empty((b, 2 * k, ho * wo) if need_x else (1,), dtype=acc, device=x.device)
    e = torch.empty((p.nkc, b, ho * wo) if need_x else (1,), dtype=acc, device=x.device)
    dummy = part
    geometry = _geometry(spec)
    common = (*x.stride(), sview.stride(0), sview.stride(1), *g.stride(), *geometry)
    if p.kernel == "taps" or saved is not None:
        zs, isq = saved if saved is not None else (dummy, dummy)
        tap_kernels.backward_taps_kernel[(n_slots, p.nkc)](
            x, dummy if scale is None else scale, sview, g, zs, isq, part, a, e, norm_lift(x.dtype, x.device), b, k,
            h, w, wo, ho * wo, p.nkc, n_slots, *common, KH=spec.kernel[0], KW=spec.kernel[1], M=spec.patch_size(c),
            M_PAD=p.m_pad, KC=p.kc, BLOCK=p.block, COMPLEX=is_complex, HAS_SCALE=scale is not None, NEED_X=need_x,
            ACC=acc_type(x.dtype), PADDED=padded(spec), IDX64=idx64(b * ho * wo, p.block),
            UNROLL=spec.kernel[1] if p.unroll_rows else 1, SAVED=saved is not None, REDUCE_DOT=p.reduce_dot,
            num_warps=p.warps)
    else:
        kernels.backward_kernel[(n_slots * p.nkc,)](
            x, dummy if scale is None else scale, sview, g, part, a, e, norm_lift(x.dtype, x.device), b, k, h, w,
            wo, ho * wo, p.nkc, n_slots, *common, KH=spec.kernel[0], KW=spec.kernel[1], M=spec.patch_size(c),
            M_PAD=p.m_pad, KC=p.kc, BLOCK=p.block, COMPLEX=is_complex, HAS_SCALE=scale is not None, NEED_X=need_x,
            ACC=acc_type(x.dtype), PADDED=padded(spec), IDX64=idx64(b * ho * wo, p.block), num_warps=p.warps)
    grad_states = None
    if need_states:
        grad_states = torch.zeros_like(states)
        gview = torch.view_as_real(grad_states) if is_complex else grad_states
        # the slices' partial sums, added by torch's reduction (fixed order, no atomics: the same bits every run)
        total = part.view(n_slots, p.nkc * 2 * p.kc * p.m_pad).sum(0) if n_slots > 1 else part
        kernels.states_grad_kernel[(p.nkc,)](total, gview, k, gview.stride(0), gview.stride(1), KC=p.kc,
                                             M=spec.patch_size(c), M_PAD=p.m_pad, COMPLEX=is_complex, num_warps=4)
    grad_x = None
    if need_x:
        grad_x = torch.empty((b, c, h, w), dtype=x.dtype, device=x.device)
        rows, block, warps = input_grad_tiles(k, h * w, acc == torch.float64, interpreting())
        kernels.input_grad_kernel[(b * c * -(-(h * w) // block),)](
            x, dummy if scale is None else scale, sview, a, e, grad_x, b, c, k, h, w, ho, wo, ho * wo, p.nkc,
            *x.stride(), sview.stride(0), sview.stride(1), *geometry, KH=spec.kernel[0], KW=spec.kernel[1],
            R_PAD=rows, BLOCK=block, COMPLEX=is_complex, HAS_SCALE=scale is not None, ACC=acc_type(x.dtype),
            num_warps=warps)
    return grad_x, grad_states


__all__ = ["acc_type", "backward", "check_device", "forward", "image_scale", "interpreting", "norm_lift",
           "overlaps_kept", "philox_key", "state_view", "tails"]
