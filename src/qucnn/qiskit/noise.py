"""A simple, documented noise model for Aer: depolarizing gate errors plus symmetric readout error.

Choices (documented in docs/qiskit.md):
- Circuits are unrolled to the basis ``["rz", "sx", "x", "cx"]`` before a noisy run, so every gate of
  the state preparations, the ansatz and the CSWAPs (7-8 CNOTs each once unrolled) gets its error; there
  is no separate 3-qubit error for CSWAP, which no hardware executes natively.
- ``rz`` is error-free: on superconducting hardware it is a virtual frame change.
- ``sx`` and ``x`` get a 1-qubit depolarizing error ``p1``, ``cx`` a 2-qubit depolarizing error ``p2``,
  every measurement a symmetric bit flip with probability ``readout``.

Example:
    >>> model = default_noise_model(p1=1e-3, p2=1e-2, readout=2e-2)
    >>> sorted(model.basis_gates)
    ['cx', 'rz', 'sx', 'x']
"""

from __future__ import annotations

from ..utils.checks import MissingExtraError, UsageError
from . import MISSING

try:
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error
except ImportError as err:  # exercised by tests/test_qiskit_missing.py
    raise MissingExtraError(MISSING) from err

#: The gates noisy circuits are unrolled to (IBM-style; CSWAP becomes CNOTs and 1-qubit gates).
NOISE_BASIS = ["rz", "sx", "x", "cx"]


def _probability(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    if not 0 <= value <= 1:
        raise UsageError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def default_noise_model(p1: float = 1e-3, p2: float = 1e-2, readout: float = 2e-2) -> NoiseModel:
    """Aer ``NoiseModel`` on the basis ``rz, sx, x, cx``: depolarizing ``p1`` on ``sx``/``x``,
    depolarizing ``p2`` on ``cx`` (``rz`` is virtual and exact), readout bit flips with probability
    ``readout`` on every qubit. Pass it as ``noise_model=`` to :func:`sample_swap_tests` or
    :class:`QiskitExecutor`; they unroll circuits to ``model.basis_gates`` before running.

    Example:
        >>> default_noise_model(readout=0.0).noise_instructions
        ['cx', 'sx', 'x']
    """
    p1, p2, readout = (_probability(v, name) for v, name in ((p1, "p1"), (p2, "p2"), (readout, "readout")))
    model = NoiseModel(basis_gates=NOISE_BASIS)
    if p1 > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(p1, 1), ["sx", "x"])
    if p2 > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(p2, 2), ["cx"])
    if readout > 0:
        model.add_all_qubit_readout_error(ReadoutError([[1 - readout, readout], [readout, 1 - readout]]))
    return model


__all__ = ["default_noise_model", "NOISE_BASIS"]
