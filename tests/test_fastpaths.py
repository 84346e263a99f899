"""The fast paths of :mod:`qucnn.fastpath` against the plain references they replace (float64).

References: the gate-by-gate simulator for the ansatz state (``fastpath.disabled()``), and autograd
through ``overlap_maps`` / ``patch_norms`` / ``safe_ratio`` for the fidelity maps. Inputs are random,
with odd sizes, strides, padding, all-zero patches and several channels; gradients are compared for
``x`` and the filter parameters, in the single-pass and the chunked (recomputing) modes.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from conftest import EXACT, NEAR, SINGLE
from qucnn import FilterAnsatz, QuConv2d, fastconv, fastpath
from qucnn.fidelity import fidelity_maps, fidelity_maps_counted, patch_norms


def _theta(batch: int, layers: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return 2 * math.pi * torch.rand(batch, layers, n, 2, dtype=torch.float64, generator=gen)


def _reference_state(ansatz: FilterAnsatz, theta: torch.Tensor) -> torch.Tensor:
    with fastpath.disabled():
        return ansatz.state(theta)


@pytest.mark.parametrize("n,layers", [(1, 1), (1, 3), (2, 2), (3, 1), (4, 3), (5, 2), (6, 2)])
@pytest.mark.parametrize("dense", [True, False])
def test_ansatz_state_and_gradient_match_the_simulator(n, layers, dense, gen, monkeypatch):
    if not dense:
        monkeypatch.setattr(fastpath, "DENSE_LAYER_ELEMENTS", 0)  # force the qubit-by-qubit path
    ansatz = FilterAnsatz(n, layers)
    theta = _theta(5, layers, n, gen).requires_grad_(True)
    up = torch.randn(5, 2**n, dtype=torch.complex128, generator=gen)
    grads, states = [], []
    for state_fn in (ansatz.state, lambda t: _reference_state(ansatz, t)):
        psi = state_fn(theta)
        # a real loss that reaches both the real and the imaginary parts, nonlinearly
        loss = (psi.real * up.real).sum() + (psi.imag * up.imag).sum() + (psi.abs() ** 4).sum()
        (grad,) = torch.autograd.grad(loss, theta)
        states.append(psi.detach())
        grads.append(grad)
    assert torch.allclose(states[0], states[1], atol=EXACT)
    assert torch.allclose(grads[0], grads[1], atol=EXACT)
    assert grads[1].abs().max() > 1e-3  # a non-trivial comparison


def test_ansatz_fast_path_keeps_shapes_dtypes_and_passes_gradcheck(gen):
    ansatz = FilterAnsatz(3, 2)
    assert ansatz.state(torch.zeros(2, 4, 2, 3, 2)).shape == (2, 4, 8)
    assert ansatz.state(torch.zeros(2, 3, 2, dtype=torch.float32)).dtype == torch.complex64
    assert ansatz.state(torch.zeros(2, 3, 2, dtype=torch.float16)).dtype == torch.complex64
    theta = _theta(2, 2, 3, gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.view_as_real(fastpath.ansatz_state(t)), (theta,))


def test_enabled_and_disabled_switch():
    assert fastpath.enabled()
    with fastpath.disabled():
        assert not fastpath.enabled()
    assert fastpath.enabled()


# -- fidelity maps -----------------------------------------------------------------------------------
GEOMETRIES = [  # (channels, H, W, kernel, stride, padding)
    (1, 9, 7, (4, 4), (1, 1), (0, 0)),
    (1, 11, 10, (3, 2), (2, 3), (1, 2)),
    (2, 8, 9, (3, 4), (1, 2), (2, 0)),
    (3, 7, 7, (2, 2), (3, 1), (1, 1)),
]


def _inputs(channels, h, w, kernel, filters, gen):
    x = torch.rand(3, channels, h, w, dtype=torch.float64, generator=gen)
    x[0, :, : h // 2, : w // 2] = 0  # all-zero patches
    x[2] = 0  # an all-zero image
    n = math.ceil(math.log2(channels * kernel[0] * kernel[1]))
    states = FilterAnsatz(n, 2).state(_theta(filters, 2, n, gen))
    return x, states


def _maps_and_grads(x, states, kernel, stride, padding, up, reference: bool):
    xr = x.clone().requires_grad_(True)
    sr = states.clone().requires_grad_(True)
    if reference:
        with fastpath.disabled():
            out = fidelity_maps(xr, sr, kernel, stride, padding)
    else:
        out = fidelity_maps(xr, sr, kernel, stride, padding)
    gx, gs = torch.autograd.grad(out, (xr, sr), up)
    return out.detach(), gx, gs


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("mode", ["one-pass", "chunks-recomputed"])
def test_fidelity_maps_and_gradients_match_the_reference(geometry, mode, gen, monkeypatch):
    channels, h, w, kernel, stride, padding = geometry
    x, states = _inputs(channels, h, w, kernel, 3, gen)
    if mode == "chunks-recomputed":  # one image per chunk, nothing kept: the backward recomputes each
        monkeypatch.setattr(fastconv, "CHUNK_ELEMENTS", 1)
        monkeypatch.setattr(fastconv, "SAVE_ELEMENTS", 1)
    with fastpath.disabled():
        expected = fidelity_maps(x, states, kernel, stride, padding)
    up = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
    fast = _maps_and_grads(x, states, kernel, stride, padding, up, reference=False)
    ref = _maps_and_grads(x, states, kernel, stride, padding, up, reference=True)
    for a, b in zip(fast, ref):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=EXACT)
    assert torch.equal(fast[0][2], torch.zeros_like(fast[0][2]))  # all-zero image: fidelity 0
    assert (fast[0] == 0).any() and fast[0].max() > 0.05
    assert fast[1].abs().max() > 1e-3 and fast[2].abs().max() > 1e-3


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("route", ["conv", "unfolded"])
@pytest.mark.parametrize("mode", ["one-pass", "chunks-recomputed", "no-grad"])
def test_both_routes_match_the_reference_when_only_the_filters_need_a_gradient(geometry, route, mode, gen,
                                                                                monkeypatch):
    channels, h, w, kernel, stride, padding = geometry
    x, states = _inputs(channels, h, w, kernel, 3, gen)
    monkeypatch.setattr(fastconv, "_unfolds", lambda weight: route == "unfolded")
    if mode == "chunks-recomputed":
        monkeypatch.setattr(fastconv, "CHUNK_ELEMENTS", 1)
        monkeypatch.setattr(fastconv, "SAVE_ELEMENTS", 1)
    with fastpath.disabled():
        expected = fidelity_maps(x, states, kernel, stride, padding)
    up = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
    with fastpath.disabled():
        sr = states.clone().requires_grad_(True)
        (ref_grad,) = torch.autograd.grad(fidelity_maps(x, sr, kernel, stride, padding), sr, up)
    if mode == "no-grad":
        with torch.no_grad():
            out = fidelity_maps(x, states, kernel, stride, padding)
        assert torch.allclose(out, expected, atol=EXACT)
        return
    sr = states.clone().requires_grad_(True)
    out = fidelity_maps(x, sr, kernel, stride, padding)
    first = torch.autograd.grad(out, sr, up, retain_graph=True)[0]
    second = torch.autograd.grad(out, sr, up)[0]  # the kept overlaps were used up: recomputed
    assert torch.allclose(out, expected, atol=EXACT)
    assert torch.allclose(first, ref_grad, atol=EXACT) and torch.allclose(second, ref_grad, atol=EXACT)
    assert ref_grad.abs().max() > 1e-3 and torch.equal(out[2], torch.zeros_like(out[2]))


def test_the_unfolded_route_is_taken_for_eight_4x4_filters_without_an_input_gradient(gen, monkeypatch):
    calls = []
    original = fastconv._unfolded_parts
    monkeypatch.setattr(fastconv, "_unfolded_parts", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = QuConv2d(1, 8, 4, layers=2, generator=gen).double()
    x = torch.rand(2, 1, 9, 9, dtype=torch.float64, generator=gen)
    layer(x).sum().backward()
    assert len(calls) == 1
    layer(x.requires_grad_(True)).sum().backward()  # x needs a gradient: the convolution route
    assert len(calls) == 1 and x.grad is not None


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_patch_norms_match_the_convolution_and_keep_exact_zeros(geometry, gen, monkeypatch):
    channels, h, w, kernel, stride, padding = geometry
    x, _ = _inputs(channels, h, w, kernel, 1, gen)
    fast = patch_norms(x, kernel, stride, padding)
    with fastpath.disabled():
        ref = patch_norms(x, kernel, stride, padding)
    assert fast.shape == ref.shape and torch.allclose(fast, ref, atol=EXACT)
    assert torch.equal(fast == 0, ref == 0) and bool((fast == 0).any())
    big = torch.rand(40, channels, 30, 31, dtype=torch.float64, generator=gen)
    big[3:7, :, 5:20] = 0
    with fastpath.disabled():
        ref_big = patch_norms(big, kernel, stride, padding)
    assert torch.allclose(patch_norms(big, kernel, stride, padding), ref_big, atol=EXACT)
    monkeypatch.setattr(fastconv, "CHUNK_ELEMENTS", 3000)  # chunks of the batch (one image per chunk)
    chunked = patch_norms(big, kernel, stride, padding)
    assert torch.allclose(chunked, ref_big, atol=EXACT) and torch.equal(chunked == 0, ref_big == 0)
    wide = torch.rand(2, channels, 9, fastconv.BAND_MAX_SIZE + 3, dtype=torch.float64, generator=gen)
    wide[1, :, :, 10:40] = 0  # the shifted-add branch
    with fastpath.disabled():
        ref_wide = patch_norms(wide, kernel, stride, padding)
    fast_wide = patch_norms(wide, kernel, stride, padding)
    assert torch.allclose(fast_wide, ref_wide, atol=EXACT) and torch.equal(fast_wide == 0, ref_wide == 0)
    assert bool((ref_wide == 0).any())


@pytest.mark.parametrize("chunk", [None, 1])
@pytest.mark.parametrize("grad", [False, True])
def test_counted_maps_count_the_patches_that_are_not_all_zero(chunk, grad, gen, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(fastconv, "CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(fastconv, "SAVE_ELEMENTS", chunk)
    x, states = _inputs(2, 8, 9, (3, 4), 2, gen)
    geometry = ((3, 4), (1, 2), (2, 0))
    expected = int((patch_norms(x, *geometry) > 0).sum())
    assert 0 < expected < patch_norms(x, *geometry).numel()
    with torch.set_grad_enabled(grad):
        for disabled in (False, True):
            with fastpath.disabled() if disabled else contextlib.nullcontext():
                out, count = fidelity_maps_counted(x.requires_grad_(grad), states, *geometry)
            assert count.dtype == torch.int64 and count.dim() == 0 and int(count) == expected
            assert out.shape == (3, 2, 10, 3) and out.requires_grad == grad


@pytest.mark.parametrize("x_grad", [False, True])  # the patch-matrix and the convolution route
def test_tiny_patches_keep_their_fidelity_and_count_as_circuits(x_grad, gen):
    # squared norms ~1e-42 (subnormal in float32): 1 / ||x||^2 would overflow, 1 / ||x|| does not
    x = torch.rand(2, 1, 6, 6, generator=gen)
    states = FilterAnsatz(4, 2).state(_theta(8, 2, 4, gen)).to(torch.complex64).requires_grad_(True)
    tiny = (x * 1e-21).requires_grad_(x_grad)
    out, count = fidelity_maps_counted(tiny, states, (4, 4))
    (grad,) = torch.autograd.grad(out, states, torch.ones_like(out))  # (dF/dx ~ 1/||x|| would overflow)
    assert int(count) == 18 and bool(torch.isfinite(grad).all()) and grad.abs().max() > 0
    scaled = fidelity_maps(x, states.detach(), (4, 4))  # F does not depend on the scale of the patch
    assert (out.detach() - scaled).abs().max() < 2e-2  # subnormal squares keep ~10 bits


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_not_mistaken_for_all_zero_patches(dtype, gen):
    layer = QuConv2d(1, 8, 4, layers=2, generator=gen)
    x = torch.rand(2, 1, 6, 6, generator=gen) * 1e-3  # squared norms ~5e-6: 1 / ||x||^2 overflows float16
    out = layer(x.to(dtype))
    out.float().sum().backward()
    with fastpath.disabled():
        expected = layer.double()(x.double())
    assert out.dtype == dtype and layer.last_cost["forward"].circuits == 8 * 18
    assert (out.double() - expected).abs().max() < 5e-2  # 8 (bfloat16) or 11 (float16) mantissa bits
    assert bool(torch.isfinite(layer.theta.grad).all()) and layer.theta.grad.abs().max() > 0


def test_given_norms_are_constants_as_in_the_reference(gen):
    x, states = _inputs(1, 9, 9, (4, 4), 2, gen)
    norms = patch_norms(x, (4, 4), (1, 1), (0, 0))
    outs = []
    for disabled in (False, True):
        xr = x.clone().requires_grad_(True)
        if disabled:
            with fastpath.disabled():
                out = fidelity_maps(xr, states, (4, 4), norms=norms)
        else:
            out = fidelity_maps(xr, states, (4, 4), norms=norms)
        outs.append((out.detach(), torch.autograd.grad(out.sum(), xr)[0]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=EXACT)
    assert torch.allclose(outs[0][1], outs[1][1], atol=EXACT)


@pytest.mark.parametrize("chunk", [None, 1])
def test_second_backward_with_retain_graph_recomputes(chunk, gen, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(fastconv, "CHUNK_ELEMENTS", chunk)
    x, states = _inputs(2, 8, 9, (3, 4), 2, gen)
    xr, sr = x.requires_grad_(True), states.requires_grad_(True)
    out = fidelity_maps(xr, sr, (3, 4), (1, 2), (2, 0))
    up = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    first = torch.autograd.grad(out, (xr, sr), up, retain_graph=True)
    second = torch.autograd.grad(out, (xr, sr), up)
    for a, b in zip(first, second):
        assert torch.allclose(a, b, atol=EXACT)


def test_layer_gradcheck_through_the_fast_paths(gen):
    layer = QuConv2d(2, 2, (2, 3), stride=(1, 2), padding=1, layers=1, generator=gen).double()
    x = torch.rand(1, 2, 4, 5, dtype=torch.float64, generator=gen)
    x[0, :, :2] = 0
    fn = lambda inp, theta: torch.func.functional_call(layer, {"theta": theta}, (inp,))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True), layer.theta.detach().clone().requires_grad_(True)))


@pytest.mark.parametrize("mode", ["autograd", "parameter-shift", "entanglement"])
def test_layer_outputs_and_gradients_match_with_fast_paths_off(mode, gen):
    layer = QuConv2d(3, 4, 3, stride=2, padding=1, layers=2, gradient=mode, generator=gen).double()
    x = torch.rand(2, 3, 9, 8, dtype=torch.float64, generator=gen)
    x[1, :, :4] = 0
    up = torch.randn(layer(x).shape, dtype=torch.float64, generator=gen)
    results = []
    for disabled in (False, True):
        layer.zero_grad()
        xr = x.clone().requires_grad_(True)
        if disabled:
            with fastpath.disabled():
                out = layer(xr)
                out.backward(up)
        else:
            out = layer(xr)
            out.backward(up)
        results.append((out.detach(), xr.grad, layer.theta.grad.clone()))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=NEAR)


def test_float32_fast_path_agrees_with_float64(gen):
    layer = QuConv2d(1, 8, 4, layers=3, generator=gen)
    x = torch.rand(4, 1, 13, 12, generator=gen)
    x[0, :, :6] = 0
    out32 = layer(x)
    out64 = layer.double()(x.double())
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out64, atol=SINGLE)


def test_inference_reuses_filter_states_only_for_identical_angles(gen):
    ansatz = FilterAnsatz(3, 2)
    theta = _theta(4, 2, 3, gen)
    with torch.no_grad():
        first = ansatz.state(theta)
        first.mul_(0)  # the caller owns what it gets: the cache must not see this
        again = ansatz.state(theta)
        assert torch.allclose(again, _reference_state(ansatz, theta), atol=EXACT)
        theta.data[0, 0, 0, 0] += 0.5  # a change the version counter does not see
        changed = ansatz.state(theta)
    assert torch.allclose(changed, _reference_state(ansatz, theta), atol=EXACT)
    assert not torch.allclose(changed, again, atol=1e-3)
    leaf = theta.clone().requires_grad_(True)
    assert ansatz.state(leaf).grad_fn is not None  # with a gradient to record: computed, not cached


@pytest.mark.parametrize("x_grad", [True, False])  # the convolution and the patch-matrix route
def test_empty_batch_through_the_fast_paths(x_grad, gen):
    states = FilterAnsatz(2, 2).state(_theta(8, 2, 2, gen)).requires_grad_(True)
    x = torch.rand(0, 1, 9, 9, dtype=torch.float64, requires_grad=x_grad)
    out, count = fidelity_maps_counted(x, states, (2, 2))
    assert out.shape == (0, 8, 8, 8) and int(count) == 0
    (grad,) = torch.autograd.grad(out.sum(), states)
    assert torch.equal(grad, torch.zeros_like(grad))
    assert patch_norms(x.detach(), (3, 3), (1, 1), (1, 1)).shape == (0, 1, 9, 9)
