"""Gate registry and simulator kernels against dense-matrix references."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import EXACT, SIGMAS, random_state

from qucnn.core.gates import GATES, Op, rotation
from qucnn.core.simulator import (
    apply_matrix,
    apply_op,
    as_state,
    check_register,
    expval_z,
    probabilities,
    product_state,
    sample_counts,
    simulate,
    zero_state,
)


def dense_op(matrix: torch.Tensor, wires: tuple[int, ...], n: int) -> torch.Tensor:
    """The full 2**n x 2**n matrix of a k-qubit gate, built by brute force over basis states."""
    d, k = 2**n, len(wires)
    full = torch.zeros(d, d, dtype=matrix.dtype)
    for col in range(d):
        bits = [(col >> (n - 1 - q)) & 1 for q in range(n)]
        sub_in = sum(bits[w] << (k - 1 - i) for i, w in enumerate(wires))
        for sub_out in range(2**k):
            new = list(bits)
            for i, w in enumerate(wires):
                new[w] = (sub_out >> (k - 1 - i)) & 1
            row = sum(b << (n - 1 - q) for q, b in enumerate(new))
            full[row, col] += matrix[sub_out, sub_in]
    return full


def sample_op(name: str, n: int, gen: torch.Generator) -> Op:
    spec = GATES[name]
    k = spec.num_wires or 2
    wires = tuple(torch.randperm(n, generator=gen)[:k].tolist())
    if name == "UNITARY":
        q, _ = torch.linalg.qr(torch.randn(3, 2**k, 2**k, dtype=torch.complex128, generator=gen))
        return Op(name, wires, q)
    params = 2 * math.pi * torch.rand(3, spec.num_params, dtype=torch.float64, generator=gen) if spec.num_params else None
    return Op(name, wires, params)


@pytest.mark.parametrize("name", sorted(GATES))
def test_every_kernel_matches_dense_matrix(name, gen):
    n = 4
    op = sample_op(name, n, gen)
    psi = random_state(2**n, 3, gen)
    got = apply_op(as_state(psi), op).reshape(3, -1)
    mats = op.matrix(torch.complex128)
    for b in range(3):
        want = dense_op(mats[min(b, mats.shape[0] - 1)], op.wires, n) @ psi[b]
        assert torch.allclose(got[b], want, atol=EXACT)


@pytest.mark.parametrize("name", [n for n, g in GATES.items() if g.kind != "dense"])
def test_fast_paths_match_general_kernel(name, gen):
    op = sample_op(name, 5, gen)
    psi = as_state(random_state(32, 3, gen))
    fast = apply_op(psi, op)
    general = apply_matrix(psi, op.matrix(torch.complex128), op.wires)
    assert torch.allclose(fast, general, atol=EXACT)


@pytest.mark.parametrize("name", sorted(GATES))
def test_matrices_are_unitary_and_batched(name, gen):
    op = sample_op(name, 3, gen)
    m = op.matrix(torch.complex128)
    assert m.dim() == 3 and m.shape[0] in (1, 3)
    eye = torch.eye(m.shape[-1], dtype=m.dtype)
    assert torch.allclose(m @ m.conj().transpose(-1, -2), eye.expand_as(m), atol=EXACT)


def test_rotation_matrices_closed_form():
    t = torch.tensor([0.3, -1.7], dtype=torch.float64)
    c, s = torch.cos(t / 2), torch.sin(t / 2)
    rx = rotation("RX", 0, t).matrix(torch.complex128)
    ry = rotation("RY", 0, t).matrix(torch.complex128)
    rz = rotation("RZ", 0, t).matrix(torch.complex128)
    assert torch.allclose(rx[:, 0, 1], -1j * s.to(torch.complex128), atol=EXACT)
    assert torch.allclose(ry[:, 1, 0], s.to(torch.complex128), atol=EXACT)
    assert torch.allclose(rz[:, 1, 1], torch.polar(torch.ones_like(t), t / 2), atol=EXACT)
    assert torch.allclose(rx[:, 0, 0].real, c, atol=EXACT)


def test_qubit_zero_is_most_significant_bit():
    psi = simulate([Op("X", (0,))], n_qubits=3, dtype=torch.complex128)
    assert psi.reshape(-1)[4] == 1  # |100> is index 4


def test_bell_state_probabilities_and_expval():
    psi = simulate([Op("H", (0,)), Op("CNOT", (0, 1))], n_qubits=2, dtype=torch.complex128)
    assert torch.allclose(probabilities(psi, (0, 1)), torch.tensor([[0.5, 0, 0, 0.5]], dtype=torch.float64))
    assert torch.allclose(probabilities(psi, (1,)), torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    assert abs(expval_z(psi, 0).item()) < EXACT


def test_batching_is_one_kernel_call_per_op(gen):
    """A batch of B states through per-state matrices equals B separate runs."""
    theta = torch.rand(6, 1, dtype=torch.float64, generator=gen)
    ops = [Op("H", (0,)), Op("RY", (1,), theta), Op("CNOT", (1, 0)), Op("RZ", (0,), 2 * theta)]
    batched = simulate(ops, n_qubits=2, dtype=torch.complex128)
    assert batched.shape == (6, 2, 2)
    for b in range(6):
        one = [Op(o.gate, o.wires, None if o.params is None else o.params[b:b + 1]) for o in ops]
        assert torch.allclose(simulate(one, n_qubits=2, dtype=torch.complex128)[0], batched[b], atol=EXACT)


def test_complex64_and_dtype_follow_inputs():
    theta = torch.tensor([[0.4]], dtype=torch.float32)
    psi = simulate([Op("RX", (0,), theta)], n_qubits=1, dtype=torch.complex64)
    assert psi.dtype == torch.complex64
    assert abs(probabilities(psi, (0,))[0, 1].item() - math.sin(0.2) ** 2) < 1e-6


def test_product_state_orders_parts():
    a = torch.tensor([[0.0, 1.0]], dtype=torch.complex128)
    b = torch.tensor([[1.0, 0.0]], dtype=torch.complex128)
    assert product_state(a, b).reshape(-1)[2] == 1  # |10>


def test_sample_counts_binomial_moments(gen):
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64).expand(4000, 4)
    counts = sample_counts(p, 50, gen).double()
    assert torch.all(counts.sum(-1) == 50)
    mean, var = counts.mean(0), counts.var(0)
    expected_var = 50 * p[0] * (1 - p[0])
    assert torch.all((mean - 50 * p[0]).abs() < SIGMAS * (expected_var / 4000).sqrt())
    # the sample variance of a binomial has relative standard error about sqrt(2 / N)
    assert torch.all((var / expected_var - 1).abs() < SIGMAS * math.sqrt(2 / 4000))


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="unknown gate 'FOO'"):
        Op("FOO", (0,))
    with pytest.raises(ValueError, match="acts on 2 wires"):
        Op("CNOT", (0,))
    with pytest.raises(ValueError, match="repeated wires"):
        Op("CNOT", (1, 1))
    with pytest.raises(ValueError, match=r"needs params of shape \(B, 1\)"):
        Op("RX", (0,))
    with pytest.raises(ValueError, match="does not fit a 2-qubit state"):
        simulate([Op("H", (2,))], n_qubits=2)
    with pytest.raises(ValueError, match="shots must be a positive int"):
        sample_counts(torch.tensor([[1.0, 0.0]]), 0)
    with pytest.raises(ValueError, match=r"needs .* GiB"):
        check_register(60, 1, torch.complex128)
    with pytest.raises(ValueError, match=r"needs .* GiB"):
        zero_state(45)
    with pytest.raises(ValueError, match=r"amplitudes of shape \(B, 2\*\*n\)"):
        as_state(torch.zeros(2, 3))
