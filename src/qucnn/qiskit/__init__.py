"""Qiskit integration: export QuCNN circuits, run them through any ``SamplerV2``, model noise.

Install with ``pip install 'qucnn[qiskit]'``. ``import qucnn`` never imports Qiskit, and neither does
``import qucnn.qiskit``: the submodules are loaded on first use, and without Qiskit every public name
raises an ``ImportError`` that says which extra to install.

Qubit layout (our qubit ``q`` is Qiskit qubit ``q``; only amplitude order differs, see
:func:`to_little_endian`):
    0            SWAP-test ancilla ``a`` (measured into the 1-bit register ``a``)
    1 .. n       data register ``|x>``
    n+1 .. 2n    filter register ``|f>``
    2n+1         backpropagation ancilla ``b`` (entanglement circuit only)

Public API:
    to_little_endian, from_little_endian   amplitude order: ours (qubit 0 = MSB) <-> Qiskit's
    ops_to_circuit, ops_to_template        registry ops -> QuantumCircuit (numbers or Parameters)
    ops_values                             the (B, P) angles of a batch of ops (a template's PUB values)
    to_qasm3                               a circuit as OpenQASM 3 text
    filter_circuit                         the Fig. 1 ansatz
    state_preparation_circuit              amplitude-encoded patch (Mottonen gates or SVD unitary)
    swap_test_circuit                      SWAP test / entanglement circuit (cswap or Bell overlap)
    sample_swap_tests                      batched shot estimates of <Z_a> through a SamplerV2
    QiskitExecutor                         QuConv2d forward and gradients through a SamplerV2
    SamplerRunner, fake_device_names       compile, bind and run circuit rows (qucnn.backends.QiskitBackend)
    default_noise_model                    depolarizing + readout noise for Aer
    circuit_resources, example_circuits    transpiled CNOT count and depth of every circuit kind

Example:
    >>> import torch
    >>> from qucnn.qiskit import filter_circuit
    >>> filter_circuit(torch.zeros(3, 4, 2)).num_qubits
    4
"""

from __future__ import annotations

import importlib

#: The message of every ImportError raised when Qiskit (or Aer) is missing.
MISSING = "the Qiskit integration of qucnn needs qiskit and qiskit-aer: pip install 'qucnn[qiskit]'"

_WHERE = {
    "to_little_endian": "circuits",
    "to_qasm3": "circuits",
    "from_little_endian": "circuits",
    "ops_to_circuit": "circuits",
    "ops_to_template": "circuits",
    "ops_values": "circuits",
    "SamplerRunner": "sampling",
    "fake_device_names": "sampling",
    "overlap_ops": "circuits",
    "filter_circuit": "circuits",
    "state_preparation_circuit": "circuits",
    "swap_test_circuit": "circuits",
    "OVERLAPS": "circuits",
    "sample_swap_tests": "executor",
    "QiskitExecutor": "executor",
    "default_noise_model": "noise",
    "circuit_resources": "resources",
    "example_circuits": "resources",
    "RESOURCE_BASIS": "resources",
}

__all__ = sorted(_WHERE) + ["MISSING"]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'qucnn.qiskit' has no attribute {name!r}")
    # The submodule imports qiskit at its top and turns a failure into ImportError(MISSING).
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
