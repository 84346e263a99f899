"""QuConv2d: forward against independent references, gradients, shots, errors, module behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import EXACT, NEAR, SINGLE
from torch import nn

from qucnn import QuantumCost, QuantumSettings, QuConv2d, amplitude_encode, swap_test
from qucnn.backends import TorchBackend
from qucnn.core.windows import valid_patches
from qucnn.nn import cost as cost_module

CONFIGS = [  # in_channels, kernel, stride, padding, H, W
    (1, 2, 1, 0, 5, 5),
    (1, 3, 1, 1, 6, 5),       # 9 values padded to 16 amplitudes
    (2, (2, 3), (2, 1), (1, 0), 7, 6),
    (3, 2, 2, 1, 5, 6),       # 12 values padded to 16
]


def make(config, out=3, layers=2, seed=0, **kw):
    c, k, s, p, h, w = config
    layer = QuConv2d(c, out, k, stride=s, padding=p, layers=layers,
                     generator=torch.Generator().manual_seed(seed), **kw).double()
    x = torch.rand(2, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    x[0, :, : h // 2, : w // 2] = 0  # all-zero patches must give 0
    return layer, x


def per_patch_reference(layer: QuConv2d, x: torch.Tensor) -> torch.Tensor:
    """A loop over images, positions and filters with swap_test: independent of the conv path."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    ho, wo = layer.output_shape(x.shape[-2], x.shape[-1])
    states = layer.filter_states().detach()
    out = torch.zeros(x.shape[0], layer.out_channels, ho, wo, dtype=x.dtype)
    for b in range(x.shape[0]):
        for r in range(ho):
            for c in range(wo):
                patch = amplitude_encode(xp[b, :, r * sh: r * sh + kh, c * sw: c * sw + kw].reshape(-1))
                for o in range(layer.out_channels):
                    out[b, o, r, c] = swap_test(states[o], patch.to(states.dtype)) if patch.any() else 0
    return out


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_matches_per_patch_loop(config):
    layer, x = make(config)
    out = layer(x)
    ref = per_patch_reference(layer, x)
    assert out.shape == ref.shape == (2, 3) + layer.output_shape(*x.shape[-2:])
    assert torch.allclose(out, ref, atol=EXACT)
    assert torch.all(out[0, :, 0, 0] == 0)


def test_output_size_follows_conv2d():
    for config in CONFIGS:
        layer, x = make(config)
        c, k, s, p, h, w = config
        conv = nn.Conv2d(c, 3, k, stride=s, padding=p)
        assert layer(x).shape == conv(x.float()).shape


@pytest.mark.parametrize("config", CONFIGS[:3])
def test_forward_matches_full_circuit(config):
    layer, x = make(config, out=2, layers=1)
    assert torch.allclose(layer.forward_circuit(x[:1]), layer(x[:1]), atol=EXACT)


def test_qubits_theta_and_filter_states():
    layer = QuConv2d(3, 5, 3, layers=2)
    assert layer.n_qubits == 5  # 27 values -> 32 amplitudes
    assert layer.theta.shape == (5, 2, 5, 2)
    states = layer.filter_states()
    assert states.shape == (5, 32) and states.is_complex()
    assert torch.allclose(states.abs().pow(2).sum(-1), torch.ones(5), atol=SINGLE)
    assert "kernel_size=(3, 3)" in repr(layer) and "layers=2" in repr(layer)


def test_seeded_initialisation_is_reproducible():
    a = QuConv2d(1, 4, 4, generator=torch.Generator().manual_seed(7))
    b = QuConv2d(1, 4, 4, generator=torch.Generator().manual_seed(7))
    c = QuConv2d(1, 4, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.theta, b.theta) and not torch.equal(a.theta, c.theta)
    assert float(a.theta.detach().min()) >= 0 and float(a.theta.detach().max()) < 2 * math.pi


def test_gradcheck_float64():
    layer, x = make(CONFIGS[2], out=2, layers=1)
    x = x[:1].clone().requires_grad_(True)
    x.data[0, :, 0, :] = 0  # keep some all-zero patches in play, away from the kink at 0
    fn = lambda inp, theta: torch.func.functional_call(layer, {"theta": theta}, (inp,))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, layer.theta.detach().clone().requires_grad_(True)))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("mode", ["parameter-shift", "entanglement"])
def test_quantum_gradient_modes_equal_autograd(config, mode):
    layer, x = make(config)
    up = torch.randn(layer(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = {}
    for name in ("autograd", mode):
        layer.gradient = name
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        (layer(xi) * up).sum().backward()
        grads[name] = (layer.theta.grad.clone(), xi.grad.clone())
    assert torch.allclose(grads[mode][0], grads["autograd"][0], atol=NEAR)
    assert torch.allclose(grads[mode][1], grads["autograd"][1], atol=NEAR)
    assert grads["autograd"][0].abs().max() > 1e-3  # a non-trivial check


def test_quantum_gradient_modes_pass_gradcheck():
    layer, x = make(CONFIGS[0], out=2, layers=1)
    for mode in ("parameter-shift", "entanglement"):
        layer.gradient = mode
        fn = lambda inp, theta: torch.func.functional_call(layer, {"theta": theta}, (inp,))  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x[1:].clone().requires_grad_(True),
                                             layer.theta.detach().clone().requires_grad_(True)))


def test_shots_forward_is_unbiased_with_binomial_variance():
    layer, x = make(CONFIGS[0], out=2)
    exact = layer(x).detach()
    layer.shots = 200
    trials = torch.stack([layer(x).detach() for _ in range(400)])
    var = (1 - exact**2) / 200
    valid = exact > 0
    z = (trials.mean(0) - exact)[valid] / (var[valid] / 400).sqrt()
    assert z.abs().max() < 5
    assert torch.all(trials[:, ~valid] == 0)  # all-zero patches are not run
    assert layer.last_cost["forward"].shots == layer.last_cost["forward"].circuits * 200


def test_shots_forward_gradient_is_the_expectation_gradient():
    layer, x = make(CONFIGS[0], out=2)
    layer(x).sum().backward()
    exact_grad = layer.theta.grad.clone()
    layer.zero_grad()
    layer.shots = 10
    layer(x).sum().backward()
    assert torch.allclose(layer.theta.grad, exact_grad, atol=EXACT)


def test_shot_draws_are_seeded():
    layer, x = make(CONFIGS[0], out=2, shots=50)
    layer.generator = torch.Generator().manual_seed(5)
    a = layer(x)
    layer.generator = torch.Generator().manual_seed(5)
    assert torch.equal(a, layer(x))


def test_float32_matches_float64():
    layer, x = make(CONFIGS[1])
    out64 = layer(x)
    out32 = layer.float()(x.float())
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out64, atol=SINGLE)


def test_works_in_sequential_with_an_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(QuConv2d(1, 2, 2, layers=1), nn.Flatten(), nn.Linear(2 * 16, 1))
    x = torch.rand(8, 1, 5, 5)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    target = torch.rand(8, 1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert "theta" in dict(model[0].named_parameters())
    assert model[0](torch.rand(1, 5, 5)).shape == (2, 4, 4)  # unbatched input


def test_cost_accounting():
    layer, x = make(CONFIGS[0], out=3, layers=1)
    nonzero = int((torch.nn.functional.unfold(x, 2).abs().sum(1) > 0).sum())
    layer.gradient, layer.gradient_shots = "parameter-shift", 10
    layer(x).sum().backward()
    fwd, bwd = layer.last_cost["forward"], layer.last_cost["backward"]
    assert (fwd.circuits, fwd.qubits, fwd.shots) == (3 * nonzero, 5, None)
    assert (bwd.circuits, bwd.qubits, bwd.shots) == (2 * 4 * 3 * nonzero, 5, 2 * 4 * 3 * nonzero * 10)
    layer.gradient = "entanglement"
    up = torch.ones(2, 3, 4, 4, dtype=torch.float64)
    up[:, 0] = 0  # a zero upstream gradient needs no circuit
    (layer(x) * up).sum().backward()
    assert layer.last_cost["backward"].circuits == 2 * 4 * 2 * nonzero
    assert layer.last_cost["backward"].qubits == 6
    totals = layer.total_cost()
    assert totals["forward"]["circuits"] == 2 * 3 * nonzero
    layer.reset_cost()
    assert layer.total_cost()["backward"] == {"circuits": 0, "shots": 0}


def test_unread_forward_costs_stay_bounded_and_add_up():
    layer, x = make(CONFIGS[0], out=3, layers=1)
    nonzero = int((torch.nn.functional.unfold(x, 2).abs().sum(1) > 0).sum())
    calls = 3 * cost_module.MAX_PENDING + 5
    with torch.no_grad():
        for i in range(calls):
            layer(x)
            assert len(layer.cost._pending) <= cost_module.MAX_PENDING
    assert layer.total_cost()["forward"] == {"circuits": calls * 3 * nonzero, "shots": None}
    assert layer.last_cost["forward"].circuits == 3 * nonzero and not layer.cost._pending
    layer(x[:0])  # an empty batch records its zero cost in order, after the pending ones
    assert layer.last_cost["forward"].circuits == 0
    assert layer.total_cost()["forward"]["circuits"] == calls * 3 * nonzero


def test_bad_input_errors():
    layer = QuConv2d(2, 2, 3)
    with pytest.raises(ValueError, match="expects 2 input channel"):
        layer(torch.rand(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"must be finite, got 1 NaN/inf"):
        x = torch.rand(1, 2, 5, 5)
        x[0, 0, 0, 0] = float("nan")
        layer(x)
    with pytest.raises(ValueError, match=r"kernel_size \(3, 3\) is larger than the padded input \(2, 5\)"):
        layer(torch.rand(1, 2, 2, 5))
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        layer(torch.rand(5, 5))
    with pytest.raises(TypeError, match="real floating-point"):
        layer(torch.ones(1, 2, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="shots must be a positive int or None, got 0"):
        QuConv2d(1, 1, 2, shots=0)
    with pytest.raises(ValueError, match="gradient_shots must be a positive int or None, got -5"):
        QuConv2d(1, 1, 2, gradient_shots=-5)
    with pytest.raises(ValueError, match="gradient must be one of"):
        QuConv2d(1, 1, 2, gradient="finite-difference")
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        QuConv2d(1, 1, 0)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        QuConv2d(1, 1, 2, stride=1.5)
    with pytest.raises(ValueError, match="at least 2 values"):
        QuConv2d(1, 1, 1)
    with pytest.raises(ValueError, match="needs gradient_budget"):
        sampled = QuConv2d(1, 1, 2, gradient="sampled")
        sampled(torch.rand(1, 1, 3, 3)).sum().backward()


@pytest.mark.parametrize("mode", ["autograd", "parameter-shift", "entanglement", "sampled"])
def test_empty_batch_gives_empty_output_and_zero_gradient(mode):
    layer = QuConv2d(1, 2, 2, layers=1, gradient=mode, gradient_budget=10)
    out = layer(torch.rand(0, 1, 4, 4))
    assert out.shape == (0, 2, 3, 3)
    out.sum().backward()
    assert torch.all(layer.theta.grad == 0) and layer.last_cost["forward"].circuits == 0


# -- settings on assignment, when a backward is billed, meta tensors -------------------------------------------
def test_a_setting_is_validated_on_assignment_and_a_bad_value_leaves_the_layer_unchanged():
    layer = QuConv2d(1, 2, 2, layers=1, shots=100, gradient="entanglement", gradient_shots=10,
                     generator=torch.Generator().manual_seed(0))
    settings, backend = layer.settings, layer.backend
    bad = [("shots", 0, ValueError, "shots must be a positive int or None, got 0"),
           ("shots", 2.5, TypeError, "shots must be a positive int or None"),
           ("gradient", "finite-difference", ValueError, "gradient must be one of"),
           ("gradient_shots", -1, ValueError, "gradient_shots must be a positive int or None, got -1"),
           ("gradient_budget", 0, ValueError, "gradient_budget must be"),
           ("generator", 7, TypeError, "generator must be a torch.Generator or None"),
           ("settings", {"shots": 5}, TypeError, "settings must be a QuantumSettings, got dict"),
           ("backend", "no-such-backend", ValueError, "unknown backend 'no-such-backend'")]
    for name, value, error, match in bad:
        with pytest.raises(error, match=match):
            setattr(layer, name, value)
        assert layer.settings is settings and layer.backend is backend  # unchanged
    assert (layer.shots, layer.gradient, layer.gradient_shots) == (100, "entanglement", 10)
    layer.shots = None  # a good value: a new, validated settings object that the next call uses
    assert layer.settings is not settings and layer.settings.shots is None and settings.shots == 100
    assert layer.settings.gradient == "entanglement"
    x = torch.rand(1, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer(x), QuConv2d(1, 2, 2, layers=1, generator=torch.Generator().manual_seed(0))(x))
    layer.settings = QuantumSettings(shots=7)
    assert (layer.shots, layer.gradient, layer.gradient_shots) == (7, "autograd", None)


@pytest.mark.parametrize("mode", ["autograd", "parameter-shift", "entanglement"])
def test_a_forward_alone_bills_no_backward_and_each_backward_is_billed_when_it_runs(mode):
    layer, x = make(CONFIGS[2], out=3, layers=1, gradient=mode)
    nonzero = int(valid_patches(x, layer.spec).sum())
    per_backward = 2 * layer.theta.numel() * nonzero  # every upstream value is non-zero: every circuit runs
    up = torch.rand(layer(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.5
    layer.reset_cost()
    assert layer.last_cost["backward"] == QuantumCost()  # no backward yet
    out = layer(x)  # theta needs a gradient: a graph is recorded
    assert out.requires_grad and layer.last_cost["forward"].circuits == 3 * nonzero
    assert layer.last_cost["backward"] == QuantumCost() and layer.total_cost()["backward"]["circuits"] == 0
    out.backward(up, retain_graph=True)
    backward = layer.last_cost["backward"]
    assert backward.circuits == per_backward and backward.qubits == 2 * layer.n_qubits + (2 if mode == "entanglement"
                                                                                           else 1)
    assert layer.total_cost()["backward"]["circuits"] == per_backward
    out.backward(up)  # a second backward through the same graph is billed again
    assert layer.last_cost["backward"] == backward and layer.total_cost()["backward"]["circuits"] == 2 * per_backward
    unused = layer(x)  # a forward whose output is never differentiated
    assert unused.requires_grad and layer.total_cost()["backward"]["circuits"] == 2 * per_backward
    assert layer.total_cost()["forward"]["circuits"] == 2 * 3 * nonzero


def test_a_gradient_for_the_input_alone_bills_no_filter_circuits():
    """autograd mode: torch.autograd.grad for x only never differentiates theta, so no filter gradient's
    circuits are billed; a backward that reaches theta is."""
    layer, x = make(CONFIGS[2], out=3, layers=1)
    x.requires_grad_(True)
    (gx,) = torch.autograd.grad(layer(x).sum(), x)
    assert gx.abs().sum() > 0 and layer.theta.grad is None
    assert layer.last_cost["backward"].circuits == 0 and layer.total_cost()["backward"]["circuits"] == 0
    layer(x).sum().backward()
    assert layer.last_cost["backward"].circuits == 2 * layer.theta.numel() * int(valid_patches(x, layer.spec).sum())

@pytest.mark.parametrize("mode", ["autograd", "parameter-shift"])
def test_a_forward_under_no_grad_bills_no_backward(mode):
    layer, x = make(CONFIGS[0], out=3, layers=1, gradient=mode)
    with torch.no_grad():
        out = layer(x)
    assert not out.requires_grad and layer.last_cost["forward"].circuits == 3 * int(valid_patches(x, layer.spec).sum())
    assert layer.last_cost["backward"] == QuantumCost()
    assert layer.total_cost()["backward"] == {"circuits": 0, "shots": 0}
    layer.theta.requires_grad_(False)  # inference with frozen filters: nothing to differentiate either
    assert not layer(x).requires_grad and layer.total_cost()["backward"]["circuits"] == 0


def test_a_layer_on_meta_tensors_gives_shapes_without_computing(monkeypatch):
    backend = TorchBackend()
    for method in ("resolve", "maps", "filter_states", "expectations"):
        monkeypatch.setattr(backend, method, lambda *a, _m=method, **k: pytest.fail(f"{_m} ran for a shape inference"))
    layer = QuConv2d(2, 8, 4, stride=2, padding=1, layers=3, device="meta", backend=backend)
    assert layer.theta.device.type == "meta"
    for dtype in (torch.float32, torch.bfloat16):
        out = layer(torch.empty(5, 2, 28, 27, device="meta", dtype=dtype))
        assert out.device.type == "meta" and out.dtype == dtype and out.shape == (5, 8, 14, 13)
    assert layer.total_cost()["forward"]["circuits"] == 0
    assert layer(torch.empty(2, 28, 27, device="meta")).shape == (8, 14, 13)  # unbatched
