"""The fidelity maps ``F = |<f|x_patch>|^2 = (Re^2 + Im^2) / ||x_patch||^2`` as one autograd node.

Two exact routes to the overlaps ``Re, Im`` (real and minus imaginary filter parts as ``2K`` real
filters), each with a hand-written backward instead of autograd's chain of ``where``/``mul``/``pow``
nodes:

- **convolution** (:func:`_conv_parts`): ``z = conv2d(x, w) / ||x||`` (scaled in place),
  ``F = z_re^2 + z_im^2``; the backward is one weight-gradient convolution (and an input one when ``x``
  needs a gradient).
- **normalised patch matrix** (:func:`_unfolded_parts`), taken when ``x`` needs no gradient and a patch
  has no more values than there are overlaps (``C*kh*kw <= 2K``, e.g. 8 filters of 4x4): every patch is
  copied out of ``x`` already divided by its norm (one pass that replaces the convolution's im2col),
  ``z = w @ P`` is one batched product, and ``F = z_re^2 + z_im^2`` needs no division; the backward is
  ``dF/dz = 2 z g`` in place and ``w``'s gradient one batched product with the kept patches. On a CPU
  training step (64 MNIST images, 8 filters 4x4) this layer's forward + backward is ~0.45 ms faster.

Inputs up to :data:`SAVE_ELEMENTS` overlap elements run in one pass and keep what the backward needs;
larger ones run forward and backward in chunks of the batch (:data:`CHUNK_ELEMENTS` overlaps each) and
keep only ``x``, so neither the patches nor the ``(B, 2K, H', W')`` overlaps of a large input are held
at once. The reference is autograd through :func:`qucnn.fidelity.overlap_maps` / ``patch_norms`` /
``safe_ratio`` (``qucnn.fastpath.disabled()``).

Both routes scale by ``1 / ||x||`` (``rsqrt``), never by ``1 / ||x||^2``: it is finite for every patch that
is not all zero, down to the smallest subnormal squared norm of every float type (``1 / ||x||^2`` would
overflow below ~3e-39 in float32 and ~1.5e-5 in float16), so exactly the all-zero patches get fidelity 0.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

Pair = tuple[int, int]

#: Overlap elements ``(b, 2K, H', W')`` computed at once when nothing is kept for a backward (about 2 MB
#: in float32: a chunk stays in cache for the elementwise passes, and its buffers are reused by the
#: allocator instead of being fresh, page-faulting memory on every call).
CHUNK_ELEMENTS = 1 << 19
#: Largest overlap tensor kept for the backward (computed in one pass); bigger inputs run in chunks of
#: :data:`CHUNK_ELEMENTS` and the backward recomputes them chunk by chunk (memory: input and output).
SAVE_ELEMENTS = 1 << 22
#: Images up to this many rows and columns get their window sums from two small matrix products with
#: 0/1 band matrices (two BLAS calls: 1.8x faster than shifted adds for 64 and for 1,000 28x28 images,
#: measured on CPU); larger ones take ``kh + kw`` shifted adds, whose work does not grow with the width.
BAND_MAX_SIZE = 64


def filter_weight(states: Tensor, channels: int, kernel: Pair, dtype: torch.dtype) -> Tensor:
    """Conv weights ``(2K, C, kh, kw)``: real parts then minus imaginary parts of the first ``C*kh*kw``
    amplitudes of ``states`` ``(K, d)``, so that ``conv2d(x, w)`` gives ``Re`` and ``Im`` of
    ``sum_p conj(f_p) x_p`` (real states get zero imaginary parts)."""
    m = channels * kernel[0] * kernel[1]
    imag = -states.imag[:, :m] if states.is_complex() else torch.zeros_like(states[:, :m])
    return torch.cat([states.real[:, :m], imag], 0).to(dtype).reshape(-1, channels, *kernel)


def _states_grad(gw: Tensor, states: Tensor) -> Tensor:
    """The gradient of ``states`` ``(K, d)`` from that of :func:`filter_weight`'s output ``(2K, ...)``:
    PyTorch's complex gradient is ``dL/dRe + i dL/dIm``, and the weight holds ``Re`` and ``-Im``."""
    k = states.shape[0]
    flat = gw.reshape(2 * k, -1)
    grad = torch.zeros_like(states)
    if states.is_complex():  # half-precision parts go through float32 (no bfloat16 or experimental complex32)
        parts = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
        grad[:, : flat.shape[1]] = torch.complex(parts[:k], -parts[k:]).to(states.dtype)
    else:
        grad[:, : flat.shape[1]] = flat[:k].to(states.dtype)
    return grad


# -- window sums: ||x_patch||^2 --------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _band(size: int, k: int, step: int, pad: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(out, size)`` 0/1 matrix whose row ``i`` covers the window ``[i*step - pad, i*step - pad + k)``
    of a line of ``size`` values: a window sum with zero padding, the padding never materialised."""
    out = (size + 2 * pad - k) // step + 1
    start = torch.arange(out, device=device)[:, None] * step - pad
    cols = torch.arange(size, device=device)[None, :]
    return ((cols >= start) & (cols < start + k)).to(dtype)


def window_sums(x2: Tensor, kernel: Pair, stride: Pair = (1, 1), padding: Pair = (0, 0)) -> Tensor:
    """Sums of ``x2`` ``(B, 1, H, W)`` over every window: ``(B, 1, H', W')`` (Conv2d's output size).

    Separable (rows, then columns) instead of a one-output-channel ``conv2d``, which oneDNN pads to 16
    output channels. For non-negative ``x2`` (squares) a sum is zero exactly when its window is all
    zero, whatever the order of the additions, so all-zero patches are still detected exactly.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h, w = x2.shape[-2:]
    if max(h, w) <= BAND_MAX_SIZE:
        rows = _band(h, kh, sh, ph, x2.device, x2.dtype)
        cols = _band(w, kw, sw, pw, x2.device, x2.dtype)
        return torch.matmul(torch.matmul(rows, x2), cols.T)
    if ph or pw:
        x2 = F.pad(x2, (pw, pw, ph, ph))
    return _shifted_sum(_shifted_sum(x2, kw, sw, 3), kh, sh, 2)


def _shifted_sum(t: Tensor, k: int, step: int, dim: int) -> Tensor:
    """``sum_{j<k} t[..., j + step * i, ...]`` along ``dim``: ``k`` strided slices added."""
    count = (t.shape[dim] - k) // step + 1

    def part(j: int) -> Tensor:
        return t.narrow(dim, j, (count - 1) * step + 1)[(slice(None),) * dim + (slice(None, None, step),)]

    if k == 1:
        return part(0).contiguous()
    out = part(0) + part(1)
    for j in range(2, k):
        out += part(j)
    return out


def squared_norms(x: Tensor, kernel: Pair, stride: Pair = (1, 1), padding: Pair = (0, 0)) -> Tensor:
    """``||x_patch||^2`` of every window, ``(B, 1, H', W')``: the fast :func:`qucnn.fidelity.patch_norms`.

    Large inputs run in chunks of the batch (:data:`CHUNK_ELEMENTS` input elements each), so the
    temporaries (``x**2``, the row sums) stay small and reused instead of input-sized and fresh.
    """
    def sums(part: Tensor) -> Tensor:
        x2 = part * part
        return window_sums(x2 if part.shape[1] == 1 else x2.sum(1, keepdim=True), kernel, stride, padding)

    per_image = x[0].numel() if x.shape[0] else 1
    spans = _chunks(x.shape[0], per_image)
    if len(spans) <= 1:
        return sums(x)
    first = sums(x[: spans[0][1]])
    out = torch.empty((x.shape[0],) + first.shape[1:], dtype=first.dtype, device=first.device)
    out[: spans[0][1]] = first
    for i, j in spans[1:]:
        out[i:j] = sums(x[i:j])
    return out


def _inverse_norm(norms: Tensor) -> Tensor:
    """``1 / ||x||`` from the squared norms, 0 on all-zero patches (no state: fidelity 0 by definition).
    Two cheap passes; a boolean mask and ``where`` cost several times more on the CPU."""
    return norms.rsqrt().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


# -- one chunk of the batch, by either route ----------------------------------------------------------------
def _conv_parts(x: Tensor, weight: Tensor, geometry: tuple, norms: Tensor | None, out: Tensor | None = None,
                fid: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(z, isq, F)``: the normalised overlaps ``z = conv2d(x, weight) / ||x||`` ``(b, 2K, H', W')`` (real
    and minus imaginary parts), ``isq = 1 / ||x||`` ``(b, 1, H', W')`` and ``F = z_re^2 + z_im^2``
    ``(b, K, H', W')``, written into ``out`` when given (``None`` when ``fid`` is false)."""
    kernel, stride, padding = geometry
    k = weight.shape[0] // 2
    isq = _inverse_norm(squared_norms(x, kernel, stride, padding) if norms is None else norms)
    z = F.conv2d(x, weight, stride=stride, padding=padding).mul_(isq)
    if not fid:
        return z, isq, None
    f = torch.mul(z[:, :k], z[:, :k], out=out) if out is not None else z[:, :k] * z[:, :k]
    return z, isq, f.addcmul_(z[:, k:], z[:, k:])


def _unfolded_parts(x: Tensor, weight: Tensor, geometry: tuple, norms: Tensor | None,
                    out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(z, patches, isq, F)`` by the normalised patch matrix: ``patches`` ``(b, C*kh*kw, H'*W')`` holds
    every patch divided by its norm (0 for all-zero ones), ``z = weight @ patches`` ``(b, 2K, H'*W')`` the
    normalised overlaps and ``F = z_re^2 + z_im^2`` ``(b, K, H', W')`` (into ``out`` when given)."""
    (kh, kw), (sh, sw), (ph, pw) = geometry
    if norms is None:
        norms = squared_norms(x, *geometry)
    isq = _inverse_norm(norms)
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    b, c = x.shape[:2]
    ho, wo = norms.shape[-2:]
    sb, sc, sy, sx = x.stride()
    windows = x.as_strided((b, c, kh, kw, ho, wo), (sb, sc, sy, sx, sy * sh, sx * sw), x.storage_offset())
    patches = torch.empty((b, c, kh, kw, ho, wo), dtype=x.dtype, device=x.device)
    torch.mul(windows, isq.view(b, 1, 1, 1, ho, wo), out=patches)  # the copy and the scaling at once
    patches = patches.view(b, c * kh * kw, ho * wo)
    z = torch.matmul(weight.reshape(weight.shape[0], -1), patches)
    k = weight.shape[0] // 2
    f = torch.mul(z[:, :k], z[:, :k], out=None if out is None else out.view(b, k, -1))
    return z, patches, isq, f.addcmul_(z[:, k:], z[:, k:]).view(b, k, ho, wo)


def _chunks(batch: int, per_item: int, limit: int | None = None) -> list[tuple[int, int]]:
    step = max(1, (CHUNK_ELEMENTS if limit is None else limit) // max(per_item, 1))
    return [(i, min(i + step, batch)) for i in range(0, batch, step)]


def _output(x: Tensor, weight: Tensor, geometry: tuple) -> tuple[int, int, int, int]:
    (kh, kw), (sh, sw), (ph, pw) = geometry
    return (x.shape[0], weight.shape[0] // 2, (x.shape[2] + 2 * ph - kh) // sh + 1,
            (x.shape[3] + 2 * pw - kw) // sw + 1)


def _unfolds(weight: Tensor) -> bool:
    """Whether the patch matrix is no bigger than the overlaps it replaces (``C*kh*kw <= 2K``)."""
    return weight[0].numel() <= weight.shape[0]


def _fidelity_nograd(x: Tensor, weight: Tensor, geometry: tuple, norms: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(F, count)`` in chunks of :data:`CHUNK_ELEMENTS` overlaps; ``count``: patches that are not all zero."""
    shape = _output(x, weight, geometry)
    spans = _chunks(x.shape[0], 2 * shape[1] * shape[2] * shape[3])
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    count = torch.zeros((), dtype=torch.int64, device=x.device)
    for i, j in spans:
        part = None if norms is None else norms[i:j]
        if _unfolds(weight):
            isq = _unfolded_parts(x[i:j], weight, geometry, part, out=out[i:j])[2]
        else:
            isq = _conv_parts(x[i:j], weight, geometry, part, out=out[i:j])[1]
        count += torch.count_nonzero(isq)
    return out, count


class _FidelityConv(torch.autograd.Function):
    """``(F, count)`` from ``(x, states)``; ``count`` (patches that are not all zero) has no gradient.

    Up to :data:`SAVE_ELEMENTS` overlap elements: one pass, and the overlaps (and, by the patch-matrix
    route, the patches) stay on ``ctx`` for the first backward, which turns them into ``dF/dz`` in place.
    Larger inputs, and a second backward (``retain_graph``), recompute them chunk by chunk. Because the
    backward reuses them in place, they live on ``ctx`` rather than in ``save_for_backward``: saved-tensor
    hooks (activation checkpointing, CPU offloading) do not see them, which costs memory, not correctness.
    """

    @staticmethod
    def forward(ctx, x: Tensor, states: Tensor, norms: Tensor | None, geometry: tuple):
        weight = filter_weight(states, x.shape[1], geometry[0], x.dtype)
        ctx.weight = weight  # an intermediate: kept on ctx
        shape = _output(x, weight, geometry)
        per_item = 2 * shape[1] * shape[2] * shape[3]
        ctx.geometry = geometry
        ctx.own_norms = norms is None  # given norms are constants, as in the reference
        ctx.unfolded = _unfolds(weight) and not ctx.needs_input_grad[0]
        ctx.kept = None
        if x.shape[0] * per_item > SAVE_ELEMENTS:  # large input: keep only x, recompute in the backward
            ctx.spans = _chunks(x.shape[0], per_item)
            ctx.save_for_backward(x, states, norms, None)
            fid, count = _fidelity_nograd(x, weight, geometry, norms)
        else:
            ctx.spans = [(0, x.shape[0])]
            if ctx.unfolded:
                z, patches, isq, fid = _unfolded_parts(x, weight, geometry, norms)
                ctx.kept = (z, patches)  # intermediates: kept on ctx
            else:
                z, isq, fid = _conv_parts(x, weight, geometry, norms)
                ctx.kept = (z, isq)
            count = torch.count_nonzero(isq)
            ctx.save_for_backward(x, states, norms, fid if ctx.needs_input_grad[0] and ctx.own_norms else None)
        ctx.mark_non_differentiable(count)
        return fid, count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor, _count_grad):
        need_x, need_w = ctx.needs_input_grad[:2]
        x, states, norms, fid_saved = ctx.saved_tensors
        weight = ctx.weight
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        kept, ctx.kept = ctx.kept, None  # used up in place below: a second backward recomputes
        for i, j in ctx.spans:
            part = None if norms is None else norms[i:j]
            if ctx.unfolded:
                z, patches = kept if kept is not None else _unfolded_parts(x[i:j], weight, ctx.geometry, part)[:2]
                _unfolded_backward(z, patches, g[i:j], grad_w)
            else:
                x_term = need_x and ctx.own_norms
                z, isq, fid = (*kept, fid_saved) if kept is not None else \
                    _conv_parts(x[i:j], weight, ctx.geometry, part, fid=x_term)
                _conv_backward(x[i:j], weight, ctx.geometry, z, isq, fid if x_term else None, g[i:j],
                               None if grad_x is None else grad_x[i:j], grad_w)
        return grad_x, None if grad_w is None else _states_grad(grad_w, states), None, None


def _unfolded_backward(z: Tensor, patches: Tensor, g: Tensor, grad_w: Tensor) -> None:
    """Add ``dL/dweight`` for one chunk: ``dF/dz = 2 z g`` (in place in ``z``), then ``sum_b dz @ patches^T``."""
    b, k = g.shape[:2]
    if b == 0:
        return
    dz = z.view(b, 2, k, -1).mul_(g.reshape(b, 1, k, -1)).view(b, 2 * k, -1)
    grad_w.add_(torch.matmul(dz, patches.transpose(1, 2)).sum(0).view_as(grad_w), alpha=2)


def _conv_backward(x: Tensor, weight: Tensor, geometry: tuple, z: Tensor, isq: Tensor, fid: Tensor | None,
                   g: Tensor, grad_x: Tensor | None, grad_w: Tensor | None) -> None:
    """Write ``dL/dx`` into ``grad_x`` and add ``dL/dweight`` to ``grad_w`` (each when given) for one chunk.
    ``fid`` is given when the norms were computed here, so that ``x`` also gets their term."""
    kernel, stride, padding = geometry
    k = weight.shape[0] // 2
    gi = g * isq
    dz = z.unflatten(1, (2, k)).mul_(gi.unsqueeze(1)).flatten(1, 2)  # dF/dz_raw = 2 z isq g (2 applied below)
    gx, gw, _ = torch.ops.aten.convolution_backward(
        dz, x, weight, None, stride, padding, (1, 1), False, (0, 0), 1, (grad_x is not None, grad_w is not None,
                                                                         False))
    if grad_w is not None:
        grad_w.add_(gw, alpha=2)
    if grad_x is None:
        return
    if fid is None:
        torch.mul(gx, 2, out=grad_x)
        return
    # the ||x||^2 term: dF/dN = -F / N, and dN/dx = 2 x summed over the windows
    dn = (gi * fid).sum(1, keepdim=True).mul_(isq).neg_()
    ones = torch.ones((1, 1) + tuple(kernel), dtype=x.dtype, device=x.device)
    gn, _, _ = torch.ops.aten.convolution_backward(  # x[:, :1] lends only its shape
        dn, x[:, :1], ones, None, stride, padding, (1, 1), False, (0, 0), 1, (True, False, False))
    torch.mul(gx.addcmul_(x, gn), 2, out=grad_x)


def fidelity_conv_counted(x: Tensor, states: Tensor, kernel: Pair, stride: Pair = (1, 1),
                          padding: Pair = (0, 0), norms: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`fidelity_conv` and the number of patches that are not all zero (a 0-dim int64 tensor, on
    ``x``'s device: no host synchronisation)."""
    geometry = (tuple(kernel), tuple(stride), tuple(padding))
    if torch.is_grad_enabled() and (x.requires_grad or states.requires_grad):
        return _FidelityConv.apply(x, states, norms, geometry)
    return _fidelity_nograd(x, filter_weight(states, x.shape[1], geometry[0], x.dtype), geometry, norms)


def fidelity_conv(x: Tensor, states: Tensor, kernel: Pair, stride: Pair = (1, 1),
                  padding: Pair = (0, 0), norms: Tensor | None = None) -> Tensor:
    """``|<f|x_patch>|^2 = (Re^2 + Im^2) / ||x_patch||^2`` with ``Re, Im`` the overlaps with ``states``.

    Args:
        x: real images ``(B, C, H, W)``.
        states: filter states ``(K, d)``, complex or real, ``d >= C*kh*kw``.
        norms: optional precomputed ``||x_patch||^2`` ``(B, 1, H', W')``, treated as constants.

    Returns:
        ``(B, K, H', W')``; 0 on all-zero patches. One autograd node (first derivatives only). Inputs
        with more than :data:`SAVE_ELEMENTS` overlap elements, and any input when no gradient is
        needed, run in chunks of the batch.

    Example:
        >>> fidelity_conv(torch.rand(2, 1, 5, 5), torch.full((3, 4), 0.5), (2, 2)).shape
        torch.Size([2, 3, 4, 4])
    """
    return fidelity_conv_counted(x, states, kernel, stride, padding, norms)[0]


__all__ = ["fidelity_conv", "fidelity_conv_counted", "filter_weight", "window_sums", "squared_norms",
           "CHUNK_ELEMENTS", "SAVE_ELEMENTS", "BAND_MAX_SIZE"]
