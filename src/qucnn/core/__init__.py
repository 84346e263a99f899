"""The quantum core: gates, a batched statevector simulator, amplitude encoding and state preparation,
the filter ansatz, the SWAP test and the window geometry of a convolution. It imports nothing from the
layers above it (backends, nn, train, ...)."""

from .ansatz import FilterAnsatz, ansatz_state, ring_pairs
from .encoding import amplitude_encode, mottonen_ops, num_qubits_for, state_preparation_ops, svd_unitary
from .gates import GATES, Gate, Op
from .geometry import ConvSpec
from .swap_test import estimate_z, swap_test, swap_test_circuit, swap_test_ops

__all__ = ["ConvSpec", "FilterAnsatz", "GATES", "Gate", "Op", "amplitude_encode", "ansatz_state", "estimate_z",
           "mottonen_ops", "num_qubits_for", "ring_pairs", "state_preparation_ops", "svd_unitary", "swap_test",
           "swap_test_circuit", "swap_test_ops"]
