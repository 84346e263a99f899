"""The fidelity maps ``F = |<f|x_patch>|^2 = (Re^2 + Im^2) / ||x_patch||^2`` as one autograd node (the
torch backend's exact forward and backward).

Two exact routes to the overlaps ``Re, Im`` (real and minus imaginary filter parts as ``2K`` real filters),
each with a hand-written backward instead of autograd's chain of ``where``/``mul``/``pow`` nodes:

- **convolution** (:func:`_conv_parts`): ``z = conv2d(x, w) / ||x||`` (scaled in place), ``F = z_re^2 +
  z_im^2``; the backward is one weight-gradient convolution (and an input one when ``x`` needs a gradient).
- **normalised patch matrix** (:func:`_unfolded_parts`): every patch is copied out of ``x`` already divided
  by its norm (one pass that replaces the convolution's im2col), ``z = w @ P`` is one batched product, and
  ``F`` needs no division; the backward is ``dF/dz = 2 z g`` and ``w``'s gradient one batched product with the
  kept patches. On a CPU training step (64 MNIST images, 8 filters 4x4) this layer's forward + backward is
  ~0.45 ms faster than the convolution route.

Which route, and how much is computed at once, is a :class:`RoutePolicy` of the backend, with defaults per
device: on the CPU, inputs up to ``save_elements`` overlaps run in one pass and keep what the backward
needs, larger ones run in chunks of the batch of ``chunk_elements`` overlaps (cache-sized, ~2 MB) and keep
only ``x``; on a GPU both limits follow the free device memory, so a large batch runs in one or a few passes.

Inputs come from :func:`qucnn.backends.windows.prepare_input` (compute dtype, scaled per image). The first
backward reuses the kept overlaps in place; a backward that must itself be differentiable
(``create_graph=True``) differentiates the plain composition of :mod:`qucnn.backends.reference` instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.geometry import ConvSpec
from ..core.simulator import free_bytes
from ..utils.checks import UsageError, one_of, optional_positive_int, positive_int
from .reference import plain_fidelity
from .windows import inverse_norms, squared_norms

ROUTES = ("auto", "conv", "patches")
#: CPU defaults. ``chunk_elements``: overlaps ``(b, 2K, H', W')`` computed at once when nothing is kept for a
#: backward (about 2 MB in float32: a chunk stays in cache for the elementwise passes, and its buffers are
#: reused by the allocator instead of being fresh, page-faulting memory on every call). ``save_elements``:
#: the largest overlap tensor computed in one pass and kept for the backward.
CPU_CHUNK_ELEMENTS = 1 << 19
CPU_SAVE_ELEMENTS = 1 << 22
#: On a GPU, the overlaps of one pass may take this fraction of the free device memory.
GPU_MEMORY_FRACTION = 0.25


@dataclass(frozen=True)
class RoutePolicy:
    """How the torch backend computes fidelity maps. ``None`` fields take the device's default.

    Attributes:
        route: ``"auto"`` (the patch matrix when ``x`` needs no gradient and a patch has no more values than
            there are overlaps, ``C*kh*kw <= 2K``; else the convolution), ``"conv"`` or ``"patches"``.
        chunk_elements: overlap elements computed at once when nothing is kept for a backward.
        save_elements: largest overlap tensor kept for the backward (larger inputs run in chunks both ways).
        band_max_size: images up to this many rows and columns get their window sums from two 0/1
            band-matrix products (1.8x faster than shifted adds on CPU for 28x28 images), larger ones from
            ``kh + kw`` shifted adds.
        triton: CUDA tensors go to the fused Triton kernels of backend ``"triton"`` when Triton is installed
            (and not in its interpreter); ``False`` keeps them on the routes above. The CPU never uses them.
        triton_max_filters: exact maps of more filters than this stay on the routes above even on CUDA
            (expectations with shots, every gradient estimator and the filter states still use the kernels).
            Measured on an H200 (W4, 60,000 images; ``benchmarks/RESULTS.md``): the kernels win at 8 filters
            (forward 3.0 vs 8.0 ms) and lose at 32 (forward 21 vs 17 ms, forward + backward about 50 vs 29 ms).

    Example:
        >>> RoutePolicy(route="conv").resolved(torch.device("cpu")).chunk_elements
        524288
    """

    route: str = "auto"
    chunk_elements: int | None = None
    save_elements: int | None = None
    band_max_size: int = 64
    triton: bool = True
    triton_max_filters: int = 8

    def __post_init__(self) -> None:
        one_of(self.route, ROUTES, "route")
        if not isinstance(self.triton, bool):
            raise TypeError(f"triton must be True or False, got {self.triton!r}")
        optional_positive_int(self.chunk_elements, "chunk_elements")
        optional_positive_int(self.save_elements, "save_elements")
        positive_int(self.band_max_size, "band_max_size", 0)
        positive_int(self.triton_max_filters, "triton_max_filters", 0)

    def resolved(self, device: torch.device) -> "RoutePolicy":
        """This policy with every ``None`` replaced by ``device``'s default."""
        if self.chunk_elements is not None and self.save_elements is not None:
            return self
        return _resolved(self, str(device))


@functools.lru_cache(maxsize=64)
def _resolved(policy: RoutePolicy, device: str) -> RoutePolicy:
    if device == "cpu":
        chunk, save = CPU_CHUNK_ELEMENTS, CPU_SAVE_ELEMENTS
    else:
        chunk = save = _device_budget(device)
    return replace(policy, chunk_elements=policy.chunk_elements or chunk, save_elements=policy.save_elements or save)


@functools.lru_cache(maxsize=None)
def _device_budget(device: str) -> int:
    """Overlap elements (4 bytes each) that fit in :data:`GPU_MEMORY_FRACTION` of the device's free memory,
    read once per device."""
    return max(CPU_SAVE_ELEMENTS, int(GPU_MEMORY_FRACTION * free_bytes(torch.device(device))) // 4)


def filter_weight(states: Tensor, channels: int, kernel: tuple[int, int], dtype: torch.dtype) -> Tensor:
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
    if states.is_complex():
        grad[:, : flat.shape[1]] = torch.complex(flat[:k], -flat[k:]).to(states.dtype)
    else:
        grad[:, : flat.shape[1]] = flat[:k].to(states.dtype)
    return grad


# -- one chunk of the batch, by either route ------------------------------------------------------------
def _conv_parts(x: Tensor, weight: Tensor, spec: ConvSpec, policy: RoutePolicy, out: Tensor | None = None,
                fid: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(z, isq, F)``: the normalised overlaps ``z = conv2d(x, weight) / ||x||`` ``(b, 2K, H', W')`` (real
    and minus imaginary parts), ``isq = 1 / ||x||`` ``(b, 1, H', W')`` and ``F = z_re^2 + z_im^2``
    ``(b, K, H', W')``, written into ``out`` when given (``None`` when ``fid`` is false)."""
    k = weight.shape[0] // 2
    isq = inverse_norms(squared_norms(x, spec, policy.band_max_size))
    z = F.conv2d(x, weight, stride=spec.stride, padding=spec.padding, dilation=spec.dilation).mul_(isq)
    if not fid:
        return z, isq, None
    f = torch.mul(z[:, :k], z[:, :k], out=out) if out is not None else z[:, :k] * z[:, :k]
    return z, isq, f.addcmul_(z[:, k:], z[:, k:])


def _unfolded_parts(x: Tensor, weight: Tensor, spec: ConvSpec, policy: RoutePolicy,
                    out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(z, patches, isq, F)`` by the normalised patch matrix: ``patches`` ``(b, C*kh*kw, H'*W')`` holds
    every patch divided by its norm (0 for all-zero ones), ``z = weight @ patches`` ``(b, 2K, H'*W')`` the
    normalised overlaps and ``F = z_re^2 + z_im^2`` ``(b, K, H', W')`` (into ``out`` when given)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel, spec.stride, spec.padding, spec.dilation
    isq = inverse_norms(squared_norms(x, spec, policy.band_max_size))
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


def _chunks(batch: int, per_item: int, limit: int) -> list[tuple[int, int]]:
    step = max(1, limit // max(per_item, 1))
    return [(i, min(i + step, batch)) for i in range(0, batch, step)]


def _unfolds(weight: Tensor, policy: RoutePolicy, x_needs_grad: bool) -> bool:
    """Whether the patch-matrix route runs: by ``policy.route``, or, for ``"auto"``, when ``x`` needs no
    gradient and the patch matrix is no bigger than the overlaps it replaces (``C*kh*kw <= 2K``)."""
    if policy.route == "patches":
        return True
    return policy.route == "auto" and not x_needs_grad and weight[0].numel() <= weight.shape[0]


def _fidelity_nograd(x: Tensor, weight: Tensor, spec: ConvSpec, policy: RoutePolicy, unfolded: bool,
                     want_mask: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(F, count, mask)`` in chunks of ``policy.chunk_elements`` overlaps; ``count``: patches that are not
    all zero; ``mask`` ``(B, 1, H', W')`` which they are (an empty tensor unless ``want_mask``)."""
    ho, wo = spec.output_size(*x.shape[-2:])
    k = weight.shape[0] // 2
    out = torch.empty((x.shape[0], k, ho, wo), dtype=x.dtype, device=x.device)
    mask = torch.empty((x.shape[0], 1, ho, wo) if want_mask else (0,), dtype=torch.bool, device=x.device)
    count = torch.zeros((), dtype=torch.int64, device=x.device)
    for i, j in _chunks(x.shape[0], 2 * k * ho * wo, policy.chunk_elements):
        if unfolded:
            isq = _unfolded_parts(x[i:j], weight, spec, policy, out=out[i:j])[2]
        else:
            isq = _conv_parts(x[i:j], weight, spec, policy, out=out[i:j])[1]
        count += torch.count_nonzero(isq)
        if want_mask:
            torch.gt(isq, 0, out=mask[i:j])
    return out, count, mask


class _FusedFidelity(torch.autograd.Function):
    """``(F, count, mask)`` from ``(x, states)``; ``count`` and ``mask`` have no gradient.

    Up to ``save_elements`` overlap elements: one pass, and the overlaps (and, by the patch-matrix route, the
    patches) stay on ``ctx`` for the first backward, which turns them into ``dF/dz`` in place. Larger inputs,
    and a second backward (``retain_graph``), recompute them chunk by chunk. Because the backward reuses them
    in place, they live on ``ctx`` rather than in ``save_for_backward``: saved-tensor hooks (activation
    checkpointing, CPU offloading) do not see them, which costs memory, not correctness.
    """

    @staticmethod
    def forward(ctx, x: Tensor, states: Tensor, spec: ConvSpec, policy: RoutePolicy, want_mask: bool):
        weight = filter_weight(states, x.shape[1], spec.kernel, x.dtype)
        ctx.weight, ctx.spec, ctx.policy = weight, spec, policy  # an intermediate and two settings
        ho, wo = spec.output_size(*x.shape[-2:])
        per_item = weight.shape[0] * ho * wo
        ctx.unfolded = _unfolds(weight, policy, ctx.needs_input_grad[0])
        ctx.kept = None
        if x.shape[0] * per_item > policy.save_elements:  # large input: keep only x, recompute in the backward
            ctx.spans = _chunks(x.shape[0], per_item, policy.chunk_elements)
            ctx.save_for_backward(x, states, None)
            fid, count, mask = _fidelity_nograd(x, weight, spec, policy, ctx.unfolded, want_mask)
        else:
            ctx.spans = [(0, x.shape[0])]
            if ctx.unfolded:
                z, patches, isq, fid = _unfolded_parts(x, weight, spec, policy)
                ctx.kept = (z, patches)
            else:
                z, isq, fid = _conv_parts(x, weight, spec, policy)
                ctx.kept = (z, isq)
            count = torch.count_nonzero(isq)
            mask = isq > 0 if want_mask else torch.empty(0, dtype=torch.bool, device=x.device)
            ctx.save_for_backward(x, states, fid if ctx.needs_input_grad[0] else None)
        ctx.mark_non_differentiable(count, mask)
        return fid, count, mask

    @staticmethod
    def backward(ctx, g: Tensor, _count_grad, _mask_grad):
        need_x, need_w = ctx.needs_input_grad[:2]
        x, states, fid_saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, by the plain composition
            ctx.kept = None
            inputs = [t for t, need in ((x, need_x), (states, need_w)) if need]
            with torch.enable_grad():
                out = plain_fidelity(x, states, ctx.spec)
            grads = iter(torch.autograd.grad(out, inputs, g, create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_w else None), None, None, None
        weight, spec, policy = ctx.weight, ctx.spec, ctx.policy
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        kept, ctx.kept = ctx.kept, None  # used up in place below: a second backward recomputes
        for i, j in ctx.spans:
            if ctx.unfolded:
                z, patches = kept if kept is not None else _unfolded_parts(x[i:j], weight, spec, policy)[:2]
                if grad_w is not None:
                    _unfolded_backward(z, patches, g[i:j], grad_w)
                if grad_x is not None:  # the patch route only runs for x without a gradient, unless forced
                    grad_x[i:j] = _input_grad(x[i:j], weight, spec, policy, g[i:j])
            else:
                z, isq, fid = (*kept, fid_saved) if kept is not None else \
                    _conv_parts(x[i:j], weight, spec, policy, fid=need_x)
                _conv_backward(x[i:j], weight, spec, z, isq, fid if need_x else None, g[i:j],
                               None if grad_x is None else grad_x[i:j], grad_w)
        return grad_x, None if grad_w is None else _states_grad(grad_w, states), None, None, None


def _input_grad(x: Tensor, weight: Tensor, spec: ConvSpec, policy: RoutePolicy, g: Tensor) -> Tensor:
    """``dL/dx`` for one chunk by the convolution route (recomputed; used when the patch route is forced)."""
    z, isq, fid = _conv_parts(x, weight, spec, policy)
    grad_x = torch.empty_like(x)
    _conv_backward(x, weight, spec, z, isq, fid, g, grad_x, None)
    return grad_x


def _unfolded_backward(z: Tensor, patches: Tensor, g: Tensor, grad_w: Tensor) -> None:
    """Add ``dL/dweight`` for one chunk: ``dF/dz = 2 z g`` (in place in ``z``), then ``sum_b dz @ patches^T``."""
    b, k = g.shape[:2]
    if b == 0:
        return
    dz = z.view(b, 2, k, -1).mul_(g.reshape(b, 1, k, -1)).view(b, 2 * k, -1)
    grad_w.add_(torch.matmul(dz, patches.transpose(1, 2)).sum(0).view_as(grad_w), alpha=2)


def _conv_backward(x: Tensor, weight: Tensor, spec: ConvSpec, z: Tensor, isq: Tensor, fid: Tensor | None,
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
    # the ||x||^2 term: dF/dN = -F / N, and dN/dx = 2 x summed over the windows
    dn = (gi * fid).sum(1, keepdim=True).mul_(isq).neg_()
    ones = torch.ones((1, 1) + tuple(spec.kernel), dtype=x.dtype, device=x.device)
    gn, _, _ = torch.ops.aten.convolution_backward(  # x[:, :1] lends only its shape
        dn, x[:, :1], ones, None, conv["stride"], conv["padding"], conv["dilation"], False, (0, 0), 1,
        (True, False, False))
    torch.mul(gx.addcmul_(x, gn), 2, out=grad_x)


def fused_fidelity(x: Tensor, states: Tensor, spec: ConvSpec, policy: RoutePolicy,
                   want_mask: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Exact fidelity maps of prepared images ``x`` ``(B, C, H, W)`` with filter ``states`` ``(K, d)``.

    Returns ``(F, count, mask)``: ``F`` ``(B, K, H', W')`` (0 on all-zero patches), ``count`` the patches
    that are not all zero (a 0-dim int64 tensor on ``x``'s device: no host synchronisation) and, when
    ``want_mask``, ``mask`` ``(B, 1, H', W')`` saying which (else ``None``). One autograd node; ``policy``
    must be resolved for ``x``'s device.
    """
    if states.shape[-1] < spec.patch_size(x.shape[1]):
        raise UsageError(f"filter states of length {states.shape[-1]} cannot hold patches of "
                         f"{spec.patch_size(x.shape[1])} values")
    if torch.is_grad_enabled() and (x.requires_grad or states.requires_grad):
        fid, count, mask = _FusedFidelity.apply(x, states, spec, policy, want_mask)
    else:
        weight = filter_weight(states, x.shape[1], spec.kernel, x.dtype)
        fid, count, mask = _fidelity_nograd(x, weight, spec, policy, _unfolds(weight, policy, False), want_mask)
    return fid, count, mask if want_mask else None


__all__ = ["CPU_CHUNK_ELEMENTS", "CPU_SAVE_ELEMENTS", "GPU_MEMORY_FRACTION", "ROUTES", "RoutePolicy",
           "filter_weight", "fused_fidelity"]
