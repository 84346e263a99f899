"""Patch norms over every window of a convolution, and the scale-safe preparation of an input.

Every exact engine computes ``F = |<f|x>|^2 = (Re^2 + Im^2) / ||x||^2``, which does not depend on the scale of a
patch, and a power of two changes no digit of any result. Two powers of two keep every patch's digits:

- :func:`scale_input` computes half precision in float32 and brings every image's largest magnitude into
  ``[0.5, 1)`` (the overlaps ``<f|x>`` neither overflow nor underflow), unless it is in a safe range already;
- the squared norms are summed from the input lifted by a power of two that brings its largest value to
  ``2**E`` (:data:`NORM_EXPONENT`), so that the squares of a patch far fainter than the largest value of its own
  image keep their digits: float32 patches down to ``2**-100`` (float64: ``2**-990``) of it. Only exactly
  all-zero patches get 0.

Example:
    >>> x = torch.ones(1, 1, 3, 3)
    >>> window_sums(x, ConvSpec.make(2))
    tensor([[[[4., 4.],
              [4., 4.]]]])
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.devices import reads_back_freely
from .geometry import ConvSpec

#: Half-precision inputs are computed in this dtype.
HALF_TYPES = (torch.float16, torch.bfloat16)
#: Images whose largest magnitudes lie in ``[2**-e, 2**e]``, within :data:`SAFE_SPREAD` of each other, need no
#: scaling in this dtype (CPU only: elsewhere every image is scaled, so that the host never waits for a decision).
SAFE_EXPONENT = {torch.float32: 40, torch.float64: 300}
#: Largest ratio of two images' largest magnitudes that one lift of the norms serves without scaling the images.
SAFE_SPREAD = 2.0**16
#: Per compute dtype, the power of two an image's largest value is lifted to for its squared patch norms: high
#: enough that the squares of a patch ``2**-117`` (float32) or ``2**-1011`` (float64) times fainter keep their
#: digits, low enough that the squares of a patch of a million values at that size cannot overflow.
NORM_EXPONENT = {torch.float32: 54, torch.float64: 500}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype fidelities are computed in: float32 for half inputs, else the input's."""
    return torch.float32 if dtype in HALF_TYPES else dtype


def power_of_two_scale(top: Tensor) -> Tensor:
    """``2**-e`` with ``e`` the exponent of ``top`` (``frexp``), which brings ``top`` into ``[0.5, 1)``; 1 where
    ``top`` is 0. For a subnormal ``top``, whose ``2**-e`` would overflow to inf, the largest finite power of two
    of the dtype that is safe to multiply by: ``top`` then lands on a normal number, and nothing becomes inf or
    NaN."""
    cap = math.frexp(torch.finfo(top.dtype).max)[1] - 2
    return torch.ldexp(torch.ones_like(top), (-torch.frexp(top).exponent).clamp(max=cap))


def scale_input(x: Tensor) -> tuple[Tensor, float]:
    """``(x', lift)``: ``x`` in :func:`compute_dtype`, each image scaled by ``2**-e`` so that its largest
    magnitude lies in ``[0.5, 1)`` (all-zero images unscaled), and the power of two ``lift`` that brings the
    largest value of ``x'`` to ``2**E`` for the squared norms (:func:`inverse_norms`). On the CPU, inputs whose
    images are already in a safe range (:data:`SAFE_EXPONENT`, :data:`SAFE_SPREAD`) are returned as they are
    (one reduction read back, no copy); on other devices the scaling always runs, so the host never waits.
    Differentiable: the scales are constants per image, and ``F`` is invariant to them."""
    x = x.to(compute_dtype(x.dtype))
    exponent = NORM_EXPONENT[x.dtype]
    if x.numel() == 0:
        return x, 2.0**exponent
    top = x.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    if reads_back_freely(x.device):
        smallest, largest = torch.stack(torch.aminmax(top)).tolist()
        safe = 2.0 ** SAFE_EXPONENT[x.dtype]
        if 1 / safe <= smallest and largest <= safe and largest <= smallest * SAFE_SPREAD:
            return x, math.ldexp(1.0, exponent - math.frexp(largest)[1])
    return x * power_of_two_scale(top), 2.0**exponent


def prepare_input(x: Tensor) -> Tensor:
    """The scaled input of :func:`scale_input` alone."""
    return scale_input(x)[0]


@functools.lru_cache(maxsize=64)
def _band(size: int, k: int, step: int, pad: int, dil: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(out, size)`` 0/1 matrix whose row ``i`` covers the window ``{i*step - pad + j*dil : j < k}`` of a line of
    ``size`` values: a window sum with zero padding, the padding never materialised."""
    span = dil * (k - 1) + 1
    out = (size + 2 * pad - span) // step + 1
    start = torch.arange(out, device=device)[:, None] * step - pad
    offset = torch.arange(size, device=device)[None, :] - start
    return ((offset >= 0) & (offset < span) & (offset % dil == 0)).to(dtype)


def window_sums(x2: Tensor, spec: ConvSpec, band_max_size: int = 64) -> Tensor:
    """Sums of ``x2`` ``(B, 1, H, W)`` over every window of ``spec`` (symmetric zero padding): ``(B, 1, H', W')``.

    Separable (rows, then columns) instead of a one-output-channel ``conv2d``, which oneDNN pads to 16
    output channels. Images up to ``band_max_size`` rows and columns use two products with 0/1 band
    matrices (two BLAS calls); larger ones ``kh + kw`` shifted adds, whose work does not grow with the width.
    For non-negative ``x2`` (squares) a sum is zero exactly when its window is all zero, whatever the order
    of the additions, so all-zero patches are still detected exactly.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel, spec.stride, spec.padding, spec.dilation
    h, w = x2.shape[-2:]
    if max(h, w) <= band_max_size:
        rows = _band(h, kh, sh, ph, dh, x2.device, x2.dtype)
        cols = _band(w, kw, sw, pw, dw, x2.device, x2.dtype)
        return torch.matmul(torch.matmul(rows, x2), cols.T)
    if ph or pw:
        x2 = F.pad(x2, (pw, pw, ph, ph))
    return _shifted_sum(_shifted_sum(x2, kw, sw, dw, 3), kh, sh, dh, 2)


def _shifted_sum(t: Tensor, k: int, step: int, dil: int, dim: int) -> Tensor:
    """``sum_{j<k} t[..., j * dil + step * i, ...]`` along ``dim``: ``k`` strided slices added."""
    count = (t.shape[dim] - dil * (k - 1) - 1) // step + 1

    def part(j: int) -> Tensor:
        return t.narrow(dim, j * dil, (count - 1) * step + 1)[(slice(None),) * dim + (slice(None, None, step),)]

    if k == 1:
        return part(0).contiguous()
    out = part(0) + part(1)
    for j in range(2, k):
        out += part(j)
    return out


def squared_norms(x: Tensor, spec: ConvSpec, band_max_size: int = 64) -> Tensor:
    """``||x_patch||^2`` of every window, ``(B, 1, H', W')``, in ``x``'s dtype (exactly 0 for all-zero patches)."""
    x2 = x * x
    return window_sums(x2 if x.shape[1] == 1 else x2.sum(1, keepdim=True), spec, band_max_size)


def inverse_norms(x: Tensor, spec: ConvSpec, lift: float, band_max_size: int = 64) -> Tensor:
    """``1 / ||x_patch||`` of every window of the prepared input ``x``, ``(B, 1, H', W')``, from the squared norms of
    ``x`` times the power of two ``lift`` (:func:`scale_input`): 0 exactly on all-zero patches (no state: fidelity
    0 by definition).

    ``rsqrt``, never ``1 / ||x||^2``: finite for every squared norm that is not zero. Two cheap passes; a boolean
    mask and ``where`` cost several times more on the CPU.
    """
    lifted = x * lift
    lifted = lifted.mul_(lifted) if x.shape[1] == 1 else lifted.mul_(lifted).sum(1, keepdim=True)
    norms = window_sums(lifted, spec, band_max_size)
    return norms.rsqrt().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).mul_(lift)


def valid_patches(x: Tensor, spec: ConvSpec) -> Tensor:
    """Which patches of ``x`` ``(B, C, H, W)`` (as the user gave it: ``spec``'s padding is applied here) are not
    all zero: ``(B, 1, H', W')`` bool. A classical property of the data: the circuits of the other patches are
    never run.

    Example:
        >>> valid_patches(torch.tensor([[[[0., 0., 1.]]]]), ConvSpec.make((1, 2)))
        tensor([[[[False,  True]]]])
    """
    x, spec = spec.prepare(x.detach())
    nonzero = (x != 0).to(compute_dtype(x.dtype)).sum(1, keepdim=True)
    return window_sums(nonzero, spec) > 0


__all__ = ["HALF_TYPES", "NORM_EXPONENT", "SAFE_EXPONENT", "SAFE_SPREAD", "compute_dtype", "inverse_norms",
           "prepare_input", "scale_input", "squared_norms", "valid_patches", "window_sums"]
