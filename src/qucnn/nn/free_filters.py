"""``FreeFidelity2d``: the QuCNN fidelity layer with unconstrained filters, the control for "does the ansatz
matter?".

In exact simulation a QuCNN filter computes ``|<f|x>|^2 = |sum_p conj(f_p) x_p|^2 / ||x||^2`` with ``f``
restricted to the states the Fig. 1 ansatz reaches (``2 n L`` angles). This module computes the same map
with ``f = w / ||w||`` for a free complex vector ``w`` per filter, through the same fused maps of the torch
backend (:meth:`~qucnn.backends.SimulatorBackend.maps`), so any difference between a network
with :class:`~qucnn.nn.QuConv2d` and one with this layer is the ansatz' constraint and nothing else. It is a
classical layer: no circuits, no cost ledger.

Example:
    >>> layer = FreeFidelity2d(1, 8, 4, generator=torch.Generator().manual_seed(0))
    >>> layer(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 8, 25, 25])
    >>> layer.weight.shape   # (out_channels, C*kh*kw, [real, imaginary])
    torch.Size([8, 16, 2])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backends.registry import get_backend
from ..core.geometry import ConvSpec
from ..utils.checks import UsageError, positive_int
from ..utils.devices import autocast_off
from .functional import check_input


class FreeFidelity2d(nn.Module):
    """``y[b, o, r, c] = |<w_o / ||w_o|| | x_(b, r, c)>|^2`` with a free complex ``w_o`` per filter.

    Args:
        in_channels, out_channels, kernel_size, stride: as :class:`torch.nn.Conv2d` (no padding).
        generator: seeds the initial ``w`` (complex Gaussian, so the initial states are Haar random).

    ``weight`` ``(out_channels, C*kh*kw, 2)`` holds the real and imaginary parts of ``w`` (a real parameter,
    so every optimiser treats it as two real numbers). The state has ``C*kh*kw`` amplitudes: the zero
    padding of QuCNN's amplitude encoding would only meet zeros of ``x``. Degrees of freedom per filter:
    ``2 C kh kw - 2`` (norm and global phase drop out), against ``2 n L`` angles for the ansatz.

    Shapes: input ``(B, C, H, W)`` real; output ``(B, out_channels, H', W')`` in ``[0, 1]``; all-zero
    patches give 0, as in QuCNN.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self._spec = ConvSpec.make(kernel_size, stride)
        self.kernel_size, self.stride = self._spec.kernel, self._spec.stride
        m = self._spec.patch_size(self.in_channels)
        if m < 2:
            raise UsageError(f"a patch needs at least 2 values to make a state; in_channels * kh * kw = {m}")
        self.weight = nn.Parameter(torch.randn(self.out_channels, m, 2, generator=generator) / 2**0.5)

    def extra_repr(self) -> str:
        """The arguments shown in ``repr(module)``, as ``nn.Conv2d`` shows its own."""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                "free unit-norm complex filters")

    def states(self) -> Tensor:
        """The filter states ``(out_channels, C*kh*kw)`` complex, unit norm, differentiable in ``weight``."""
        w = torch.view_as_complex(self.weight.float() if self.weight.dtype == torch.float16 else self.weight)
        return w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(H', W')`` for an input of ``height x width``."""
        return self._spec.output_size(height, width)

    def forward(self, x: Tensor) -> Tensor:
        """``|<w_i/|w_i| | x_patch/|x_patch|>|^2`` for every filter and patch: ``(N, out_channels, H', W')``."""
        x = check_input(x, self.in_channels)
        self._spec.check_fits(*x.shape[-2:])
        with autocast_off(x.device):
            return get_backend("torch").maps(x, self.states(), self._spec)[0]


__all__ = ["FreeFidelity2d"]
