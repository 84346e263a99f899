"""Where the patches of a convolution are: kernel, stride, padding and dilation, as ``nn.Conv2d`` has them.

:class:`ConvSpec` is the one place that knows the output size (``H' = floor((H + 2p - d(k-1) - 1) / s) + 1``),
turns ``padding="same"``/``"valid"`` into numbers and says whether an input needs explicit (asymmetric or
non-zero) padding first. The patch helpers below gather raw or amplitude-encoded patches for references,
validations and the circuit backends.

Example:
    >>> spec = ConvSpec.make(4)
    >>> spec.output_size(28, 28)
    (25, 25)
    >>> ConvSpec.make(3, padding="same").padding
    (1, 1)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.checks import UsageError, as_pair
from .encoding import amplitude_encode, num_qubits_for

Pair = tuple[int, int]
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvSpec:
    """The window geometry of a convolution. ``padding`` is symmetric zero padding; ``pre_pad`` (left,
    right, top, bottom), when not ``None``, is padding applied to the input first with ``padding_mode``
    (``padding="same"`` with an even span, or a non-zero ``padding_mode``)."""

    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    pre_pad: tuple[int, int, int, int] | None = None
    padding_mode: str = "zeros"

    @classmethod
    def make(cls, kernel_size, stride=1, padding=0, dilation=1, padding_mode: str = "zeros") -> "ConvSpec":
        """Validate ``nn.Conv2d``-style arguments: ints or pairs, ``padding`` also ``"valid"`` or ``"same"``
        (stride 1 only, as in PyTorch; an odd total is split with the extra row/column at the end)."""
        args = (kernel_size, stride, padding, dilation, padding_mode)
        if all(type(a) in (int, str) or (type(a) is tuple and all(type(v) is int for v in a)) for a in args):
            return _make_cached(*args)  # the common case, hashable: validated once
        return cls._make(*args)

    @classmethod
    def _make(cls, kernel_size, stride, padding, dilation, padding_mode) -> "ConvSpec":
        kernel = as_pair(kernel_size, "kernel_size", 1)
        stride_p = as_pair(stride, "stride", 1)
        dil = as_pair(dilation, "dilation", 1)
        if padding_mode not in PADDING_MODES:
            raise UsageError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if isinstance(padding, str):
            if padding == "valid":
                pad4 = (0, 0, 0, 0)
            elif padding == "same":
                if stride_p != (1, 1):
                    raise UsageError(f"padding='same' needs stride 1 (as in torch.nn.Conv2d), got stride {stride!r}")
                th, tw = (dil[0] * (kernel[0] - 1), dil[1] * (kernel[1] - 1))
                pad4 = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
            else:
                raise UsageError(f"padding must be an int, a pair, 'valid' or 'same'; got {padding!r}")
        else:
            ph, pw = as_pair(padding, "padding", 0)
            pad4 = (pw, pw, ph, ph)
        symmetric = pad4[0] == pad4[1] and pad4[2] == pad4[3]
        if symmetric and padding_mode == "zeros":
            return cls(kernel, stride_p, (pad4[2], pad4[0]), dil)
        return cls(kernel, stride_p, (0, 0), dil, None if pad4 == (0, 0, 0, 0) else pad4, padding_mode)

    @functools.cached_property
    def span(self) -> Pair:
        """Rows and columns one window covers: ``d (k - 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))  # type: ignore[return-value]

    def padded_size(self, height: int, width: int) -> Pair:
        """The input size after all padding."""
        if self.pre_pad is not None:
            height, width = height + self.pre_pad[2] + self.pre_pad[3], width + self.pre_pad[0] + self.pre_pad[1]
        return height + 2 * self.padding[0], width + 2 * self.padding[1]

    def output_size(self, height: int, width: int) -> Pair:
        """``(H', W')``, as ``nn.Conv2d`` computes it."""
        (ph, pw), (sh, sw), (eh, ew) = self.padded_size(height, width), self.stride, self.span
        return (ph - eh) // sh + 1, (pw - ew) // sw + 1

    def check_fits(self, height: int, width: int) -> None:
        """``UsageError`` if a window does not fit the padded input."""
        ph, pw = self.padded_size(height, width)
        if self.span[0] > ph or self.span[1] > pw:
            spans = "" if self.dilation == (1, 1) else f" with dilation {self.dilation} spans {self.span} and"
            raise UsageError(f"kernel_size {self.kernel}{spans} is larger than the padded input ({ph}, {pw})")

    def prepare(self, x: Tensor) -> tuple[Tensor, "ConvSpec"]:
        """``x`` with the explicit padding applied and the spec that remains (symmetric zero padding only)."""
        if self.pre_pad is None:
            return x, self
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, self.pre_pad, mode=mode), ConvSpec(self.kernel, self.stride, self.padding, self.dilation)

    def patch_size(self, channels: int) -> int:
        """Values per patch: ``C * kh * kw``."""
        return channels * self.kernel[0] * self.kernel[1]

    def n_qubits(self, channels: int) -> int:
        """Qubits of one amplitude-encoded patch: ``ceil(log2(C * kh * kw))``."""
        return num_qubits_for(self.patch_size(channels))


@functools.lru_cache(maxsize=256)
def _make_cached(kernel_size, stride, padding, dilation, padding_mode) -> ConvSpec:
    return ConvSpec._make(kernel_size, stride, padding, dilation, padding_mode)


def unfold_patches(x: Tensor, spec: ConvSpec) -> Tensor:
    """Every raw patch of ``x`` ``(B, C, H, W)``: ``(B, H'*W', C*kh*kw)`` (channel first, row-major)."""
    x, spec = spec.prepare(x)
    return F.unfold(x, spec.kernel, dilation=spec.dilation, padding=spec.padding, stride=spec.stride).transpose(1, 2)


def unfold_encoded(x: Tensor, spec: ConvSpec, d: int) -> Tensor:
    """Every patch, amplitude-encoded and zero-padded to ``d``: ``(B, H'*W', d)`` (all-zero patches stay
    zero). For references and small validations only: this materialises the unfolded tensor."""
    encoded = amplitude_encode(unfold_patches(x, spec))
    return F.pad(encoded, (0, d - encoded.shape[-1]))


def gather_patches(x: Tensor, spec: ConvSpec, b: Tensor, row: Tensor, col: Tensor) -> Tensor:
    """The raw patches at output positions ``(b, row, col)`` (each ``(N,)``): ``(N, C*kh*kw)``."""
    x, spec = spec.prepare(x)
    (ph, pw), (dh, dw) = spec.padding, spec.dilation
    xp = F.pad(x, (pw, pw, ph, ph))
    dr = torch.arange(spec.kernel[0], device=x.device) * dh
    dc = torch.arange(spec.kernel[1], device=x.device) * dw
    rows = (row * spec.stride[0])[:, None, None] + dr[None, :, None]  # (N, kh, 1)
    cols = (col * spec.stride[1])[:, None, None] + dc[None, None, :]  # (N, 1, kw)
    patches = xp[b[:, None, None], :, rows, cols]  # (N, kh, kw, C)
    return patches.permute(0, 3, 1, 2).reshape(b.shape[0], -1)


__all__ = ["ConvSpec", "PADDING_MODES", "gather_patches", "unfold_encoded", "unfold_patches"]
