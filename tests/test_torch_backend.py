"""The torch backend's fast paths against the reference backend they replace (float64).

References: the gate-by-gate simulator for the ansatz state (``method="gates"``), and autograd through the
plain composition (:func:`qucnn.backends.reference.plain_fidelity`) for the fidelity maps. Inputs are random,
with odd sizes, strides, padding, dilation, all-zero patches and several channels; gradients are compared
for ``x`` and the filter states, in the single-pass and the chunked (recomputing) modes, by both routes.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import EXACT, SINGLE, careful_reference, faint_images, random_state

from qucnn import FilterAnsatz, QuConv2d
from qucnn.backends import (
    Filters,
    FusedEngine,
    ReferenceBackend,
    RoutePolicy,
    SimulatorBackend,
    TorchBackend,
    get_backend,
)
from qucnn.backends import policy as policy_module
from qucnn.backends.fused import parts
from qucnn.backends.reference import plain_norms
from qucnn.core import ansatz as ansatz_module
from qucnn.core.ansatz import ansatz_state
from qucnn.core.geometry import ConvSpec
from qucnn.core.windows import prepare_input, squared_norms, valid_patches

REFERENCE = ReferenceBackend()
CHUNKED = RoutePolicy(chunk_elements=1, save_elements=1)  # one image per chunk, nothing kept


def _theta(batch: int, layers: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return 2 * math.pi * torch.rand(batch, layers, n, 2, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("n,layers", [(1, 1), (1, 3), (2, 2), (3, 1), (4, 3), (5, 2), (6, 2)])
@pytest.mark.parametrize("dense", [True, False])
def test_ansatz_state_and_gradient_match_the_simulator(n, layers, dense, gen, monkeypatch):
    if not dense:
        monkeypatch.setattr(ansatz_module, "DENSE_LAYER_ELEMENTS", 0)  # force the qubit-by-qubit path
    ansatz = FilterAnsatz(n, layers)
    theta = _theta(5, layers, n, gen).requires_grad_(True)
    up = torch.randn(5, 2**n, dtype=torch.complex128, generator=gen)
    grads, states = [], []
    for method in ("closed", "gates"):
        psi = ansatz.state(theta, method=method)
        # a real loss that reaches both the real and the imaginary parts, nonlinearly
        loss = (psi.real * up.real).sum() + (psi.imag * up.imag).sum() + (psi.abs() ** 4).sum()
        (grad,) = torch.autograd.grad(loss, theta)
        states.append(psi.detach())
        grads.append(grad)
    assert torch.allclose(states[0], states[1], atol=EXACT)
    assert torch.allclose(grads[0], grads[1], atol=EXACT)
    assert grads[1].abs().max() > 1e-3  # a non-trivial comparison


def test_ansatz_closed_form_keeps_shapes_dtypes_and_passes_gradcheck_and_gradgradcheck(gen):
    ansatz = FilterAnsatz(3, 2)
    assert ansatz.state(torch.zeros(2, 4, 2, 3, 2)).shape == (2, 4, 8)
    assert ansatz.state(torch.zeros(2, 3, 2, dtype=torch.float32)).dtype == torch.complex64
    assert ansatz.state(torch.zeros(2, 3, 2, dtype=torch.float16)).dtype == torch.complex64
    theta = _theta(2, 2, 3, gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.view_as_real(ansatz_state(t)), (theta,))
    assert torch.autograd.gradgradcheck(lambda t: torch.view_as_real(ansatz_state(t)), (theta,))


# -- fidelity maps -----------------------------------------------------------------------------------
GEOMETRIES = [  # (channels, H, W, kernel, stride, padding, dilation)
    (1, 9, 7, (4, 4), (1, 1), (0, 0), (1, 1)),
    (1, 11, 10, (3, 2), (2, 3), (1, 2), (1, 1)),
    (2, 8, 9, (3, 4), (1, 2), (2, 0), (1, 1)),
    (3, 7, 7, (2, 2), (3, 1), (1, 1), (1, 1)),
    (2, 10, 9, (2, 3), (1, 2), (1, 0), (2, 3)),
]


def _spec(geometry) -> ConvSpec:
    return ConvSpec.make(*geometry[3:])


def _inputs(channels, h, w, kernel, filters, gen):
    x = torch.rand(3, channels, h, w, dtype=torch.float64, generator=gen)
    x[0, :, : h // 2, : w // 2] = 0  # all-zero patches
    x[2] = 0  # an all-zero image
    n = math.ceil(math.log2(channels * kernel[0] * kernel[1]))
    states = FilterAnsatz(n, 2).state(_theta(filters, 2, n, gen))
    return x, states


def _maps_and_grads(backend, x, states, spec, up):
    xr = x.clone().requires_grad_(True)
    sr = states.clone().requires_grad_(True)
    out = backend.maps(xr, sr, spec)[0]
    gx, gs = torch.autograd.grad(out, (xr, sr), up)
    return out.detach(), gx, gs


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("policy", [RoutePolicy(), CHUNKED], ids=["one-pass", "chunks-recomputed"])
def test_fidelity_maps_and_gradients_match_the_reference(geometry, policy, gen):
    x, states = _inputs(*geometry[:4], 3, gen)
    spec = _spec(geometry)
    expected = REFERENCE.maps(x, states, spec)[0]
    up = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
    fast = _maps_and_grads(TorchBackend(policy), x, states, spec, up)
    ref = _maps_and_grads(REFERENCE, x, states, spec, up)
    for a, b in zip(fast, ref):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=EXACT)
    assert torch.equal(fast[0][2], torch.zeros_like(fast[0][2]))  # all-zero image: fidelity 0
    assert (fast[0] == 0).any() and fast[0].max() > 0.05
    assert fast[1].abs().max() > 1e-3 and fast[2].abs().max() > 1e-3


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("route", ["conv", "patches"])
@pytest.mark.parametrize("mode", ["one-pass", "chunks-recomputed", "no-grad"])
def test_both_routes_match_the_reference(geometry, route, mode, gen):
    x, states = _inputs(*geometry[:4], 3, gen)
    spec = _spec(geometry)
    policy = RoutePolicy(route=route, **({"chunk_elements": 1, "save_elements": 1} if mode != "one-pass" else {}))
    backend = TorchBackend(policy)
    expected = REFERENCE.maps(x, states, spec)[0]
    up = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
    sr = states.clone().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(REFERENCE.maps(x, sr, spec)[0], sr, up)
    if mode == "no-grad":
        with torch.no_grad():
            out = backend.maps(x, states, spec)[0]
        assert torch.allclose(out, expected, atol=EXACT)
        return
    sr = states.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    out = backend.maps(xr, sr, spec)[0]
    first = torch.autograd.grad(out, (xr, sr), up, retain_graph=True)
    second = torch.autograd.grad(out, (xr, sr), up)  # the kept overlaps were used up: recomputed
    ref = _maps_and_grads(REFERENCE, x, states, spec, up)
    assert torch.allclose(out, expected, atol=EXACT)
    for a, b, r in zip(first, second, ref[1:]):
        assert torch.allclose(a, r, atol=EXACT) and torch.allclose(b, r, atol=EXACT)
    assert ref_grad.abs().max() > 1e-3 and torch.equal(out[2], torch.zeros_like(out[2]))


def test_the_patch_route_is_taken_for_eight_4x4_filters_without_an_input_gradient(gen, monkeypatch):
    calls = []
    original = parts.unfolded_parts
    monkeypatch.setattr(parts, "unfolded_parts", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = QuConv2d(1, 8, 4, layers=2, generator=gen).double()
    x = torch.rand(2, 1, 9, 9, dtype=torch.float64, generator=gen)
    layer(x).sum().backward()
    assert len(calls) == 1
    layer(x.requires_grad_(True)).sum().backward()  # x needs a gradient: the convolution route
    assert len(calls) == 1 and x.grad is not None


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_squared_norms_match_the_convolution_and_keep_exact_zeros(geometry, gen):
    x, _ = _inputs(*geometry[:4], 1, gen)
    spec = _spec(geometry)
    fast, ref = squared_norms(x, spec), plain_norms(x, spec)
    assert fast.shape == ref.shape and torch.allclose(fast, ref, atol=EXACT)
    assert torch.equal(fast == 0, ref == 0) and bool((fast == 0).any())
    wide = torch.rand(2, geometry[0], 9, 67, dtype=torch.float64, generator=gen)
    wide[1, :, :, 10:40] = 0
    for band in (64, 0):  # the band-matrix and the shifted-add branch
        fast_wide = squared_norms(wide, spec, band_max_size=band)
        ref_wide = plain_norms(wide, spec)
        assert torch.allclose(fast_wide, ref_wide, atol=EXACT) and torch.equal(fast_wide == 0, ref_wide == 0)
    assert bool((plain_norms(wide, spec) == 0).any())


@pytest.mark.parametrize("policy", [RoutePolicy(), CHUNKED], ids=["one-pass", "chunked"])
@pytest.mark.parametrize("grad", [False, True])
def test_valid_masks_and_counts_give_the_patches_that_are_not_all_zero(policy, grad, gen):
    """``maps`` returns which patches are not all zero; the layer's ledger counts ``K`` circuits for each."""
    x, states = _inputs(2, 8, 9, (3, 4), 2, gen)
    spec = ConvSpec.make((3, 4), (1, 2), (2, 0))
    valid = plain_norms(x, spec) > 0
    assert 0 < int(valid.sum()) < valid.numel()
    with torch.set_grad_enabled(grad):
        for backend in (TorchBackend(policy), REFERENCE):
            out, mask = backend.maps(x.clone().requires_grad_(grad), states, spec)
            assert mask.dtype == torch.bool and torch.equal(mask, valid)
            assert out.shape == (3, 2, 10, 3) and out.requires_grad == grad
            layer = QuConv2d(2, 2, (3, 4), (1, 2), (2, 0), layers=2, backend=backend).double()
            layer(x.clone().requires_grad_(grad))
            assert layer.last_cost["forward"].circuits == 2 * int(valid.sum())


@pytest.mark.parametrize("route", ["conv", "patches"])
def test_second_backward_with_retain_graph_recomputes(route, gen):
    x, states = _inputs(2, 8, 9, (3, 4), 2, gen)
    xr, sr = x.requires_grad_(True), states.requires_grad_(True)
    out = TorchBackend(RoutePolicy(route=route)).maps(xr, sr, ConvSpec.make((3, 4), (1, 2), (2, 0)))[0]
    up = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    first = torch.autograd.grad(out, (xr, sr), up, retain_graph=True)
    second = torch.autograd.grad(out, (xr, sr), up)
    for a, b in zip(first, second):
        assert torch.allclose(a, b, atol=EXACT)


def test_float32_agrees_with_float64(gen):
    layer = QuConv2d(1, 8, 4, layers=3, generator=gen)
    x = torch.rand(4, 1, 13, 12, generator=gen)
    x[0, :, :6] = 0
    out32 = layer(x)
    out64 = layer.double()(x.double())
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out64, atol=SINGLE)


def test_inference_reuses_filter_states_only_for_identical_angles(gen):
    backend = TorchBackend()
    theta = _theta(4, 2, 3, gen)
    reference = FilterAnsatz(3, 2)
    with torch.no_grad():
        first = backend.filter_states(theta)
        first.mul_(0)  # the caller owns what it gets: the cache must not see this
        again = backend.filter_states(theta)
        assert torch.allclose(again, reference.state(theta, method="gates"), atol=EXACT)
        theta.data[0, 0, 0, 0] += 0.5  # a change the version counter does not see
        changed = backend.filter_states(theta)
    assert torch.allclose(changed, reference.state(theta, method="gates"), atol=EXACT)
    assert not torch.allclose(changed, again, atol=1e-3)
    leaf = theta.clone().requires_grad_(True)
    assert backend.filter_states(leaf).grad_fn is not None  # with a gradient to record: computed, not cached


@pytest.mark.parametrize("route", ["conv", "patches"])
def test_empty_batch(route, gen):
    states = FilterAnsatz(2, 2).state(_theta(8, 2, 2, gen)).requires_grad_(True)
    x = torch.rand(0, 1, 9, 9, dtype=torch.float64, requires_grad=route == "conv")
    out, valid = TorchBackend(RoutePolicy(route=route)).maps(x, states, ConvSpec.make(2))
    assert out.shape == (0, 8, 8, 8) and valid.shape == (0, 1, 8, 8) and valid.dtype == torch.bool
    (grad,) = torch.autograd.grad(out.sum(), states)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_route_policy_validates_and_resolves_per_device():
    with pytest.raises(ValueError, match="route must be one of auto, conv, patches"):
        RoutePolicy(route="fft")
    with pytest.raises(ValueError, match="chunk_elements must be a positive int"):
        RoutePolicy(chunk_elements=0)
    cpu = RoutePolicy().resolved(torch.device("cpu"))
    assert (cpu.chunk_elements, cpu.save_elements) == (policy_module.CPU_CHUNK_ELEMENTS,
                                                        policy_module.CPU_SAVE_ELEMENTS)
    assert RoutePolicy(chunk_elements=7).resolved(torch.device("cpu")).chunk_elements == 7
    with pytest.raises(TypeError, match="policy must be a RoutePolicy"):
        TorchBackend(policy="conv")
    assert get_backend("torch").policy == RoutePolicy()


class _Kernels:
    """Stands in for the Triton engine where there is no GPU: holds patches of up to 256 values."""

    @staticmethod
    def holds(taps: int) -> bool:
        return taps <= 256


def test_calls_of_more_than_triton_max_filters_stay_on_the_fused_engine(monkeypatch):
    """On CUDA with Triton, ``engine="auto"`` gives the Triton engine the calls of up to ``triton_max_filters``
    filters (faster at 8, slower at 32 on an H200) on patches it holds; every other call, the whole call, the
    fused engine."""
    with pytest.raises(ValueError, match="triton_max_filters must be a non-negative int"):
        RoutePolicy(triton_max_filters=-1)
    kernels = _Kernels()
    monkeypatch.setattr(policy_module, "_gpu_triton", lambda: True)  # as if Triton compiled for a GPU
    monkeypatch.setattr(policy_module, "_triton_engine", lambda: kernels)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    sizes = {"chunk_elements": 1 << 19, "save_elements": 1 << 22}  # given: no query of a device's memory
    for limit in (8, 3):
        policy = RoutePolicy(triton_max_filters=limit, **sizes)
        for filters in (1, 3, 4, 8, 9):
            engine = policy.resolve(cuda, filters, 16)
            assert (engine is kernels) == (filters <= limit)
            assert engine is kernels or isinstance(engine, FusedEngine)
        assert isinstance(policy.resolve(cuda, 1, 257), FusedEngine)  # patches larger than the kernels hold
        assert isinstance(policy.resolve(cpu, 1, 16), FusedEngine)  # the CPU never gets the kernels by "auto"
    assert isinstance(RoutePolicy(engine="fused", **sizes).resolve(cuda, 1, 16), FusedEngine)
    assert RoutePolicy(engine="triton", **sizes).resolve(cuda, 64, 16) is kernels  # whatever the filter count


def test_route_policy_engine_is_validated_and_resolved_once_per_policy_on_the_cpu():
    with pytest.raises(ValueError, match="engine must be one of auto, fused, triton, reference; got 'gpu'"):
        RoutePolicy(engine="gpu")
    cpu = torch.device("cpu")
    assert isinstance(RoutePolicy(engine="reference").resolve(cpu, 8, 16), ReferenceBackend)
    for engine in ("auto", "fused"):
        policy = RoutePolicy(engine=engine, route="patches")
        fused = policy.resolve(cpu, 8, 16)
        assert type(fused) is FusedEngine and fused.policy == policy.resolved(cpu)
        assert (fused.policy.chunk_elements, fused.policy.save_elements, fused.policy.route) == (
            policy_module.CPU_CHUNK_ELEMENTS, policy_module.CPU_SAVE_ELEMENTS, "patches")
        assert policy.resolve(cpu, 3, 9) is fused  # made once per policy and device, whatever the call
        assert RoutePolicy(engine=engine, route="patches").resolve(cpu, 8, 16) is fused  # an equal policy
        assert TorchBackend(policy).resolve(cpu, 8, 16) is fused
    assert RoutePolicy(route="conv").resolve(cpu, 8, 16) is not RoutePolicy(route="patches").resolve(cpu, 8, 16)
    given = RoutePolicy(engine="fused", chunk_elements=5, save_elements=7).resolve(cpu, 8, 16)
    assert (given.policy.chunk_elements, given.policy.save_elements) == (5, 7)


class _Recorder(SimulatorBackend):
    """An engine that records what reaches it and answers with markers."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls = []

    def maps(self, x, states, spec):
        self.calls.append(("maps", x, states, spec))
        return "maps-answer"

    def filter_states(self, theta):
        self.calls.append(("filter_states", theta))
        return "states-answer"

    def sample(self, values, shots, generator=None):
        self.calls.append(("sample", values, shots, generator))
        return "sample-answer"

    def expectations(self, x, filters, spec, *, upstream=None, mask=None, shots=None, generator=None):
        self.calls.append(("expectations", x, filters, spec, upstream, mask, shots, generator))
        return "expectations-answer"

    def circuit_expectations(self, patches, filters, *, upstream=None, shots=None, generator=None):
        self.calls.append(("circuit_expectations", patches, filters, upstream, shots, generator))
        return "circuits-answer"


def _forwarded(call: tuple, *expected) -> bool:
    """Whether a recorded call is ``expected``: the method's name, then the very objects passed on."""
    return call[0] == expected[0] and len(call) == len(expected) and all(a is b for a, b in zip(call[1:], expected[1:]))


def test_torch_backend_forwards_every_method_to_the_engine_its_policy_resolves(monkeypatch, gen):
    engine, asked = _Recorder(), []

    def resolve(policy, device, filters, taps):
        asked.append((policy, device, filters, taps))
        return engine

    monkeypatch.setattr(RoutePolicy, "resolve", resolve)
    policy = RoutePolicy(route="conv")
    backend = TorchBackend(policy)
    x, spec, theta = torch.rand(2, 3, 6, 6, generator=gen), ConvSpec.make((2, 3)), torch.rand(5, 2, 5, 2)
    states, values, deltas = torch.ones(4, 32) / 32**0.5, torch.rand(7), torch.rand(3)
    filters, up, mask = Filters(theta=theta[None]), torch.rand(2, 5, 5, 4), torch.ones(2, 5, 5, 4, dtype=torch.bool)
    patches, generator = torch.rand(3, 18), torch.Generator()
    assert backend.resolve(x.device, 5, 18) is engine and asked.pop() == (policy, x.device, 5, 18)
    assert backend.maps(x, states, spec) == "maps-answer"
    assert _forwarded(engine.calls.pop(), "maps", x, states, spec) and asked.pop() == (policy, x.device, 4, 18)
    assert backend.filter_states(theta) == "states-answer"
    assert _forwarded(engine.calls.pop(), "filter_states", theta) and asked.pop()[:2] == (policy, theta.device)
    assert backend.sample(values, 10, generator) == "sample-answer"
    assert _forwarded(engine.calls.pop(), "sample", values, 10, generator)
    assert asked.pop()[:2] == (policy, values.device)
    assert backend.expectations(x, filters, spec, upstream=up, mask=mask, shots=3,
                                generator=generator) == "expectations-answer"
    assert _forwarded(engine.calls.pop(), "expectations", x, filters, spec, up, mask, 3, generator)
    assert asked.pop() == (policy, x.device, 5, 18)
    assert backend.circuit_expectations(patches, filters, upstream=deltas, shots=1,
                                        generator=generator) == "circuits-answer"
    assert _forwarded(engine.calls.pop(), "circuit_expectations", patches, filters, deltas, 1, generator)
    assert asked.pop()[:2] == (policy, patches.device) and not engine.calls and not asked


FAINT_ROUTES = [(route, chunked, grad) for route in ("conv", "patches") for chunked in (False, True)
                for grad in (False, True)]


#: (dtype, bright): 1..255, and in float64 also values near 2**100 (images in a range the CPU does not rescale).
FAINT_CASES = [(torch.float32, 1.0), (torch.float64, 1.0), (torch.float64, 2.0**100)]
FAINT_IDS = ["float32", "float64", "float64-bright"]


@pytest.mark.parametrize("dtype, bright", FAINT_CASES, ids=FAINT_IDS)
@pytest.mark.parametrize("route, chunked, grad", FAINT_ROUTES,
                         ids=[f"{r}-{'chunked' if c else 'one-pass'}-{'grad' if g else 'no-grad'}"
                              for r, c, g in FAINT_ROUTES])
def test_faint_patches_keep_every_digit_on_the_fused_engine(route, chunked, grad, dtype, bright, gen):
    """Values 1..255 beside a band scaled by 1e-30 (float32) or 1e-200 (float64): the band's squared norms
    underflow, yet every patch that is not all zero gets its fidelity to the dtype's precision, none gets 0."""
    spec = ConvSpec.make(2)
    x = faint_images(dtype, gen, channels=2, bright=bright)
    states = random_state(8, 3, gen)
    policy = RoutePolicy(route=route, **({"chunk_elements": 1, "save_elements": 1} if chunked else {}))
    sr = states.clone().requires_grad_(grad)
    out, valid = TorchBackend(policy).maps(x, sr, spec)
    _check_faint(out, valid, x, states, spec, dtype)
    if grad:  # the filter-state gradient of the faint patches too
        up = torch.randn(out.shape, dtype=torch.float64, generator=gen)
        (got,) = torch.autograd.grad(out, sr, up.to(dtype))
        ref = states.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(careful_reference(x, ref, spec), ref, up)
        assert (got - want).abs().max() <= (SINGLE if dtype == torch.float32 else EXACT) * want.abs().max()


@pytest.mark.parametrize("dtype, bright", FAINT_CASES, ids=FAINT_IDS)
def test_faint_patches_keep_every_digit_on_the_reference_backend(dtype, bright, gen):
    spec = ConvSpec.make(2)
    x = faint_images(dtype, gen, channels=2, bright=bright)
    states = random_state(8, 3, gen)
    _check_faint(*REFERENCE.maps(x, states, spec), x, states, spec, dtype)


def _check_faint(out, valid, x, states, spec, dtype) -> None:
    """``(out, valid)`` of an engine's maps of :func:`faint_images` against :func:`careful_reference`."""
    expected, nonzero = careful_reference(x, states, spec), valid_patches(x, spec)
    # what the test is about: some patches that are not all zero have squared norms that underflow the dtype
    assert bool((squared_norms(prepare_input(x), spec) < torch.finfo(dtype).tiny)[nonzero].any())
    assert bool((~nonzero).any())
    assert out.dtype == dtype and out.shape == expected.shape
    assert torch.equal(out != 0, nonzero.expand_as(out))  # no patch that is not all zero gives 0
    assert (out.double() - expected).abs().max() <= (SINGLE if dtype == torch.float32 else EXACT)
    assert torch.equal(valid, nonzero)
