"""Backends that compute expectations by exact classical simulation, and sample shots from them.

A simulator's SWAP test is ``F = |<f|x>|^2`` in closed form (Eq. 2; the full circuit gives the same number
to rounding, which the tests check gate by gate and against Qiskit), and an ``S``-shot run draws
``n0 ~ Binomial(S, (1 + <Z_a>) / 2)``: the same distribution as running the circuit ``S`` times. Subclasses
say how filter states and fidelity maps are computed (:meth:`SimulatorBackend.filter_states`,
:meth:`SimulatorBackend.maps`); this class turns them into the :class:`~qucnn.backends.base.Backend`
protocol.
"""

from __future__ import annotations

import abc
import contextlib

import torch
from torch import Tensor

from ..core.encoding import amplitude_encode
from ..core.geometry import ConvSpec
from .base import Backend, Filters, Result
from .windows import prepare_input


def _no_autocast(device: torch.device):
    """A context without autocast on ``device``: fidelities are computed in :func:`compute_dtype`."""
    try:
        on = torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4 takes no device type
        on = torch.is_autocast_enabled() if device.type == "cuda" else torch.is_autocast_cpu_enabled()
    return torch.autocast(device_type=device.type, enabled=False) if on else contextlib.nullcontext()


class SimulatorBackend(Backend):
    """A backend that simulates exactly: exact expectations, differentiable fidelity maps, binomial shots."""

    exact = True
    differentiable = True

    @abc.abstractmethod
    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec,
             want_mask: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Fidelity maps of prepared images ``x`` (:func:`~qucnn.backends.windows.prepare_input`) with
        ``states`` ``(K, d)``: ``(F (B, K, H', W'), count of nonzero patches, mask (B, 1, H', W') or None)``,
        differentiable in ``x`` and ``states``."""

    def fidelity(self, x: Tensor, theta: Tensor, spec: ConvSpec,
                 want_mask: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.state_maps(x, self.filter_states(theta), spec, want_mask)

    def state_maps(self, x: Tensor, states: Tensor, spec: ConvSpec,
                   want_mask: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`fidelity` for given filter state vectors ``states`` ``(K, d)`` (e.g. a classically trained
        filter, normalised): ``(F (B, K, H', W') in x's dtype, count, mask or None)``, differentiable."""
        with _no_autocast(x.device):
            fid, count, mask = self.maps(prepare_input(x), states, spec, want_mask)
        return fid.to(x.dtype), count, mask

    def _vectors(self, filters: Filters) -> Tensor:
        flat = filters.flatten()
        return flat.states if flat.states is not None else self.filter_states(flat.theta)

    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        groups, o = filters.shape
        with torch.no_grad(), _no_autocast(x.device):
            states = self._vectors(filters)
            fid, _, valid = self.maps(prepare_input(x), states, spec, want_mask=True)
        values = fid.unflatten(1, (groups, o)).movedim(1, 0)  # (G, B, O, H', W')
        run = valid.unsqueeze(0)
        if mask is not None:
            run = run & mask
        if upstream is not None:
            values = values * upstream.to(values.dtype)
            run = run & (upstream != 0)
        run = run.expand(values.shape)
        if shots is not None:
            values = self.sample(values, None, shots, generator)
        values = torch.where(run, values, torch.zeros_like(values))
        return Result(values, torch.count_nonzero(run))

    def circuits(self, patches: Tensor, filters: Filters, *, upstream: Tensor | None = None,
                 shots: int | None = None, generator: torch.Generator | None = None) -> Result:
        with torch.no_grad():
            states = self._vectors(filters)
            encoded = amplitude_encode(patches.to(torch.promote_types(patches.dtype, torch.float32)))
            d = states.shape[-1]
            encoded = torch.nn.functional.pad(encoded, (0, d - encoded.shape[-1]))
            overlap = (states.conj() * encoded.to(states.dtype)).sum(-1)
            values = overlap.real**2 + overlap.imag**2 if overlap.is_complex() else overlap**2
            run = encoded.abs().sum(-1) > 0
            if upstream is not None:
                values = values * upstream.to(values.dtype)
                run = run & (upstream != 0)
            if shots is not None:
                values = self.sample(values, None, shots, generator)
            values = torch.where(run, values, torch.zeros_like(values))
        return Result(values, torch.count_nonzero(run))


__all__ = ["SimulatorBackend"]
