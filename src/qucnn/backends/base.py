"""What ``QuConv2d`` needs from a quantum computer: the backend protocol.

A backend answers two questions, each for a batch of SWAP-test circuits:

- :meth:`Backend.expectations`: ``<Z_a>`` of the SWAP test of every patch of ``x`` with every filter of a
  group ``(G, O)``: the fidelity ``F`` (Eq. 2), or ``delta F`` with the Eq. 15 circuit when upstream weights
  ``delta`` in ``[-1, 1]`` are given, exact or estimated from ``S`` shots. This is the forward pass (``G = 1``)
  and every dense gradient estimator (``G = 2P`` shifted filter sets).
- :meth:`Backend.circuits`: the same for ``N`` individual (patch, filter, delta) circuits (the sampled
  estimator, the experiments).

Both skip the circuits whose result is known without running them (an all-zero patch has no state and gives
0; ``delta = 0`` gives 0; ``mask`` says which outputs are wanted) and report how many circuits they ran, so
that cost accounting is the same for every backend. A simulating backend also offers
:meth:`Backend.fidelity`, the exact fidelity maps as a differentiable function of ``x`` and ``theta``
(``gradient="autograd"``). Filters are :class:`Filters`: ansatz angles, state vectors, or both, so a circuit
backend builds the ansatz while a simulator uses the vectors.

How to add a backend: subclass :class:`Backend` (or :class:`qucnn.backends.SimulatorBackend` for a new way to
simulate), implement the methods, and ``register_backend("name", factory)``; the parametrised suite in
``tests/test_backends.py`` then runs against it. See ``docs/architecture.md``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.ansatz import FilterAnsatz
from ..core.geometry import ConvSpec
from ..core.swap_test import estimate_z
from ..utils.checks import UsageError


@dataclass(frozen=True)
class Filters:
    """Filter states, given by ansatz angles ``theta`` ``(*lead, L, n, 2)``, by unit state vectors ``states``
    ``(*lead, d)``, or both (the same states two ways). ``lead`` is the shape of the filter batch.

    Example:
        >>> Filters(theta=torch.zeros(2, 3, 1, 2, 2)).shape
        torch.Size([2, 3])
    """

    theta: Tensor | None = None
    states: Tensor | None = None

    def __post_init__(self) -> None:
        if self.theta is None and self.states is None:
            raise UsageError("Filters needs theta (ansatz angles), states (state vectors) or both")
        if self.theta is not None and self.states is not None and self.theta.shape[:-3] != self.states.shape[:-1]:
            raise UsageError(f"theta {tuple(self.theta.shape)} and states {tuple(self.states.shape)} describe "
                             "different numbers of filters")

    @property
    def shape(self) -> torch.Size:
        """The leading (batch) shape of the filters."""
        return self.theta.shape[:-3] if self.theta is not None else self.states.shape[:-1]

    @property
    def n_qubits(self) -> int:
        """Qubits per filter state (from the angles' shape, else from the state vectors' length)."""
        return int(self.theta.shape[-2]) if self.theta is not None else int(self.states.shape[-1]).bit_length() - 1

    def flatten(self) -> "Filters":
        """The same filters with one leading axis."""
        return Filters(None if self.theta is None else self.theta.reshape((-1,) + self.theta.shape[-3:]),
                       None if self.states is None else self.states.reshape(-1, self.states.shape[-1]))

    def take(self, index: Tensor) -> "Filters":
        """Filters ``index`` ``(N,)`` of the flattened batch."""
        flat = self.flatten()
        return Filters(None if flat.theta is None else flat.theta[index],
                       None if flat.states is None else flat.states[index])


@dataclass(frozen=True)
class Result:
    """What a backend returns: the estimates, how many circuits it ran (an int or a 0-dim int64 tensor on
    the device, read when the cost is read), the wall time of the call where measured, and anything
    backend-specific (jobs, readout mitigation) in ``extras``."""

    values: Tensor
    circuits: Tensor | int
    wall_s: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """The quantum side of a QuCNN layer. Subclasses set :attr:`name`, :attr:`exact` and
    :attr:`differentiable` and implement :meth:`expectations` and :meth:`circuits`.

    Inputs arrive validated: real images ``x`` ``(B, C, H, W)`` with explicit padding already applied (the
    spec's padding is symmetric zeros), filters whose qubit count fits the patches, upstream deltas in
    ``[-1, 1]``, a positive int or ``None`` for shots.
    """

    #: The name it is registered under (``QuConv2d(..., backend=name)``).
    name: str = "backend"
    #: Whether exact expectations (``shots=None``) are available.
    exact: bool = True
    #: Whether :meth:`fidelity` is available: exact maps, differentiable in ``x`` and ``theta``.
    differentiable: bool = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def filter_states(self, theta: Tensor) -> Tensor:
        """The filter states ``U(theta)|0>`` ``(..., 2**n)`` by classical simulation (closed form); used for
        exact input gradients and by simulators. Differentiable in ``theta``."""
        ansatz = FilterAnsatz(int(theta.shape[-2]), int(theta.shape[-3]))
        return ansatz.state(theta)

    def fidelity(self, x: Tensor, theta: Tensor, spec: ConvSpec,
                 want_mask: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Exact maps ``F`` ``(B, O, H', W')`` in ``x``'s dtype, differentiable in ``x`` and ``theta``
        ``(O, L, n, 2)``; the number of patches that are not all zero (a 0-dim int64 tensor); and, with
        ``want_mask``, which they are ``(B, 1, H', W')``. Only for :attr:`differentiable` backends."""
        raise UsageError(f"backend {self.name!r} runs circuits; it has no exact, differentiable fidelity maps")

    def sample(self, expectation: Tensor, valid: Tensor | None, shots: int,
               generator: torch.Generator | None = None) -> Tensor:
        """``S``-shot estimates ``2 n0 / S - 1`` of exact expectations (binomial draws, the distribution of
        running each circuit ``S`` times), 0 where ``valid`` is false (nothing run)."""
        estimate = estimate_z(expectation, shots, generator)
        return estimate if valid is None else torch.where(valid, estimate, torch.zeros_like(estimate))

    @abc.abstractmethod
    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        """``<Z_a>`` of every patch of ``x`` with every filter: ``values`` ``(G, B, O, H', W')`` for filters of
        shape ``(G, O)``, in a float dtype of at least float32.

        ``upstream`` ``(B, O, H', W')``: run the Eq. 15 circuit with ``delta = upstream`` (``<Z_a> = delta F``)
        instead of the plain SWAP test. ``mask`` ``(B, O, H', W')``: only these outputs are wanted. Outputs not
        run (all-zero patch, ``delta = 0``, outside ``mask``) are 0 and not counted. ``shots=None``: exact
        (only where :attr:`exact`).
        """

    @abc.abstractmethod
    def circuits(self, patches: Tensor, filters: Filters, *, upstream: Tensor | None = None,
                 shots: int | None = None, generator: torch.Generator | None = None) -> Result:
        """``<Z_a>`` of ``N`` circuits: raw patch values ``patches`` ``(N, m)`` (amplitude-encoded here),
        ``filters`` of shape ``(N,)`` or ``(1,)``, ``upstream`` deltas ``(N,)``: ``values`` ``(N,)``. Rows with
        an all-zero patch or ``delta = 0`` are 0 and not counted."""


__all__ = ["Backend", "Filters", "Result"]
