"""``quconv2d``: the QuCNN layer as a function, the analogue of ``torch.nn.functional.conv2d``.

``y[b, o, r, c] = |<f(theta_o) | x_(b, r, c)>|^2`` (Eq. 3): the SWAP-test fidelity of filter state
``f(theta_o) = U(theta_o)|0>`` (the Fig. 1 ansatz) with the amplitude-encoded patch at ``(r, c)``. All-zero
patches have no quantum state; their output is 0 and no circuit is run or counted. Everything quantum goes
through one backend (:mod:`qucnn.backends`); this function validates its arguments once, turns ``nn.Conv2d``
padding into what the backends take, wires the gradient mode into autograd and records the cost.

Gradient modes (``gradient=``):

- ``"autograd"``: exact gradients of the expectation (a differentiable backend; for a circuit backend, the
  gradient of the simulated expectation). Supports double backward. With ``shots``, the forward returns
  shot estimates and the backward the expectation's gradient (straight-through).
- ``"parameter-shift"``, ``"entanglement"``, ``"sampled"``: ``theta``'s gradient estimated from circuits on the
  backend (:mod:`qucnn.nn.gradients`), with ``gradient_shots`` per circuit or a ``gradient_budget``; ``x``'s
  gradient is the exact classical one. Not differentiable twice (``create_graph=True`` raises).

Under ``torch.compile`` the layer runs as one opaque eager region (its fused kernels are already one node
each); the rest of the model compiles around it.

Example:
    >>> theta = torch.zeros(3, 2, 2, 2)  # 3 filters, 2 layers, 2 qubits
    >>> quconv2d(torch.rand(1, 1, 5, 5), theta, 2).shape
    torch.Size([1, 3, 4, 4])
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..backends.base import Backend, Filters
from ..backends.registry import get_backend
from ..core.geometry import ConvSpec
from ..utils.checks import UsageError, check_finite, check_shots, one_of, optional_positive_int
from . import gradients
from .cost import CostLedger, QuantumCost

GRADIENT_MODES = ("autograd", "parameter-shift", "entanglement", "sampled")
#: Gradient modes whose circuits take ``gradient_shots`` shots each.
SHOT_GRADIENTS = ("parameter-shift", "entanglement")


@dataclass(frozen=True)
class _Run:
    """What the quantum-side backward needs: settings and the ledger, never a module."""

    backend: Backend
    spec: ConvSpec
    shots: int | None
    gradient: str
    gradient_shots: int | None
    gradient_budget: int | None
    generator: torch.Generator | None
    ledger: CostLedger | None
    info: dict = field(default_factory=dict)  # the forward's wall time, for the ledger


def _exact_backend(backend: Backend) -> Backend:
    """The backend whose exact, differentiable maps give input gradients: ``backend`` or the torch simulator."""
    return backend if backend.differentiable else get_backend("torch")


class _QuantumGradient(torch.autograd.Function):
    """Forward: the backend's expectations (exact or shots). Backward: ``theta``'s gradient from a quantum-side
    estimator on the same backend, ``x``'s the exact classical one."""

    @staticmethod
    def forward(ctx, x: Tensor, theta: Tensor, run: _Run):
        res = run.backend.expectations(x, Filters(theta=theta.detach()[None]), run.spec, shots=run.shots,
                                       generator=run.generator)
        run.info["wall_s"] = res.wall_s
        ctx.save_for_backward(x, theta)
        ctx.run = run
        circuits = torch.as_tensor(res.circuits, device=x.device)
        ctx.mark_non_differentiable(circuits)
        return res.values[0].to(x.dtype), circuits

    @staticmethod
    def backward(ctx, g: Tensor, _circuits_grad):
        run: _Run = ctx.run
        if torch.is_grad_enabled():
            raise UsageError(f"gradient={run.gradient!r} estimates theta's gradient from circuits, which cannot be "
                             "differentiated again; create_graph=True (double backward) needs gradient='autograd'")
        x, theta = ctx.saved_tensors
        grad_x = grad_theta = None
        if ctx.needs_input_grad[0]:
            with torch.enable_grad():
                xd = x.detach().requires_grad_(True)
                fid = _exact_backend(run.backend).fidelity(xd, theta.detach(), run.spec)[0]
                (grad_x,) = torch.autograd.grad(fid, xd, g)
        if ctx.needs_input_grad[1]:
            xs, ts, gs = x.detach(), theta.detach(), g.detach()
            tic = time.perf_counter()
            if run.gradient == "sampled":
                est = gradients.sampled(run.backend, xs, ts, run.spec, gs, run.gradient_budget, run.generator)
            else:
                est = gradients.ESTIMATORS[run.gradient](run.backend, xs, ts, run.spec, gs, run.gradient_shots,
                                                         run.generator)
            if run.ledger is not None:
                per_circuit = None if est.shots is None else run.gradient_shots if run.gradient in SHOT_GRADIENTS else 1
                wall = None if run.backend.exact else time.perf_counter() - tic  # circuit backends: real jobs
                run.ledger.record_count("backward", est.circuits, 1, est.qubits, per_circuit, wall)
            grad_theta = est.grad.reshape(theta.shape).to(theta.dtype)
        return grad_x, grad_theta, None


def _check_theta(theta: Tensor, channels: int, spec: ConvSpec, layers: int | None) -> None:
    if not isinstance(theta, Tensor):
        raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
    if not theta.is_floating_point():
        raise TypeError(f"theta must be a real floating tensor, got {theta.dtype}")
    n = spec.n_qubits(channels)
    if theta.dim() != 4 or theta.shape[2:] != (n, 2):
        raise UsageError(f"theta must have shape (out_channels, layers, {n}, 2) for {channels} channel(s) and "
                         f"kernel {spec.kernel} ({n} qubits), got {tuple(theta.shape)}")
    if layers is not None and theta.shape[1] != layers:
        raise UsageError(f"layers={layers} but theta has {theta.shape[1]} layer(s) (shape {tuple(theta.shape)})")


def _check_input(x: Tensor, channels: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"quconv2d expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise UsageError(f"quconv2d expects input of shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"quconv2d expects a real floating-point input, got {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise UsageError(f"expected {channels} input channel(s), got {x.shape[1]} (input shape {tuple(x.shape)})")
    return x


#: ``torch.compiler.is_compiling`` where this torch has it (2.3+): true while dynamo traces.
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)
_OPAQUE: list = []


def _opaque():
    """``quconv2d`` as a region that ``torch.compile`` runs eagerly (made on first use: building it imports
    dynamo, which would double the import time of qucnn)."""
    if not _OPAQUE:
        _OPAQUE.append(torch.compiler.disable(quconv2d))
    return _OPAQUE[0]


def quconv2d(x: Tensor, theta: Tensor, kernel_size, stride=1, padding=0, *, dilation=1,
             padding_mode: str = "zeros", layers: int | None = None, shots: int | None = None,
             gradient: str = "autograd", gradient_shots: int | None = None, gradient_budget: int | None = None,
             generator: torch.Generator | None = None, backend: str | Backend = "torch",
             cost: CostLedger | None = None) -> Tensor:
    """SWAP-test fidelities of every filter state with every amplitude-encoded patch of ``x``.

    Args:
        x: real images ``(B, C, H, W)`` or one image ``(C, H, W)``, any float dtype (half precision is
            computed in float32; autocast does not lower it).
        theta: filter angles ``(O, L, n, 2)`` with ``n = ceil(log2(C * kh * kw))`` (``[..., 0]`` RX, ``[..., 1]`` RZ).
        kernel_size: ``k`` or ``(kh, kw)``, as ``nn.Conv2d``.
        stride: as ``torch.nn.functional.conv2d``.
        padding: an int, a pair, ``"valid"`` or ``"same"``, as ``nn.Conv2d``.
        dilation: as ``torch.nn.functional.conv2d``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``, as ``nn.Conv2d``.
        layers: if given, checked against ``theta.shape[1]``.
        shots: ``None`` for exact fidelities, or ``S`` shots per output.
        gradient: one of :data:`GRADIENT_MODES` (see the module docstring).
        gradient_shots: shots per gradient circuit (``parameter-shift``, ``entanglement``; ``None``: exact).
        gradient_budget: total single-shot circuits per backward for ``gradient="sampled"``.
        generator: ``torch.Generator`` for every shot draw (seeded runs).
        backend: a name from :func:`qucnn.backends.available_backends` or a :class:`~qucnn.backends.Backend`.
        cost: a :class:`~qucnn.nn.cost.CostLedger` to record circuits, qubits and shots into.

    Returns:
        ``(B, O, H', W')`` (or ``(O, H', W')``) in ``x``'s dtype, with ``nn.Conv2d``'s output size; 0 on
        all-zero patches.
    """
    if _is_compiling():  # one opaque eager region inside a compiled model
        return _opaque()(x, theta, kernel_size, stride, padding, dilation=dilation, padding_mode=padding_mode,
                         layers=layers, shots=shots, gradient=gradient, gradient_shots=gradient_shots,
                         gradient_budget=gradient_budget, generator=generator, backend=backend, cost=cost)
    spec = ConvSpec.make(kernel_size, stride, padding, dilation, padding_mode)
    unbatched = isinstance(x, Tensor) and x.dim() == 3
    x = _check_input(x.unsqueeze(0) if unbatched else x)
    _check_theta(theta, x.shape[1], spec, layers)
    spec.check_fits(*x.shape[-2:])
    shots = check_shots(shots)
    one_of(gradient, GRADIENT_MODES, "gradient")
    gradient_shots = check_shots(gradient_shots, "gradient_shots")
    gradient_budget = optional_positive_int(gradient_budget, "gradient_budget")
    be = get_backend(backend)
    if shots is None and not be.exact:
        raise UsageError(f"backend {be.name!r} runs circuits and has no exact mode: give shots (e.g. shots=1000)")
    if gradient in SHOT_GRADIENTS and gradient_shots is None and not be.exact:
        raise UsageError(f"gradient={gradient!r} on backend {be.name!r} needs gradient_shots")
    if gradient == "sampled" and gradient_budget is None:
        raise UsageError("gradient='sampled' needs gradient_budget (total shots per backward), got None")
    _warn_unused(gradient, gradient_shots, gradient_budget, theta)
    check_finite(x, "quconv2d input")
    out = _quconv2d(x, theta, spec, be, shots, gradient, gradient_shots, gradient_budget, generator, cost)
    return out.squeeze(0) if unbatched else out


def _warn_unused(gradient: str, gradient_shots: int | None, gradient_budget: int | None, theta: Tensor) -> None:
    if gradient_shots is not None and gradient not in SHOT_GRADIENTS:
        warnings.warn(f"gradient_shots={gradient_shots} is ignored with gradient={gradient!r}; it applies to "
                      f"{' and '.join(SHOT_GRADIENTS)}", UserWarning, stacklevel=4)
    if gradient_budget is not None and gradient != "sampled":
        warnings.warn(f"gradient_budget={gradient_budget} is ignored with gradient={gradient!r}; it applies to "
                      "gradient='sampled'", UserWarning, stacklevel=4)
    elif gradient == "sampled" and gradient_budget < 2 * theta[0].numel() * theta.shape[0]:
        warnings.warn(f"gradient_budget={gradient_budget} is below the {2 * theta.numel()} circuits that reach every "
                      f"angle's two shifts once ({theta.shape[0]} filters x {theta[0].numel()} angles x 2): most "
                      "gradient entries get no sample and the estimate is very noisy", UserWarning, stacklevel=4)


def _quconv2d(x: Tensor, theta: Tensor, spec: ConvSpec, be: Backend, shots: int | None, gradient: str,
              gradient_shots: int | None, gradient_budget: int | None, generator: torch.Generator | None,
              cost: CostLedger | None) -> Tensor:
    o, n = theta.shape[0], theta.shape[2]
    forward_qubits = 2 * n + 1
    x, spec = spec.prepare(x)
    if x.shape[0] == 0:  # an empty shard (data parallelism): nothing runs; theta gets a zero gradient
        if cost is not None:
            cost.record("forward", QuantumCost())
            cost.record("backward", QuantumCost())
        return x.new_zeros((0, o) + spec.output_size(*x.shape[-2:])) + 0 * theta.sum().to(x.dtype)
    if gradient != "autograd":
        run = _Run(be, spec, shots, gradient, gradient_shots, gradient_budget, generator, cost)
        out, circuits = _QuantumGradient.apply(x, theta, run)
        if cost is not None:
            cost.record_count("forward", circuits, 1, forward_qubits, shots, run.info.get("wall_s"))
        return out
    needs_graph = torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad)
    if not be.differentiable or (shots is not None and not needs_graph):
        res = be.expectations(x, Filters(theta=theta.detach()[None]), spec, shots=shots, generator=generator)
        measured, circuits = res.values[0].to(x.dtype), res.circuits
        if needs_graph:  # a circuit backend: the gradient is the simulated expectation's
            exact = _exact_backend(be).fidelity(x, theta, spec)[0]
            measured = measured + (exact - exact.detach())
        out, count, per_count = measured, circuits, 1
        wall_s = res.wall_s
    else:
        fid, count, valid = be.fidelity(x, theta, spec, want_mask=shots is not None)
        out, per_count, wall_s = fid, o, None
        if shots is not None:  # shot noise forward, the expectation's gradient backward; S = 1 gives exact +-1
            out = be.sample(fid.detach(), valid, shots, generator).to(fid.dtype) + (fid - fid.detach())
    if cost is not None:
        cost.record_count("forward", count, per_count, forward_qubits, shots, wall_s)
        if torch.is_grad_enabled() and theta.requires_grad:  # what parameter shift would need, exactly
            patches = count if per_count == o else count // o
            cost.record_count("backward", patches, 2 * theta.numel(), forward_qubits, None)
        else:
            cost.record("backward", QuantumCost())
    return out


__all__ = ["GRADIENT_MODES", "SHOT_GRADIENTS", "quconv2d"]
