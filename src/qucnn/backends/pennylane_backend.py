"""``PennyLaneBackend``: QuConv2d's circuits as one broadcast QNode on any PennyLane device with shots
(``default.qubit``, ``lightning.qubit``, plugins such as ``qiskit.aer``), forward and every gradient mode inside
``loss.backward()``.

The circuits are those of the Qiskit backend, from the same registry ops (Mottonen patch preparation, the Fig. 1
ansatz, the SWAP test and the Eq. 15 ancilla): every gate with an angle takes a ``(D,)`` array, so a batch of
``D`` distinct circuits is one broadcast QNode call, and ``qml.sample`` of the ancilla gives each shot's outcome.
Registered as ``"pennylane"`` (``default.qubit``) when PennyLane imports; install with ``qucnn[pennylane]``.

Example:
    >>> from qucnn import QuConv2d
    >>> layer = QuConv2d(1, 2, 2, layers=1, shots=500, backend=PennyLaneBackend(seed=0))
    >>> layer(torch.rand(1, 1, 3, 3)).shape
    torch.Size([1, 2, 2, 2])
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.swap_test import SWAP_ANCILLA, swap_test_ops
from ..utils.checks import MissingExtraError, UsageError, optional_positive_int, pip_install
from .circuit_backend import CircuitBackend, CircuitRows

MISSING = f"the PennyLane backend needs pennylane: {pip_install('pennylane')}"
#: Registry gate -> PennyLane operation name.
GATE_NAMES = {"H": "Hadamard", "X": "PauliX", "Z": "PauliZ", "RX": "RX", "RY": "RY", "RZ": "RZ", "CNOT": "CNOT",
              "CSWAP": "CSWAP"}


class PennyLaneBackend(CircuitBackend):
    """Run QuCNN circuits on a PennyLane device.

    Args:
        device: a device name (``"default.qubit"``, ``"lightning.qubit"``, ...; created for each call with the
            wires it needs and a seed from the call's generator, so seeded runs repeat) or a device object
            (used as given: its own seed, at least ``2n + 2`` wires or dynamic wires).
        seed: without a ``generator``, seeds the devices this backend creates.
        max_circuits_per_call: most circuits broadcast in one QNode call (bounds memory).
        device_options: further keyword arguments for ``qml.device`` (with a device name).

    ``Result.extras["distinct"]`` reports the circuits run (see :mod:`qucnn.backends.circuit_backend`). Pickles
    and deep-copies by its arguments (a device object is live: copies share the backend, pickling raises a
    ``TypeError`` that says so).
    """

    name = "pennylane"

    def __init__(self, device="default.qubit", *, seed: int | None = None, max_circuits_per_call: int | None = 4096,
                 device_options: dict | None = None) -> None:
        super().__init__(seed, device=device, max_circuits_per_call=max_circuits_per_call,
                         device_options=device_options)
        try:
            import pennylane as qml
        except ImportError as err:
            raise MissingExtraError(MISSING) from err
        self._qml = qml
        if not isinstance(device, str) and not hasattr(device, "execute"):
            raise TypeError(f"device must be a PennyLane device or its name, got {type(device).__name__}")
        self.device = device
        self.device_options = dict(device_options or {})
        self.max_circuits_per_call = optional_positive_int(max_circuits_per_call, "max_circuits_per_call")

    def __repr__(self) -> str:
        device = self.device if isinstance(self.device, str) else getattr(self.device, "name", type(self.device))
        return f"PennyLaneBackend(device={device!r})"

    def _device(self, wires: int, seed: int):
        if not isinstance(self.device, str):
            return self.device
        return self._qml.device(self.device, wires=wires, seed=seed, **self.device_options)

    def _qnode(self, rows: CircuitRows, device, shots: int):
        qml = self._qml
        ops = rows.preparation_ops() + swap_test_ops(rows.n, rows.delta)
        gates = []
        for op in ops:
            if op.gate not in GATE_NAMES:
                raise UsageError(f"the PennyLane backend has no {op.gate} gate")
            gates.append((getattr(qml, GATE_NAMES[op.gate]), list(op.wires), op.params is not None))
        angles = [op.params[:, 0].numpy() for op in ops if op.params is not None]

        def circuit(*values):
            k = 0
            for gate, wires, has_angle in gates:
                if has_angle:
                    gate(values[k], wires=wires)
                    k += 1
                else:
                    gate(wires=wires)
            return qml.sample(wires=[SWAP_ANCILLA])

        return qml.set_shots(qml.QNode(circuit, device, interface=None), shots=shots), angles

    def execute(self, groups: list[tuple[CircuitRows, int]], seed: int) -> tuple[list[np.ndarray], dict]:
        outcomes, calls = [], 0
        for g, (rows, shots) in enumerate(groups):
            step = self.max_circuits_per_call or len(rows)
            parts = []
            for i in range(0, len(rows), step):
                part = rows.take(torch.arange(i, min(i + step, len(rows))))
                device = self._device(part.num_qubits(), int(np.random.SeedSequence([seed % 2**63, calls])
                                                             .generate_state(1)[0]))
                qnode, angles = self._qnode(part, device, shots)
                if len(part) == 1:  # no broadcasting for one circuit: PennyLane returns (shots,)
                    angles = [a[0] for a in angles]
                bits = np.asarray(qnode(*angles)).reshape(len(part), shots)
                parts.append(bits.astype(bool))
                calls += 1
            outcomes.append(np.concatenate(parts, 0))
        return outcomes, {"jobs": calls}


__all__ = ["GATE_NAMES", "PennyLaneBackend"]
