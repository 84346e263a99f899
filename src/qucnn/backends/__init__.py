"""Quantum backends: the one place where "run these circuits" happens.

``QuConv2d(..., backend=...)`` and :func:`qucnn.functional.quconv2d` take a name from
:func:`available_backends` or a :class:`Backend` instance. Registered here:

- ``"torch"`` (:class:`TorchBackend`, the default): exact simulation by fused fast paths, binomial shots,
  any torch device; its :class:`RoutePolicy` says how maps are computed.
- ``"reference"`` (:class:`ReferenceBackend`): the plain autograd composition and gate-by-gate ansatz.
- ``"aer"`` (:class:`QiskitBackend`, when qiskit and qiskit-aer import): circuits on a Qiskit ``SamplerV2``
  (noiseless Aer by name; ``QiskitBackend(fake_device=..., mitigate_readout=...)`` for noisy devices).
- ``"pennylane"`` (:class:`PennyLaneBackend`, when pennylane imports): circuits as a broadcast QNode.

The circuit backends share :class:`CircuitBackend` (deduplication, what shots and circuits count).

See :mod:`qucnn.backends.base` for the protocol and ``docs/architecture.md`` for adding one.
"""

from . import fused_fidelity
from .base import Backend, Filters, Result
from .circuit_backend import CircuitBackend
from .fused_fidelity import RoutePolicy
from .pennylane_backend import PennyLaneBackend
from .qiskit_backend import QiskitBackend
from .reference import ReferenceBackend
from .registry import available_backends, get_backend, register_backend, registered_backends
from .simulated import SimulatorBackend
from .torch_backend import TorchBackend

__all__ = ["Backend", "CircuitBackend", "Filters", "PennyLaneBackend", "QiskitBackend", "ReferenceBackend", "fused_fidelity", "Result", "RoutePolicy", "SimulatorBackend", "TorchBackend",
           "available_backends", "get_backend", "register_backend", "registered_backends"]
