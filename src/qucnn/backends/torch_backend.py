"""The default backend ``"torch"`` and its GPU sibling ``"triton"``: exact simulation on the engine that a
:class:`~qucnn.backends.RoutePolicy` picks for each call.

The layer asks :meth:`TorchBackend.resolve` once per call and runs the whole call (filter states, maps, shots,
the backward's estimators) on the engine it returns: on the CPU the fused PyTorch engine; on CUDA with Triton
installed the Triton engine for calls of up to ``RoutePolicy.triton_max_filters`` filters (measured faster
there), else the fused engine sized by the free device memory. ``"triton"`` is the same router with
``RoutePolicy(engine="triton")``: the Triton engine for every patch its kernels hold. Called directly, each
method below resolves the engine for its own arguments and forwards the request to it whole.

Example:
    >>> backend = TorchBackend(RoutePolicy(route="conv"))
    >>> backend.resolve(torch.device("cpu"), filters=8, taps=16).policy.route
    'conv'
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.geometry import ConvSpec
from .base import Filters, Result
from .policy import RoutePolicy
from .simulator import SimulatorBackend


class TorchBackend(SimulatorBackend):
    """``"torch"``: exact simulation, routed by ``policy`` (default :class:`RoutePolicy()`)."""

    name = "torch"
    #: The policy of ``TorchBackend()`` without one.
    default_policy = RoutePolicy()

    def __init__(self, policy: RoutePolicy | None = None) -> None:
        if policy is not None and not isinstance(policy, RoutePolicy):
            raise TypeError(f"policy must be a RoutePolicy, got {type(policy).__name__}")
        self.policy = policy or self.default_policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(policy={self.policy!r})"

    def resolve(self, device: torch.device, filters: int, taps: int) -> SimulatorBackend:
        return self.policy.resolve(device, filters, taps)

    def _engine(self, t: Tensor, filters: int, taps: int) -> SimulatorBackend:
        return self.policy.resolve(t.device, filters, taps)

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
        return self._engine(x, states.shape[0], spec.patch_size(x.shape[1])).maps(x, states, spec)

    def filter_states(self, theta: Tensor) -> Tensor:
        return self._engine(theta, theta[..., 0, 0, 0].numel(), 2 ** theta.shape[-2]).filter_states(theta)

    def sample(self, values: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
        return self._engine(values, 1, 1).sample(values, shots, generator)

    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        engine = self._engine(x, filters.shape[-1], spec.patch_size(x.shape[1]))
        return engine.expectations(x, filters, spec, upstream=upstream, mask=mask, shots=shots, generator=generator)

    def circuit_expectations(self, patches: Tensor, filters: Filters, *, upstream: Tensor | None = None,
                             shots: int | None = None, generator: torch.Generator | None = None) -> Result:
        engine = self._engine(patches, 1, patches.shape[-1])
        return engine.circuit_expectations(patches, filters, upstream=upstream, shots=shots, generator=generator)


class TritonBackend(TorchBackend):
    """``"triton"``: the Triton engine (fused kernels for the maps, their backward, the shots and the filter
    ansatz) for every patch its kernels hold, the fused PyTorch engine for larger patches. CUDA tensors only, or
    CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``, for tests). ``pip install qucnn[gpu]``."""

    name = "triton"
    default_policy = RoutePolicy(engine="triton")


__all__ = ["TorchBackend", "TritonBackend"]
