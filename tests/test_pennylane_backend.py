"""PennyLaneBackend specifics: device objects used as given, device names seeded per call, lightning.qubit,
calls split by max_circuits_per_call. (Forward and every gradient mode within 5 sigma: test_qiskit_backend.py.)"""

from __future__ import annotations

import pennylane as qml
import torch
from conftest import SIGMAS

from qucnn.backends import Filters, PennyLaneBackend, get_backend


def _rows():
    patches = torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theta = torch.rand(6, 2, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = get_backend("torch").circuit_expectations(patches, Filters(theta=theta)).values
    return patches, Filters(theta=theta), exact


def _max_sigmas(z, exact, shots):
    return float(((z - exact).abs() / ((1 - exact**2) / shots).sqrt()).max())


def test_a_device_object_is_used_as_given_and_a_name_is_seeded_per_call():
    patches, filters, exact = _rows()
    shots = 2000
    device = qml.device("default.qubit", seed=7)
    z = PennyLaneBackend(device).circuit_expectations(patches, filters, shots=shots).values
    assert _max_sigmas(z, exact, shots) < SIGMAS
    by_name = PennyLaneBackend("default.qubit")
    a = by_name.circuit_expectations(patches, filters, shots=shots, generator=torch.Generator().manual_seed(3)).values
    b = by_name.circuit_expectations(patches, filters, shots=shots, generator=torch.Generator().manual_seed(3)).values
    assert torch.equal(a, b) and _max_sigmas(a, exact, shots) < SIGMAS


def test_lightning_and_split_calls_with_upstream_deltas():
    patches, filters, exact = _rows()
    shots = 2000
    delta = torch.tensor([-1.0, -0.6, -0.2, 0.0, 0.5, 1.0], dtype=torch.float64)
    backend = PennyLaneBackend("lightning.qubit", max_circuits_per_call=4, seed=0)
    res = backend.circuit_expectations(patches, filters, upstream=delta, shots=shots)
    assert res.extras["jobs"] == 2 and res.extras["distinct"] == 5  # delta = 0 is not run
    assert res.values[3] == 0
    assert _max_sigmas(res.values, delta * exact, shots) < SIGMAS
    assert "lightning.qubit" in repr(backend)
