"""``quconv2d``: the QuCNN layer as a function, the analogue of ``torch.nn.functional.conv2d``.

``y[b, o, r, c] = |<f(theta_o) | x_(b, r, c)>|^2`` (Eq. 3): the SWAP-test fidelity of filter state
``f(theta_o) = U(theta_o)|0>`` (the Fig. 1 ansatz) with the amplitude-encoded patch at ``(r, c)``. All-zero
patches have no quantum state; their output is 0 and no circuit is run or counted. Everything quantum goes
through one backend (:mod:`qucnn.backends`). This module does the caller's bookkeeping: it validates once, asks
the backend for the engine of the call once (:meth:`~qucnn.backends.Backend.resolve`), wires the gradient mode
into autograd, and counts the circuits, qubits and shots from the data (all-zero patches, masks, deltas).

Gradient modes (``gradient=``):

- ``"autograd"``: exact gradients of the expectation, by differentiating the engine's own maps (double backward
  where they support it). With ``shots``, the forward returns shot estimates and the backward the expectation's
  gradient (straight-through). A circuit backend has no maps: its expectation's gradient is the ``"torch"``
  backend's classical simulation of the same circuits.
- ``"parameter-shift"``, ``"entanglement"``, ``"sampled"``: ``theta``'s gradient estimated from circuits on the
  backend (:mod:`qucnn.nn.gradients`), with ``gradient_shots`` per circuit or a ``gradient_budget``; ``x``'s
  gradient is the exact classical one. Not differentiable twice (``create_graph=True`` raises).

Cost: the forward records ``O`` circuits per patch that is not all zero; the backward is recorded when it runs
(``gradient="autograd"``: what parameter shift would need for the same gradient, 2 circuits per angle and
patch, marked exact).

Under ``torch.compile`` the layer runs as one opaque eager region (its fused kernels are already one node
each); the rest of the model compiles around it.

Example:
    >>> theta = torch.zeros(3, 2, 2, 2)  # 3 filters, 2 layers, 2 qubits
    >>> quconv2d(torch.rand(1, 1, 5, 5), theta, 2).shape
    torch.Size([1, 3, 4, 4])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..backends.base import Backend, Filters, Result
from ..backends.registry import get_backend
from ..backends.simulator import SimulatorBackend, checked_maps
from ..core.geometry import ConvSpec
from ..core.windows import compute_dtype, valid_patches
from ..utils.checks import UsageError, check_finite
from ..utils.devices import autocast_off
from . import gradients
from .cost import CostLedger, QuantumCost
from .memory import check_memory
from .settings import GRADIENT_MODES, SHOT_GRADIENTS, QuantumSettings


@dataclass(frozen=True)
class _Call:
    """What one call's quantum-side backward needs: the engine, the settings and the ledger, never a module."""

    engine: Backend
    spec: ConvSpec
    settings: QuantumSettings
    ledger: CostLedger | None
    valid: Tensor
    info: dict = field(default_factory=dict)


def _checked_result(result, backend: Backend, method: str) -> Result:
    if not isinstance(result, Result):
        raise TypeError(f"backend {backend.name!r} ({type(backend).__name__}).{method} returned "
                        f"{type(result).__name__}, expected a qucnn.backends.Result")
    return result


def _classical(engine: Backend, x: Tensor, filters: int, taps: int) -> SimulatorBackend:
    """The engine whose exact maps give the classical gradients: ``engine`` when it simulates, else torch's."""
    if isinstance(engine, SimulatorBackend):
        return engine
    return get_backend("torch").resolve(x.device, filters, taps)


class _QuantumGradient(torch.autograd.Function):
    """Forward: the engine's expectations (exact or shots). Backward: ``theta``'s gradient from a quantum-side
    estimator on the same engine, ``x``'s the exact classical one."""

    @staticmethod
    def forward(ctx, x: Tensor, theta: Tensor, call: _Call):
        tic = time.perf_counter()
        res = _checked_result(call.engine.expectations(x, Filters(theta=theta.detach()[None]), call.spec,
                                                       shots=call.settings.shots, generator=call.settings.generator),
                              call.engine, "expectations")
        call.info["wall_s"] = time.perf_counter() - tic
        ctx.save_for_backward(x, theta)
        ctx.call = call
        return res.values[0].to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        call: _Call = ctx.call
        settings = call.settings
        if torch.is_grad_enabled():
            raise UsageError(f"gradient={settings.gradient!r} estimates theta's gradient from circuits, which cannot "
                             "be differentiated again; create_graph=True (double backward) needs gradient='autograd'")
        x, theta = ctx.saved_tensors
        grad_x = grad_theta = None
        with autocast_off(x.device):
            if ctx.needs_input_grad[0]:
                classical = _classical(call.engine, x, theta.shape[0], call.spec.patch_size(x.shape[1]))
                with torch.enable_grad():
                    xd = x.detach().requires_grad_(True)
                    fid = classical.maps(xd, classical.filter_states(theta.detach()), call.spec)[0]
                    (grad_x,) = torch.autograd.grad(fid, xd, g)
            if ctx.needs_input_grad[1]:
                grad_theta = _estimate(call, x.detach(), theta.detach(), g.detach()).reshape(theta.shape)
        return grad_x, None if grad_theta is None else grad_theta.to(theta.dtype), None


def _estimate(call: _Call, x: Tensor, theta: Tensor, g: Tensor) -> Tensor:
    settings = call.settings
    tic = time.perf_counter()
    g = g.to(compute_dtype(g.dtype))  # sums over every output: half-precision upstream values add in float32
    if settings.gradient == "sampled":
        est = gradients.sampled(call.engine, x, theta, call.spec, g, settings.gradient_budget, settings.generator,
                                valid=call.valid)
    else:
        est = gradients.ESTIMATORS[settings.gradient](call.engine, x, theta, call.spec, g, settings.gradient_shots,
                                                      settings.generator, valid=call.valid)
    if call.ledger is not None:
        per_circuit = None if est.shots is None else \
            settings.gradient_shots if settings.gradient in SHOT_GRADIENTS else 1
        wall = None if call.engine.exact else time.perf_counter() - tic  # circuit backends: real jobs
        call.ledger.record_count("backward", est.circuits, 1, est.qubits, per_circuit, wall)
    return est.grad


def check_theta(theta: Tensor, channels: int, spec: ConvSpec) -> None:
    """``TypeError``/``UsageError`` unless ``theta`` is a real float tensor ``(O, L, n, 2)`` for ``channels``."""
    if not isinstance(theta, Tensor):
        raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
    if not theta.is_floating_point():
        raise TypeError(f"theta must be a real floating tensor, got {theta.dtype}")
    n = spec.n_qubits(channels)
    if theta.dim() != 4 or theta.shape[2:] != (n, 2):
        raise UsageError(f"theta must have shape (out_channels, layers, {n}, 2) for {channels} channel(s) and "
                         f"kernel {spec.kernel} ({n} qubits), got {tuple(theta.shape)}")


def check_input(x: Tensor, channels: int | None = None) -> Tensor:
    """``x`` if it is a real float tensor ``(B, C, H, W)`` (with ``channels`` channels, when given)."""
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
    """:func:`convolve` as a region that ``torch.compile`` runs eagerly (made on first use: building it imports
    dynamo, which would double the import time of qucnn)."""
    if not _OPAQUE:
        _OPAQUE.append(torch.compiler.disable(convolve))
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
        gradient: one of :data:`~qucnn.nn.settings.GRADIENT_MODES` (see the module docstring).
        gradient_shots: shots per gradient circuit (``parameter-shift``, ``entanglement``; ``None``: exact).
        gradient_budget: total single-shot circuits per backward for ``gradient="sampled"``.
        generator: ``torch.Generator`` for every shot draw (seeded runs).
        backend: a name from :func:`qucnn.backends.available_backends` or a :class:`~qucnn.backends.Backend`.
        cost: a :class:`~qucnn.nn.cost.CostLedger` to record circuits, qubits and shots into.

    Returns:
        ``(B, O, H', W')`` (or ``(O, H', W')``) in ``x``'s dtype, with ``nn.Conv2d``'s output size; 0 on all-zero patches.
    """
    spec = ConvSpec.make(kernel_size, stride, padding, dilation, padding_mode)
    settings = QuantumSettings(shots, gradient, gradient_shots, gradient_budget, generator)
    if layers is not None and isinstance(theta, Tensor) and theta.dim() == 4 and theta.shape[1] != layers:
        raise UsageError(f"layers={layers} but theta has {theta.shape[1]} layer(s) (shape {tuple(theta.shape)})")
    return convolve(x, theta, spec, settings, get_backend(backend), cost)


def convolve(x: Tensor, theta: Tensor, spec: ConvSpec, settings: QuantumSettings, backend: Backend,
             cost: CostLedger | None = None) -> Tensor:
    """:func:`quconv2d` with its geometry, settings and backend already made (what ``QuConv2d.forward`` calls):
    checks ``x`` and ``theta``, then runs the call. Same shapes and returns as :func:`quconv2d`."""
    if _is_compiling():  # one opaque eager region inside a compiled model
        return _opaque()(x, theta, spec, settings, backend, cost)
    unbatched = isinstance(x, Tensor) and x.dim() == 3
    x = check_input(x.unsqueeze(0) if unbatched else x)
    check_theta(theta, x.shape[1], spec)
    spec.check_fits(*x.shape[-2:])
    settings.check_with(backend.exact, backend.name, theta[0].numel(), theta.shape[0])
    if x.device.type == "meta" or theta.device.type == "meta":  # shape inference only
        out = torch.empty((x.shape[0], theta.shape[0]) + spec.output_size(*x.shape[-2:]), dtype=x.dtype,
                          device="meta")
    else:
        check_finite(x, "quconv2d input")
        with autocast_off(x.device):
            out = _run(x, theta, spec, settings, backend, cost)
    return out.squeeze(0) if unbatched else out


def _run(x: Tensor, theta: Tensor, spec: ConvSpec, settings: QuantumSettings, backend: Backend,
         cost: CostLedger | None) -> Tensor:
    o, taps = theta.shape[0], spec.patch_size(x.shape[1])
    qubits = 2 * theta.shape[2] + 1
    if x.shape[0] == 0:  # an empty shard (data parallelism): nothing runs; theta gets a zero gradient
        if cost is not None:
            cost.record("forward", QuantumCost())
        return x.new_zeros((0, o) + spec.output_size(*x.shape[-2:])) + 0 * theta.sum().to(x.dtype)
    check_memory(x, theta, spec)
    engine = backend.resolve(x.device, o, taps)
    if settings.gradient != "autograd":
        call = _Call(engine, spec, settings, cost, valid_patches(x, spec))
        out = _QuantumGradient.apply(x, theta, call)
        if cost is not None:
            cost.record_count("forward", call.valid.sum(), o, qubits, settings.shots,
                              None if engine.exact else call.info["wall_s"])
        return out
    needs_graph = torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad)
    wall, states = None, None
    if isinstance(engine, SimulatorBackend) and (settings.shots is None or needs_graph):
        shape = (x.shape[0], o) + spec.output_size(*x.shape[-2:])
        states = engine.filter_states(theta)
        if not isinstance(states, Tensor):
            raise TypeError(f"backend {engine.name!r} ({type(engine).__name__}).filter_states returned "
                            f"{type(states).__name__}, expected a tensor of filter states")
        out, valid = checked_maps(engine.maps(x, states, spec), engine, shape, x.dtype)
        if settings.shots is not None:  # shot noise forward, the expectation's gradient backward
            noisy = engine.sample(out.detach(), settings.shots, settings.generator)
            out = torch.where(valid, noisy, torch.zeros_like(noisy)).to(out.dtype) + (out - out.detach())
    else:
        tic = time.perf_counter()
        res = _checked_result(engine.expectations(x, Filters(theta=theta.detach()[None]), spec, shots=settings.shots,
                                                  generator=settings.generator), engine, "expectations")
        wall = None if engine.exact else time.perf_counter() - tic
        out, valid = res.values[0].to(x.dtype), valid_patches(x, spec)
        if needs_graph:  # a circuit backend: the gradient is the simulated expectation's
            classical = _classical(engine, x, o, taps)
            states = classical.filter_states(theta)
            exact = classical.maps(x, states, spec)[0]
            out = out + (exact - exact.detach())
    if cost is not None:
        count = valid.sum()
        cost.record_count("forward", count, o, qubits, settings.shots, wall)
        if out.requires_grad:  # a backward is billed when it runs: nothing for x's gradient alone ...
            out.register_hook(lambda grad: cost.record_count("backward", count, 0, qubits, None) or grad)
        if states is not None and states.requires_grad:  # ... the filter circuits when theta's gradient runs
            angles = 2 * theta.numel()
            states.register_hook(lambda grad: cost.record_count("backward", count, angles, qubits, None) or grad)
    return out


__all__ = ["GRADIENT_MODES", "SHOT_GRADIENTS", "check_input", "check_theta", "convolve", "quconv2d"]
