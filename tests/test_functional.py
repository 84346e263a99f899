"""``qucnn.functional.quconv2d`` and the layer composed with PyTorch: nn.Conv2d's geometry, torch.compile,
double backward, clear errors, honest costs, no host reads in an exact step, and fidelities that do not
depend on the scale or the float type of the input."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import EXACT

import qucnn
from qucnn import QuantumSettings, QuConv2d, UsageError
from qucnn.backends import SimulatorBackend, TorchBackend
from qucnn.core import windows
from qucnn.core.geometry import ConvSpec
from qucnn.functional import quconv2d
from qucnn.nn import functional as functional_module
from qucnn.nn.cost import CostLedger
from qucnn.nn.models import build_model


def _theta(out: int, layers: int, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 2 * math.pi * torch.rand(out, layers, n, 2, dtype=torch.float64, generator=gen)


def _unfold_reference(x: torch.Tensor, theta: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """Fidelities from nn.Conv2d's own patch geometry: pad as the module does, unfold, encode, overlap."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        pad = conv._reversed_padding_repeated_twice
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x, padding = F.pad(x, pad, mode=mode), 0
    else:
        padding = conv.padding
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)
    cols = cols.transpose(1, 2)  # (B, L, m)
    norm = cols.norm(dim=-1, keepdim=True)
    unit = torch.where(norm > 0, cols / norm.clamp_min(1e-300), 0)
    from qucnn import FilterAnsatz

    states = FilterAnsatz(theta.shape[2], theta.shape[1]).state(theta, method="gates")[:, : cols.shape[-1]]
    overlap = unit.to(states.dtype) @ states.conj().T  # (B, L, O)
    fid = overlap.abs() ** 2
    ho, wo = conv(torch.zeros((1,) + x.shape[1:], dtype=x.dtype)).shape[-2:] if not isinstance(padding, int) or \
        padding else F.conv2d(x[:1], conv.weight, stride=conv.stride, dilation=conv.dilation).shape[-2:]
    return fid.transpose(1, 2).reshape(x.shape[0], -1, ho, wo)


@pytest.mark.parametrize("kernel, stride, padding, dilation, mode", [
    (3, 1, "same", 1, "zeros"), (4, 1, "same", 1, "zeros"), ((2, 3), 1, "same", (2, 1), "zeros"),
    (3, 2, "valid", 1, "zeros"), (3, (2, 1), (1, 2), (1, 2), "zeros"), (2, 1, 1, 1, "reflect"),
    (3, 1, "same", 1, "circular"), (2, 2, (1, 0), 1, "replicate")])
def test_geometry_is_nn_conv2d_geometry(kernel, stride, padding, dilation, mode):
    x = torch.rand(2, 2, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[0, :, :4] = 0
    conv = torch.nn.Conv2d(2, 3, kernel, stride, padding, dilation, padding_mode=mode, dtype=torch.float64)
    n = ConvSpec.make(kernel).n_qubits(2)
    theta = _theta(3, 2, n)
    out = quconv2d(x, theta, kernel, stride, padding, dilation=dilation, padding_mode=mode)
    assert out.shape == conv(x).shape
    assert torch.allclose(out, _unfold_reference(x, theta, conv), atol=EXACT)
    layer = QuConv2d(2, 3, kernel, stride, padding, dilation, padding_mode=mode, layers=2).double()
    with torch.no_grad():
        layer.theta.copy_(theta)
    assert torch.equal(layer(x), out)
    assert layer.output_shape(9, 8) == tuple(conv(x).shape[-2:])


def test_device_and_dtype_arguments_like_nn_conv2d():
    layer = QuConv2d(1, 2, 2, layers=1, dtype=torch.float64, device="cpu")
    assert layer.theta.dtype == torch.float64 and layer.theta.device.type == "cpu"
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        QuConv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        QuConv2d(1, 2, 3, padding_mode="mirror")


def test_torch_compile_of_the_hybrid_model_agrees_with_eager():
    torch._dynamo.reset()
    model = build_model("quantum", filters=4, seed=0)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    eager = model(x)
    eager.sum().backward()
    grad = model.first.theta.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    assert torch.allclose(out, eager, atol=1e-6)
    assert torch.allclose(model.first.theta.grad, grad, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_with_inductor_agrees_with_eager():
    torch._dynamo.reset()
    model = build_model("quantum", filters=8, seed=0)
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(torch.compile(model)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_double_backward_in_autograd_mode(backend):
    # F is discontinuous at an all-zero patch (F(eps v) = F(v), F(0) = 0), so no finite difference of
    # second order is meaningful there: this input has none (first-order checks with them are elsewhere)
    x = 0.1 + torch.rand(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    theta = _theta(2, 1, 3)

    def fn(inp, t):
        return quconv2d(inp, t, 2, padding=1, backend=backend)

    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True), theta.requires_grad_(True)))
    assert torch.autograd.gradgradcheck(fn, (x, theta))


@pytest.mark.parametrize("mode", ["parameter-shift", "entanglement", "sampled"])
def test_quantum_gradient_modes_refuse_create_graph(mode):
    layer = QuConv2d(1, 2, 2, layers=1, gradient=mode, gradient_budget=64)
    x = torch.rand(1, 1, 4, 4, requires_grad=True)
    out = layer(x).sum()
    with pytest.raises(ValueError, match="create_graph=True .* needs gradient='autograd'"):
        torch.autograd.grad(out, layer.theta, create_graph=True)
    (grad,) = torch.autograd.grad(layer(x).sum(), layer.theta)  # a plain backward still works
    assert grad.shape == layer.theta.shape


def test_autograd_mode_reports_what_parameter_shift_would_need():
    layer = QuConv2d(1, 3, 2, layers=2, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(4))
    x[0, :, :3, :3] = 0
    nonzero = int((F.unfold(x, 2).abs().sum(1) > 0).sum())
    layer(x).sum().backward()
    cost = layer.last_cost["backward"]
    assert cost.circuits == 2 * layer.theta.numel() * nonzero and cost.shots is None and cost.exact
    assert cost.qubits == 2 * layer.n_qubits + 1
    layer.theta.requires_grad_(False)  # frozen filters: a backward (for x only) runs no filter circuits
    layer(x.requires_grad_(True)).sum().backward()
    assert layer.last_cost["backward"].circuits == 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_an_exact_training_step_reads_nothing_back_from_the_device(monkeypatch):
    """What a CUDA step would synchronise on, counted on the CPU: the finite check queued on the device,
    no cache comparisons; every host read of a tensor in forward + backward would be counted."""
    reads = []
    for name in ("__bool__", "item", "tolist", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a))
    monkeypatch.setattr(functional_module, "check_finite",
                        lambda x, what: torch._assert_async(torch.isfinite(x.detach()).all(), what))
    monkeypatch.setattr(windows, "reads_back_freely", lambda device: False)  # as on a GPU
    model = build_model("quantum", filters=4, seed=0, backend=TorchBackend())
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3])
    reads.clear()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert reads == []
    assert model.first.theta.grad.abs().sum() > 0


def test_nan_input_still_raises():
    layer = QuConv2d(1, 2, 2, layers=1)
    x = torch.rand(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="must be finite"):
        layer(x)


def test_shots_accept_integer_likes_and_one_shot_is_exactly_plus_or_minus_one():
    layer = QuConv2d(1, 4, 2, layers=1, shots=np.int64(1), generator=torch.Generator().manual_seed(0))
    assert layer.shots == 1 and isinstance(layer.shots, int)
    x = torch.rand(3, 1, 5, 5)
    x[0, :, :3, :3] = 0
    out = layer(x.requires_grad_(True))
    valid = F.unfold(x.detach(), 2).abs().sum(1).reshape(3, 1, 4, 4) > 0
    assert torch.all(out[valid.expand_as(out)].abs() == 1) and torch.all(out[~valid.expand_as(out)] == 0)
    out.sum().backward()  # the expectation's gradient flows
    assert layer.theta.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="shots must be a positive int or None"):
        layer.shots = 2.5


def test_warnings_for_settings_that_do_nothing_or_too_little():
    x = torch.rand(1, 1, 4, 4)
    with pytest.warns(UserWarning, match="gradient_shots=10 is ignored with gradient='autograd'"):
        QuConv2d(1, 2, 2, layers=1, gradient_shots=10)(x)
    with pytest.warns(UserWarning, match="gradient_budget=4 is below the 16 circuits"):
        QuConv2d(1, 2, 2, layers=1, gradient="sampled", gradient_budget=4)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QuConv2d(1, 2, 2, layers=1, gradient="sampled", gradient_budget=64)(x)


def test_functional_errors_say_what_was_expected():
    x = torch.rand(1, 1, 5, 5)
    with pytest.raises(ValueError, match=r"theta must have shape \(out_channels, layers, 2, 2\)"):
        quconv2d(x, torch.zeros(2, 1, 3, 2), 2)
    with pytest.raises(ValueError, match="layers=2 but theta has 1 layer"):
        quconv2d(x, torch.zeros(2, 1, 2, 2), 2, layers=2)
    with pytest.raises(ValueError, match="needs gradient_budget"):
        quconv2d(x, torch.zeros(2, 1, 2, 2), 2, gradient="sampled")
    with pytest.raises(UsageError, match="gradient must be one of"):
        quconv2d(x, torch.zeros(2, 1, 2, 2), 2, gradient="finite-difference")


# -- scale and float type ------------------------------------------------------------------------------
SCALES = [("0-255 float16", torch.float16, 255.0, True), ("0-255 bfloat16", torch.bfloat16, 255.0, True),
          ("1e-30 float32", torch.float32, 1e-30, False), ("1e30 float32", torch.float32, 1e30, False),
          ("1e-200 float64", torch.float64, 1e-200, False), ("1e200 float64", torch.float64, 1e200, False),
          ("1e-6 float16", torch.float16, 1e-4, False)]
#: Largest error in F allowed per float type (rounding of the inputs and of float32 arithmetic).
HALF_TOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: EXACT}


@pytest.mark.parametrize("label, dtype, scale, integers", SCALES, ids=[s[0] for s in SCALES])
@pytest.mark.parametrize("x_grad", [False, True])
def test_fidelities_do_not_depend_on_scale_or_float_type(label, dtype, scale, integers, x_grad):
    gen = torch.Generator().manual_seed(6)
    raw = torch.randint(0, 256, (2, 1, 8, 8), generator=gen).double() / 255 if integers else \
        torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=gen)
    raw[0, :, :4, :4] = 0
    x = (raw * scale).to(dtype)
    layer = QuConv2d(1, 8, 4, layers=3, generator=torch.Generator().manual_seed(0))
    expected = layer.double()(x.double() / scale)  # unit scale, float64: F does not depend on the scale
    out = layer.to(torch.float32 if dtype != torch.float64 else torch.float64)(x.requires_grad_(x_grad))
    assert out.dtype == dtype
    assert (out.double() - expected).abs().max() <= HALF_TOL[dtype]
    assert torch.equal(out == 0, expected == 0)  # only the all-zero patches give 0
    out.float().sum().backward()
    assert bool(torch.isfinite(layer.theta.grad).all()) and layer.theta.grad.abs().max() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_does_not_lower_the_fidelities(dtype):
    layer = QuConv2d(1, 8, 4, layers=3, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 256, (2, 1, 8, 8), generator=torch.Generator().manual_seed(7)).float()
    expected = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        out = layer(x)
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-6)
    assert bool((out > 0).all())


def test_raw_pixels_in_half_precision_give_fidelities_not_zeros():
    # issue 16's report, verbatim: QuConv2d(1,8,4)(torch.randint(0,256,(1,1,8,8)).half()) was all zeros
    x = torch.randint(0, 256, (1, 1, 8, 8), generator=torch.Generator().manual_seed(16)).half()
    layer = QuConv2d(1, 8, 4, generator=torch.Generator().manual_seed(0))
    out = layer(x)
    expected = layer.double()(x.double() / 255)
    assert out.shape == (1, 8, 5, 5) and out.dtype == torch.float16 and bool((out > 0).all())
    assert (out.double() - expected).abs().max() <= HALF_TOL[torch.float16]


# -- settings, meta tensors ---------------------------------------------------------------------------------
def test_quantum_settings_validate_every_field_and_stay_frozen():
    settings = QuantumSettings(shots=np.int64(5), gradient="entanglement", gradient_shots=20)
    assert settings.shots == 5 and isinstance(settings.shots, int) and settings.gradient_shots == 20
    assert QuantumSettings().shots is None and QuantumSettings().gradient == "autograd"
    bad = [({"shots": 0}, ValueError, "shots must be a positive int or None, got 0"),
           ({"shots": 2.5}, TypeError, "shots must be a positive int or None, got float 2.5"),
           ({"gradient": "finite-difference"}, ValueError, "gradient must be one of autograd, parameter-shift"),
           ({"gradient_shots": -5}, ValueError, "gradient_shots must be a positive int or None, got -5"),
           ({"gradient_budget": 0}, ValueError, "gradient_budget must be"),
           ({"generator": 3}, TypeError, "generator must be a torch.Generator or None, got int")]
    for changes, error, match in bad:
        with pytest.raises(error, match=match):
            QuantumSettings(**changes)
        with pytest.raises(error, match=match):
            settings.with_(**changes)  # a copy is validated as a new object is
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.shots = 7
    changed = settings.with_(shots=7)
    assert (changed.shots, changed.gradient, changed.gradient_shots) == (7, "entanglement", 20)
    assert settings.shots == 5  # the original is unchanged
    assert qucnn.QuantumSettings is QuantumSettings
    assert qucnn.functional.GRADIENT_MODES == functional_module.GRADIENT_MODES == qucnn.GRADIENT_MODES


def test_quantum_settings_checks_that_need_the_backend():
    with pytest.raises(ValueError, match="backend 'aer' runs circuits and has no exact mode: give shots"):
        QuantumSettings().check_with(False, "aer", 8, 2)
    with pytest.raises(ValueError, match="gradient='entanglement' on backend 'aer' needs gradient_shots"):
        QuantumSettings(shots=10, gradient="entanglement").check_with(False, "aer", 8, 2)
    with pytest.raises(ValueError, match="needs gradient_budget"):
        QuantumSettings(gradient="sampled").check_with(True, "torch", 8, 2)
    with pytest.warns(UserWarning, match="gradient_budget=4 is below the 32 circuits"):
        QuantumSettings(gradient="sampled", gradient_budget=4).check_with(True, "torch", 8, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QuantumSettings(shots=10, gradient="entanglement", gradient_shots=5).check_with(False, "aer", 8, 2)


class _Untouchable(SimulatorBackend):
    """A backend that fails if anything is computed on it."""

    name = "untouchable"

    def maps(self, x, states, spec):
        raise AssertionError("maps was called for a shape inference")

    def filter_states(self, theta):
        raise AssertionError("filter_states was called for a shape inference")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_meta_tensors_give_the_output_shape_and_dtype_without_computing(dtype):
    conv = torch.nn.Conv2d(2, 3, (2, 3), (2, 1), (1, 0), (1, 2), device="meta")
    x = torch.empty(4, 2, 9, 8, device="meta", dtype=dtype)
    theta = torch.empty(3, 2, 4, 2, device="meta")  # 12 values: 4 qubits
    ledger = CostLedger()
    for mode in ("autograd", "parameter-shift"):
        out = quconv2d(x, theta, (2, 3), (2, 1), (1, 0), dilation=(1, 2), gradient=mode, backend=_Untouchable(),
                       cost=ledger)
        assert out.device.type == "meta" and out.dtype == dtype and out.shape == conv(x.float()).shape
    unbatched = quconv2d(x[0], torch.zeros(3, 2, 4, 2), (2, 3), backend=_Untouchable())  # x on meta suffices
    assert unbatched.device.type == "meta" and unbatched.shape == (3, 8, 6)
    assert ledger.total()["forward"]["circuits"] == 0 and not ledger._pending  # nothing ran, nothing billed
    with pytest.raises(ValueError, match=r"theta must have shape \(out_channels, layers, 4, 2\)"):
        quconv2d(x, torch.empty(3, 2, 3, 2, device="meta"), (2, 3), backend=_Untouchable())  # checks still run
