"""Hardware cost of the QuCNN circuits: CNOT count and depth after a seeded transpile to the IBM-style
basis ``rz, sx, x, cx`` on a line of qubits (each qubit coupled to its neighbours only), and with all-to-all
connectivity. This is the one definition of a CX count in qucnn: ``qucnn circuits`` reports it for every
circuit kind and ``qucnn reproduce circuits`` for the circuits it draws.

Example:
    >>> import torch
    >>> circuits = example_circuits(torch.rand(16), torch.rand(3, 4, 2))
    >>> circuit_resources(circuits["filter_ansatz"])["cx"] >= 12
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.ansatz import FilterAnsatz
from ..utils.checks import MissingExtraError, UsageError
from . import MISSING
from .circuits import filter_circuit, state_preparation_circuit, swap_test_circuit

try:
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Qubit
    from qiskit.converters import circuit_to_dag, dag_to_circuit
    from qiskit.transpiler import CouplingMap
except ImportError as err:  # exercised by tests/test_qiskit_missing.py
    raise MissingExtraError(MISSING) from err

#: The basis the resource counts are given in.
RESOURCE_BASIS = ["rz", "sx", "x", "cx"]


def drop_idle_qubits(circuit: QuantumCircuit) -> QuantumCircuit:
    """The circuit without qubits that no instruction touches (e.g. qubit 0 of the Bell-basis test)."""
    dag = circuit_to_dag(circuit)
    idle = [w for w in dag.idle_wires() if isinstance(w, Qubit)]
    if idle:
        dag.remove_qubits(*idle)
    return dag_to_circuit(dag)


def circuit_resources(circuit: QuantumCircuit, optimization_level: int = 2, seed: int = 0) -> dict:
    """Transpiled cost of ``circuit`` (idle qubits dropped first).

    Returns ``{"qubits", "cx", "depth", "size", "cx_all_to_all", "depth_all_to_all"}``: CNOTs, depth and
    gate count for the basis ``rz, sx, x, cx`` on a linear coupling map of ``qubits`` qubits (routing
    SWAPs included), and CNOTs and depth with all-to-all connectivity; both transpiles are seeded.

    Example:
        >>> circuit_resources(filter_circuit(torch.zeros(1, 2, 2)))["cx"]
        2
    """
    if not isinstance(circuit, QuantumCircuit):
        raise TypeError(f"circuit must be a qiskit QuantumCircuit, got {type(circuit).__name__}")
    compact = drop_idle_qubits(circuit)
    common = dict(basis_gates=RESOURCE_BASIS, optimization_level=optimization_level, seed_transpiler=seed)
    line = transpile(compact, coupling_map=CouplingMap.from_line(max(compact.num_qubits, 2)), **common)
    free = transpile(compact, **common)
    return {"qubits": compact.num_qubits,
            "cx": int(line.count_ops().get("cx", 0)), "depth": line.depth(), "size": line.size(),
            "cx_all_to_all": int(free.count_ops().get("cx", 0)), "depth_all_to_all": free.depth()}


def example_circuits(patch: Tensor, theta: Tensor, upstream: float = 0.5) -> dict[str, QuantumCircuit]:
    """Every circuit kind for one ``patch`` ``(m,)`` and one filter ``theta`` ``(L, n, 2)``:

    ``filter_ansatz``, ``state_prep_gates`` (Mottonen), ``state_prep_unitary`` (SVD ``UnitaryGate``),
    ``swap_test`` (gates + ansatz, CSWAP), ``swap_test_data_svd`` (the data register by SVD unitary, the
    filter by the ansatz: the Fig. 2 circuit ``qucnn reproduce circuits`` draws), ``swap_test_unitary`` (both
    registers by SVD unitary, the filter being the ansatz state: the Fig. 3 / Fig. 5 form), ``entanglement``
    (``upstream`` ancilla),
    ``swap_test_bell`` and ``entanglement_bell`` (the ancilla-free Bell-basis overlap).
    """
    t = torch.as_tensor(theta, dtype=torch.float64)
    if t.dim() != 3 or t.shape[-1] != 2:
        raise UsageError(f"theta must have shape (L, n, 2), got {tuple(t.shape)}")
    filter_state = FilterAnsatz(int(t.shape[1]), int(t.shape[0])).state(t.unsqueeze(0))[0]
    return {
        "filter_ansatz": filter_circuit(t),
        "state_prep_gates": state_preparation_circuit(patch, "gates"),
        "state_prep_unitary": state_preparation_circuit(patch, "unitary"),
        "swap_test": swap_test_circuit(patch, t),
        "swap_test_data_svd": swap_test_circuit(patch, t, method="unitary"),
        "swap_test_unitary": swap_test_circuit(patch, method="unitary", filter_state=filter_state),
        "entanglement": swap_test_circuit(patch, t, upstream=upstream),
        "swap_test_bell": swap_test_circuit(patch, t, overlap="bell"),
        "entanglement_bell": swap_test_circuit(patch, t, upstream=upstream, overlap="bell"),
    }


__all__ = ["circuit_resources", "example_circuits", "drop_idle_qubits", "RESOURCE_BASIS"]
