"""What ``QuConv2d`` needs from a quantum computer: the backend protocol.

A backend answers two requests, each for a batch of SWAP-test circuits, exactly or with ``S`` shots each:

- :meth:`Backend.expectations`: ``<Z_a>`` of the SWAP test of every patch of ``x`` with every filter of a group
  ``(G, O)``: the fidelity ``F`` (Eq. 2), or ``delta F`` with the Eq. 15 circuit when upstream weights ``delta``
  in ``[-1, 1]`` are given. This is the forward pass (``G = 1``) and every dense gradient estimator (``G = 2P``
  shifted filter sets).
- :meth:`Backend.circuit_expectations`: the same for ``N`` individual (patch, filter, delta) circuits (the sampled
  estimator, the experiments).

Two kinds implement them for you, each from one method:

- :class:`qucnn.backends.SimulatorBackend`: exact fidelity maps, :meth:`~qucnn.backends.SimulatorBackend.maps`.
- :class:`qucnn.backends.CircuitBackend`: run lists of circuits with shots,
  :meth:`~qucnn.backends.CircuitBackend.execute`.

Rules a backend can rely on, and must keep:

- Inputs arrive validated: real images ``x`` ``(B, C, H, W)`` as the user gave them (``spec``'s padding, any
  ``padding_mode``, not yet applied: :meth:`qucnn.core.geometry.ConvSpec.prepare` applies it), filters whose qubit
  count fits the patches, upstream deltas in ``[-1, 1]``, a positive int or ``None`` for shots. Autocast is off.
- Outputs not run (all-zero patch, ``delta = 0``, outside ``mask``) are 0.
- The caller counts the circuits, qubits and shots from the data (all-zero patches, deltas, masks) and measures
  the wall time: a backend counts nothing. A backend that submits real jobs reports what it submitted (``jobs``,
  ``distinct`` circuits, ...) in :attr:`Result.extras`.
- :attr:`Backend.exact` has no default: a backend says whether ``shots=None`` (exact expectations) works.

Example:
    >>> Filters(theta=torch.zeros(2, 3, 1, 2, 2)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.ansatz import ansatz_state
from ..core.geometry import ConvSpec
from ..utils.checks import UsageError


@dataclass(frozen=True)
class Filters:
    """Filter states, given by ansatz angles ``theta`` ``(*lead, L, n, 2)``, by unit state vectors ``states``
    ``(*lead, d)``, or both (the same states two ways). ``lead`` is the shape of the filter batch.

    Example:
        >>> Filters(theta=torch.zeros(2, 3, 1, 2, 2)).flatten().theta.shape
        torch.Size([6, 1, 2, 2])
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
    """What a backend returns: the estimates ``values``, and what a backend that runs real jobs wants to report
    about what it submitted (``jobs``, ``distinct`` circuits, readout mitigation, ...) in ``extras``."""

    values: Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """The quantum side of a QuCNN layer. A subclass sets :attr:`name` and :attr:`exact` and implements
    :meth:`expectations` and :meth:`circuit_expectations` (or subclasses
    :class:`~qucnn.backends.SimulatorBackend` or :class:`~qucnn.backends.CircuitBackend`, which implement both
    from one method). See the module docstring for the rules."""

    #: The name it is registered under (``QuConv2d(..., backend=name)``).
    name: str = "backend"

    @property
    @abc.abstractmethod
    def exact(self) -> bool:
        """Whether exact expectations (``shots=None``) are available. No default: a subclass says it (a class
        attribute ``exact = True`` or ``False`` is enough)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def resolve(self, device: torch.device, filters: int, taps: int) -> "Backend":
        """The backend that serves one layer call of ``filters`` filters on patches of ``taps`` values on
        ``device``: this one, unless a subclass routes calls to engines (:class:`~qucnn.backends.TorchBackend`).
        Called once per call by the layer, before anything runs."""
        return self

    def filter_states(self, theta: Tensor) -> Tensor:
        """The filter states ``U(theta)|0>`` ``(..., 2**n)`` of angles ``(..., L, n, 2)``, by classical simulation
        (the closed form); differentiable in ``theta``. Used for exact input gradients and by simulators."""
        flat = theta.reshape((-1,) + theta.shape[-3:])
        return ansatz_state(flat).reshape(theta.shape[:-3] + (-1,))

    @abc.abstractmethod
    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        """``<Z_a>`` of every patch of ``x`` with every filter: ``values`` ``(G, B, O, H', W')`` for filters of
        shape ``(G, O)``, in a float dtype of at least float32.

        ``upstream`` ``(B, O, H', W')``: run the Eq. 15 circuit with ``delta = upstream`` (``<Z_a> = delta F``)
        instead of the plain SWAP test. ``mask`` ``(B, O, H', W')`` bool: only these outputs are wanted. Outputs
        not run (all-zero patch, ``delta = 0``, outside ``mask``) are 0. ``shots=None``: exact (only where
        :attr:`exact`). ``generator`` seeds the shots.
        """

    @abc.abstractmethod
    def circuit_expectations(self, patches: Tensor, filters: Filters, *, upstream: Tensor | None = None,
                             shots: int | None = None, generator: torch.Generator | None = None) -> Result:
        """``<Z_a>`` of ``N`` circuits: raw patch values ``patches`` ``(N, m)`` (amplitude-encoded by the
        backend), ``filters`` of shape ``(N,)`` or ``(1,)``, ``upstream`` deltas ``(N,)``: ``values`` ``(N,)``.
        Rows with an all-zero patch or ``delta = 0`` are 0."""


__all__ = ["Backend", "Filters", "Result"]
