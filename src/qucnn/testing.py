"""The conformance suite every backend must pass, shipped so that you can run it against your own.

:func:`check_backend` drives a :class:`~qucnn.QuConv2d` on the backend through the checks below and raises one
``AssertionError`` that names every check that failed (it needs no pytest):

- **forward**: exact fidelities against an independent float64 reference (gate-by-gate filter states, explicitly
  unfolded and amplitude-encoded patches) on odd geometries: channels, rectangular kernels, stride, padding
  (``"same"``, asymmetric, ``reflect``, ``circular``), dilation; all-zero patches give exactly 0; ``x``'s dtype is
  kept;
- **autograd**: ``dx`` and ``dtheta`` against the reference's autograd, and ``torch.autograd.gradcheck`` in
  float64;
- **gradient modes**: exact parameter shift and entanglement (Eq. 17) equal autograd; the sampled estimator is
  unbiased within 5 standard errors of its derived variance, and its individual circuits equal the closed form;
- **shots**: the estimates' mean and variance are those of ``S``-shot binomials (5 standard errors), draws are
  independent within and across calls, all-zero patches give 0;
- **cost**: the layer's ledger counts ``K`` circuits per non-zero patch forward, bills no backward for a forward
  alone and ``2 P`` circuits per patch for the backward that runs.

A circuit backend (``exact=False``) is held to what shots allow: the binomial statistics, gradient estimates within
5 standard errors of the exact ones, and the cost.

Example:
    >>> check_backend("torch")
    >>> from qucnn.backends import ReferenceBackend
    >>> check_backend(ReferenceBackend(), checks=("forward", "cost"))
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .backends.base import Backend, Filters
from .backends.registry import get_backend
from .core.ansatz import FilterAnsatz
from .core.geometry import ConvSpec, unfold_encoded
from .core.windows import valid_patches
from .nn.functional import quconv2d
from .nn.gradients import sampled_variance
from .nn.layer import QuConv2d
from .utils.checks import UsageError

#: Geometries of the forward check: in_channels, kernel, stride, padding, dilation, padding_mode, H, W.
GEOMETRIES = (
    (1, 2, 1, 0, 1, "zeros", 5, 5),
    (1, 3, 1, 1, 1, "zeros", 6, 5),             # 9 values padded to 16 amplitudes
    (2, (2, 3), (2, 1), (1, 0), 1, "zeros", 7, 6),
    (3, 2, 2, 1, 1, "reflect", 5, 6),           # 12 values padded to 16; reflected borders
    (1, 2, 1, "same", (2, 1), "zeros", 6, 7),   # asymmetric padding
    (1, (2, 2), 1, 1, 1, "circular", 4, 5),
)
CHECKS = ("forward", "autograd", "gradient-modes", "shots", "cost")
#: Standard errors a statistical check allows.
SIGMAS = 5.0


def reference_maps(x: Tensor, states: Tensor, spec: ConvSpec) -> Tensor:
    """``|<f|x_patch>|^2`` ``(B, K, H', W')`` from explicitly unfolded, amplitude-encoded patches in float64
    (0 for all-zero patches): independent of every backend; differentiable in ``x`` and ``states``."""
    d = states.shape[-1]
    patches = unfold_encoded(x.double(), spec, d)  # (B, L, d)
    overlap = patches.to(states.dtype) @ states.conj().T  # (B, L, K)
    fid = overlap.real**2 + overlap.imag**2 if overlap.is_complex() else overlap**2
    ho, wo = spec.output_size(*x.shape[-2:])
    return fid.transpose(1, 2).unflatten(2, (ho, wo))


def _layer(backend: Backend, geometry: tuple, filters: int = 3, layers: int = 2, seed: int = 0,
           **settings) -> tuple[QuConv2d, Tensor]:
    c, k, s, p, dil, mode, h, w = geometry
    layer = QuConv2d(c, filters, k, stride=s, padding=p, dilation=dil, padding_mode=mode, layers=layers,
                     backend=backend, generator=torch.Generator().manual_seed(seed), **settings).double()
    x = torch.rand(2, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1)) + 0.05
    x[0, :, : h // 2 + 1, : w // 2 + 1] = 0  # all-zero patches must give 0
    return layer, x


def _reference(layer: QuConv2d, x: Tensor, theta: Tensor | None = None) -> Tensor:
    states = layer.ansatz.state(layer.theta if theta is None else theta, method="gates")
    return reference_maps(x, states, layer.spec)


def _close(name: str, got: Tensor, want: Tensor, tol: float) -> str | None:
    if got.shape != want.shape:
        return f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    err = float((got.detach().double() - want.detach().double()).abs().max()) if got.numel() else 0.0
    return None if err <= tol else f"{name}: largest error {err:.3g} > {tol:.3g}"


def _forward(backend: Backend, tol: float) -> list[str]:
    failures = []
    for i, geometry in enumerate(GEOMETRIES):
        layer, x = _layer(backend, geometry)
        with torch.no_grad():
            out, want = layer(x), _reference(layer, x)
        failures.append(_close(f"forward, geometry {i} {geometry}", out, want, tol))
        valid = valid_patches(x, layer.spec).expand_as(out)
        if out.shape == want.shape and not bool(torch.all(out[~valid] == 0)):
            failures.append(f"forward, geometry {i}: all-zero patches must give exactly 0")
        if out.dtype != x.dtype:
            failures.append(f"forward, geometry {i}: output dtype {out.dtype}, expected the input's {x.dtype}")
    layer, x = _layer(backend, GEOMETRIES[0])
    with torch.no_grad():
        single = layer.float()(x.float())
    if single.dtype != torch.float32:
        failures.append(f"forward: float32 input gave {single.dtype}")
    failures.append(_close("forward, float32", single, _reference(layer.double(), x), 1e-5))
    return failures


def _autograd(backend: Backend, tol: float) -> list[str]:
    failures = []
    for i, geometry in enumerate((GEOMETRIES[2], GEOMETRIES[3])):
        layer, x = _layer(backend, geometry)
        up = torch.randn(layer(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        xr = x.clone().requires_grad_(True)
        (layer(xr) * up).sum().backward()
        xq, theta = x.clone().requires_grad_(True), layer.theta.detach().clone().requires_grad_(True)
        (_reference(layer, xq, theta) * up).sum().backward()
        failures.append(_close(f"autograd dx, geometry {i}", xr.grad, xq.grad, 100 * tol))
        failures.append(_close(f"autograd dtheta, geometry {i}", layer.theta.grad, theta.grad, 100 * tol))
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) + 0.1
    theta = torch.rand(2, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * 6
    fn = lambda a, b: quconv2d(a, b, 2, backend=backend)  # noqa: E731
    try:
        ok = torch.autograd.gradcheck(fn, (x.requires_grad_(True), theta.requires_grad_(True)), eps=1e-6,
                                      atol=1e-6, raise_exception=False, fast_mode=True)
    except Exception as err:  # a backward that raises fails the check, with its reason
        failures.append(f"gradcheck: {type(err).__name__}: {err}")
    else:
        failures.append(None if ok else "gradcheck: analytical and numerical gradients differ (float64)")
    return failures


def _gradient_modes(backend: Backend, exact: bool, tol: float) -> list[str]:
    failures = []
    shots = None if exact else 4000
    layer, x = _layer(backend, GEOMETRIES[0] if exact else (1, 2, 1, 0, 1, "zeros", 3, 3), filters=2, layers=1,
                      shots=None if exact else 100)
    up = torch.randn(layer(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    truth = _true_gradient(layer, x, up)
    for mode in ("parameter-shift", "entanglement"):
        layer.zero_grad()
        layer.gradient, layer.gradient_shots = mode, shots
        layer.shots = None if exact else 100
        layer.generator = torch.Generator().manual_seed(9)
        (layer(x) * up).sum().backward()
        cost = layer.last_cost["backward"]
        qubits = 2 * layer.n_qubits + (1 if mode == "parameter-shift" else 2)
        if cost.qubits != qubits or cost.circuits <= 0:
            failures.append(f"{mode}: backward cost {cost}, expected circuits > 0 on {qubits} qubits")
        if exact:
            failures.append(_close(f"{mode} (exact) against autograd", layer.theta.grad, truth, 100 * tol))
        else:  # within SIGMAS standard errors: each circuit's variance is at most 1 / S, scaled as the estimator
            scale = up.abs().max() if mode == "entanglement" else up.abs()
            bound = SIGMAS * math.sqrt(2 * float((scale**2).sum() if mode == "parameter-shift"
                                                 else scale**2 * up.numel()) / shots) / 2
            failures.append(_close(f"{mode} ({shots} shots) against the exact gradient", layer.theta.grad, truth,
                                   bound))
    failures.append(_sampled(backend, layer, x, up, truth))
    if exact:
        failures.append(_circuits(backend, tol))
    return failures


def _circuits(backend: Backend, tol: float) -> str | None:
    """The sampled estimator's individual circuits (9-value patches, one all zero, against three filters)
    against the reference closed form."""
    gen = torch.Generator().manual_seed(17)
    patches = torch.rand(12, 9, dtype=torch.float64, generator=gen)
    patches[3] = 0
    theta = 2 * math.pi * torch.rand((3, 2, 4, 2), dtype=torch.float64, generator=gen)
    states = FilterAnsatz(4, 2).state(theta, method="gates")
    got = backend.circuit_expectations(patches, Filters(theta=theta.repeat(4, 1, 1, 1))).values
    want = reference_maps(patches.view(12, 1, 1, 9), states, ConvSpec.make((1, 9))).reshape(12, 3)
    return _close("individual circuits against the closed form", got, want[torch.arange(12), torch.arange(12) % 3],
                  tol)


def _true_gradient(layer: QuConv2d, x: Tensor, up: Tensor) -> Tensor:
    theta = layer.theta.detach().clone().requires_grad_(True)
    (_reference(layer, x, theta) * up).sum().backward()
    return theta.grad


def _sampled(backend: Backend, layer: QuConv2d, x: Tensor, up: Tensor, truth: Tensor) -> str | None:
    """The sampled estimator's mean over repeats within SIGMAS standard errors of the exact gradient."""
    budget, repeats = 400, 12
    layer.gradient, layer.gradient_shots, layer.gradient_budget = "sampled", None, budget
    layer.shots = None if backend.exact else 100
    layer.generator = torch.Generator().manual_seed(13)
    grads = []
    for _ in range(repeats):
        layer.zero_grad()
        (layer(x) * up).sum().backward()
        grads.append(layer.theta.grad.clone())
    layer.gradient_budget = None
    mean = torch.stack(grads).mean(0).reshape(truth.shape[0], -1)
    valid = valid_patches(x, layer.spec)
    var = sampled_variance(up, truth.reshape(truth.shape[0], -1), valid, layer.theta[0].numel(), budget)
    bound = SIGMAS * (var.clamp(min=0) / repeats).sqrt() + 1e-9
    wrong = (mean - truth.reshape(mean.shape)).abs() > bound
    return f"sampled: {int(wrong.sum())} gradient entries beyond {SIGMAS} standard errors" if bool(wrong.any()) \
        else None


def _shots(backend: Backend, exact: bool) -> list[str]:
    shots, calls, copies = (200, 4, 100) if exact else (25, 2, 100)
    layer, x = _layer(backend, GEOMETRIES[0], filters=2, layers=1)
    with torch.no_grad():
        f = _reference(layer, x)
        layer.shots = shots
        layer.generator = torch.Generator().manual_seed(11)
        batch = x.repeat(copies, 1, 1, 1)  # copies in one call: independent draws within a call, and across calls
        draws = torch.cat([layer(batch).unflatten(0, (copies, x.shape[0])) for _ in range(calls)]).double()
    valid = (f > 0) & valid_patches(x, layer.spec)
    repeats = copies * calls
    mean, var = draws.mean(0), draws.var(0)
    theory = (1 - f**2) / shots
    failures = []
    if not bool(torch.all(((mean - f).abs() <= SIGMAS * (theory / repeats).sqrt() + 1e-12)[valid])):
        failures.append(f"shots: the mean of {shots}-shot estimates is not within {SIGMAS} standard errors of F")
    rel = (var[valid] / theory[valid] - 1).abs()
    if not bool(torch.all(rel <= SIGMAS * math.sqrt(2 / (repeats - 1)) + 0.05)):
        failures.append(f"shots: the variance of {shots}-shot estimates is not (1 - F^2) / S")
    if not bool(torch.all(draws[:, ~valid_patches(x, layer.spec).expand_as(f)] == 0)):
        failures.append("shots: all-zero patches must give 0 (nothing is run)")
    cost = layer.last_cost["forward"]
    if cost.shots != cost.circuits * shots:
        failures.append(f"shots: forward cost {cost}, expected shots = circuits x {shots}")
    return failures


def _cost(backend: Backend, exact: bool) -> list[str]:
    layer, x = _layer(backend, GEOMETRIES[2], shots=None if exact else 50)
    count = int(valid_patches(x, layer.spec).sum())
    failures = []
    out = layer(x.clone().requires_grad_(True))
    forward = layer.last_cost["forward"]
    if forward.circuits != layer.out_channels * count or forward.qubits != 2 * layer.n_qubits + 1:
        failures.append(f"cost: forward {forward}, expected {layer.out_channels} x {count} circuits on "
                        f"{2 * layer.n_qubits + 1} qubits")
    if layer.last_cost["backward"].circuits != 0:
        failures.append(f"cost: a forward alone billed a backward ({layer.last_cost['backward']})")
    out.sum().backward()
    backward = layer.last_cost["backward"]
    if backward.circuits != 2 * layer.theta.numel() * count:
        failures.append(f"cost: backward {backward}, expected 2 x {layer.theta.numel()} angles x {count} patches")
    return failures


def check_backend(backend: Backend | str, *, exact: bool = True, tolerance: float = 1e-10,
                  checks: tuple[str, ...] = CHECKS) -> None:
    """Run the conformance suite (the module docstring) against ``backend``.

    Args:
        backend: a :class:`~qucnn.backends.Backend` or a registered name.
        exact: hold it to exact results (a simulator); ``False`` for a backend with shots only.
        tolerance: largest error of an exact float64 forward against the reference (gradients: 100 times it).
        checks: which of :data:`CHECKS` to run.

    Raises:
        AssertionError: naming every check that failed.
    """
    backend = get_backend(backend)
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise UsageError(f"unknown checks {sorted(unknown)}; choose from {', '.join(CHECKS)}")
    if exact and not backend.exact:
        raise UsageError(f"backend {backend.name!r} has no exact mode: check it with exact=False")
    runs: dict[str, Callable[[], list[str]]] = {
        "forward": lambda: _forward(backend, tolerance) if exact else [],
        "autograd": lambda: _autograd(backend, tolerance) if exact else [],
        "gradient-modes": lambda: _gradient_modes(backend, exact, tolerance),
        "shots": lambda: _shots(backend, exact),
        "cost": lambda: _cost(backend, exact),
    }
    failures = []
    for name in checks:
        try:
            failures += [f for f in runs[name]() if f]
        except Exception as err:  # a backend that raises fails the check, with its reason
            failures.append(f"{name}: {type(err).__name__}: {err}")
    if failures:
        raise AssertionError(f"backend {backend.name!r} ({type(backend).__name__}) failed {len(failures)} "
                             "check(s):\n- " + "\n- ".join(failures))


__all__ = ["CHECKS", "GEOMETRIES", "check_backend", "reference_maps"]
