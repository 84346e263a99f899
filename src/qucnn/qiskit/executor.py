"""``sample_swap_tests`` and ``QiskitExecutor``: the earlier entry points to Qiskit samplers, now thin wrappers of
:class:`qucnn.backends.QiskitBackend`, which compiles, binds, deduplicates and runs the circuits (the Eq. 6/17
post-processing is :mod:`qucnn.nn.gradients`, once for every backend). Their arguments and results are unchanged.

Example:
    >>> import torch
    >>> from qucnn.qiskit import sample_swap_tests
    >>> data = torch.tensor([[1.0, 0.0], [1.0, 1.0]]); filt = torch.tensor([[1.0, 0.0]])
    >>> sample_swap_tests(data, filt, shots=1000, seed=0).shape
    torch.Size([2])
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..backends.base import Filters
from ..backends.qiskit_backend import QiskitBackend
from ..core.encoding import amplitude_encode
from ..core.windows import valid_patches
from ..nn import gradients
from ..nn.layer import QuConv2d
from ..utils.checks import UsageError, check_finite, check_shots
from .sampling import MAX_SHOTS_PER_RUN

GRADIENT_METHODS = ("entanglement", "parameter-shift")


def _as_batch(value, name: str, complex_ok: bool) -> Tensor:
    t = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if t.dim() != 2:
        raise UsageError(f"{name} must have shape (B, d), got {tuple(t.shape)}")
    if t.is_complex() and not complex_ok:
        raise TypeError(f"{name} must be real (amplitude-encoded data), got {t.dtype}")
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must hold numbers, got {t.dtype}")
    t = t.to(torch.complex128 if t.is_complex() else torch.float64)
    check_finite(t, name)
    return t


def _param_indices(params, total: int) -> Tensor:
    if params is None:
        return torch.arange(total)
    idx = torch.as_tensor(params).reshape(-1)
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool or idx.numel() == 0 \
            or bool(((idx < 0) | (idx >= total)).any()):
        raise UsageError(f"params must be a non-empty list of ints in [0, {total}), got {params!r}")
    return idx.long()


def sample_swap_tests(data, filters, shots: int, upstream=None, noise_model=None, seed: int | None = None,
                      sampler=None, method: str = "unitary", overlap: str = "cswap",
                      pass_manager=None) -> Tensor:
    """Shot estimates of ``<Z_a>`` for ``B`` SWAP tests (or entanglement circuits), run in one call.

    Args:
        data: ``(B, m)`` real patch values; amplitude-encoded here (zero-padded to ``d = 2**n``,
            normalised). All-zero rows are not run and give 0.
        filters: ``(B, d)`` or ``(1, d)`` filter state vectors, real or complex (normalised here).
        shots: shots ``S`` per circuit.
        upstream: ``(B,)`` (or one value for all) deltas in ``[-1, 1]`` for the entanglement circuit
            (``<Z_a> = delta F``), or None.
        noise_model: Aer ``NoiseModel`` for the default sampler (circuits are unrolled to its basis).
        seed: seeds the default Aer sampler and the transpiler.
        sampler: any ``SamplerV2`` (default: ``qiskit_aer.primitives.SamplerV2``); circuits are transpiled for
            its backend's target when it has one (``sampler.mode``), else for Aer's, or by ``pass_manager``.
        method: ``"unitary"`` (SVD ``UnitaryGate``, the paper's) or ``"gates"`` (Mottonen for real
            states, Qiskit ``StatePreparation`` for complex filters) for both registers.
        overlap: ``"cswap"`` (the SWAP test) or ``"bell"`` (the ancilla-free Bell-basis test).
        pass_manager: optional Qiskit pass manager applied to every circuit before running.

    Returns:
        float64 ``(B,)``: ``2 n0 / S - 1`` (``n0``: shots with outcome +1), unbiased for ``F`` or ``delta F``.

    Example:
        >>> z = sample_swap_tests(torch.eye(4), torch.full((1, 4), 0.5), shots=4000, seed=1)
        >>> bool(((z - 0.25).abs() < 0.1).all())
        True
    """
    check_shots(shots)
    if shots is None:
        raise UsageError("shots must be a positive int (a sampler has no exact mode), got None")
    backend = QiskitBackend(sampler, noise_model=noise_model, seed=seed, method=method, overlap=overlap,
                            pass_manager=pass_manager)
    x = _as_batch(data, "data", complex_ok=False)
    encoded = amplitude_encode(x)
    f = _as_batch(filters, "filters", complex_ok=True)
    if f.shape[1] != encoded.shape[1] or f.shape[0] not in (1, x.shape[0]):
        raise UsageError(f"filters must have shape ({x.shape[0]} or 1, {encoded.shape[1]}) to match data "
                         f"{tuple(x.shape)} (encoded length {encoded.shape[1]}), got {tuple(f.shape)}")
    norms = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise UsageError("a filter row is all zero: it has no quantum state")
    f = f / norms
    delta = None
    if upstream is not None:
        delta = _as_batch(torch.as_tensor(upstream).reshape(1, -1), "upstream", complex_ok=False)[0]
        if delta.shape[0] == 1:
            delta = delta.expand(x.shape[0])
        if delta.shape[0] != x.shape[0] or bool(((delta < -1) | (delta > 1)).any()):
            raise UsageError(f"upstream must have shape ({x.shape[0]},) with values in [-1, 1], got "
                             f"shape {tuple(delta.shape)}, range [{float(delta.min())}, {float(delta.max())}]")
    return backend.circuit_expectations(x, Filters(states=f), upstream=delta, shots=shots).values.to(torch.float64)


class QiskitExecutor:
    """Run a :class:`qucnn.QuConv2d`'s forward and filter gradients on a Qiskit ``SamplerV2`` (outside autograd;
    inside it, give the layer ``backend=QiskitBackend(...)``).

    Args:
        sampler: any ``SamplerV2`` (default: Aer's, with ``noise_model``, seeded per job from ``seed``).
        noise_model: Aer ``NoiseModel`` for the default sampler (see :func:`default_noise_model`).
        seed: seeds every call's jobs and the transpiler (reproducible sequences of calls).
        shots: shots per circuit.
        method: data state preparation, ``"gates"`` (Mottonen; one parametrised template) or ``"unitary"``
            (SVD ``UnitaryGate``, one circuit per row).
        overlap: ``"cswap"`` (SWAP test) or ``"bell"`` (ancilla-free Bell-basis test).
        pass_manager: optional Qiskit pass manager (hardware ISA circuits).

    ``last_run`` holds ``{"circuits", "shots", "jobs"}`` of the last forward or gradient call; ``backend`` is the
    :class:`~qucnn.backends.QiskitBackend` that runs them.

    Example:
        >>> from qucnn import QuConv2d
        >>> layer = QuConv2d(1, 2, 2, layers=1).double()
        >>> QiskitExecutor(shots=100, seed=0).forward(layer, torch.rand(1, 1, 3, 3)).shape
        torch.Size([1, 2, 2, 2])
    """

    def __init__(self, sampler=None, noise_model=None, seed: int | None = None, shots: int = 4096,
                 method: str = "gates", overlap: str = "cswap", pass_manager=None) -> None:
        check_shots(shots)
        if shots is None:
            raise UsageError("shots must be a positive int, got None")
        self.backend = QiskitBackend(sampler, noise_model=noise_model, seed=seed, method=method, overlap=overlap,
                                     pass_manager=pass_manager)
        self.shots, self.method, self.overlap = shots, method, overlap
        self.last_run: dict = {"circuits": 0, "shots": 0, "jobs": 0}

    @staticmethod
    def _check(layer, x: Tensor) -> tuple[Tensor, object, tuple[int, int, int, int]]:
        if not isinstance(layer, QuConv2d):
            raise TypeError(f"layer must be a qucnn.QuConv2d, got {type(layer).__name__}")
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != layer.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise UsageError(f"x must be a tensor of shape (B, {layer.in_channels}, H, W), got {got}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a real floating tensor, got {x.dtype}")
        check_finite(x, "x")
        h_out, w_out = layer.output_shape(x.shape[-2], x.shape[-1])
        xp, spec = layer.spec.prepare(x.detach().double())
        return xp, spec, (x.shape[0], h_out, w_out, layer.out_channels)

    def _record(self, circuits, jobs_before: int) -> None:
        circuits = int(circuits)
        self.last_run = {"circuits": circuits, "shots": circuits * self.shots,
                         "jobs": self.backend.jobs_run - jobs_before}

    def forward(self, layer, x: Tensor) -> Tensor:
        """Shot estimates of ``layer(x)``: ``x`` ``(B, C, H, W)`` -> ``(B, O, H', W')`` (0 on all-zero patches)."""
        xp, spec, _ = self._check(layer, x)
        before = self.backend.jobs_run
        res = self.backend.expectations(xp, Filters(theta=layer.theta.detach().double()[None]), spec, shots=self.shots)
        self._record(valid_patches(xp, spec).sum() * layer.out_channels, before)
        return res.values[0].to(x.dtype)

    def gradient(self, layer, x: Tensor, upstream_grad: Tensor, method: str = "entanglement",
                 scale: float | None = None, params=None) -> Tensor:
        """Shot estimate of ``dL/dtheta`` ``(O, L, n, 2)`` given ``upstream_grad = dL/dy`` ``(B, O, H', W')``.

        ``"parameter-shift"`` (Eq. 4-6) or ``"entanglement"`` (Eq. 16-17, ``c = scale`` or ``max_j |g_j|``, which
        ``scale`` must bound), both :mod:`qucnn.nn.gradients` on this executor's backend. ``params``: optional
        indices into one filter's flattened ``L * n * 2`` angles; only those are estimated (the others stay 0
        and cost no circuits).
        """
        if method not in GRADIENT_METHODS:
            raise UsageError(f"method must be one of {GRADIENT_METHODS}, got {method!r}")
        xp, spec, (b, h, w, o) = self._check(layer, x)
        if not isinstance(upstream_grad, Tensor) or tuple(upstream_grad.shape) != (b, o, h, w):
            got = tuple(upstream_grad.shape) if isinstance(upstream_grad, Tensor) else type(upstream_grad).__name__
            raise UsageError(f"upstream_grad must have shape {(b, o, h, w)}, got {got}")
        g = upstream_grad.detach().double()
        check_finite(g, "upstream_grad")
        theta = layer.theta.detach().double()
        selected = _param_indices(params, theta[0].numel())
        top = float(g.abs().max())
        if scale is not None and (not math.isfinite(float(scale)) or float(scale) < top or float(scale) <= 0):
            raise UsageError(f"scale must be >= max |upstream_grad| = {top}, got {scale}")
        before = self.backend.jobs_run
        if method == "parameter-shift":
            est = gradients.parameter_shift(self.backend, xp, theta, spec, g, self.shots, params=selected)
        else:
            est = gradients.entanglement(self.backend, xp, theta, spec, g, self.shots, scale=scale, params=selected)
        self._record(est.circuits, before)
        return est.grad.reshape(theta.shape).to(layer.theta.dtype)


__all__ = ["sample_swap_tests", "QiskitExecutor", "MAX_SHOTS_PER_RUN"]
