"""qucnn: the QuCNN quantum convolutional layer (Stein et al., arXiv 2210.05443) in PyTorch.

Filters are parameterised quantum states, outputs are SWAP-test fidelities with amplitude-encoded
patches, and filter gradients can be computed on the quantum side (parameter shift, or the paper's
entanglement-based backpropagation with one extra ancilla, which is classically equivalent to parameter shift
at an extra variance of ``c^2 (1 - delta^2) / S`` per circuit: see ``docs/math.md``).

The package in layers, each importing only from those before it:
``utils`` -> ``core`` (gates, simulator, encoding, ansatz, SWAP test, geometry) -> ``backends`` (where circuits
run) -> ``nn`` (functional, layer, gradient estimators, cost, models) -> ``train`` / ``experiments`` /
``analysis`` / ``bench`` -> ``cli``; ``qiskit`` (export and execution) sits beside ``backends``.

Public API:
    QuConv2d, QuantumCost          the layer and its quantum cost accounting
    QuantumSettings                shots, gradient mode, gradient shots/budget, generator: one frozen object
    functional.quconv2d            the layer as a function
    backends                       available_backends(), register_backend(), get_backend(), SimulatorBackend
    testing.check_backend          the conformance suite for a backend of your own
    amplitude_encode               patches -> unit vectors (zero-padded to a power of two)
    FilterAnsatz                   the Fig. 1 ansatz, ``.state(theta)``
    swap_test                      exact or shot-based fidelity ``|<a|b>|^2``
    svd_unitary, state_preparation_ops, mottonen_ops   state preparation
    swap_test_circuit, swap_test_ops                   the full circuits, simulated
"""

from . import backends, functional
from .core.ansatz import FilterAnsatz
from .core.encoding import amplitude_encode, mottonen_ops, state_preparation_ops, svd_unitary
from .core.swap_test import swap_test, swap_test_circuit, swap_test_ops
from .nn.cost import QuantumCost
from .nn.layer import QuConv2d
from .nn.settings import GRADIENT_MODES, QuantumSettings
from .utils.checks import UsageError

__version__ = "0.2.0"

__all__ = [
    "FilterAnsatz",
    "GRADIENT_MODES",
    "QuConv2d",
    "QuantumCost",
    "QuantumSettings",
    "UsageError",
    "amplitude_encode",
    "backends",
    "functional",
    "mottonen_ops",
    "state_preparation_ops",
    "svd_unitary",
    "swap_test",
    "swap_test_circuit",
    "swap_test_ops",
    "__version__",
]
