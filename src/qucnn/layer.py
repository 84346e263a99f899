"""``QuConv2d``: the QuCNN layer (Eq. 3) as a drop-in PyTorch module.

Each output is the SWAP-test fidelity ``|<f_i|x_patch>|^2`` between filter state ``f_i = U(theta_i)|0>``
(the Fig. 1 ansatz) and the amplitude-encoded patch. All-zero patches have no quantum state; their
output is defined as 0 (and such circuits are never counted as run).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from . import gradients
from .ansatz import FilterAnsatz
from .encoding import check_finite, num_qubits_for
from .fidelity import fidelity_maps, fidelity_maps_counted, patch_norms, unfold_encoded
from .swap_test import check_shots, estimate_z, swap_test_circuit

GRADIENT_MODES = ("autograd", "parameter-shift", "entanglement", "sampled")
#: Forward costs held as device tensors before they are read into the totals (one host sync per this many).
MAX_PENDING_COSTS = 64


@dataclass(frozen=True)
class QuantumCost:
    """What a quantum computer would have run: distinct ``circuits``, ``qubits`` per circuit and total
    ``shots`` (``None`` when expectations were exact, i.e. infinitely many shots)."""

    circuits: int = 0
    qubits: int = 0
    shots: int | None = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value) \
        if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair  # type: ignore[return-value]


class _QuantumGradient(torch.autograd.Function):
    """Exact forward; ``theta``'s gradient from a quantum-side estimator, ``x``'s the analytic one."""

    @staticmethod
    def forward(ctx, x: Tensor, theta: Tensor, layer: "QuConv2d"):
        states = layer.ansatz.state(theta)
        ctx.save_for_backward(x, theta, states)
        ctx.layer = layer
        out, count = fidelity_maps_counted(x, states, layer.kernel_size, layer.stride, layer.padding)
        ctx.mark_non_differentiable(count)
        return out, count

    @staticmethod
    def backward(ctx, g: Tensor, _count_grad):
        x, theta, states = ctx.saved_tensors
        layer: QuConv2d = ctx.layer
        grad_x = grad_theta = None
        if ctx.needs_input_grad[0]:
            with torch.enable_grad():
                xd = x.detach().requires_grad_(True)
                out = fidelity_maps(xd, states.detach(), layer.kernel_size, layer.stride, layer.padding)
                (grad_x,) = torch.autograd.grad(out, xd, g)
        if ctx.needs_input_grad[1]:
            grad_theta = layer._estimate_theta_grad(x.detach(), theta.detach(), g.detach())
        return grad_x, grad_theta, None


class QuConv2d(nn.Module):
    """A quantum convolution: ``out_channels`` filter states SWAP-tested against every patch.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as :class:`torch.nn.Conv2d`.
        layers: depth ``L`` of the Fig. 1 ansatz; ``theta`` has shape ``(out_channels, L, n_qubits, 2)``.
        shots: ``None`` for exact fidelities, or ``S`` shots per output (the binomial estimate of Eq. 2;
            gradients are then those of the expectation, a straight-through estimator).
        gradient: ``"autograd"`` (exact, fast), ``"parameter-shift"`` (Eq. 4-6, post-processed),
            ``"entanglement"`` (Eq. 16-17, ``c = max_j |g_j|``) or ``"sampled"`` (a budget of
            ``gradient_budget`` single-shot Eq. 17 circuits drawn in proportion to ``|g_j|``).
        gradient_shots: shots per gradient circuit (``None``: exact expectations).
        gradient_budget: total shots per backward for ``gradient="sampled"``.
        generator: ``torch.Generator`` for the initial angles and every shot draw (seeded runs).

    Shapes: input ``(B, C, H, W)`` (or ``(C, H, W)``) real; output ``(B, out_channels, H', W')`` with
    ``H' = floor((H + 2 p - kh) / s) + 1``. ``n_qubits = ceil(log2(C * kh * kw))``.

    ``last_cost`` holds the :class:`QuantumCost` of the last forward and backward
    (``{"forward": ..., "backward": ...}``); ``total_cost()`` sums since ``reset_cost()``.

    Example:
        >>> layer = QuConv2d(1, 8, 4, layers=3, generator=torch.Generator().manual_seed(0))
        >>> layer(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 8, 25, 25])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 layers: int = 3, shots: int | None = None, gradient: str = "autograd",
                 gradient_shots: int | None = None, generator: torch.Generator | None = None,
                 gradient_budget: int | None = None) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels, self.layers = in_channels, out_channels, layers
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        m = in_channels * self.kernel_size[0] * self.kernel_size[1]
        if m < 2:
            raise ValueError(f"a patch needs at least 2 values to make a qubit state; "
                             f"in_channels * kh * kw = {m}")
        self.n_qubits = num_qubits_for(m)
        self.ansatz = FilterAnsatz(self.n_qubits, layers)
        self.shots = shots
        self.gradient = gradient
        self.gradient_shots = gradient_shots
        self.gradient_budget = gradient_budget
        self.generator = generator
        self.theta = nn.Parameter(torch.empty(out_channels, layers, self.n_qubits, 2))
        self.reset_parameters()
        self._last: dict[str, QuantumCost | None] = {"forward": QuantumCost(), "backward": QuantumCost()}
        self.reset_cost()

    # -- configuration, validated on every assignment so a bad value never reaches forward ----------
    def __setattr__(self, name, value):
        if name in ("shots", "gradient_shots"):
            check_shots(value, name)
        elif name == "gradient" and value not in GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {value!r}")
        elif name == "gradient_budget" and value is not None:
            check_shots(value, "gradient_budget")
        super().__setattr__(name, value)

    def reset_parameters(self) -> None:
        """Uniform angles in ``[0, 2 pi)``, drawn from ``generator`` when one was given."""
        with torch.no_grad():
            angles = torch.rand(self.theta.shape, generator=self.generator,
                                device=self.generator.device if self.generator is not None else "cpu")
            self.theta.copy_(2 * math.pi * angles)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
             f", padding={self.padding}, layers={self.layers}, n_qubits={self.n_qubits}")
        if self.shots is not None:
            s += f", shots={self.shots}"
        if self.gradient != "autograd":
            s += f", gradient={self.gradient!r}"
        if self.gradient_shots is not None:
            s += f", gradient_shots={self.gradient_shots}"
        if self.gradient_budget is not None:
            s += f", gradient_budget={self.gradient_budget}"
        return s

    def filter_states(self) -> Tensor:
        """The filter states ``U(theta_i)|0>``: complex ``(out_channels, 2**n_qubits)``."""
        return self.ansatz.state(self.theta)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1

    # -- cost accounting -------------------------------------------------------------------------
    # A forward's circuit count is a device tensor until someone reads a cost: counting must not make
    # a GPU forward wait for the host.
    def reset_cost(self) -> None:
        """Zero the running totals returned by :meth:`total_cost`."""
        if getattr(self, "_pending", None):
            self._settle()  # keeps last_cost right
        self._totals = {"forward": [0, 0], "backward": [0, 0]}  # circuits, shots
        self._exact = {"forward": False, "backward": False}
        self._pending: list[tuple[Tensor, int, int | None]] = []  # (patch count, qubits, shots per circuit)

    def _record(self, phase: str, cost: QuantumCost) -> None:
        if phase == "forward" and self._pending:
            self._settle()  # in order: an older pending forward must not overwrite this one
        self._last[phase] = cost
        self._totals[phase][0] += cost.circuits
        self._totals[phase][1] += cost.shots or 0
        self._exact[phase] |= cost.shots is None and cost.circuits > 0

    def _record_forward(self, patches: Tensor, qubits: int, shots: int | None) -> None:
        if len(self._pending) >= MAX_PENDING_COSTS:  # a loop that never reads its costs must not grow
            self._settle()
        self._pending.append((patches, qubits, shots))
        self._last["forward"] = None

    def _settle(self) -> None:
        pending, self._pending = self._pending, []
        for patches, qubits, shots in pending:
            circuits = int(patches) * self.out_channels
            self._record("forward", QuantumCost(circuits, qubits, None if shots is None else circuits * shots))

    @property
    def last_cost(self) -> dict[str, QuantumCost]:
        """The :class:`QuantumCost` of the last forward and backward: ``{"forward": ..., "backward": ...}``."""
        self._settle()
        return dict(self._last)

    def total_cost(self) -> dict:
        """Circuits and shots since :meth:`reset_cost`, per phase (``shots`` is ``None`` if any run was exact)."""
        self._settle()
        return {phase: {"circuits": c, "shots": None if self._exact[phase] else s}
                for phase, (c, s) in self._totals.items()}

    # -- forward ---------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"QuConv2d expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"QuConv2d expects input of shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"QuConv2d expects {self.in_channels} input channel(s), got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"QuConv2d expects a real floating-point input, got {x.dtype}")
        h, w = x.shape[-2] + 2 * self.padding[0], x.shape[-1] + 2 * self.padding[1]
        if self.kernel_size[0] > h or self.kernel_size[1] > w:
            raise ValueError(f"kernel_size {self.kernel_size} is larger than the padded input ({h}, {w})")
        check_finite(x, "QuConv2d input")
        return x

    def forward(self, x: Tensor) -> Tensor:
        unbatched = isinstance(x, Tensor) and x.dim() == 3
        x = self._check_input(x.unsqueeze(0) if unbatched else x)
        theta = self.theta
        if x.shape[0] == 0:  # an empty shard (data parallelism): nothing to run, zero gradient for theta
            self._record("forward", QuantumCost())
            self._record("backward", QuantumCost())
            return x.new_zeros((0, self.out_channels) + self.output_shape(*x.shape[-2:])) + 0 * theta.sum().to(x.dtype)
        if self.gradient == "autograd":
            out, patches = fidelity_maps_counted(x, self.ansatz.state(theta), self.kernel_size, self.stride,
                                                 self.padding)
        else:
            out, patches = _QuantumGradient.apply(x, theta, self)
        if self.shots is not None:
            valid = patch_norms(x.detach(), self.kernel_size, self.stride, self.padding) > 0
            noisy = torch.where(valid, estimate_z(out, self.shots, self.generator), 0)
            out = out + (noisy - out).detach()  # shot noise forward, gradient of the expectation
        self._record_forward(patches, 2 * self.n_qubits + 1, self.shots)
        if self.gradient == "autograd":
            self._record("backward", QuantumCost())
        return out.squeeze(0) if unbatched else out

    # -- backward (quantum-side modes) -----------------------------------------------------------
    def _estimate_theta_grad(self, x: Tensor, theta: Tensor, g: Tensor) -> Tensor:
        geom = gradients.Geometry(self.kernel_size, self.stride, self.padding)
        shifted = self.ansatz.state(gradients.shifted_thetas(theta))  # (2, P, O, d): once per backward
        qubits = 2 * self.n_qubits + 2
        if self.gradient == "parameter-shift":
            est = gradients.parameter_shift_grad(x, shifted, g, geom, self.gradient_shots, self.generator)
            qubits -= 1
        elif self.gradient == "entanglement":
            est = gradients.entanglement_grad(x, shifted, g, geom, self.gradient_shots, self.generator)
        else:
            if self.gradient_budget is None:
                raise ValueError("gradient='sampled' needs gradient_budget (total shots per backward), got None")
            est = gradients.sampled_grad(x, shifted, g, geom, self.gradient_budget, self.generator)
        self._record("backward", QuantumCost(est.circuits, qubits, est.shots))
        return est.grad.reshape(theta.shape).to(theta.dtype)

    # -- validation path ---------------------------------------------------------------------------
    def forward_circuit(self, x: Tensor) -> Tensor:
        """The same outputs from the full ``2n+1``-qubit SWAP-test circuit, simulated gate by gate for
        every (patch, filter) pair. Exact; for validation on small inputs only."""
        x = self._check_input(x)
        d = 2**self.n_qubits
        patches = unfold_encoded(x, self.kernel_size, self.stride, self.padding, d)  # (B, L, d)
        states = self.filter_states().detach()
        b, npos = patches.shape[:2]
        xs = patches.reshape(-1, 1, d).expand(-1, self.out_channels, d).reshape(-1, d)
        fs = states.unsqueeze(0).expand(b * npos, -1, -1).reshape(-1, d)
        z = swap_test_circuit(xs, fs).to(x.dtype)
        z = torch.where(xs.abs().sum(-1) > 0, z, 0)  # all-zero patch: 0 by definition
        h_out, w_out = self.output_shape(x.shape[-2], x.shape[-1])
        return z.reshape(b, h_out, w_out, self.out_channels).permute(0, 3, 1, 2)
