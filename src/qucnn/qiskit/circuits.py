"""QuCNN circuits as Qiskit ``QuantumCircuit`` objects, built from the same registry ops that our
simulator runs, so the two cannot drift apart.

Qubit indices are ours (our qubit ``q`` is Qiskit qubit ``q``); only the amplitude order differs:
we index amplitudes big-endian (qubit 0 is the most significant bit), Qiskit little-endian (qubit 0 is
the least significant bit). :func:`to_little_endian` converts state vectors; gates that take a matrix
or a state vector (``UnitaryGate``, ``StatePreparation``) are appended on the reversed qubit list,
which makes Qiskit read our big-endian matrix correctly.

Example:
    >>> import torch
    >>> qc = swap_test_circuit(torch.rand(16), theta=torch.zeros(3, 4, 2))
    >>> qc.num_qubits, qc.num_clbits
    (9, 1)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.ansatz import FilterAnsatz
from ..core.encoding import amplitude_encode, state_preparation_ops
from ..core.gates import GATES, Op
from ..core.swap_test import SWAP_ANCILLA, backprop_ancilla, data_wires, filter_wires, swap_test_ops
from ..utils.checks import MissingExtraError, UsageError, check_finite
from . import MISSING

try:
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm3
    from qiskit.circuit import ParameterVector
    from qiskit.circuit.library import StatePreparation
except ImportError as err:  # exercised by tests/test_qiskit_missing.py
    raise MissingExtraError(MISSING) from err

#: Ways to measure the overlap |<f|x>|^2: the SWAP test of Fig. 2, or the ancilla-free Bell-basis test.
OVERLAPS = ("cswap", "bell")


# -- amplitude order ------------------------------------------------------------------------------
def to_little_endian(state):
    """Reverse the bit order of the last axis ``(..., 2**n)``: our big-endian amplitude order (qubit 0
    = most significant bit) to Qiskit's little-endian ``Statevector`` order (qubit 0 = least
    significant bit). The map is its own inverse, so it also converts back (:func:`from_little_endian`).

    Accepts a ``torch.Tensor`` or anything numpy can read; returns the same kind (numpy for non-tensors).

    Example:
        >>> to_little_endian(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
        tensor([0., 4., 2., 6., 1., 5., 3., 7.])
    """
    arr = state if isinstance(state, Tensor) else np.asarray(state)
    d = arr.shape[-1] if arr.ndim else 0
    n = d.bit_length() - 1
    if arr.ndim == 0 or d != 2**n or n < 1:
        raise UsageError(f"expected amplitudes of shape (..., 2**n) with n >= 1, got {tuple(arr.shape)}")
    lead = tuple(arr.shape[:-1])
    axes = tuple(range(len(lead))) + tuple(range(len(lead) + n - 1, len(lead) - 1, -1))
    split = arr.reshape(lead + (2,) * n)
    flipped = split.permute(axes) if isinstance(split, Tensor) else split.transpose(axes)
    return flipped.reshape(lead + (d,))


from_little_endian = to_little_endian


# -- the one converter: registry ops -> QuantumCircuit ---------------------------------------------
def _append_ops(circuit: QuantumCircuit, ops: Sequence[Op], angles: Callable[[int, Op], list],
                matrix: Callable[[Op], np.ndarray]) -> None:
    for k, op in enumerate(ops):
        spec = GATES[op.gate]
        append = getattr(circuit, spec.qiskit_name)
        if spec.num_wires is None:  # a matrix gate: Qiskit reads it little-endian, so reverse the wires
            append(matrix(op), list(reversed(op.wires)))
        else:
            append(*angles(k, op), *op.wires)


def _row(params: Tensor, index: int) -> Tensor:
    if params.shape[0] != 1 and not 0 <= index < params.shape[0]:
        raise IndexError(f"circuit index {index} out of range for a batch of {params.shape[0]}")
    return params[index if params.shape[0] > 1 else 0]


def ops_to_circuit(ops: Sequence[Op], num_qubits: int, index: int = 0) -> QuantumCircuit:
    """Circuit ``index`` of a batch of registry ops: every ``Op`` becomes the ``QuantumCircuit`` method
    named by ``GATES[op.gate].qiskit_name``; batched params ``(B, k)`` (or ``(1, k)``, broadcast) give
    the numbers of row ``index``.

    Example:
        >>> ops_to_circuit(FilterAnsatz(2, 1).ops(torch.zeros(1, 1, 2, 2)), 2).count_ops()["cx"]
        2
    """
    def angles(k: int, op: Op) -> list[float]:
        return [] if op.params is None else [float(a) for a in _row(op.params, index).reshape(-1)]

    circuit = QuantumCircuit(QuantumRegister(num_qubits, "q"))
    _append_ops(circuit, ops, angles, matrix=lambda op: _row(op.params, index).detach().cpu().numpy())
    return circuit


def ops_values(ops: Sequence[Op]) -> np.ndarray:
    """The angles of every row of a batch of registry ops, in op order: ``(B, P)`` float64, the values of
    the template of :func:`ops_to_template` (rows of ``(1, k)`` params broadcast). Matrix (``UNITARY``) ops
    have no angles to parametrise.

    Example:
        >>> ops_values(FilterAnsatz(2, 1).ops(torch.zeros(5, 1, 2, 2))).shape
        (5, 4)
    """
    batch = max((op.params.shape[0] for op in ops if op.params is not None), default=1)
    columns: list[Tensor] = []
    for op in ops:
        if GATES[op.gate].num_wires is None:
            raise UsageError(f"a {op.gate} op has no angles to parametrise; use ops_to_circuit per row")
        if op.params is not None:
            if op.params.shape[0] not in (1, batch):
                raise UsageError(f"op {op.gate} has batch {op.params.shape[0]}, expected 1 or {batch}")
            columns.append(op.params.detach().to(torch.float64).cpu().expand(batch, -1))
    return torch.cat(columns, 1).numpy() if columns else np.zeros((batch, 0))


def ops_to_template(ops: Sequence[Op], num_qubits: int) -> tuple[QuantumCircuit, np.ndarray]:
    """One parametrised circuit for a whole batch: every rotation angle becomes an element of the
    ``ParameterVector`` ``"t"`` (in op order), and ``values`` ``(B, P)`` holds the angles of each row
    (:func:`ops_values`), ready for a Sampler PUB ``(circuit, values)``. Matrix (``UNITARY``) ops cannot be
    parametrised.

    Example:
        >>> qc, values = ops_to_template(FilterAnsatz(2, 1).ops(torch.zeros(5, 1, 2, 2)), 2)
        >>> qc.num_parameters, values.shape
        (4, (5, 4))
    """
    values = ops_values(ops)
    theta = ParameterVector("t", values.shape[1])
    starts = np.cumsum([0] + [op.params.shape[1] if op.params is not None else 0 for op in ops])
    circuit = QuantumCircuit(QuantumRegister(num_qubits, "q"))
    _append_ops(circuit, ops, angles=lambda k, op: list(theta[starts[k]:starts[k + 1]]), matrix=None)
    return circuit, values


# -- validation helpers ---------------------------------------------------------------------------
def _as_tensor(value, name: str, complex_ok: bool = True) -> Tensor:
    if isinstance(value, Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from err
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real or complex numbers, got dtype {t.dtype}")
    if t.is_complex() and not complex_ok:
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    t = t.to(torch.complex128 if t.is_complex() else torch.float64)
    check_finite(t, name)
    return t


def _encode(x, name: str = "x") -> Tensor:
    """``(m,)`` values -> unit vector ``(2**n,)`` with ``n >= 1`` (ValueError for all-zero input)."""
    t = _as_tensor(x, name)
    if t.dim() != 1 or t.shape[0] < 2:
        raise UsageError(f"{name} must be a vector of at least 2 values, shape (m,), got {tuple(t.shape)}")
    encoded = amplitude_encode(t)
    if not bool(encoded.abs().sum() > 0):
        raise UsageError(f"{name} is all zero: an all-zero patch has no quantum state")
    return encoded


def _check_theta(theta) -> Tensor:
    t = _as_tensor(theta, "theta", complex_ok=False)
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[-1] != 2:
        raise UsageError(f"theta must have shape (L, n, 2) (layers, qubits, RX/RZ), got {tuple(t.shape)}")
    return t


# -- the circuits ---------------------------------------------------------------------------------
def filter_circuit(theta) -> QuantumCircuit:
    """The Fig. 1 ansatz ``U(theta)|0>`` on ``n`` qubits: per layer RX, RZ on each qubit, then the CNOT
    ring ``q -> q+1 (mod n)``. ``theta``: ``(L, n, 2)`` (``[..., 0]`` RX, ``[..., 1]`` RZ).

    Example:
        >>> filter_circuit(torch.zeros(3, 4, 2)).count_ops()["cx"]
        12
    """
    t = _check_theta(theta)
    ansatz = FilterAnsatz(int(t.shape[1]), int(t.shape[0]))
    return ops_to_circuit(ansatz.ops(t.unsqueeze(0)), ansatz.n_qubits)


def state_preparation_circuit(x, method: str = "gates") -> QuantumCircuit:
    """Prepare the amplitude-encoded patch ``x`` ``(m,)`` (zero-padded to ``2**n``, normalised) from
    ``|0>`` on ``n`` qubits.

    ``method="gates"``: our Mottonen RY/CNOT ladder for real ``x`` (complex ``x``, e.g. a filter state,
    falls back to Qiskit's ``StatePreparation``, which adds RZ phases); ``"unitary"``: the QuantumFlow
    SVD unitary ``W`` as one ``UnitaryGate`` (on the reversed qubit list: Qiskit reads matrices
    little-endian).

    Example:
        >>> state_preparation_circuit(torch.tensor([3.0, 4.0]), "unitary").num_qubits
        1
    """
    if method not in ("gates", "unitary"):
        raise UsageError(f"method must be 'gates' or 'unitary', got {method!r}")
    state = _encode(x)
    n = state.shape[0].bit_length() - 1
    if method == "gates" and state.is_complex():
        circuit = QuantumCircuit(QuantumRegister(n, "q"))
        circuit.append(StatePreparation(state.numpy()), list(reversed(range(n))))
        return circuit
    return ops_to_circuit(state_preparation_ops(state.unsqueeze(0), tuple(range(n)), method), n)


def overlap_ops(n: int, upstream=None, overlap: str = "cswap") -> list[Op]:
    """The ops after both registers are prepared. ``"cswap"``: :func:`qucnn.swap_test.swap_test_ops`
    (H, CSWAPs, H, and with ``upstream`` the RY/CNOT of the backpropagation ancilla). ``"bell"``: the
    ancilla-free test, CNOT(x_q -> f_q) and H(x_q) per pair; with ``upstream``, RY(arccos delta) on
    ``b``, whose measured bit joins the parity (the CNOT(b -> a) of the cswap version, done classically).
    """
    if overlap not in OVERLAPS:
        raise UsageError(f"overlap must be one of {OVERLAPS}, got {overlap!r}")
    if overlap == "cswap":
        return swap_test_ops(n, upstream)
    ops: list[Op] = []
    if upstream is not None:
        ops.append(swap_test_ops(n, upstream)[0])  # the validated RY(arccos delta) on b
    for xq, fq in zip(data_wires(n), filter_wires(n)):
        ops += [Op("CNOT", (xq, fq)), Op("H", (xq,))]
    return ops


def add_measurements(circuit: QuantumCircuit, n: int, upstream: bool, overlap: str) -> None:
    """Measure what the overlap estimate needs: ``a`` (cswap) or ``x``, ``f`` (and ``b``) (bell)."""
    if overlap == "cswap":
        reg = ClassicalRegister(1, "a")
        circuit.add_register(reg)
        circuit.measure(SWAP_ANCILLA, reg[0])
        return
    for name, wires in (("x", data_wires(n)), ("f", filter_wires(n))):
        reg = ClassicalRegister(n, name)
        circuit.add_register(reg)
        circuit.measure(list(wires), list(reg))
    if upstream:
        reg = ClassicalRegister(1, "b")
        circuit.add_register(reg)
        circuit.measure(backprop_ancilla(n), reg[0])


def swap_test_circuit(x, theta=None, upstream: float | None = None, method: str = "gates",
                      measure: bool = True, *, filter_state=None, overlap: str = "cswap") -> QuantumCircuit:
    """The convolution SWAP test of Fig. 2 for one patch ``x`` ``(m,)`` and one filter.

    Qubits: 0 is the SWAP ancilla ``a`` (measured into the 1-bit register ``a``: ``P(a=0) = (1+F)/2``),
    1..n the data register (``x`` via :func:`state_preparation_circuit` with ``method``), n+1..2n the
    filter register (the ansatz with ``theta`` ``(L, n, 2)``, or a precomputed ``filter_state``
    ``(2**n,)`` prepared with ``method``, e.g. the paper's "ideal convolutional state" with
    ``method="unitary"``); then H(a), CSWAP(a; x_q, f_q) for each q, H(a). With ``upstream`` (delta in
    [-1, 1]): the entanglement-based backpropagation circuit on 2n+2 qubits, qubit 2n+1 = ``b`` gets
    RY(arccos delta) and CNOT(b -> a) follows the second H, so ``P(a=0) = (1 + delta F)/2``.

    ``overlap="bell"``: the ancilla-free Bell-basis test instead (qubit 0 stays idle so the layout is
    the same): CNOT(x_q -> f_q), H(x_q), measure ``x`` and ``f`` (and ``b``); the estimate is
    ``1 - 2 P(odd parity of sum_q x_q f_q (+ b))``. ``measure=False`` leaves measurements out
    (for ``Statevector``).

    Example:
        >>> qc = swap_test_circuit(torch.rand(4), theta=torch.rand(2, 2, 2), upstream=0.5)
        >>> qc.num_qubits
        6
    """
    data = _encode(x)
    n = data.shape[0].bit_length() - 1
    if upstream is not None:
        if isinstance(upstream, bool) or not isinstance(upstream, (int, float, Tensor, np.floating)) \
                or torch.as_tensor(upstream).numel() != 1:
            raise TypeError(f"upstream must be one float in [-1, 1] (or None), got {upstream!r}")
        upstream = float(upstream)
    if (theta is None) == (filter_state is None):
        raise UsageError("give exactly one of theta (the ansatz angles) and filter_state (a state vector)")
    if theta is not None:
        t = _check_theta(theta)
        if t.shape[1] != n:
            raise UsageError(f"theta is for {t.shape[1]} qubits but the patch needs {n} (theta {tuple(t.shape)})")
        filt = filter_circuit(t)
    else:
        f = _as_tensor(filter_state, "filter_state")
        if f.shape != data.shape:
            raise UsageError(f"filter_state must have shape ({data.shape[0]},) to match the patch, "
                             f"got {tuple(f.shape)}")
        filt = state_preparation_circuit(f, method)
    num_qubits = 2 * n + 1 + (upstream is not None)
    circuit = QuantumCircuit(QuantumRegister(num_qubits, "q"))
    circuit.compose(state_preparation_circuit(data, method), list(data_wires(n)), inplace=True)
    circuit.compose(filt, list(filter_wires(n)), inplace=True)
    circuit.compose(ops_to_circuit(overlap_ops(n, upstream, overlap), num_qubits), inplace=True)
    if measure:
        add_measurements(circuit, n, upstream is not None, overlap)
    return circuit


def to_qasm3(circuit: QuantumCircuit) -> str:
    """``circuit`` as OpenQASM 3 text (Qiskit's exporter).

    Example:
        >>> to_qasm3(filter_circuit(torch.zeros(1, 2, 2))).startswith("OPENQASM 3")
        True
    """
    return qasm3.dumps(circuit)


__all__ = ["to_qasm3", "to_little_endian", "from_little_endian", "ops_to_circuit", "ops_to_template", "ops_values",
           "overlap_ops",
           "add_measurements", "filter_circuit", "state_preparation_circuit", "swap_test_circuit",
           "OVERLAPS"]
