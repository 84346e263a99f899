"""Fidelity maps as convolutions: the exact QuCNN forward without a loop over patches.

``|<f|x>|^2 = |sum_p conj(f_p) x_p|^2 / ||x||^2`` (Eq. 3), so one ``conv2d`` with the real and imaginary
parts of the filter states as weights, plus a windowed squared norm, gives every output at once.
Amplitudes past the ``C*kh*kw`` patch values meet the zero padding of the encoding and drop out.

:func:`fidelity_maps` takes the fused path of :mod:`qucnn.fastpath` (one autograd node, chunked for large
inputs) unless :func:`qucnn.fastpath.disabled` is in effect; the plain autograd composition of
:func:`overlap_maps`, :func:`patch_norms` and :func:`safe_ratio` below is the reference it is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fastconv, fastpath
from .gates import real_dtype

Pair = tuple[int, int]


def patch_norms(x: Tensor, kernel: Pair, stride: Pair, padding: Pair) -> Tensor:
    """Squared norms ``||x_patch||^2`` of every window: ``(B, 1, H', W')`` (exactly 0 for all-zero patches)."""
    if fastpath.enabled():
        return fastconv.squared_norms(x, kernel, stride, padding)
    ones = torch.ones((1, 1) + tuple(kernel), dtype=x.dtype, device=x.device)
    return F.conv2d((x * x).sum(1, keepdim=True), ones, stride=stride, padding=padding)


def overlap_maps(x: Tensor, states: Tensor, kernel: Pair, stride: Pair, padding: Pair) -> tuple[Tensor, Tensor]:
    """Unnormalised overlaps ``sum_p conj(f_p) x_p`` as (real, imaginary) maps ``(B, K, H', W')``.

    ``states`` ``(K, d)`` complex or real, with ``d >= C*kh*kw``.
    """
    c = x.shape[1]
    m = c * kernel[0] * kernel[1]
    real = states.real if states.is_complex() else states
    imag = -states.imag if states.is_complex() else torch.zeros_like(states)
    weight = torch.cat([real[:, :m], imag[:, :m]], 0).to(x.dtype).reshape(-1, c, *kernel)
    both = F.conv2d(x, weight, stride=stride, padding=padding)
    k = states.shape[0]
    return both[:, :k], both[:, k:]


def safe_ratio(numerator: Tensor, norms: Tensor) -> Tensor:
    """``numerator / norms`` with 0 where the patch is all zero (no state: fidelity 0 by definition)."""
    nonzero = norms > 0
    return torch.where(nonzero, numerator / torch.where(nonzero, norms, torch.ones_like(norms)),
                       torch.zeros_like(numerator))


def fidelity_maps(x: Tensor, states: Tensor, kernel: Pair, stride: Pair = (1, 1),
                  padding: Pair = (0, 0), norms: Tensor | None = None) -> Tensor:
    """Exact SWAP-test fidelities of every filter state with every amplitude-encoded patch.

    Args:
        x: real images ``(B, C, H, W)``.
        states: filter states ``(K, d)``, unit norm, ``d = 2**ceil(log2(C*kh*kw))``.
        norms: optional precomputed :func:`patch_norms` (reused across shifted filters; treated as given).

    Returns:
        ``(B, K, H', W')`` with Conv2d's output size; 0 on all-zero patches.

    Example:
        >>> x = torch.rand(2, 1, 5, 5); f = torch.full((3, 4), 0.5)
        >>> fidelity_maps(x, f, (2, 2)).shape
        torch.Size([2, 3, 4, 4])
    """
    return fidelity_maps_counted(x, states, kernel, stride, padding, norms)[0]


def fidelity_maps_counted(x: Tensor, states: Tensor, kernel: Pair, stride: Pair = (1, 1),
                          padding: Pair = (0, 0), norms: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`fidelity_maps` and how many patches are not all zero (the circuits one filter needs), as a
    0-dim int64 tensor on ``x``'s device (reading it is the caller's choice of when to synchronise)."""
    if fastpath.enabled() and (norms is None or not norms.requires_grad):
        return fastconv.fidelity_conv_counted(x, states, kernel, stride, padding, norms)
    re, im = overlap_maps(x, states, kernel, stride, padding)
    if norms is None:
        norms = patch_norms(x, kernel, stride, padding)
    return safe_ratio(re * re + im * im, norms), torch.count_nonzero(norms.detach())


def unfold_encoded(x: Tensor, kernel: Pair, stride: Pair, padding: Pair, d: int) -> Tensor:
    """Every patch, amplitude-encoded: ``(B, H'*W', d)`` (for references and small validations only:
    this materialises the unfolded tensor)."""
    from .encoding import amplitude_encode

    cols = F.unfold(x, kernel, padding=padding, stride=stride).transpose(1, 2)  # (B, L, m)
    encoded = amplitude_encode(cols)
    return F.pad(encoded, (0, d - encoded.shape[-1]))


def gather_patches(x: Tensor, b: Tensor, row: Tensor, col: Tensor, kernel: Pair, stride: Pair,
                   padding: Pair) -> Tensor:
    """The raw patches at output positions ``(b, row, col)`` (each ``(N,)``): ``(N, C*kh*kw)``."""
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    dr = torch.arange(kernel[0], device=x.device)
    dc = torch.arange(kernel[1], device=x.device)
    rows = (row * stride[0])[:, None, None] + dr[None, :, None]  # (N, kh, 1)
    cols = (col * stride[1])[:, None, None] + dc[None, None, :]  # (N, 1, kw)
    patches = xp[b[:, None, None], :, rows, cols]  # (N, kh, kw, C)
    return patches.permute(0, 3, 1, 2).reshape(b.shape[0], -1).to(real_dtype(x.dtype))
