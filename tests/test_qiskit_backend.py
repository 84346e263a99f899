"""The circuit backends (QiskitBackend on Aer, PennyLaneBackend) inside loss.backward(): forward values and every
gradient mode within 5 standard errors of the exact ones, deduplication, jobs, readout mitigation, fake devices."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SIGMAS

from qucnn import QuConv2d
from qucnn.backends import CircuitRows, Filters, PennyLaneBackend, QiskitBackend, get_backend
from qucnn.backends.qiskit_backend import mitigate
from qucnn.core.geometry import ConvSpec
from qucnn.core.windows import valid_patches
from qucnn.nn.gradients import sampled_variance, shifted_thetas

CIRCUIT_BACKENDS = ["aer", "pennylane"]


def max_sigmas(estimate: torch.Tensor, exact: torch.Tensor, variance: torch.Tensor) -> float:
    """Largest |estimate - exact| in standard errors; entries with zero variance must be exact."""
    err = (estimate.double() - exact.double()).abs()
    sigma = variance.double().clamp_min(0).sqrt()
    assert bool((err[sigma == 0] < 1e-12).all())
    return float((err[sigma > 0] / sigma[sigma > 0]).max())


@pytest.fixture
def problem():
    layer = QuConv2d(1, 2, 2, layers=2, generator=torch.Generator().manual_seed(5)).double()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x[0, 0, :2, :2] = 0  # one all-zero patch: not run, 0
    return layer, x


@pytest.mark.parametrize("name", CIRCUIT_BACKENDS)
def test_forward_within_five_sigma_and_costs(problem, name):
    layer, x = problem
    exact = layer(x).detach()
    shots = 1000
    layer.backend, layer.shots, layer.generator = name, shots, torch.Generator().manual_seed(1)
    y = layer(x).detach()
    assert y.shape == exact.shape and y.dtype == exact.dtype and torch.all(y[0, :, 0, 0] == 0)
    assert max_sigmas(y, exact, (1 - exact**2) / shots) < SIGMAS
    cost = layer.last_cost["forward"]
    assert cost.circuits == 2 * 8 and cost.shots == 16 * shots and cost.qubits == 5 and cost.wall_s > 0
    layer.generator = torch.Generator().manual_seed(1)
    assert torch.equal(layer(x).detach(), y)  # seeded by the layer's generator: repeatable


def _shift_fidelities(layer: QuConv2d, x: torch.Tensor) -> torch.Tensor:
    """Exact F of every shifted filter: (2, P, O, H', W')."""
    states = layer.ansatz.state(shifted_thetas(layer.theta.detach())[0])
    fid = get_backend("torch").maps(x, states.reshape(-1, states.shape[-1]), ConvSpec.make(2))[0]
    return fid.reshape(2, -1, layer.out_channels, *fid.shape[-2:])


@pytest.mark.parametrize("name", CIRCUIT_BACKENDS)
@pytest.mark.parametrize("mode", ["parameter-shift", "entanglement", "sampled"])
def test_every_gradient_mode_within_five_sigma(problem, name, mode):
    layer, x = problem
    # positive upstream values add up coherently, so a scale error would show; the spread exercises delta
    g = 0.5 + 0.5 * torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    layer(x).backward(g)
    exact = layer.theta.grad.clone()
    layer.zero_grad()
    shots, budget = 1000, 3000
    layer.backend, layer.shots, layer.gradient = name, 100, mode
    layer.generator = torch.Generator().manual_seed(3)
    if mode == "sampled":
        layer.gradient_budget = budget
    else:
        layer.gradient_shots = shots
    xr = x.clone().requires_grad_(True)
    layer(xr).backward(g)
    fid, valid = _shift_fidelities(layer, x), valid_patches(x, ConvSpec.make(2))
    if mode == "parameter-shift":
        var = (g[0] ** 2 / 4 * (2 - fid[0] ** 2 - fid[1] ** 2) / shots * valid[0]).sum((-1, -2))
    elif mode == "entanglement":
        c = g.abs().max()
        var = (c**2 / 4 * (2 - (g[0] / c) ** 2 * (fid[0] ** 2 + fid[1] ** 2)) / shots * valid[0]).sum((-1, -2))
    else:
        var = sampled_variance(g, exact.reshape(2, -1), valid, 8, budget).T
    assert max_sigmas(layer.theta.grad, exact, var.T.reshape(exact.shape)) < SIGMAS
    assert xr.grad is not None and xr.grad.abs().sum() > 0  # the input's gradient is the exact classical one
    cost = layer.last_cost["backward"]
    assert cost.circuits == (budget if mode == "sampled" else 2 * 8 * 2 * 8)  # (+-) x angles x filters x patches
    assert cost.qubits == (5 if mode == "parameter-shift" else 6)


def test_identical_circuits_run_once_with_independent_estimates():
    backend = QiskitBackend(seed=0)
    theta = torch.rand(1, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # rows 0, 1 and 3 encode the same state (proportional patches): one circuit with 3 x S shots
    patches = torch.tensor([[1.0, 2.0, 0.0, 1.0], [2.0, 4.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [0.5, 1.0, 0.0, 0.5],
                            [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    res = backend.circuit_expectations(patches, Filters(theta=theta), shots=400,
                                       generator=torch.Generator().manual_seed(2))
    assert res.extras["distinct"] == 2 and res.extras["jobs"] == 1
    assert CircuitRows.build(patches[[0, 1, 3, 4]], Filters(theta=theta)).multiplicity.tolist() == [3, 1]
    z = res.values
    assert z[2] == 0 and len({float(z[0]), float(z[1]), float(z[3])}) > 1  # each its own 400 shots
    many = backend.circuit_expectations(patches[:1].expand(2000, 4), Filters(theta=theta), shots=10,
                            generator=torch.Generator().manual_seed(3)).values
    f = get_backend("torch").circuit_expectations(patches[:1], Filters(theta=theta)).values[0]
    assert abs(float(many.mean()) - float(f)) < SIGMAS * math.sqrt((1 - f**2) / 20000)
    assert abs(float(many.var()) / float((1 - f**2) / 10) - 1) < SIGMAS * math.sqrt(2 / 1999)  # independent


def test_jobs_split_by_max_circuits_per_job_and_stay_reproducible():
    patches = torch.rand(7, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theta = torch.rand(7, 1, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    backend = QiskitBackend(max_circuits_per_job=3, seed=4)
    one, two = (backend.circuit_expectations(patches, Filters(theta=theta), shots=50,
                                             generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert one.extras["jobs"] == 3 and torch.equal(one.values, two.values)


def test_mitigate_inverts_the_assignment_matrix():
    z = torch.linspace(-1, 1, 5, dtype=torch.float64).numpy()
    p10, p01 = 0.03, 0.08
    measured = (p01 - p10) + (1 - p10 - p01) * z
    assert abs(mitigate(measured, p10, p01) - z).max() < 1e-12
    assert mitigate([1.5], 0.0, 0.0).tolist() == [1.0]  # clipped
    with pytest.raises(ValueError, match="no signal"):
        mitigate(z, 0.5, 0.6)


def test_readout_mitigation_removes_readout_bias():
    from qucnn.qiskit import default_noise_model

    readout, shots = 0.1, 4000
    patches = torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theta = torch.rand(1, 1, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = default_noise_model(p1=0.0, p2=0.0, readout=readout)
    exact = get_backend("torch").circuit_expectations(patches, Filters(theta=theta)).values
    raw = QiskitBackend(noise_model=model, seed=1).circuit_expectations(patches, Filters(theta=theta), shots=shots)
    fixed = QiskitBackend(noise_model=model, mitigate_readout=True, seed=1, calibration_shots=50_000)
    res = fixed.circuit_expectations(patches, Filters(theta=theta), shots=shots)
    scale = 1 - 2 * readout
    assert max_sigmas(raw.values, scale * exact, (1 - (scale * exact) ** 2) / shots) < SIGMAS
    info = res.extras["readout"]
    assert abs(info["p10"] - readout) < 0.01 and abs(info["p01"] - readout) < 0.01
    # calibration is reported on its own, not among the circuits run (the ledger: the fake-device test below)
    assert info["calibration_circuits"] == 2 and res.extras["distinct"] == 6
    # the mitigated estimate's variance grows by 1/scale^2 (calibration error is ~20x smaller)
    assert max_sigmas(res.values, exact, (1 - (scale * exact) ** 2) / shots / scale**2 * 1.1) < SIGMAS
    again = fixed.circuit_expectations(patches, Filters(theta=theta), shots=shots)
    assert again.extras["readout"]["calibration_circuits"] == 0  # calibrated once per qubit


def test_fake_device_transpiles_for_the_device_and_stays_informative():
    backend = QiskitBackend(fake_device="fake_torino", mitigate_readout=True, seed=0, calibration_shots=4000)
    layer = QuConv2d(1, 1, 2, layers=1, shots=2000, backend=backend, generator=torch.Generator().manual_seed(1))
    x = torch.rand(1, 1, 3, 3, generator=torch.Generator().manual_seed(2))
    exact = QuConv2d(1, 1, 2, layers=1, generator=torch.Generator().manual_seed(1))(x).detach()
    y = layer(x).detach()
    compiled = next(iter(backend.runner._templates.values()))
    assert set(compiled.circuit.count_ops()) <= {"cz", "rz", "sx", "x", "measure"}  # Heron's basis gates
    assert compiled.circuit.num_qubits <= 8 and compiled.circuit.count_ops()["cz"] >= 10
    assert (y - exact).abs().max() < 0.3  # ~40 noisy CZ gates shrink <Z>; the values still follow F
    assert 0 < layer.last_cost["forward"].circuits == 4


def test_circuit_backends_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="no exact mode"):
        QuConv2d(1, 2, 2, backend="aer")(torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="unknown fake device 'fake_nowhere'"):
        QiskitBackend(fake_device="fake_nowhere")
    with pytest.raises(ValueError, match="at most one of sampler, fake_device and noise_model"):
        QiskitBackend(fake_device="fake_torino", noise_model=object())
    with pytest.raises(ValueError, match="overlap='cswap'"):
        QiskitBackend(mitigate_readout=True, overlap="bell")
    with pytest.raises(ValueError, match="optimization_level"):
        QiskitBackend(optimization_level=5)
    with pytest.raises(TypeError, match="PennyLane device"):
        PennyLaneBackend(3)
    complex_states = torch.randn(1, 4, dtype=torch.complex128)
    with pytest.raises(ValueError, match="complex filter states"):
        PennyLaneBackend().circuit_expectations(torch.rand(2, 4), Filters(states=complex_states), shots=10)


def test_the_ledger_records_wall_time_of_circuit_backends_in_both_phases(problem):
    layer, x = problem
    layer.backend, layer.shots, layer.gradient, layer.gradient_shots = "aer", 50, "entanglement", 50
    layer(x).sum().backward()
    cost = layer.last_cost
    assert cost["forward"].wall_s > 0 and cost["backward"].wall_s > 0
    layer.backend, layer.shots, layer.gradient_shots = "torch", None, None
    layer(x).sum().backward()
    assert layer.last_cost["backward"].wall_s is None  # an exact simulator runs no jobs
