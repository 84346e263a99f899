"""Amplitude encoding and the two state preparations."""

from __future__ import annotations

import pytest
import torch
from conftest import EXACT, NEAR

from qucnn import amplitude_encode, mottonen_ops, state_preparation_ops, svd_unitary
from qucnn.core.encoding import num_qubits_for
from qucnn.core.simulator import simulate


def test_pads_to_power_of_two_and_normalises(gen):
    x = torch.rand(4, 3, 9, dtype=torch.float64, generator=gen)
    enc = amplitude_encode(x)
    assert enc.shape == (4, 3, 16)
    assert torch.allclose(enc.norm(dim=-1), torch.ones(4, 3, dtype=torch.float64), atol=EXACT)
    assert torch.all(enc[..., 9:] == 0)
    assert torch.allclose(enc[..., :9] * x.norm(dim=-1, keepdim=True), x, atol=EXACT)


def test_real_stays_real_zero_maps_to_zero_and_ints_convert():
    enc = amplitude_encode(torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]]))
    assert not enc.is_complex()
    assert torch.equal(enc[0], torch.zeros(4))
    assert torch.allclose(enc[1], torch.tensor([0.6, 0.0, 0.8, 0.0]))
    assert amplitude_encode(torch.tensor([1, 1], dtype=torch.uint8)).is_floating_point()


@pytest.mark.parametrize("m,n", [(1, 0), (2, 1), (3, 2), (4, 2), (9, 4), (16, 4), (17, 5)])
def test_qubit_count(m, n):
    assert num_qubits_for(m) == n
    assert amplitude_encode(torch.ones(m)).shape[-1] == 2**n


def test_encoding_errors():
    with pytest.raises(ValueError, match="must be finite, got 1 NaN/inf"):
        amplitude_encode(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="must be finite"):
        amplitude_encode(torch.tensor([float("inf"), 1.0]))
    with pytest.raises(TypeError, match="expects a torch.Tensor, got list"):
        amplitude_encode([1.0, 2.0])
    with pytest.raises(ValueError, match="got a scalar"):
        amplitude_encode(torch.tensor(1.0))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_svd_unitary_is_unitary_and_prepares_x(n, gen):
    x = torch.randn(6, 2**n, dtype=torch.float64, generator=gen)
    x[0, 1:] = 0  # a basis state: a degenerate SVD
    w = svd_unitary(x)
    eye = torch.eye(2**n, dtype=torch.float64)
    assert torch.allclose(w.transpose(-1, -2) @ w, eye.expand_as(w), atol=EXACT)
    assert torch.allclose(w[..., 0], x / x.norm(dim=-1, keepdim=True), atol=EXACT)


def test_svd_unitary_complex_fixes_the_phase(gen):
    x = torch.randn(3, 8, dtype=torch.complex128, generator=gen)
    w = svd_unitary(x)
    assert torch.allclose(w[..., 0], x / x.norm(dim=-1, keepdim=True), atol=EXACT)
    assert torch.allclose(w.conj().transpose(-1, -2) @ w, torch.eye(8, dtype=torch.complex128).expand_as(w), atol=EXACT)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_gate_and_unitary_preparations_prepare_the_same_state(n, gen):
    x = torch.randn(5, 2**n, dtype=torch.float64, generator=gen)
    x[1, ::2] = 0  # zero branches make atan2(0, 0) appear
    target = (x / x.norm(dim=-1, keepdim=True)).to(torch.complex128)
    by_gates = simulate(state_preparation_ops(x, method="gates"), n_qubits=n, dtype=torch.complex128)
    by_unitary = simulate(state_preparation_ops(x, method="unitary"), n_qubits=n, dtype=torch.complex128)
    assert torch.allclose(by_gates.reshape(5, -1), target, atol=NEAR)
    assert torch.allclose(by_unitary.reshape(5, -1), target, atol=NEAR)


def test_mottonen_uses_only_ry_and_cnot_with_expected_counts(gen):
    ops = mottonen_ops(torch.randn(2, 16, dtype=torch.float64, generator=gen))
    names = [op.gate for op in ops]
    assert set(names) == {"RY", "CNOT"}
    assert names.count("RY") == 15 and names.count("CNOT") == 14


def test_mottonen_on_other_wires(gen):
    x = torch.randn(1, 4, dtype=torch.float64, generator=gen)
    psi = simulate(mottonen_ops(x, wires=(2, 0)), n_qubits=3, dtype=torch.complex128)
    # qubit 2 carries the first (most significant) bit of x, qubit 0 the second; qubit 1 stays |0>
    amps = psi[0, :, 0, :]  # indexed [q0, q2]
    assert torch.allclose(amps.T.reshape(-1), (x / x.norm()).reshape(-1).to(torch.complex128), atol=NEAR)


def test_preparation_errors(gen):
    with pytest.raises(ValueError, match="all-zero vector has no quantum state"):
        svd_unitary(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="prepares real states"):
        mottonen_ops(torch.ones(1, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="power of two"):
        svd_unitary(torch.ones(1, 3))
    with pytest.raises(ValueError, match="method must be 'gates' or 'unitary'"):
        state_preparation_ops(torch.ones(1, 4), method="magic")
    with pytest.raises(ValueError, match="must be finite"):
        mottonen_ops(torch.tensor([[1.0, float("nan")]]))
