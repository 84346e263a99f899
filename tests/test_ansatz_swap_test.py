"""The Fig. 1 ansatz and the SWAP test three ways (closed form, full circuit, Eq. 15 circuit)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import EXACT, SIGMAS, random_state

from qucnn import FilterAnsatz, swap_test, swap_test_circuit
from qucnn.core.ansatz import ring_pairs
from qucnn.core.gates import GATES
from qucnn.core.swap_test import estimate_z, swap_test_circuit_state, swap_test_ops


def reference_ansatz_state(theta: torch.Tensor) -> torch.Tensor:
    """Dense-matrix construction of one filter state, independent of the simulator kernels."""
    layers, n, _ = theta.shape
    psi = torch.zeros(2**n, dtype=torch.complex128)
    psi[0] = 1
    for layer in range(layers):
        for q in range(n):
            for gate, angle in (("RX", theta[layer, q, 0]), ("RZ", theta[layer, q, 1])):
                m = GATES[gate].matrix(angle.reshape(1, 1), torch.complex128, None)[0]
                full = torch.kron(torch.kron(torch.eye(2**q), m), torch.eye(2 ** (n - q - 1)))
                psi = full.to(torch.complex128) @ psi
        for c, t in ring_pairs(n):
            idx = torch.arange(2**n)
            flip = ((idx >> (n - 1 - c)) & 1) << (n - 1 - t)
            psi = psi[idx ^ flip]
    return psi


@pytest.mark.parametrize("n,layers", [(1, 1), (2, 2), (3, 1), (4, 3)])
def test_ansatz_matches_dense_reference(n, layers, gen):
    ansatz = FilterAnsatz(n, layers)
    theta = 2 * math.pi * torch.rand(3, layers, n, 2, dtype=torch.float64, generator=gen)
    states = ansatz.state(theta)
    assert states.shape == (3, 2**n) and states.dtype == torch.complex128
    for b in range(3):
        assert torch.allclose(states[b], reference_ansatz_state(theta[b]), atol=EXACT)


def test_ansatz_structure_and_batch_shapes():
    ansatz = FilterAnsatz(4, 3)
    assert ansatz.n_params == 24
    ops = ansatz.ops(torch.zeros(3, 4, 2))
    assert [op.gate for op in ops[:8]] == ["RX", "RZ"] * 4
    assert [op.wires for op in ops[8:12]] == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert ring_pairs(1) == [] and ring_pairs(2) == [(0, 1), (1, 0)]
    assert ansatz.state(torch.zeros(2, 5, 3, 4, 2)).shape == (2, 5, 16)
    assert ansatz.state(torch.zeros(3, 4, 2, dtype=torch.float32)).dtype == torch.complex64
    assert torch.allclose(ansatz.state(torch.zeros(3, 4, 2)), torch.eye(16, dtype=torch.complex64)[0])


def test_ansatz_errors():
    with pytest.raises(ValueError, match="n_qubits must be a positive int, got 0"):
        FilterAnsatz(0, 1)
    with pytest.raises(ValueError, match=r"theta must have shape \(..., 3, 4, 2\), got \(2, 4, 2\)"):
        FilterAnsatz(4, 3).state(torch.zeros(2, 4, 2))
    with pytest.raises(TypeError, match="real floating"):
        FilterAnsatz(1, 1).state(torch.zeros(1, 1, 2, dtype=torch.long))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_full_swap_test_circuit_equals_closed_form(n, gen):
    x = random_state(2**n, 4, gen, complex_=False)
    f = random_state(2**n, 4, gen)
    exact = swap_test(f, x)
    assert torch.allclose(swap_test_circuit(x, f), exact, atol=EXACT)
    # the ancilla's P(0) = (1 + F) / 2 (Eq. 7)
    from qucnn.core.simulator import probabilities
    p0 = probabilities(swap_test_circuit_state(x, f), (0,))[:, 0]
    assert torch.allclose(p0, (1 + exact) / 2, atol=EXACT)


@pytest.mark.parametrize("delta", [-1.0, -0.6, -0.1, 0.0, 0.35, 0.8, 1.0])
def test_entanglement_circuit_gives_delta_times_fidelity(delta, gen):
    """Eq. 15: <Z_a> = cos(beta) F with beta = arccos(delta)."""
    x = random_state(8, 5, gen, complex_=False)
    f = random_state(8, 5, gen)
    z = swap_test_circuit(x, f, upstream=delta)
    assert torch.allclose(z, delta * swap_test(f, x), atol=EXACT)


def test_entanglement_circuit_batched_deltas(gen):
    x, f = random_state(4, 6, gen, complex_=False), random_state(4, 6, gen)
    delta = torch.linspace(-1, 1, 6, dtype=torch.float64)
    assert torch.allclose(swap_test_circuit(x, f, upstream=delta), delta * swap_test(f, x), atol=EXACT)
    ops = swap_test_ops(2, upstream=delta)
    assert ops[0].gate == "RY" and ops[0].wires == (5,) and ops[-1].gate == "CNOT" and ops[-1].wires == (5, 0)


def test_swap_test_closed_form_properties(gen):
    a, b = random_state(16, 10, gen), random_state(16, 10, gen)
    fid = swap_test(a, b)
    assert torch.all((fid >= 0) & (fid <= 1 + EXACT))
    assert torch.allclose(fid, swap_test(b, a), atol=EXACT)
    assert torch.allclose(swap_test(a, a), torch.ones(10, dtype=torch.float64), atol=EXACT)
    assert torch.allclose(fid, (a.conj() * b).sum(-1).abs() ** 2, atol=EXACT)
    assert swap_test(a[:1], b).shape == (10,)  # broadcasts


@pytest.mark.parametrize("fidelity,shots", [(0.0, 10), (0.3, 100), (0.9, 1000), (1.0, 50)])
def test_shot_estimator_is_unbiased_with_binomial_variance(fidelity, shots, gen):
    trials = 20000
    f = torch.full((trials,), fidelity, dtype=torch.float64)
    est = estimate_z(f, shots, gen)
    var = (1 - fidelity**2) / shots
    assert abs(est.mean().item() - fidelity) <= SIGMAS * math.sqrt(var / trials) + EXACT
    # the sample variance has standard error ~ var * sqrt(2 / trials) (binomial, near-normal)
    assert abs(est.var().item() - var) <= SIGMAS * var * math.sqrt(2 / trials) + EXACT


def test_swap_test_with_shots_uses_the_estimator(gen):
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.6, 0.8], dtype=torch.float64)
    est = swap_test(a.expand(20000, 2), b, shots=100, generator=gen)
    assert abs(est.mean().item() - 0.36) <= SIGMAS * math.sqrt((1 - 0.36**2) / 100 / 20000)
    values = torch.unique(est)
    assert torch.allclose(values, 2 * torch.round((values + 1) * 50) / 100 - 1)  # 2 n0 / S - 1


def test_swap_test_errors():
    a = torch.ones(4) / 2
    with pytest.raises(ValueError, match="same length, got 4 and 2"):
        swap_test(a, torch.ones(2))
    with pytest.raises(ValueError, match="shots must be a positive int or None, got 0"):
        swap_test(a, a, shots=0)
    with pytest.raises(TypeError, match="shots must be a positive int or None, got float"):
        swap_test(a, a, shots=10.0)
    with pytest.raises(ValueError, match="must be finite"):
        swap_test(a, torch.full((4,), float("nan")))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        swap_test([1.0], a)
    with pytest.raises(ValueError, match=r"upstream delta must lie in \[-1, 1\]"):
        swap_test_ops(2, upstream=1.5)
