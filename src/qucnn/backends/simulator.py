"""Backends that simulate exactly: one method, :meth:`SimulatorBackend.maps`, makes a complete backend.

A simulator's SWAP test is ``F = |<f|x>|^2`` in closed form (Eq. 2; the full circuit gives the same number to
rounding, which the tests check gate by gate and against Qiskit), and an ``S``-shot run draws
``n0 ~ Binomial(S, (1 + <Z_a>) / 2)``: the same distribution as running the circuit ``S`` times. From the exact
fidelity maps this class derives the whole protocol: exact and shot expectations of the SWAP test and of the
Eq. 15 circuit (so every gradient estimator runs on it), and the individual circuits of the sampled estimator.
The layer differentiates the maps themselves in ``gradient="autograd"`` (forward and backward are the
backend's own, double backward where its maps support it).

Hooks a subclass may override for speed (the base class calls them; they never call back up):
:meth:`~SimulatorBackend.filter_states` (the closed-form ansatz by default), :meth:`~SimulatorBackend.sample`
(exact binomial draws by default), :meth:`~SimulatorBackend.circuit_maps` (the sampled estimator's individual
circuits, from :meth:`~SimulatorBackend.maps` by default) and, as a whole, :meth:`~SimulatorBackend.expectations`
(e.g. one fused launch).

Example: a complete exact backend in a few lines, with :func:`qucnn.core.geometry.unfold_encoded`::

    class Plain(SimulatorBackend):
        name = "plain"

        def maps(self, x, states, spec):
            d = states.shape[-1]
            patches = unfold_encoded(x.to(states.real.dtype), spec, d)     # (B, L, d), zero rows: all-zero
            overlap = patches.to(states.dtype) @ states.conj().T             # (B, L, K)
            fid = (overlap.abs() ** 2).transpose(1, 2)                       # (B, K, L)
            ho, wo = spec.output_size(*x.shape[-2:])
            valid = patches.abs().sum(-1) > 0
            return fid.unflatten(2, (ho, wo)).to(x.dtype), valid.view(-1, 1, ho, wo)
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from ..core.encoding import amplitude_encode
from ..core.geometry import ConvSpec
from ..core.swap_test import estimate_z
from ..core.windows import compute_dtype
from .base import Backend, Filters, Result


class SimulatorBackend(Backend):
    """A backend that simulates exactly. Subclasses implement :meth:`maps`; everything else follows."""

    exact = True

    @abc.abstractmethod
    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
        """Exact fidelity maps of every patch of ``x`` with every filter state.

        Args:
            x: real images ``(B, C, H, W)`` exactly as the user gave them: apply ``spec``'s padding (any
                ``padding_mode``) with :meth:`qucnn.core.geometry.ConvSpec.prepare`.
            states: unit filter states ``(K, d)``, complex or real, ``d >= C kh kw`` (amplitudes past the patch
                meet the zero padding of the encoding).
            spec: the window geometry.

        Returns:
            ``(F, valid)``: ``F`` ``(B, K, H', W')`` in ``x``'s dtype, 0 for all-zero patches, differentiable in
            ``x`` and ``states`` (by autograd or the backend's own ``autograd.Function``); ``valid``
            ``(B, 1, H', W')`` bool, whether the patch is not all zero.
        """

    def sample(self, values: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
        """``S``-shot estimates ``2 n0 / S - 1`` of exact expectations ``values`` (any shape): binomial draws,
        the distribution of running each circuit ``S`` times, seeded by ``generator``."""
        return estimate_z(values, shots, generator)

    def _vectors(self, filters: Filters) -> Tensor:
        flat = filters.flatten()
        return flat.states if flat.states is not None else self.filter_states(flat.theta)

    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        groups, o = filters.shape
        with torch.no_grad():
            xc = x.to(compute_dtype(x.dtype))
            shape = (x.shape[0], groups * o) + spec.output_size(*x.shape[-2:])
            fid, valid = checked_maps(self.maps(xc, self._vectors(filters), spec), self, shape, xc.dtype)
        values = fid.unflatten(1, (groups, o)).movedim(1, 0)  # (G, B, O, H', W')
        run = valid.unsqueeze(0)
        if mask is not None:
            run = run & mask
        return self._finish(values, run, upstream, shots, generator)

    def circuit_expectations(self, patches: Tensor, filters: Filters, *, upstream: Tensor | None = None,
                             shots: int | None = None, generator: torch.Generator | None = None) -> Result:
        with torch.no_grad():
            values, run = self.circuit_maps(patches.to(compute_dtype(patches.dtype)), self._vectors(filters))
            return self._finish(values, run, upstream, shots, generator)

    def circuit_maps(self, patches: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
        """``(F, valid)`` ``(N,)`` of ``N`` individual circuits: raw patches ``(N, m)`` against their filter states
        ``(N, d)`` or ``(1, d)``. From :meth:`maps`: each patch is a one-window image, run against its own state,
        one call per distinct state. A hook: an engine whose maps are the closed form may override it with
        :func:`closed_form_circuit_maps` (one vectorised step)."""
        n, m = patches.shape
        images, spec = patches.view(n, 1, 1, m), ConvSpec.make((1, m))
        if states.shape[0] == 1:
            fid, valid = self.maps(images, states, spec)
            return fid.reshape(n), valid.reshape(n)
        key = torch.view_as_real(states).flatten(1) if states.is_complex() else states
        distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
        order = torch.argsort(inverse)
        values = torch.zeros(n, dtype=patches.dtype, device=patches.device)
        run = torch.zeros(n, dtype=torch.bool, device=patches.device)
        for rows in torch.split(order, torch.bincount(inverse, minlength=distinct.shape[0]).tolist()):
            if rows.numel():
                fid, valid = self.maps(images[rows], states[rows[:1]], spec)
                values[rows], run[rows] = fid.reshape(-1).to(values.dtype), valid.reshape(-1)
        return values, run

    def _finish(self, values: Tensor, run: Tensor, upstream: Tensor | None, shots: int | None,
                generator: torch.Generator | None) -> Result:
        """Exact values times the upstream ``delta`` (Eq. 15), sampled with ``shots``; 0 where nothing runs."""
        if upstream is not None:
            values = values * upstream.to(values.dtype)
            run = run & (upstream != 0)
        if shots is not None:
            values = self.sample(values, shots, generator)
        return Result(torch.where(run, values, torch.zeros_like(values)))


def checked_maps(out, engine: "SimulatorBackend", shape: tuple[int, ...],
                 dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``out`` of ``engine.maps`` for an input of dtype ``dtype`` and maps of ``shape``, or a ``TypeError`` that
    names the backend and says what it returned and what was expected."""
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        raise TypeError(f"backend {engine.name!r} ({type(engine).__name__}).maps returned {type(out).__name__}, "
                        "expected a pair of tensors (F, valid)")
    fid, valid = out
    if tuple(fid.shape) != shape or tuple(valid.shape) != (shape[0], 1) + shape[2:]:
        raise TypeError(f"backend {engine.name!r} ({type(engine).__name__}).maps returned F {tuple(fid.shape)} and "
                        f"valid {tuple(valid.shape)}, expected {shape} and {(shape[0], 1) + shape[2:]}")
    if fid.dtype != dtype or valid.dtype != torch.bool:
        raise TypeError(f"backend {engine.name!r} ({type(engine).__name__}).maps returned F {fid.dtype} and valid "
                        f"{valid.dtype}, expected {dtype} (x's dtype) and torch.bool")
    return fid, valid


def closed_form_circuit_maps(patches: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
    """:meth:`SimulatorBackend.circuit_maps` in closed form, ``F = |<f|x>|^2`` of the amplitude-encoded patches
    (zero-padded to the states' length), for engines whose maps are that closed form."""
    encoded = amplitude_encode(patches)
    encoded = torch.nn.functional.pad(encoded, (0, states.shape[-1] - encoded.shape[-1]))
    overlap = (states.conj() * encoded.to(states.dtype)).sum(-1)
    values = overlap.real**2 + overlap.imag**2 if overlap.is_complex() else overlap**2
    return values, encoded.abs().sum(-1) > 0


__all__ = ["SimulatorBackend", "checked_maps", "closed_form_circuit_maps"]
