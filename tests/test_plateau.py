"""The barren-plateau analysis (``qucnn.analysis.plateau``, ``qucnn analyze plateau``): closed forms on
one qubit, Haar references against Monte Carlo, fits, sampling, CLI errors and the JSON schema."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import EXACT, NEAR, SIGMAS, random_state

from qucnn import cli
from qucnn.analysis import (
    cell_generator,
    fit_decay,
    haar_fidelity_mean,
    haar_fidelity_variance,
    haar_grad_variance_first,
    haar_grad_variance_last,
    kernel_for,
    last_generator_overlap,
    measure_cell,
    parse_int_list,
    plateau_study,
    sample_angles,
    sample_patches,
    variance_with_stderr,
)
from qucnn.core.ansatz import ring_pairs
from qucnn.core.gates import Op
from qucnn.core.simulator import as_state, simulate
from qucnn.datasets import load_embedded_mnist

REQUIRED_ROW = {"qubits": int, "depth": int, "channels": int, "samples": int, "param": str,
                "var_grad": float, "mean_grad": float, "var_fidelity": float, "mean_fidelity": float}
REQUIRED_FIT = {"depth": int, "param": str, "decay_base": float}


def within(estimate: float, stderr: float, expected: float) -> bool:
    return abs(estimate - expected) <= SIGMAS * stderr


@pytest.fixture(scope="module")
def mnist_train() -> torch.Tensor:
    return load_embedded_mnist().train_images


def sparse_images(gen: torch.Generator, n: int = 6) -> torch.Tensor:
    """Mostly-zero images (a few bright pixels), so that most random windows are all zero."""
    imgs = torch.zeros(n, 1, 28, 28)
    idx = torch.randint(28, (n, 2, 3), generator=gen)
    for i in range(n):
        imgs[i, 0, idx[i, 0], idx[i, 1]] = torch.rand(3, generator=gen) + 0.1
    return imgs


# ----------------------------------------------------------------------------- one qubit, one layer

def one_qubit_closed_form(x: torch.Tensor, theta: torch.Tensor):
    """f = RZ(b) RX(a)|0>, x = (x0, x1) real: F = 1/2 + (x0^2 - x1^2) cos(a)/2 + x0 x1 sin(a) sin(b)."""
    a, b = theta[:, 0, 0, 0], theta[:, 0, 0, 1]
    c2, s2 = x[:, 0] ** 2 - x[:, 1] ** 2, 2 * x[:, 0] * x[:, 1]   # cos 2c, sin 2c
    fid = 0.5 + 0.5 * c2 * torch.cos(a) + 0.5 * s2 * torch.sin(a) * torch.sin(b)
    d_a = -0.5 * c2 * torch.sin(a) + 0.5 * s2 * torch.cos(a) * torch.sin(b)
    d_b = 0.5 * s2 * torch.sin(a) * torch.cos(b)
    # variances over a, b ~ U[0, 2pi) for each fixed x (all means are 0, or 1/2 for F)
    var_da = c2**2 / 8 + s2**2 / 16
    var_db = s2**2 / 16
    return fid, d_a, d_b, var_da, var_db


def test_one_qubit_zero_state_gives_one_eighth(gen):
    samples = 4000
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64).repeat(samples, 1)
    theta = sample_angles(samples, 1, 1, gen)
    cell = measure_cell(x, theta)
    a = theta[:, 0, 0, 0]
    assert torch.allclose(cell.fidelity, torch.cos(a / 2) ** 2, atol=EXACT)
    assert torch.allclose(cell.grad_first, -torch.sin(a) / 2, atol=EXACT)
    assert float(cell.grad_last.abs().max()) < EXACT            # RZ does not move |<f|0>|
    var, se = variance_with_stderr(cell.grad_first)
    assert within(var, se, 1 / 8)


def test_one_qubit_real_mnist_patch_matches_closed_form(gen, mnist_train):
    samples = 6000
    x = sample_patches(mnist_train, 1, samples, gen, channels=2)    # 1x1 window of 2 images
    theta = sample_angles(samples, 1, 1, gen)
    cell = measure_cell(x, theta)
    fid, d_a, d_b, var_da, var_db = one_qubit_closed_form(x, theta)
    assert torch.allclose(cell.fidelity, fid, atol=EXACT)
    assert torch.allclose(cell.grad_first, d_a, atol=EXACT)
    assert torch.allclose(cell.grad_last, d_b, atol=EXACT)
    # the pooled sample variance estimates the mean of the per-patch variances (all means are equal)
    for values, expected in ((cell.grad_first, var_da.mean()), (cell.grad_last, var_db.mean()),
                             (cell.fidelity, var_da.mean())):
        var, se = variance_with_stderr(values)
        assert within(var, se, float(expected)), (var, se, float(expected))
    assert abs(float(cell.fidelity.mean()) - 0.5) <= SIGMAS * math.sqrt(float(var_da.mean()) / samples)


def test_batch_size_does_not_change_the_result(gen):
    x = random_state(16, 50, gen, complex_=False)
    theta = sample_angles(50, 2, 4, gen)
    whole, chunked = measure_cell(x, theta), measure_cell(x, theta, batch_size=7)
    for name in ("fidelity", "grad_first", "grad_last"):
        assert torch.allclose(getattr(whole, name), getattr(chunked, name), atol=EXACT)


def test_automatic_chunks_fit_the_memory_budget(gen, monkeypatch):
    from qucnn.analysis import plateau

    per_sample = plateau.graph_bytes_per_sample(4, 2)
    monkeypatch.setattr(plateau, "free_bytes", lambda device: int(6.5 * per_sample / plateau.MEMORY_FRACTION))
    assert plateau.auto_batch_size(4, 2, 50, torch.device("cpu")) == 6
    x = random_state(16, 50, gen, complex_=False)
    theta = sample_angles(50, 2, 4, gen)
    auto, whole = measure_cell(x, theta), measure_cell(x, theta, batch_size=50)
    assert torch.allclose(auto.grad_first, whole.grad_first, atol=EXACT)
    monkeypatch.setattr(plateau, "free_bytes", lambda device: 1 << 40)
    assert plateau.auto_batch_size(4, 2, 50, torch.device("cpu")) == 50      # never more than S


def test_gradient_matches_finite_difference(gen):
    x = random_state(8, 3, gen, complex_=False)
    theta = sample_angles(3, 2, 3, gen)
    cell = measure_cell(x, theta)
    eps = 1e-6
    for index, got in (((0, 0, 0), cell.grad_first), ((-1, -1, 1), cell.grad_last)):
        plus, minus = theta.clone(), theta.clone()
        plus[(slice(None),) + index] += eps
        minus[(slice(None),) + index] -= eps
        fd = (measure_cell(x, plus).fidelity - measure_cell(x, minus).fidelity) / (2 * eps)
        assert torch.allclose(got, fd, atol=1e-7)


# ----------------------------------------------------------------------------- Haar references

def test_haar_fidelity_moments_match_monte_carlo(gen):
    d, samples = 8, 40_000
    f = random_state(d, samples, gen)
    x = random_state(d, 1, gen, complex_=False)
    fid = ((f.conj() * x).sum(-1).abs() ** 2)
    var, se = variance_with_stderr(fid)
    assert within(var, se, haar_fidelity_variance(d))
    assert within(float(fid.mean()), math.sqrt(var / samples), haar_fidelity_mean(d))


def haar_unitaries(d: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    z = torch.complex(torch.randn(batch, d, d, generator=gen, dtype=torch.float64),
                      torch.randn(batch, d, d, generator=gen, dtype=torch.float64))
    q, r = torch.linalg.qr(z)
    phases = torch.diagonal(r, dim1=-2, dim2=-1)
    return q * (phases / phases.abs())[:, None, :]      # Mezzadri's fix: Haar-distributed


def test_haar_first_parameter_variance_matches_monte_carlo(gen):
    n, samples = 3, 30_000
    d = 2**n
    x = random_state(d, 1, gen, complex_=False).to(torch.complex128)
    v = haar_unitaries(d, samples, gen)
    theta = (2 * math.pi * torch.rand(samples, generator=gen, dtype=torch.float64)).requires_grad_(True)
    chi = torch.zeros(samples, d, dtype=torch.complex128)   # RX(theta) on qubit 0 (the MSB) of |0...0>
    chi[:, 0] = torch.cos(theta / 2).to(torch.complex128)
    chi[:, d // 2] = -1j * torch.sin(theta / 2).to(torch.complex128)
    f = (v @ chi[:, :, None])[:, :, 0]
    fid = (x.conj() * f).sum(-1).abs() ** 2
    (grad,) = torch.autograd.grad(fid.sum(), theta)
    var, se = variance_with_stderr(grad)
    assert within(var, se, haar_grad_variance_first(d))


def test_haar_last_parameter_variance_matches_monte_carlo(gen):
    n, samples = 3, 30_000
    d = 2**n
    x = random_state(d, 1, gen, complex_=False)
    psi = random_state(d, samples, gen)                    # the circuit before the last RZ: a 2-design
    theta = (2 * math.pi * torch.rand(samples, 1, generator=gen, dtype=torch.float64)).requires_grad_(True)
    ops = [Op("RZ", (n - 1,), theta)] + [Op("CNOT", pair) for pair in ring_pairs(n)]
    f = simulate(ops, state=as_state(psi)).reshape(samples, d)
    fid = (x.to(torch.complex128).conj() * f).sum(-1).abs() ** 2
    (grad,) = torch.autograd.grad(fid.sum(), theta)
    var, se = variance_with_stderr(grad)
    assert within(var, se, haar_grad_variance_last(x))
    # g is a Z-string expectation: +-1 for a basis state, and the reference vanishes there
    basis = torch.zeros(1, d, dtype=torch.float64)
    basis[0, 5] = 1
    assert abs(abs(float(last_generator_overlap(basis)[0])) - 1) < EXACT
    assert haar_grad_variance_last(basis) < EXACT


# ----------------------------------------------------------------------------- statistics and fits

def test_variance_with_stderr_by_hand():
    var, se = variance_with_stderr(torch.tensor([0.0, 0.0, 0.0, 4.0]))
    # mean 1, unbiased variance 12/3 = 4, fourth central moment (1+1+1+81)/4 = 21
    assert abs(var - 4) < EXACT and abs(se - math.sqrt((21 - 16) / 4)) < EXACT
    with pytest.raises(ValueError, match="at least 2 samples"):
        variance_with_stderr(torch.tensor([1.0]))


def test_fit_decay_recovers_an_exponential():
    qubits = [2, 4, 6, 8]
    fit = fit_decay(qubits, [0.3 * 3.5 ** -n for n in qubits])
    assert abs(fit["decay_base"] - 3.5) < NEAR and fit["decay_base_stderr"] < NEAR
    assert abs(fit["log_intercept"] - math.log(0.3)) < NEAR
    noisy = fit_decay(qubits, [0.3 * 3.5 ** -n * (1.2 if n == 4 else 1.0) for n in qubits])
    assert noisy["decay_base_stderr"] > 0.01
    assert fit_decay([2, 4], [0.1, 0.01])["decay_base_stderr"] is None
    with pytest.raises(ValueError, match="positive"):
        fit_decay([2, 4, 6], [0.1, 0.0, 0.01])


# ----------------------------------------------------------------------------- sampling

def test_kernel_for_maps_qubits_to_patch_sizes():
    assert [kernel_for(n) for n in (2, 4, 5, 6, 8)] == [2, 4, 5, 8, 16]
    assert kernel_for(1, channels=2) == 1 and kernel_for(3, channels=2) == 2
    with pytest.raises(ValueError, match="--channels 2 gives 3 qubits"):
        kernel_for(3)
    with pytest.raises(ValueError, match="k <= 28"):
        kernel_for(10)


def test_sample_patches_skips_zero_windows_and_stacks_channels(gen):
    imgs = sparse_images(gen)
    x = sample_patches(imgs, 3, 200, gen, channels=2)      # 2 channels of 2x2: 8 values, 3 qubits
    assert x.shape == (200, 8) and x.dtype == torch.float64
    assert torch.allclose(x.norm(dim=-1), torch.ones(200, dtype=torch.float64), atol=EXACT)
    with pytest.raises(ValueError, match="blank"):
        sample_patches(torch.zeros(3, 1, 28, 28), 2, 5, gen, max_rounds=3)


def test_cells_do_not_depend_on_the_other_cells(gen):
    imgs = sparse_images(gen, 20) + torch.rand(20, 1, 28, 28, generator=gen)
    both = plateau_study(imgs, [2], [1, 2], samples=64, seed=7)
    alone = plateau_study(imgs, [2], [2], samples=64, seed=7)
    other = plateau_study(imgs, [2], [2], samples=64, seed=8)
    pick = [r for r in both["rows"] if r["depth"] == 2]
    assert [r["var_grad"] for r in pick] == [r["var_grad"] for r in alone["rows"]]
    assert [r["var_grad"] for r in other["rows"]] != [r["var_grad"] for r in alone["rows"]]
    assert torch.equal(torch.rand(3, generator=cell_generator(1, 2, 3)),
                       torch.rand(3, generator=cell_generator(1, 2, 3)))


def test_parse_int_list():
    assert parse_int_list("1-3,6") == [1, 2, 3, 6] and parse_int_list("8,2,4") == [2, 4, 8]
    for bad in ("a", "3-1", "1-", ""):
        with pytest.raises(ValueError, match="--depths"):
            parse_int_list(bad, "--depths")


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv, message", [
    (["--qubits", "3"], "3 qubits"),
    (["--depths", "0-2"], "--depths must be positive"),
    (["--samples", "1"], "--samples must be an int >= 2"),
    (["--depths", "one"], "--depths: expected a list"),
    (["--qubits", "2", "--channels", "0"], "channels must be a positive int"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
    (["--batch-size", "0"], "--batch-size must be a positive int"),
])
def test_cli_errors_are_clear(argv, message, capsys, tmp_path):
    rc = cli.main(["analyze", "plateau", "--quick", "--out", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert not (tmp_path / "plateau.json").exists()


def test_cli_cuda_unavailable_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = cli.main(["analyze", "plateau", "--quick", "--device", "cuda", "--out", str(tmp_path)])
    assert rc == 2 and "CUDA is not available" in capsys.readouterr().err


def test_cli_writes_json_and_png(tmp_path, capsys):
    path = tmp_path / "sub" / "study.json"
    rc = cli.main(["analyze", "plateau", "--quick", "--qubits", "2,4", "--samples", "16",
                   "--json", str(path), "--seed", "3"])
    assert rc == 0
    assert "decay base" in capsys.readouterr().out
    result = json.loads(path.read_text())
    assert (tmp_path / "sub" / "study.png").stat().st_size > 10_000
    assert result["config"]["depths"] == [1, 2, 3]                     # from --quick
    assert len(result["rows"]) == 2 * 3 * 2                            # qubits x depths x params
    for row in result["rows"]:
        for key, kind in REQUIRED_ROW.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["samples"] == 16 and row["channels"] == 1 and row["param"] in ("first", "last")
        assert row["var_grad"] >= 0 and 0 <= row["mean_fidelity"] <= 1
    assert {(f["depth"], f["param"]) for f in result["fits"]} == {(L, p) for L in (1, 2, 3)
                                                                  for p in ("first", "last")}
    for fit in result["fits"]:
        for key, kind in REQUIRED_FIT.items():
            assert isinstance(fit[key], kind)
        assert fit["decay_base_stderr"] is None                        # two qubit counts: no residuals
