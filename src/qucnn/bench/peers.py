"""The peers ``qucnn bench`` measures against: PennyLane (``default.qubit``, ``lightning.qubit``), Qiskit
Aer, and a NumPy closed form as the floor. Each builds the SAME circuit as ours: the patch amplitude-
encoded on wires 1..n, the Fig. 1 ansatz on wires n+1..2n, H, CSWAPs, H on the ancilla (wire 0), and
``<Z>`` of the ancilla (``= |<f|x>|^2``).

Optional peers are imported lazily; :func:`missing` says why one cannot run (the bench turns that into a
note on a skipped row, never an error).

Example:
    >>> import numpy as np
    >>> numpy_fidelities(np.eye(2, 4), np.array([1.0, 0, 0, 0]))
    array([1., 0.])
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..core.ansatz import ring_pairs
from ..nn.layer import QuConv2d

#: The extra that installs every peer.
EXTRA = "pip install 'qucnn[bench]'"


def missing(*modules: str) -> str | None:
    """``None`` if every module imports, else a note naming the first that does not and the extra."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:  # absent, or blocked (tests put None in sys.modules)
            return f"{name} not installed ({type(err).__name__}); {EXTRA}"
    return None


def version(module: str) -> str | None:
    """The installed version of ``module`` (its distribution's, where the module has no ``__version__``)."""

    try:
        return str(importlib.import_module(module).__version__)
    except AttributeError:
        try:
            return metadata.version(module.replace("_", "-"))
        except metadata.PackageNotFoundError:
            return None
    except ImportError:
        return None


# -- the NumPy floor ------------------------------------------------------------------------------------
def numpy_patches(images: np.ndarray, kernel: int) -> np.ndarray:
    """Every ``kernel x kernel`` patch (stride 1, no padding) of ``images`` ``(B, H, W)``: ``(B*H'*W', k*k)``."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (kernel, kernel), axis=(1, 2))
    return windows.reshape(-1, kernel * kernel)


def numpy_fidelities(patches: np.ndarray, state: np.ndarray) -> np.ndarray:
    """``|<f|x>|^2 / ||x||^2`` for raw ``patches`` ``(P, m)`` and one filter ``state`` ``(d >= m,)``; 0 on
    all-zero patches. The closed form, with no circuit at all: the floor of the W1 forward."""
    m = patches.shape[1]
    overlap = patches @ np.conj(state[:m])
    norms = np.einsum("pm,pm->p", patches, patches)
    return np.divide(np.abs(overlap) ** 2, norms, out=np.zeros_like(norms), where=norms > 0)


def numpy_forward(images: np.ndarray, state: np.ndarray, kernel: int) -> np.ndarray:
    """The W1 forward in NumPy: patches of ``images`` ``(B, H, W)`` against one filter state."""
    return numpy_fidelities(numpy_patches(images, kernel), state)


# -- PennyLane ------------------------------------------------------------------------------------------
def pennylane_swap_test(device: str, n: int, layers: int, shots: int | None = None,
                        diff_method: str | None = None, interface: str = "auto") -> Callable:
    """A QNode ``(patches (P, m), theta (L, n, 2)) -> <Z_a> (P,)`` on ``2n + 1`` wires, broadcast over the
    patches (PennyLane's parameter broadcasting: one tape with a batch dimension, not ``P`` tapes, on
    devices that support it). Patches are normalised and zero-padded by ``AmplitudeEmbedding``, so all-zero
    patches must be left out by the caller (they have no state)."""
    import pennylane as qml

    dev = qml.device(device, wires=2 * n + 1)
    kwargs = {} if diff_method is None else {"diff_method": diff_method}

    @qml.qnode(dev, interface=interface, **kwargs)
    def circuit(patches, theta):
        qml.AmplitudeEmbedding(patches, wires=range(1, n + 1), pad_with=0.0, normalize=True)
        for layer in range(layers):
            for q in range(n):
                qml.RX(theta[layer, q, 0], wires=n + 1 + q)
                qml.RZ(theta[layer, q, 1], wires=n + 1 + q)
            if n > 1:
                for q in range(n):
                    qml.CNOT(wires=[n + 1 + q, n + 1 + (q + 1) % n])
        qml.Hadamard(0)
        for q in range(n):
            qml.CSWAP(wires=[0, 1 + q, n + 1 + q])
        qml.Hadamard(0)
        return qml.expval(qml.Z(0))

    return circuit if shots is None else qml.set_shots(circuit, shots=shots)


# -- Qiskit Aer -----------------------------------------------------------------------------------------
def aer_swap_tests(patches: Tensor, theta: Tensor, shots: int, seed: int = 0) -> tuple[Tensor, str]:
    """Shot estimates of ``<Z_a>`` for ``patches`` ``(P, 2**n)`` (nonzero, any scale) against the ansatz filter
    ``theta`` ``(L, n, 2)`` on Aer's ``SamplerV2``; returns ``(estimates (P,), how)``.

    Uses :class:`qucnn.qiskit.QiskitExecutor` (all ``P`` circuits as ONE parametrised PUB: Mottonen data
    preparation, the ansatz, the SWAP test) when it is importable, else the same circuits built here with
    Qiskit's ``StatePreparation`` and run as one batch on ``AerSimulator``.
    """

    n = theta.shape[1]
    side = 2 ** (n // 2)
    try:
        from ..qiskit import QiskitExecutor

        layer = QuConv2d(1, 1, (side, 2**n // side), layers=theta.shape[0]).double()
        with torch.no_grad():
            layer.theta.copy_(theta.unsqueeze(0))
        images = patches.double().reshape(-1, 1, side, 2**n // side)  # one patch per 'image'
        z = QiskitExecutor(shots=shots, seed=seed, method="gates").forward(layer, images)
        return z.reshape(-1), "qucnn.qiskit.QiskitExecutor (one parametrised PUB, SamplerV2)"
    except ImportError:
        return _aer_direct(patches, theta, shots, seed), "circuits built in qucnn.bench (AerSimulator)"


def _aer_direct(patches: Tensor, theta: Tensor, shots: int, seed: int) -> Tensor:
    from qiskit import ClassicalRegister, QuantumCircuit, transpile
    from qiskit.circuit.library import StatePreparation
    from qiskit_aer import AerSimulator


    layers, n, _ = theta.shape
    circuits = []
    for row in patches.double():
        qc = QuantumCircuit(2 * n + 1)
        qc.add_register(ClassicalRegister(1, "a"))
        vec = (row / row.norm()).numpy()
        qc.append(StatePreparation(vec), list(reversed(range(1, n + 1))))  # Qiskit reads little-endian
        for layer in range(layers):
            for q in range(n):
                qc.rx(float(theta[layer, q, 0]), n + 1 + q)
                qc.rz(float(theta[layer, q, 1]), n + 1 + q)
            for c, t in ring_pairs(n):
                qc.cx(n + 1 + c, n + 1 + t)
        qc.h(0)
        for q in range(n):
            qc.cswap(0, 1 + q, n + 1 + q)
        qc.h(0)
        qc.measure(0, 0)
        circuits.append(qc)
    backend = AerSimulator(seed_simulator=seed)
    result = backend.run(transpile(circuits, backend, optimization_level=0), shots=shots).result()
    zeros = [result.get_counts(i).get("0", 0) for i in range(len(circuits))]
    return torch.tensor([2 * z / shots - 1 for z in zeros], dtype=torch.float64)


__all__ = ["missing", "version", "numpy_patches", "numpy_fidelities", "numpy_forward",
           "pennylane_swap_test", "aer_swap_tests", "EXTRA"]
