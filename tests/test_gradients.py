"""Shot-based gradient estimators: unbiased, with the variances of the math sheet (5 standard errors)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import NEAR, SIGMAS

from qucnn import QuConv2d
from qucnn.backends import get_backend
from qucnn.core.geometry import ConvSpec
from qucnn.core.windows import valid_patches
from qucnn.nn.gradients import sampled_variance, shifted_thetas

SPEC = ConvSpec.make(2)

TRIALS = 300


def setup(seed=0, **kw):
    kw.setdefault("generator", torch.Generator().manual_seed(seed))
    layer = QuConv2d(1, 2, 2, layers=1, **kw).double()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    x[0, 0, :2, :2] = 0
    up = torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 2))
    up[0, 1, 0, 1] = 0
    return layer, x, up


def exact_parts(layer, x, up):
    """Exact gradient (O, P) and the shifted fidelities F+- (B, P, O, H', W')."""
    layer.gradient = "autograd"
    layer.zero_grad()
    (layer(x) * up).sum().backward()
    grad = layer.theta.grad.reshape(layer.out_channels, -1).clone()
    shifted = layer.ansatz.state(shifted_thetas(layer.theta.detach())[0])
    _, p, o, d = shifted.shape
    fid = get_backend("torch").maps(x, shifted.reshape(-1, d), SPEC)[0]
    fid = fid.reshape(1, 2, p, o, *fid.shape[-2:])
    return grad, fid[:, 0], fid[:, 1]


def draw(layer, x, up, trials=TRIALS):
    out = []
    for _ in range(trials):
        layer.zero_grad()
        (layer(x) * up).sum().backward()
        out.append(layer.theta.grad.reshape(layer.out_channels, -1).clone())
    return torch.stack(out)


def check_moments(samples, mean, var):
    """Sample mean within 5 standard errors; sample variance within 5 of its standard errors."""
    n = samples.shape[0]
    assert torch.all((samples.mean(0) - mean).abs() <= SIGMAS * (var / n).sqrt() + 1e-12)
    rel = (samples.var(0) / var - 1).abs()
    assert torch.all(rel <= SIGMAS * math.sqrt(2 / (n - 1)) + 0.05)  # + 5% for mild non-normality


def test_parameter_shift_with_shots(gen):
    shots = 50
    layer, x, up = setup(gradient="parameter-shift", gradient_shots=shots, generator=gen)
    grad, fp, fm = exact_parts(layer, x, up)
    valid = valid_patches(x, SPEC)
    g = up.unsqueeze(1)
    var_terms = g**2 / 4 * ((1 - fp**2) + (1 - fm**2)) / shots * valid.unsqueeze(1)
    var = var_terms.sum((0, 3, 4)).T  # (O, P)
    layer.gradient = "parameter-shift"
    check_moments(draw(layer, x, up), grad, var)
    cost = layer.last_cost["backward"]  # 2 circuits per angle for every output of a non-zero patch with g != 0
    assert cost.circuits == 2 * layer.theta[0].numel() * int((valid & (up != 0)).sum()) > 0
    assert cost.shots == cost.circuits * shots and cost.qubits == 2 * layer.n_qubits + 1


def test_entanglement_with_shots(gen):
    shots = 50
    layer, x, up = setup(gradient="entanglement", gradient_shots=shots, generator=gen)
    grad, fp, fm = exact_parts(layer, x, up)
    valid = (valid_patches(x, SPEC)).unsqueeze(1)
    c = up.abs().max()
    delta = (up / c).unsqueeze(1)
    run = valid & (delta != 0)
    var_terms = c**2 / 4 * ((1 - delta**2 * fp**2) + (1 - delta**2 * fm**2)) / shots * run
    var = var_terms.sum((0, 3, 4)).T
    layer.gradient = "entanglement"
    samples = draw(layer, x, up)
    check_moments(samples, grad, var)
    cost = layer.last_cost["backward"]
    assert cost.circuits == 2 * layer.theta[0].numel() * int(run.sum()) > 0
    assert cost.shots == cost.circuits * shots and cost.qubits == 2 * layer.n_qubits + 2


def test_entanglement_and_post_processed_variances_differ(gen):
    """Same mean, different variance (the math sheet's point): with |delta| < 1 Eq. 17 is noisier."""
    layer, x, up = setup(generator=gen)
    _, fp, fm = exact_parts(layer, x, up)
    c = up.abs().max()
    delta = (up / c).unsqueeze(1)
    ent = (c**2 / 4 * ((1 - delta**2 * fp**2) + (1 - delta**2 * fm**2))).sum()
    post = (up.unsqueeze(1) ** 2 / 4 * ((1 - fp**2) + (1 - fm**2))).sum()
    assert ent > post


@pytest.mark.parametrize("budget", [200, 5000])
def test_sampled_estimator_unbiased_with_derived_variance(budget, gen):
    layer, x, up = setup(gradient="sampled", gradient_budget=budget, generator=gen)
    grad, _, _ = exact_parts(layer, x, up)
    valid = valid_patches(x, SPEC)
    var = sampled_variance(up, grad, valid, layer.ansatz.n_params, budget)
    layer.gradient = "sampled"
    samples = draw(layer, x, up, trials=400)
    check_moments(samples, grad, var)
    cost = layer.last_cost["backward"]
    assert (cost.circuits, cost.shots, cost.qubits) == (budget, budget, 2 * layer.n_qubits + 2)


def test_sampled_estimator_zero_upstream_costs_nothing(gen):
    layer, x, _ = setup(gradient="sampled", gradient_budget=100, generator=gen)
    (layer(x) * 0).sum().backward()
    assert torch.all(layer.theta.grad == 0)
    assert layer.last_cost["backward"].shots == 0


def test_shifted_thetas_layout():
    theta = torch.arange(8, dtype=torch.float64).reshape(2, 1, 2, 2)
    s, denominators = shifted_thetas(theta)
    assert s.shape == (2, 4, 2, 1, 2, 2)
    assert torch.allclose(denominators, torch.full((4,), 2.0, dtype=torch.float64))  # 2 sin(pi/2)
    diff = (s - theta).reshape(2, 4, 2, 4)
    assert torch.allclose(diff[0, 1, :, 1], torch.full((2,), math.pi / 2, dtype=torch.float64), atol=NEAR)
    assert torch.allclose(diff[1, 3, :, 3], torch.full((2,), -math.pi / 2, dtype=torch.float64), atol=NEAR)
    assert int((diff != 0).sum()) == 2 * 4 * 2
    subset, _ = shifted_thetas(theta, torch.tensor([2]))
    assert torch.equal(subset[:, 0], s[:, 2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["parameter-shift", "entanglement"])
def test_half_precision_upstream_values_add_in_float32(dtype, mode):
    """The exact estimators sum over every output: in the upstream's half precision that loses ~1e-3; in float32
    they equal autograd on the same input to float32 rounding."""
    x = torch.rand(4, 1, 10, 10, generator=torch.Generator().manual_seed(0)).to(dtype)
    up = torch.randn(4, 3, 7, 7, generator=torch.Generator().manual_seed(1)).to(dtype)
    layer = QuConv2d(1, 3, 4, layers=2, generator=torch.Generator().manual_seed(0))
    layer(x).backward(up)
    want = layer.theta.grad.clone()
    layer.zero_grad()
    layer.gradient = mode
    layer(x).backward(up)
    assert float((layer.theta.grad - want).norm() / want.norm()) < 1e-5
