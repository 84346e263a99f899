"""``QuConv2d``: the QuCNN layer (Eq. 3) as a drop-in PyTorch module over :func:`qucnn.functional.quconv2d`.

Each output is the SWAP-test fidelity ``|<f_i|x_patch>|^2`` between filter state ``f_i = U(theta_i)|0>``
(the Fig. 1 ansatz) and the amplitude-encoded patch. All-zero patches have no quantum state; their output
is defined as 0 (and such circuits are never counted as run). The module holds the angles and the
settings; the functional does the work; the backend runs the circuits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..backends.base import Backend
from ..backends.registry import get_backend, registered_backends
from ..core.ansatz import FilterAnsatz
from ..core.geometry import ConvSpec, unfold_encoded
from ..core.swap_test import swap_test_circuit
from ..utils.checks import UsageError, as_pair, positive_int
from .cost import CostLedger, QuantumCost
from .functional import check_input, convolve
from .settings import QuantumSettings

#: The attributes that make up :attr:`QuConv2d.settings`.
SETTINGS = ("shots", "gradient", "gradient_shots", "gradient_budget", "generator")


class QuConv2d(nn.Module):
    """A quantum convolution: ``out_channels`` filter states SWAP-tested against every patch.

    Args:
        in_channels: channels ``C`` of the input, as :class:`torch.nn.Conv2d`.
        out_channels: filters, one quantum state each.
        kernel_size: ``k`` or ``(kh, kw)``: a patch has ``C * kh * kw`` values.
        stride: as :class:`torch.nn.Conv2d`.
        padding: an int, a pair, ``"valid"`` or ``"same"``, as :class:`torch.nn.Conv2d`.
        dilation: as :class:`torch.nn.Conv2d`.
        layers: depth ``L`` of the Fig. 1 ansatz; ``theta`` has shape ``(out_channels, L, n_qubits, 2)``.
        shots: ``None`` for exact fidelities, or ``S`` shots per output, ``S <= 2**53`` (the binomial estimate of Eq. 2;
            gradients are then those of the expectation, a straight-through estimator).
        gradient: ``"autograd"`` (exact, fast), ``"parameter-shift"`` (Eq. 4-6, post-processed),
            ``"entanglement"`` (Eq. 16-17, ``c = max_j |g_j|``) or ``"sampled"`` (a budget of
            ``gradient_budget`` single-shot Eq. 17 circuits drawn in proportion to ``|g_j|``).
        gradient_shots: shots per gradient circuit (``None``: exact expectations).
        gradient_budget: total shots per backward for ``gradient="sampled"``.
        generator: ``torch.Generator`` for the initial angles and every shot draw (seeded runs).
        backend: where the circuits run: a name from :func:`qucnn.backends.available_backends` (default
            ``"torch"``) or a :class:`~qucnn.backends.Backend`.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``, as :class:`torch.nn.Conv2d`.
        device: where ``theta`` is created, as :class:`torch.nn.Conv2d`.
        dtype: the float dtype of ``theta``, as :class:`torch.nn.Conv2d`.

    Shapes: input ``(B, C, H, W)`` (or ``(C, H, W)``) real; output ``(B, out_channels, H', W')`` with
    ``nn.Conv2d``'s size ``H' = floor((H + 2 p - d (kh - 1) - 1) / s) + 1``. ``n_qubits = ceil(log2(C*kh*kw))``.

    ``last_cost`` holds the :class:`~qucnn.nn.cost.QuantumCost` of the last forward and backward
    (``{"forward": ..., "backward": ...}``); ``total_cost()`` sums since ``reset_cost()``; ``cost`` is the
    :class:`~qucnn.nn.cost.CostLedger` itself.

    Example:
        >>> layer = QuConv2d(1, 8, 4, layers=3, generator=torch.Generator().manual_seed(0))
        >>> layer(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 8, 25, 25])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, *,
                 layers: int = 3, shots: int | None = None, gradient: str = "autograd",
                 gradient_shots: int | None = None, gradient_budget: int | None = None,
                 generator: torch.Generator | None = None, backend: str | Backend = "torch",
                 padding_mode: str = "zeros", device=None, dtype=None) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.layers = positive_int(layers, "layers")
        spec = ConvSpec.make(kernel_size, stride, padding, dilation, padding_mode)
        self.kernel_size, self.stride, self.dilation = spec.kernel, spec.stride, spec.dilation
        self.padding = padding if isinstance(padding, str) else as_pair(padding, "padding", 0)
        self.padding_mode = padding_mode
        self._spec = spec
        m = spec.patch_size(self.in_channels)
        if m < 2:
            raise UsageError(f"a patch needs at least 2 values to make a qubit state; in_channels * kh * kw = {m}")
        self.n_qubits = spec.n_qubits(self.in_channels)
        self.ansatz = FilterAnsatz(self.n_qubits, self.layers)
        object.__setattr__(self, "settings", QuantumSettings(shots, gradient, gradient_shots, gradient_budget,
                                                             generator))
        self.backend = backend
        self.theta = nn.Parameter(torch.empty(out_channels, self.layers, self.n_qubits, 2, device=device,
                                              dtype=dtype))
        self.reset_parameters()
        self.cost = CostLedger()

    # -- settings, validated on every assignment so a bad value never reaches forward ----------------
    def __getattr__(self, name):
        if name in SETTINGS:
            return getattr(self.__dict__["settings"], name)
        return super().__getattr__(name)

    def __setattr__(self, name, value):
        if name in SETTINGS:  # one frozen, validated object, replaced when a setting changes
            object.__setattr__(self, "settings", self.settings.with_(**{name: value}))
            return
        if name == "settings":
            if not isinstance(value, QuantumSettings):
                raise TypeError(f"settings must be a QuantumSettings, got {type(value).__name__}")
            object.__setattr__(self, name, value)
            return
        if name == "backend":
            object.__setattr__(self, "_backend_object", get_backend(value))  # an unknown name fails here
        super().__setattr__(name, value)

    def reset_parameters(self) -> None:
        """Uniform angles in ``[0, 2 pi)``, drawn from ``generator`` when one was given."""
        with torch.no_grad():
            angles = torch.rand(self.theta.shape, generator=self.generator,
                                device=self.generator.device if self.generator is not None else "cpu")
            self.theta.copy_(2 * math.pi * angles)

    def extra_repr(self) -> str:
        """The settings shown in ``repr(layer)``, as ``nn.Conv2d`` shows its own."""
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
             f", padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        s += f", layers={self.layers}, n_qubits={self.n_qubits}"
        for name, default in (("shots", None), ("gradient", "autograd"), ("gradient_shots", None),
                              ("gradient_budget", None)):
            value = getattr(self, name)
            if value != default:
                s += f", {name}={value!r}"
        backend = self.backend
        if (not isinstance(backend, str) and backend.name in registered_backends()
                and get_backend(backend.name) is backend):
            backend = backend.name  # the registry's own instance: its name says it all
        if backend != "torch":
            s += f", backend={backend!r}"
        return s

    def filter_states(self) -> Tensor:
        """The filter states ``U(theta_i)|0>``: complex ``(out_channels, 2**n_qubits)``."""
        return self._backend_object.filter_states(self.theta)

    @property
    def spec(self) -> ConvSpec:
        """The window geometry (kernel, stride, padding, dilation, padding mode) as a
        :class:`~qucnn.core.geometry.ConvSpec`."""
        return self._spec

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(H', W')`` for an input of ``height x width``."""
        return self._spec.output_size(height, width)

    # -- cost accounting -------------------------------------------------------------------------
    def reset_cost(self) -> None:
        """Zero the running totals returned by :meth:`total_cost`."""
        self.cost.reset()

    @property
    def last_cost(self) -> dict[str, QuantumCost]:
        """The :class:`QuantumCost` of the last forward and backward: ``{"forward": ..., "backward": ...}``."""
        return self.cost.last

    def total_cost(self) -> dict:
        """Circuits and shots since :meth:`reset_cost`, per phase (``shots`` is ``None`` if any run was exact)."""
        return self.cost.total()

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """SWAP-test fidelities of every filter with every patch of ``x`` ``(B, C, H, W)`` or ``(C, H, W)``:
        ``(B, out_channels, H', W')`` (or ``(out_channels, H', W')``), in ``x``'s dtype, on ``self.backend``."""
        if isinstance(x, Tensor) and x.dim() in (3, 4) and x.shape[-3] != self.in_channels:
            raise UsageError(f"QuConv2d expects {self.in_channels} input channel(s), got {x.shape[-3]} "
                             f"(input shape {tuple(x.shape)})")
        return convolve(x, self.theta, self._spec, self.settings, self._backend_object, self.cost)

    # -- validation path ---------------------------------------------------------------------------
    def forward_circuit(self, x: Tensor) -> Tensor:
        """The same outputs from the full ``2n+1``-qubit SWAP-test circuit, simulated gate by gate for
        every (patch, filter) pair. Exact; for validation on small inputs only."""
        x = check_input(x, self.in_channels)
        d = 2**self.n_qubits
        patches = unfold_encoded(x, self._spec, d)  # (B, L, d)
        states = self.ansatz.state(self.theta.detach(), method="gates")
        b, npos = patches.shape[:2]
        xs = patches.reshape(-1, 1, d).expand(-1, self.out_channels, d).reshape(-1, d)
        fs = states.unsqueeze(0).expand(b * npos, -1, -1).reshape(-1, d)
        z = swap_test_circuit(xs, fs).to(x.dtype)
        z = torch.where(xs.abs().sum(-1) > 0, z, 0)  # all-zero patch: 0 by definition
        h_out, w_out = self.output_shape(x.shape[-2], x.shape[-1])
        return z.reshape(b, h_out, w_out, self.out_channels).permute(0, 3, 1, 2)


__all__ = ["QuConv2d"]
