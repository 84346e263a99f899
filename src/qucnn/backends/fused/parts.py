"""The pieces of the fused engine's two routes to ``F = (Re^2 + Im^2) / ||x||^2``, forward and backward.

The overlaps ``Re, Im`` come from the real and minus imaginary filter parts as ``2K`` real filters
(:func:`filter_weight`), by one of two exact routes, each with a hand-written backward instead of autograd's chain
of ``where``/``mul``/``pow`` nodes:

- **convolution** (:func:`conv_parts`): ``z = conv2d(x, w) / ||x||`` (scaled in place), ``F = z_re^2 + z_im^2``;
  the backward (:func:`conv_backward`) is one weight-gradient convolution (and an input one when ``x`` needs a
  gradient).
- **normalised patch matrix** (:func:`unfolded_parts`): every patch is copied out of ``x`` already divided by its
  norm (one pass that replaces the convolution's im2col), ``z = w @ P`` is one batched product, and ``F`` needs no
  division; the backward (:func:`unfolded_backward`) is ``dF/dz = 2 z g`` and ``w``'s gradient one batched product
  with the kept patches.

Inputs are prepared (:func:`qucnn.core.windows.scale_input`) with symmetric zero padding in ``spec``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.geometry import ConvSpec
from ...core.windows import inverse_norms
from ...utils.devices import reads_back_freely

#: ``1 / ||x||`` above which the input gradient's norm term of a float32 chunk is computed in float64.
WIDE_NORM_TERM = 2.0**60


def filter_weight(states: Tensor, channels: int, kernel: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """Conv weights ``(2K, C, kh, kw)``: real parts then minus imaginary parts of the first ``C*kh*kw``
    amplitudes of ``states`` ``(K, d)``, so that ``conv2d(x, w)`` gives ``Re`` and ``Im`` of
    ``sum_p conj(f_p) x_p`` (real states get zero imaginary parts)."""
    m = channels * kernel[0] * kernel[1]
    imag = -states.imag[:, :m] if states.is_complex() else torch.zeros_like(states[:, :m])
    return torch.cat([states.real[:, :m], imag], 0).to(dtype).reshape(-1, channels, *kernel)


def states_grad(gw: Tensor, states: Tensor) -> Tensor:
    """The gradient of ``states`` ``(K, d)`` from that of :func:`filter_weight`'s output ``(2K, ...)``:
    PyTorch's complex gradient is ``dL/dRe + i dL/dIm``, and the weight holds ``Re`` and ``-Im``."""
    k = states.shape[0]
    flat = gw.reshape(2 * k, -1)
    grad = torch.zeros_like(states)
    if states.is_complex():
        grad[:, : flat.shape[1]] = torch.complex(flat[:k], -flat[k:]).to(states.dtype)
    else:
        grad[:, : flat.shape[1]] = flat[:k].to(states.dtype)
    return grad


def conv_parts(x: Tensor, weight: Tensor, spec: ConvSpec, band: int, lift: float, out: Tensor | None = None,
               fid: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(z, isq, F)``: the normalised overlaps ``z = conv2d(x, weight) / ||x||`` ``(b, 2K, H', W')`` (real
    and minus imaginary parts), ``isq = 1 / ||x||`` ``(b, 1, H', W')`` and ``F = z_re^2 + z_im^2``
    ``(b, K, H', W')``, written into ``out`` when given (``None`` when ``fid`` is false). ``band``: the window sums'
    band size; ``lift``: the norms' per-image lift (:func:`~qucnn.core.windows.inverse_norms`)."""
    k = weight.shape[0] // 2
    isq = inverse_norms(x, spec, lift, band)
    z = F.conv2d(x, weight, stride=spec.stride, padding=spec.padding, dilation=spec.dilation).mul_(isq)
    if not fid:
        return z, isq, None
    f = torch.mul(z[:, :k], z[:, :k], out=out) if out is not None else z[:, :k] * z[:, :k]
    return z, isq, f.addcmul_(z[:, k:], z[:, k:])


def unfolded_parts(x: Tensor, weight: Tensor, spec: ConvSpec, band: int, lift: float,
                   out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(z, patches, isq, F)`` by the normalised patch matrix: ``patches`` ``(b, C*kh*kw, H'*W')`` holds
    every patch divided by its norm (0 for all-zero ones), ``z = weight @ patches`` ``(b, 2K, H'*W')`` the
    normalised overlaps and ``F = z_re^2 + z_im^2`` ``(b, K, H', W')`` (into ``out`` when given)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel, spec.stride, spec.padding, spec.dilation
    isq = inverse_norms(x, spec, lift, band)
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    b, c = x.shape[:2]
    ho, wo = isq.shape[-2:]
    sb, sc, sy, sx = x.stride()
    windows = x.as_strided((b, c, kh, kw, ho, wo), (sb, sc, sy * dh, sx * dw, sy * sh, sx * sw), x.storage_offset())
    patches = torch.empty((b, c, kh, kw, ho, wo), dtype=x.dtype, device=x.device)
    torch.mul(windows, isq.view(b, 1, 1, 1, ho, wo), out=patches)  # the copy and the scaling at once
    patches = patches.view(b, c * kh * kw, ho * wo)
    z = torch.matmul(weight.reshape(weight.shape[0], -1), patches)
    k = weight.shape[0] // 2
    f = torch.mul(z[:, :k], z[:, :k], out=None if out is None else out.view(b, k, -1))
    return z, patches, isq, f.addcmul_(z[:, k:], z[:, k:]).view(b, k, ho, wo)


def input_grad(x: Tensor, weight: Tensor, spec: ConvSpec, band: int, lift: float, g: Tensor) -> Tensor:
    """``dL/dx`` for one chunk by the convolution route (recomputed; used when the patch route is forced)."""
    z, isq, fid = conv_parts(x, weight, spec, band, lift)
    grad_x = torch.empty_like(x)
    conv_backward(x, weight, spec, z, isq, fid, g, grad_x, None)
    return grad_x


def unfolded_backward(z: Tensor, patches: Tensor, g: Tensor, grad_w: Tensor) -> None:
    """Add ``dL/dweight`` for one chunk: ``dF/dz = 2 z g`` (in place in ``z``), then ``sum_b dz @ patches^T``."""
    b, k = g.shape[:2]
    if b == 0:
        return
    dz = z.view(b, 2, k, -1).mul_(g.reshape(b, 1, k, -1)).view(b, 2 * k, -1)
    grad_w.add_(torch.matmul(dz, patches.transpose(1, 2)).sum(0).view_as(grad_w), alpha=2)


def conv_backward(x: Tensor, weight: Tensor, spec: ConvSpec, z: Tensor, isq: Tensor, fid: Tensor | None,
                  g: Tensor, grad_x: Tensor | None, grad_w: Tensor | None) -> None:
    """Write ``dL/dx`` into ``grad_x`` and add ``dL/dweight`` to ``grad_w`` (each when given) for one chunk.
    ``fid`` is given with ``grad_x``: the input gradient includes the term of the norms ``||x||^2``."""
    k = weight.shape[0] // 2
    gi = g * isq
    dz = z.unflatten(1, (2, k)).mul_(gi.unsqueeze(1)).flatten(1, 2)  # dF/dz_raw = 2 z isq g (2 applied below)
    conv = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation)
    gx, gw, _ = torch.ops.aten.convolution_backward(
        dz, x, weight, None, conv["stride"], conv["padding"], conv["dilation"], False, (0, 0), 1,
        (grad_x is not None, grad_w is not None, False))
    if grad_w is not None:
        grad_w.add_(gw, alpha=2)
    if grad_x is None:
        return
    # the ||x||^2 term: dF/dN = -F / N, and dN/dx = 2 x summed over the windows. -F / N overflows float32 for a
    # patch more than 2**63 times fainter than its image's largest value (its gradient, x / N, does not): then
    # this term is computed in float64
    wide = x.dtype == torch.float32 and (not reads_back_freely(x.device) or bool(isq.amax() > WIDE_NORM_TERM))
    work = torch.float64 if wide else x.dtype
    dn = (gi * fid).sum(1, keepdim=True).to(work).mul_(isq.to(work)).neg_()
    ones = torch.ones((1, 1) + tuple(spec.kernel), dtype=work, device=x.device)
    gn, _, _ = torch.ops.aten.convolution_backward(  # x[:, :1] lends only its shape
        dn, x[:, :1].to(work), ones, None, conv["stride"], conv["padding"], conv["dilation"], False, (0, 0), 1,
        (True, False, False))
    if wide:
        grad_x.copy_(gx.to(work).addcmul_(x.to(work), gn).mul_(2))
    else:
        torch.mul(gx.addcmul_(x, gn), 2, out=grad_x)


__all__ = ["WIDE_NORM_TERM", "conv_backward", "conv_parts", "filter_weight", "input_grad", "states_grad", "unfolded_backward",
           "unfolded_parts"]
