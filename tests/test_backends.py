"""One layer-level suite that every registered backend must pass, as quimb holds all its simulators to one test.

A backend enters by being registered (``qucnn.backends.register_backend``) and available here; exact
backends are held to the per-patch SWAP-test loop and to autograd, every backend to the binomial statistics
of its shot estimates and to the same cost accounting. Tolerances per backend live in :data:`TOLERANCE`.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import EXACT, SIGMAS

from qucnn import QuConv2d, amplitude_encode, swap_test
from qucnn.backends import (
    Backend,
    Filters,
    ReferenceBackend,
    Result,
    TorchBackend,
    available_backends,
    get_backend,
    register_backend,
    registered_backends,
)
from qucnn.core.geometry import ConvSpec
from qucnn.functional import quconv2d
from qucnn.nn.gradients import valid_patches

BACKENDS = available_backends()
EXACT_BACKENDS = [name for name in BACKENDS if get_backend(name).exact]
#: Largest error of an exact backend against the float64 reference (default :data:`EXACT`).
TOLERANCE: dict[str, float] = {}

CONFIGS = [  # in_channels, kernel, stride, padding, dilation, H, W
    (1, 2, 1, 0, 1, 5, 5),
    (1, 3, 1, 1, 1, 6, 5),        # 9 values padded to 16 amplitudes
    (2, (2, 3), (2, 1), (1, 0), 1, 7, 6),
    (3, 2, 2, 1, 1, 5, 6),        # 12 values padded to 16
    (1, 2, 1, "same", (2, 1), 6, 7),
]


def tol(name: str) -> float:
    return TOLERANCE.get(name, EXACT)


def make(config, backend: str, out=3, layers=2, seed=0, **kw):
    c, k, s, p, d, h, w = config
    layer = QuConv2d(c, out, k, stride=s, padding=p, dilation=d, layers=layers, backend=backend,
                     generator=torch.Generator().manual_seed(seed), **kw).double()
    x = torch.rand(2, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    x[0, :, : h // 2, : w // 2] = 0  # all-zero patches must give 0
    return layer, x


def per_patch_reference(layer: QuConv2d, x: torch.Tensor) -> torch.Tensor:
    """A loop over images, positions and filters with swap_test: independent of every backend."""
    spec = layer._spec
    xp, spec = spec.prepare(x)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel, spec.stride, spec.padding, spec.dilation
    xp = torch.nn.functional.pad(xp, (pw, pw, ph, ph))
    ho, wo = layer.output_shape(x.shape[-2], x.shape[-1])
    states = layer.ansatz.state(layer.theta.detach(), method="gates")
    out = torch.zeros(x.shape[0], layer.out_channels, ho, wo, dtype=x.dtype)
    for b in range(x.shape[0]):
        for r in range(ho):
            for c in range(wo):
                window = xp[b, :, r * sh: r * sh + dh * (kh - 1) + 1: dh, c * sw: c * sw + dw * (kw - 1) + 1: dw]
                patch = amplitude_encode(window.reshape(-1))
                for o in range(layer.out_channels):
                    out[b, o, r, c] = swap_test(states[o], patch.to(states.dtype)) if patch.any() else 0
    return out


@pytest.mark.parametrize("name", EXACT_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
def test_forward_matches_the_per_patch_swap_test_loop(name, config):
    layer, x = make(config, name)
    out = layer(x)
    ref = per_patch_reference(layer, x)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert (out.double() - ref).abs().max() <= tol(name)
    assert torch.all(out[0, :, 0, 0] == 0)
    assert layer.last_cost["forward"].circuits == 3 * int(valid_patches(*layer._spec.prepare(x)).sum())


@pytest.mark.parametrize("name", EXACT_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
def test_every_backend_equals_the_reference_forward_and_gradients(name, config):
    up = None
    results = []
    for backend in ("reference", name):
        layer, x = make(config, backend)
        xr = x.clone().requires_grad_(True)
        out = layer(xr)
        up = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) if up is None else up
        out.backward(up)
        results.append((out.detach(), xr.grad, layer.theta.grad))
    for a, b in zip(*results):
        assert (a.double() - b.double()).abs().max() <= 10 * tol(name)
    assert results[0][2].abs().max() > 1e-3


@pytest.mark.parametrize("name", EXACT_BACKENDS)
@pytest.mark.parametrize("mode", ["parameter-shift", "entanglement"])
def test_exact_quantum_gradients_equal_autograd(name, mode):
    layer, x = make(CONFIGS[2], name)
    up = torch.randn(layer(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grads = []
    for gradient in ("autograd", mode):
        layer.gradient = gradient
        layer.zero_grad()
        xr = x.clone().requires_grad_(True)
        layer(xr).backward(up)
        grads.append((layer.theta.grad.clone(), xr.grad))
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 100 * tol(name)
    cost = layer.last_cost["backward"]
    assert cost.shots is None and cost.circuits > 0
    assert cost.qubits == 2 * layer.n_qubits + (1 if mode == "parameter-shift" else 2)


@pytest.mark.parametrize("name", BACKENDS)
def test_shot_estimates_are_binomial(name):
    """Mean within 5 standard errors of F and variance within 5 of its standard errors of (1 - F^2) / S. The
    repeats are copies of the batch within a call and successive calls: draws must be independent both ways."""
    exact = get_backend(name).exact
    shots, calls = (200, 8) if exact else (25, 2)  # a circuit backend pays for every shot and every job
    repeats = 400
    copies = repeats // calls
    layer, x = make(CONFIGS[0], name, out=2, layers=1)
    exact = QuConv2d(1, 2, 2, layers=1).double()
    exact.load_state_dict(layer.state_dict())
    with torch.no_grad():
        f = exact(x)
        layer.shots = shots
        layer.generator = torch.Generator().manual_seed(11)
        # copies of x in one call: every output is estimated `copies` times, independently (a circuit backend
        # binds identical circuits once and splits their shots), in one job instead of `copies`
        batch = x.repeat(copies, 1, 1, 1)
        draws = torch.cat([layer(batch).unflatten(0, (copies, x.shape[0])) for _ in range(calls)]).double()
    valid = f > 0
    mean, var = draws.mean(0), draws.var(0)
    theory = (1 - f**2) / shots
    assert torch.all(((mean - f).abs() <= SIGMAS * (theory / repeats).sqrt() + 1e-12)[valid])
    rel = (var[valid] / theory[valid] - 1).abs()
    assert torch.all(rel <= SIGMAS * math.sqrt(2 / (repeats - 1)) + 0.05)
    assert torch.all(draws[:, ~valid] == 0)  # all-zero patches are not run
    assert layer.last_cost["forward"].shots == layer.last_cost["forward"].circuits * shots


@pytest.mark.parametrize("name", BACKENDS)
def test_empty_and_unbatched_inputs(name):
    shots = None if get_backend(name).exact else 100
    layer, x = make(CONFIGS[0], name, shots=shots)
    empty = layer(x[:0])
    assert empty.shape == (0, 3, 4, 4)
    one = layer(x[1])
    assert one.shape == (3, 4, 4)


def test_functional_equals_the_layer_exactly():
    for config in CONFIGS:
        layer, x = make(config, "torch")
        c, k, s, p, d, h, w = config
        theta = layer.theta.detach().clone().requires_grad_(True)
        for x_grad in (False, True):  # the patch-matrix and the convolution route
            xa, xb = x.clone().requires_grad_(x_grad), x.clone().requires_grad_(x_grad)
            by_function = quconv2d(xa, theta, k, s, p, dilation=d, layers=2)
            by_layer = layer(xb)
            assert torch.equal(by_function, by_layer)
            theta.grad = None
            layer.zero_grad()
            by_function.sum().backward()
            by_layer.sum().backward()
            assert torch.equal(theta.grad, layer.theta.grad)
            assert not x_grad or torch.equal(xa.grad, xb.grad)


# -- the registry ----------------------------------------------------------------------------------
class CountingBackend(TorchBackend):
    """A backend defined outside qucnn: the torch simulator, counting its calls."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def expectations(self, *args, **kwargs) -> Result:
        self.calls += 1
        return super().expectations(*args, **kwargs)


def test_registry_lists_adds_and_refuses():
    assert BACKENDS[:2] == ["torch", "reference"]
    assert isinstance(get_backend("torch"), TorchBackend) and isinstance(get_backend("reference"), ReferenceBackend)
    assert get_backend("torch") is get_backend("torch")
    own = TorchBackend()
    assert get_backend(own) is own
    with pytest.raises(ValueError, match="unknown backend 'nope'; registered: torch, reference, triton, aer, pennylane"):
        get_backend("nope")
    with pytest.raises(ValueError, match="unknown backend"):
        QuConv2d(1, 2, 2, backend="nope")
    with pytest.raises(TypeError, match="backend must be a name or a qucnn.backends.Backend"):
        get_backend(3)
    register_backend("counting-test", CountingBackend)
    try:
        assert "counting-test" in available_backends()
        with pytest.raises(ValueError, match="registered already"):
            register_backend("counting-test", CountingBackend)
        layer = QuConv2d(1, 2, 2, layers=1, backend="counting-test", gradient="parameter-shift")
        layer(torch.rand(1, 1, 4, 4)).sum().backward()
        backend = get_backend("counting-test")
        assert backend.calls == 2  # the forward and the shifted filters of the backward
        register_backend("hidden-test", CountingBackend, available=lambda: False)
        assert "hidden-test" not in available_backends() and "hidden-test" in registered_backends()
    finally:
        from qucnn.backends import registry

        for name in ("counting-test", "hidden-test"):
            registry._FACTORIES.pop(name, None)
            registry._AVAILABLE.pop(name, None)
            registry._INSTANCES.pop(name, None)


def test_filters_and_results_hold_what_they_promise():
    theta = torch.zeros(2, 3, 1, 2, 2)
    f = Filters(theta=theta)
    assert f.shape == (2, 3) and f.n_qubits == 2 and f.flatten().theta.shape == (6, 1, 2, 2)
    assert f.take(torch.tensor([4])).theta.shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="needs theta"):
        Filters()
    with pytest.raises(ValueError, match="different numbers of filters"):
        Filters(theta=theta, states=torch.zeros(5, 4))
    assert Result(torch.zeros(1), 0).wall_s is None
    assert issubclass(CountingBackend, Backend)


def test_circuit_primitive_agrees_with_the_dense_one():
    layer, x = make(CONFIGS[0], "torch", out=2, layers=1)
    spec = ConvSpec.make(2)
    backend = get_backend("torch")
    dense = backend.expectations(x, Filters(theta=layer.theta.detach()[None]), spec)
    patches = torch.nn.functional.unfold(x, 2).transpose(1, 2).reshape(-1, 4)  # (B*16, 4), row-major positions
    rows = backend.circuits(patches.repeat_interleave(2, 0), Filters(theta=layer.theta.detach().repeat(32, 1, 1, 1)))
    assert torch.allclose(rows.values.reshape(2, 4, 4, 2).permute(0, 3, 1, 2), dense.values[0], atol=EXACT)
    assert int(rows.circuits) == int(dense.circuits)


def test_layers_with_a_backend_object_copy_and_pickle():
    import copy
    import pickle

    layer = QuConv2d(1, 2, 2, layers=1, backend=TorchBackend(), generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = layer(x)  # fills the backend's filter-state cache (weak references)
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert isinstance(clone.backend, TorchBackend) and torch.equal(clone(x), expected)
