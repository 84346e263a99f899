"""qucnn.qiskit: exported circuits against our simulator, Aer shot runs against exact values, the
executor against the PyTorch layer, noise, resources, the CLI commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import qiskit  # CI installs it; the missing case is tests/test_qiskit_missing.py
import torch
from conftest import EXACT, NEAR, SIGMAS, random_state
from qiskit.quantum_info import Statevector

from qucnn import FilterAnsatz, QuConv2d, amplitude_encode, swap_test
from qucnn import qiskit as qq
from qucnn.backends import get_backend
from qucnn.core.geometry import ConvSpec
from qucnn.core.swap_test import swap_test_circuit_state
from qucnn.core.windows import valid_patches
from qucnn.nn.gradients import shifted_thetas


def statevector(circuit) -> np.ndarray:
    return Statevector(circuit.remove_final_measurements(inplace=False)).data


def ours_as_qiskit(state: torch.Tensor) -> np.ndarray:
    return qq.to_little_endian(state.reshape(-1).to(torch.complex128)).numpy()


def within_sigmas(estimate: torch.Tensor, expectation: torch.Tensor, variance: torch.Tensor) -> float:
    """Largest |estimate - expectation| in standard errors (exact results with zero variance count as 0)."""
    err = (estimate.double() - expectation.double()).abs()
    sigma = variance.double().clamp_min(0).sqrt()
    assert bool((err[sigma == 0] < NEAR).all()), "a zero-variance outcome was not exact"
    return float((err[sigma > 0] / sigma[sigma > 0]).max()) if bool((sigma > 0).any()) else 0.0


# -- amplitude order -------------------------------------------------------------------------------
def test_little_endian_reverses_bits_and_is_an_involution(gen):
    idx = torch.arange(8, dtype=torch.float64)
    expected = torch.tensor([int(f"{i:03b}"[::-1], 2) for i in range(8)], dtype=torch.float64)
    assert torch.equal(qq.to_little_endian(idx), expected)
    batch = random_state(16, 3, gen)
    assert torch.equal(qq.from_little_endian(qq.to_little_endian(batch)), batch)
    assert np.array_equal(qq.to_little_endian(idx.numpy()), expected.numpy())
    # our qubit 0 is the most significant bit: X on qubit 0 of 3 gives our amplitude index 4
    circuit = qiskit.QuantumCircuit(3)
    circuit.x(0)
    ours = torch.zeros(8, dtype=torch.complex128)
    ours[4] = 1
    assert np.allclose(statevector(circuit), ours_as_qiskit(ours), atol=EXACT)
    with pytest.raises(ValueError, match="2\\*\\*n"):
        qq.to_little_endian(torch.zeros(6))


# -- every exported circuit equals our simulator ----------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_filter_circuit_statevector(n, layers, gen):
    theta = 2 * math.pi * torch.rand(layers, n, 2, generator=gen, dtype=torch.float64)
    ours = FilterAnsatz(n, layers).state(theta.unsqueeze(0))
    assert np.allclose(statevector(qq.filter_circuit(theta)), ours_as_qiskit(ours), atol=NEAR, rtol=0)


@pytest.mark.parametrize("m", [2, 3, 8, 9, 16])
@pytest.mark.parametrize("method", ["gates", "unitary"])
def test_state_preparation_statevector(m, method, gen):
    x = torch.randn(m, generator=gen, dtype=torch.float64)  # signed: exercises the Mottonen signs
    got = statevector(qq.state_preparation_circuit(x, method))
    assert np.allclose(got, ours_as_qiskit(amplitude_encode(x)), atol=NEAR, rtol=0)


@pytest.mark.parametrize("method", ["gates", "unitary"])
def test_state_preparation_of_complex_states(method, gen):
    f = random_state(8, 1, gen)[0]  # complex: StatePreparation ("gates") or the complex SVD unitary
    assert np.allclose(statevector(qq.state_preparation_circuit(f, method)), ours_as_qiskit(f), atol=NEAR, rtol=0)


def test_unitary_gate_needs_reversed_qubits(gen):
    """Appending our big-endian matrix on the natural qubit order would prepare the wrong state."""
    from qucnn import svd_unitary

    x = amplitude_encode(torch.rand(1, 8, generator=gen, dtype=torch.float64))
    naive = qiskit.QuantumCircuit(3)
    naive.unitary(svd_unitary(x)[0].numpy(), [0, 1, 2])
    assert not np.allclose(statevector(naive), ours_as_qiskit(x), atol=1e-3)
    assert np.allclose(statevector(qq.state_preparation_circuit(x[0], "unitary")), ours_as_qiskit(x), atol=NEAR)


@pytest.mark.parametrize("method", ["gates", "unitary"])
@pytest.mark.parametrize("upstream", [None, -0.4, 0.7])
def test_swap_test_circuits_statevector_and_ancilla(method, upstream, gen):
    n, layers = 2, 2
    x = torch.rand(4, generator=gen, dtype=torch.float64)
    theta = 2 * math.pi * torch.rand(layers, n, 2, generator=gen, dtype=torch.float64)
    f = FilterAnsatz(n, layers).state(theta.unsqueeze(0))
    xs = amplitude_encode(x).unsqueeze(0).to(torch.complex128)
    circuit = qq.swap_test_circuit(x, theta, upstream=upstream, method=method)
    assert circuit.num_qubits == 2 * n + 1 + (upstream is not None) and circuit.num_clbits == 1
    got = statevector(circuit)
    assert np.allclose(got, ours_as_qiskit(swap_test_circuit_state(xs, f, upstream)), atol=NEAR, rtol=0)
    fid = float(swap_test(xs[0], f[0]))
    p0 = Statevector(got).probabilities([0])[0]  # qubit 0 = the SWAP ancilla in both conventions
    assert abs(p0 - (1 + (1 if upstream is None else upstream) * fid) / 2) < NEAR


def test_swap_test_with_a_precomputed_filter_state(gen):
    x, f = torch.rand(16, generator=gen, dtype=torch.float64), random_state(16, 1, gen, complex_=False)[0]
    for method in ("gates", "unitary"):
        got = statevector(qq.swap_test_circuit(x, filter_state=f, method=method, measure=False))
        xs, fs = amplitude_encode(x)[None].to(torch.complex128), f[None].to(torch.complex128)
        want = swap_test_circuit_state(xs, fs)
        assert np.allclose(got, ours_as_qiskit(want), atol=NEAR, rtol=0)
    with pytest.raises(ValueError, match="exactly one"):
        qq.swap_test_circuit(x, torch.zeros(1, 4, 2), filter_state=f)
    with pytest.raises(ValueError, match="theta is for 2 qubits"):
        qq.swap_test_circuit(x, torch.zeros(1, 2, 2))


def _bell_estimate(probs_little: np.ndarray, n: int, upstream: bool) -> float:
    """1 - 2 P(odd parity of sum_q x_q f_q (+ b)) from the full probability vector."""
    probs = qq.to_little_endian(probs_little)
    nq = int(math.log2(len(probs)))
    idx = np.arange(len(probs))
    bit = lambda q: (idx >> (nq - 1 - q)) & 1  # noqa: E731  (our qubit q, big-endian index)
    parity = sum(bit(1 + q) & bit(1 + n + q) for q in range(n)) + (bit(2 * n + 1) if upstream else 0)
    return float(1 - 2 * probs[parity % 2 == 1].sum())


@pytest.mark.parametrize("upstream", [None, 0.6])
def test_bell_overlap_gives_the_swap_test_value(upstream, gen):
    """Bell-basis test: E[(-1)^(sum_q x_q AND f_q)] = Tr(SWAP rho x sigma) = |<f|x>|^2 (times delta)."""
    n = 3
    x = torch.randn(8, generator=gen, dtype=torch.float64)
    theta = 2 * math.pi * torch.rand(2, n, 2, generator=gen, dtype=torch.float64)
    fid = float(swap_test(amplitude_encode(x).to(torch.complex128), FilterAnsatz(n, 2).state(theta)))
    circuit = qq.swap_test_circuit(x, theta, upstream=upstream, overlap="bell")
    probs = Statevector(circuit.remove_final_measurements(inplace=False)).probabilities()
    assert abs(_bell_estimate(probs, n, upstream is not None) - (upstream or 1) * fid) < NEAR
    assert [r.name for r in circuit.cregs] == ["x", "f"] + (["b"] if upstream is not None else [])


def test_template_binds_to_the_same_circuits(gen):
    from qucnn.core.encoding import mottonen_ops

    ops = mottonen_ops(torch.rand(3, 8, generator=gen, dtype=torch.float64)) + \
        FilterAnsatz(3, 1).ops(torch.rand(1, 1, 3, 2, generator=gen, dtype=torch.float64))  # (1, 1) broadcasts
    template, values = qq.ops_to_template(ops, 3)
    assert values.shape == (3, template.num_parameters)
    for i in range(3):
        bound = template.assign_parameters(values[i])
        assert np.allclose(statevector(bound), statevector(qq.ops_to_circuit(ops, 3, i)), atol=EXACT)


# -- Aer shot runs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,overlap,complex_", [("unitary", "cswap", False), ("gates", "cswap", True),
                                                      ("gates", "bell", False), ("unitary", "bell", True)])
def test_sample_swap_tests_within_five_sigma(method, overlap, complex_, gen):
    shots, b = 4000, 6
    data = torch.rand(b, 7, generator=gen, dtype=torch.float64)
    data[2] = 0  # all-zero: not run, 0
    filters = random_state(8, b, gen, complex_=complex_)
    upstream = 2 * torch.rand(b, generator=gen, dtype=torch.float64) - 1
    fid = swap_test(amplitude_encode(data).to(filters.dtype), filters)
    for up in (None, upstream):
        z = qq.sample_swap_tests(data, filters, shots, upstream=up, seed=7, method=method, overlap=overlap)
        assert z.dtype == torch.float64 and z.shape == (b,) and z[2] == 0
        expect = fid if up is None else up * fid
        assert within_sigmas(z, expect, (1 - expect**2) / shots) < SIGMAS


def test_sample_swap_tests_broadcasts_one_filter_and_is_seeded(gen):
    data = torch.rand(5, 4, generator=gen, dtype=torch.float64)
    f = random_state(4, 1, gen, complex_=False)
    a = qq.sample_swap_tests(data, f, 500, seed=3)
    assert torch.equal(a, qq.sample_swap_tests(data, f, 500, seed=3))
    fid = swap_test(amplitude_encode(data), f)
    assert within_sigmas(a, fid, (1 - fid**2) / 500) < SIGMAS


def test_sample_swap_tests_runs_one_job_with_a_given_sampler(gen):
    from qiskit_aer.primitives import SamplerV2

    class Counting(SamplerV2):
        calls = 0

        def run(self, pubs, *, shots=None):
            Counting.calls += 1
            return super().run(pubs, shots=shots)

    data = torch.rand(6, 4, generator=gen, dtype=torch.float64)
    f = random_state(4, 6, gen, complex_=False)
    for method in ("gates", "unitary"):
        before = Counting.calls
        z = qq.sample_swap_tests(data, f, 300, sampler=Counting(seed=1), method=method)
        assert Counting.calls - before == 1 and z.shape == (6,)


def test_split_runs_are_independent_and_reproducible(gen, monkeypatch):
    """Past MAX_SHOTS_PER_RUN a call is split into jobs; each job gets its own derived seed."""
    from qucnn.backends import Filters, QiskitBackend
    from qucnn.qiskit import sampling

    monkeypatch.setattr(sampling, "MAX_SHOTS_PER_RUN", 100)  # one circuit per job
    data = torch.rand(8, 4, generator=gen, dtype=torch.float64)
    f = random_state(4, 1, gen, complex_=False)
    fid = swap_test(amplitude_encode(data), f)
    for method in ("gates", "unitary"):
        runs = [QiskitBackend(seed=5, method=method).circuit_expectations(data, Filters(states=f),
                                                                           shots=100) for _ in range(2)]
        assert torch.equal(runs[0].values, runs[1].values) and runs[0].extras["jobs"] == 8
        assert within_sigmas(runs[0].values, fid, (1 - fid**2) / 100) < SIGMAS
    z = qq.sample_swap_tests(data[:1].expand(8, 4), f, 100, seed=5)  # 8 copies: one circuit, 800 shots split
    assert len(set(z.tolist())) > 1  # equal seeds or shared shots would give 8 equal estimates


def test_sample_swap_tests_errors(gen):
    data, f = torch.rand(2, 4, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="filters must have shape"):
        qq.sample_swap_tests(data, torch.rand(2, 8), 10)
    with pytest.raises(ValueError, match="upstream"):
        qq.sample_swap_tests(data, f, 10, upstream=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="all zero"):
        qq.sample_swap_tests(data, torch.zeros(1, 4), 10)
    with pytest.raises(ValueError, match="overlap"):
        qq.sample_swap_tests(data, f, 10, overlap="hadamard")
    with pytest.raises(ValueError, match="method"):
        qq.sample_swap_tests(data, f, 10, method="svd")
    with pytest.raises(ValueError, match="positive"):
        qq.sample_swap_tests(data, f, 0)
    with pytest.raises(TypeError, match="real"):
        qq.sample_swap_tests(data.to(torch.complex128), f, 10)
    with pytest.raises(ValueError, match="your own sampler"):
        qq.sample_swap_tests(data, f, 10, sampler=object(), noise_model=qq.default_noise_model())


# -- the executor against the PyTorch layer -------------------------------------------------------------
@pytest.fixture
def small_layer():
    layer = QuConv2d(1, 2, 2, layers=2, generator=torch.Generator().manual_seed(5)).double()
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x[0, 0, :2, :2] = 0  # one all-zero patch
    return layer, x


@pytest.mark.parametrize("overlap", ["cswap", "bell"])
def test_executor_forward_matches_the_layer(small_layer, overlap):
    layer, x = small_layer
    shots = 2000
    executor = qq.QiskitExecutor(shots=shots, seed=11, overlap=overlap)
    y = executor.forward(layer, x)
    exact = layer(x).detach()
    assert y.shape == exact.shape == (1, 2, 4, 4) and y[0, :, 0, 0].eq(0).all()
    assert within_sigmas(y, exact, (1 - exact**2) / shots) < SIGMAS
    assert executor.last_run == {"circuits": 30, "shots": 30 * shots, "jobs": 1}


@pytest.mark.parametrize("method", ["parameter-shift", "entanglement"])
def test_executor_gradients_match_the_layer(small_layer, method):
    layer, x = small_layer
    shots = 4000
    # positive upstream values add up coherently: the largest component is ~60 sigma, so a 10% scale
    # error fails the 5-sigma bound; the spread in [0.5, 1] exercises different RY(arccos delta)
    g = 0.5 + 0.5 * torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    layer.zero_grad()
    layer(x).backward(g)
    exact = layer.theta.grad.clone()
    est = qq.QiskitExecutor(shots=shots, seed=12).gradient(layer, x, g, method=method)
    assert est.shape == exact.shape and est.dtype == exact.dtype
    # binomial variances of every circuit, from the exact shifted fidelities (zero patches are not run)
    states = layer.ansatz.state(shifted_thetas(layer.theta.detach())[0])  # (2, P, O, d)
    spec = ConvSpec.make(2)
    fid = get_backend("torch").maps(x, states.reshape(-1, states.shape[-1]), spec)[0].reshape(2, -1, 2, 4, 4)
    valid = valid_patches(x, spec)[0, 0]
    if method == "parameter-shift":
        var = g[0] ** 2 / 4 * (2 - fid[0] ** 2 - fid[1] ** 2) / shots
    else:
        c = g.abs().max()
        delta = g[0] / c
        var = c**2 / 4 * (2 - delta**2 * (fid[0] ** 2 + fid[1] ** 2)) / shots
    var = (var * valid).sum((-1, -2)).T.reshape(exact.shape)  # (O, P) -> (O, L, n, 2)
    assert within_sigmas(est, exact, var) < SIGMAS


def test_executor_gradient_subset_and_errors(small_layer):
    layer, x = small_layer
    g = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    executor = qq.QiskitExecutor(shots=100, seed=0)
    est = executor.gradient(layer, x, g, params=[0, 3])
    assert est.reshape(2, -1)[:, [1, 2, 4, 5, 6, 7]].eq(0).all()
    assert executor.last_run["circuits"] == 2 * 2 * 2 * 15  # (+-) x 2 angles x 2 filters x 15 patches
    with pytest.raises(ValueError, match="upstream_grad must have shape"):
        executor.gradient(layer, x, g[:, :1])
    with pytest.raises(ValueError, match="scale must be"):
        executor.gradient(layer, x, g * 2, scale=1.0)
    with pytest.raises(ValueError, match="params must be"):
        executor.gradient(layer, x, g, params=[8])
    with pytest.raises(ValueError, match="method must be"):
        executor.gradient(layer, x, g, method="finite-difference")
    with pytest.raises(TypeError, match="QuConv2d"):
        executor.forward(torch.nn.Conv2d(1, 1, 2), x)


# -- noise ---------------------------------------------------------------------------------------------
def test_readout_noise_scales_the_estimate_exactly(gen):
    """A symmetric bit flip r on the one measured ancilla maps <Z> to (1 - 2r) <Z>."""
    shots, r = 4000, 0.05
    data = torch.rand(4, 8, generator=gen, dtype=torch.float64)
    f = random_state(8, 1, gen, complex_=False)
    model = qq.default_noise_model(p1=0.0, p2=0.0, readout=r)
    z = qq.sample_swap_tests(data, f, shots, noise_model=model, seed=2, method="gates")
    expect = (1 - 2 * r) * swap_test(amplitude_encode(data), f)
    assert within_sigmas(z, expect, (1 - expect**2) / shots) < SIGMAS


def test_gate_noise_biases_identical_states_below_one(gen):
    shots = 2000
    data = torch.rand(2, 4, generator=gen, dtype=torch.float64)
    model = qq.default_noise_model(p1=1e-3, p2=2e-2, readout=0.0)
    clean = qq.sample_swap_tests(data, data, shots, seed=4, method="gates")
    noisy = qq.sample_swap_tests(data, data, shots, noise_model=model, seed=4, method="gates")
    assert clean.eq(1).all()  # F = 1: every noiseless shot reads 0
    # ~20 CNOTs at 2% each leave about 0.98**20 = 0.67 of <Z_a>; shot noise is ~0.02 at 2000 shots
    assert (noisy < 0.9).all()
    with pytest.raises(ValueError, match="p2"):
        qq.default_noise_model(p2=1.5)


# -- resources and the CLI -----------------------------------------------------------------------------
def test_resources_of_every_kind(gen):
    patch, theta = torch.rand(16, generator=gen, dtype=torch.float64), torch.rand(3, 4, 2, generator=gen)
    kinds = qq.example_circuits(patch, theta)
    res = {k: qq.circuit_resources(c) for k, c in kinds.items()}
    assert res["filter_ansatz"]["cx_all_to_all"] == 12  # 3 rings of 4 CNOTs, nothing to cancel
    assert res["swap_test"]["qubits"] == 9 and res["entanglement"]["qubits"] == 10
    assert res["swap_test_bell"]["qubits"] == 8  # the idle qubit 0 is dropped
    assert res["swap_test_bell"]["cx"] < res["swap_test"]["cx"]
    assert res["state_prep_gates"]["cx_all_to_all"] < res["state_prep_unitary"]["cx_all_to_all"]
    # the data register by a unitary instead of gates costs CX; so does the filter's by a unitary too
    assert (res["swap_test"]["cx_all_to_all"] < res["swap_test_data_svd"]["cx_all_to_all"]
            < res["swap_test_unitary"]["cx_all_to_all"])
    assert all(r["cx"] >= r["cx_all_to_all"] for r in res.values())


def test_circuits_command_writes_qasm_and_resources(tmp_path):
    from qucnn.cli import main

    assert main(["circuits", "--qasm", str(tmp_path / "qasm"), "--out", str(tmp_path), "--layers", "1"]) == 0
    table = json.loads((tmp_path / "resources.json").read_text())["circuits"]
    assert set(table) == {p.stem for p in (tmp_path / "qasm").glob("*.qasm")} and "entanglement" in table
    text = (tmp_path / "qasm" / "swap_test.qasm").read_text()
    assert text.startswith("OPENQASM 3") and "cswap" in text and "measure" in text


def test_noise_experiment_tiny(tmp_path, monkeypatch):
    from qucnn.experiments import noise

    tiny = noise.NoiseConfig(sweep=2, patches=1, params=1, shots=200, gradient_shots=200)
    monkeypatch.setattr(noise, "QUICK", tiny)
    monkeypatch.setattr(noise, "FORWARD_RUNS", noise.FORWARD_RUNS[:1] + noise.FORWARD_RUNS[3:])
    monkeypatch.setattr(noise, "FILTER_DRAWS", 2)
    result = noise.run_noise(tmp_path, quick=True)
    saved = json.loads((tmp_path / "noise.json").read_text())
    assert (tmp_path / "noise.png").stat().st_size > 0 and saved["forward"]["exact"] == result["forward"]["exact"]
    assert len(saved["forward"]["exact"]) == 3 and len(saved["gradients"]["runs"]) == 4
