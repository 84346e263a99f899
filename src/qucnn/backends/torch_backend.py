"""The default backend, ``"torch"``: exact simulation by the fused fast paths, on any torch device.

Filter states come from the closed-form ansatz (:func:`qucnn.core.ansatz.ansatz_state`, adjoint-method
backward) and the maps from one fused autograd node (:mod:`qucnn.backends.fused_fidelity`) whose route and
chunking follow a :class:`~qucnn.backends.fused_fidelity.RoutePolicy` (per-device defaults, overridable).
Shots are exact binomial draws. On the CPU, without a gradient to record, the filter states of an angle
tensor are remembered and reused while it holds the same values (compared exactly, a few hundred numbers),
so repeated inference prepares the filters once; a GPU would have to synchronise to compare, so there the
states are always recomputed.

On CUDA tensors, when Triton is installed, every step (filter states, maps of up to
``RoutePolicy.triton_max_filters`` filters and their gradients, expectations, shots) runs on the fused kernels of
backend ``"triton"`` (:mod:`qucnn.backends.triton`) instead; ``RoutePolicy(triton=False)`` keeps the routes above. Without Triton, CUDA work is sized by the free device
memory (one pass, or a few chunks), not by the CPU's cache.

Example:
    >>> backend = TorchBackend(RoutePolicy(route="conv"))
    >>> backend.policy.route
    'conv'
"""

from __future__ import annotations

import functools
import importlib.util
import weakref

import torch
from torch import Tensor

from ..core.ansatz import ansatz_state
from ..core.geometry import ConvSpec
from ..utils.devices import reads_back_freely
from .base import Filters, Result
from .fused_fidelity import RoutePolicy, fused_fidelity
from .simulated import SimulatorBackend

#: Filter batches up to this many angles are remembered between calls without a gradient.
CACHE_MAX_ANGLES = 1 << 16


class TorchBackend(SimulatorBackend):
    """``"torch"``: the fused exact simulator. ``policy`` overrides the route choices (see :class:`RoutePolicy`)."""

    name = "torch"

    def __init__(self, policy: RoutePolicy | None = None) -> None:
        if policy is not None and not isinstance(policy, RoutePolicy):
            raise TypeError(f"policy must be a RoutePolicy, got {type(policy).__name__}")
        self.policy = policy or RoutePolicy()
        self._cache: dict[int, tuple] = {}

    def __repr__(self) -> str:
        return f"TorchBackend(policy={self.policy!r})"

    def __getstate__(self) -> dict:  # the cache holds weak references: copies and pickles start without it
        return {"policy": self.policy}

    def __setstate__(self, state: dict) -> None:
        self.policy, self._cache = state["policy"], {}

    def _kernels(self, t: Tensor) -> SimulatorBackend | None:
        """The Triton backend for ``t`` when it is a CUDA tensor, the policy allows it and Triton is installed."""
        return _triton_backend() if t.device.type == "cuda" and self.policy.triton else None

    def filter_states(self, theta: Tensor) -> Tensor:
        if (gpu := self._kernels(theta)) is not None:
            return gpu.filter_states(theta)
        flat = theta.reshape((-1,) + theta.shape[-3:])
        if (not reads_back_freely(theta.device) or (torch.is_grad_enabled() and theta.requires_grad)
                or theta.numel() > CACHE_MAX_ANGLES):
            return ansatz_state(flat).reshape(theta.shape[:-3] + (-1,))
        hit = self._cache.get(id(theta))
        if (hit is not None and hit[0]() is theta and hit[1].shape == theta.shape and hit[1].dtype == theta.dtype
                and torch.equal(hit[1], theta)):
            return hit[2].clone()  # a copy: the caller may change it in place
        states = ansatz_state(flat).reshape(theta.shape[:-3] + (-1,))
        self._cache = {k: v for k, v in self._cache.items() if v[0]() is not None}
        self._cache[id(theta)] = (weakref.ref(theta), theta.detach().clone(), states.clone())
        return states

    def _map_kernels(self, x: Tensor, states: Tensor) -> SimulatorBackend | None:
        """The Triton backend for exact maps: :meth:`_kernels`, for at most ``triton_max_filters`` filters."""
        return self._kernels(x) if states.shape[0] <= self.policy.triton_max_filters else None

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec,
             want_mask: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        if (gpu := self._map_kernels(x, states)) is not None:
            return gpu.maps(x, states, spec, want_mask)
        return fused_fidelity(x, states, spec, self.policy.resolved(x.device), want_mask)

    def state_maps(self, x: Tensor, states: Tensor, spec: ConvSpec,
                   want_mask: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        if (gpu := self._map_kernels(x, states)) is not None:
            return gpu.state_maps(x, states, spec, want_mask)
        return super().state_maps(x, states, spec, want_mask)

    def sample(self, expectation: Tensor, valid: Tensor | None, shots: int,
               generator: torch.Generator | None = None) -> Tensor:
        if (gpu := self._kernels(expectation)) is not None:
            return gpu.sample(expectation, valid, shots, generator)
        return super().sample(expectation, valid, shots, generator)

    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        if (gpu := self._kernels(x)) is not None:
            return gpu.expectations(x, filters, spec, upstream=upstream, mask=mask, shots=shots, generator=generator)
        return super().expectations(x, filters, spec, upstream=upstream, mask=mask, shots=shots, generator=generator)


@functools.lru_cache(maxsize=1)
def _triton_backend() -> SimulatorBackend | None:
    """The Triton backend if Triton is installed and builds GPU kernels (not its interpreter), else ``None``."""
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        from .triton import TritonBackend, interpreting  # optional: imports Triton
    except ImportError:  # an installed Triton that cannot load: the torch routes keep working
        return None
    return None if interpreting() else TritonBackend()


__all__ = ["CACHE_MAX_ANGLES", "RoutePolicy", "TorchBackend"]
