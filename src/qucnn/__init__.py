"""qucnn: the QuCNN quantum convolutional layer (Stein et al., arXiv 2210.05443) in PyTorch.

Filters are parameterised quantum states, outputs are SWAP-test fidelities with amplitude-encoded
patches, and filter gradients can be computed on the quantum side (parameter shift, or the paper's
entanglement-based backpropagation with one extra ancilla).

Public API:
    QuConv2d, QuantumCost          the layer and its quantum cost accounting
    amplitude_encode               patches -> unit vectors (zero-padded to a power of two)
    FilterAnsatz                   the Fig. 1 ansatz, ``.state(theta)``
    swap_test                      exact or shot-based fidelity ``|<a|b>|^2``
    svd_unitary, state_preparation_ops, mottonen_ops   state preparation
    swap_test_circuit, swap_test_ops                   the full circuits, simulated
"""

from .ansatz import FilterAnsatz
from .encoding import amplitude_encode, mottonen_ops, state_preparation_ops, svd_unitary
from .layer import GRADIENT_MODES, QuantumCost, QuConv2d
from .swap_test import swap_test, swap_test_circuit, swap_test_ops

__version__ = "0.1.0"

__all__ = [
    "FilterAnsatz",
    "GRADIENT_MODES",
    "QuConv2d",
    "QuantumCost",
    "amplitude_encode",
    "mottonen_ops",
    "state_preparation_ops",
    "svd_unitary",
    "swap_test",
    "swap_test_circuit",
    "swap_test_ops",
    "__version__",
]
