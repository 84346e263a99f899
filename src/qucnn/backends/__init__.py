"""Quantum backends: the one place where "run these circuits" happens.

``QuConv2d(..., backend=...)`` and :func:`qucnn.functional.quconv2d` take a name from :func:`available_backends`
or a :class:`Backend` instance. Registered here:

- ``"torch"`` (:class:`TorchBackend`, the default): exact simulation on the engine its :class:`RoutePolicy`
  picks per call (the fused PyTorch engine; on CUDA with Triton, the Triton engine), binomial shots.
- ``"reference"`` (:class:`ReferenceBackend`): the plain autograd composition and gate-by-gate ansatz.
- ``"triton"`` (:class:`TritonBackend`): the Triton engine (``pip install qucnn[gpu]``).
- ``"aer"`` (:class:`QiskitBackend`, when qiskit and qiskit-aer import): circuits on a Qiskit ``SamplerV2``
  (noiseless Aer by name; ``get_backend("aer", fake_device=..., mitigate_readout=...)`` for noisy devices).
- ``"pennylane"`` (:class:`PennyLaneBackend`, when pennylane imports): circuits as a broadcast QNode.

Write your own from one method: :class:`SimulatorBackend` (exact maps, :meth:`SimulatorBackend.maps`) or
:class:`CircuitBackend` (lists of circuits with shots, :meth:`CircuitBackend.execute`); check it with
:func:`qucnn.testing.check_backend` and ``register_backend("name", factory)``. See :mod:`qucnn.backends.base` for
the protocol and ``docs/architecture.md`` for a complete example.
"""

from .base import Backend, Filters, Result
from .circuit_backend import CircuitBackend, CircuitRows
from .fused import FusedEngine
from .pennylane_backend import PennyLaneBackend
from .policy import RoutePolicy
from .qiskit_backend import QiskitBackend
from .reference import ReferenceBackend
from .registry import (available_backends, forget_instances, get_backend, register_backend, registered_backends,
                       unregister_backend)
from .simulator import SimulatorBackend
from .torch_backend import TorchBackend, TritonBackend

__all__ = ["Backend", "CircuitBackend", "CircuitRows", "Filters", "FusedEngine", "PennyLaneBackend", "QiskitBackend",
           "ReferenceBackend", "Result", "RoutePolicy", "SimulatorBackend", "TorchBackend", "TritonBackend",
           "available_backends", "forget_instances", "get_backend", "register_backend", "registered_backends",
           "unregister_backend"]
