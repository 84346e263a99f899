"""Backend ``"triton"``: its kernels against float64 references, its shots against the binomial distribution.

On the CPU (the default suite) the kernels run in Triton's interpreter (``conftest.py`` sets ``TRITON_INTERPRET=1``
before they are built); ``python -m pytest tests/test_triton.py --device cuda -m "not slow"`` runs the same tests
compiled on a GPU, plus the CUDA-graph capture (marked ``cuda``, deselected by default). The layer-level suite
of ``tests/test_backends.py`` runs on this backend too (float64, to the reference's ``EXACT`` tolerance).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from conftest import SIGMAS, careful_reference, faint_images, random_state
from torch import nn

from qucnn import QuConv2d
from qucnn.backends import (
    Filters,
    FusedEngine,
    RoutePolicy,
    TorchBackend,
    TritonBackend,
    available_backends,
    get_backend,
    registry,
)
from qucnn.backends import policy as policy_module
from qucnn.backends.reference import plain_fidelity
from qucnn.backends.triton import TritonEngine, maps, ops
from qucnn.backends.triton import plan as tiles
from qucnn.core.ansatz import FilterAnsatz
from qucnn.core.geometry import ConvSpec
from qucnn.core.windows import prepare_input, squared_norms, valid_patches
from qucnn.functional import quconv2d
from qucnn.utils.checks import MissingExtraError, UsageError

#: float32 (and half input with float32 accumulation): F absolute, gradients relative to their largest entry.
F32_F, F32_GRAD = 1e-5, 1e-4
F64_F, F64_GRAD = 1e-12, 1e-10
#: The Triton engine itself (the ``"triton"`` backend routes every patch of up to ``MAX_TAPS`` values to it).
ENGINE = TritonEngine()
#: The fused PyTorch engine, to compare with.
FUSED = TorchBackend(RoutePolicy(engine="fused"))


def _states(k: int, d: int, gen: torch.Generator) -> torch.Tensor:
    s = torch.complex(torch.randn(k, d, generator=gen, dtype=torch.float64),
                      torch.randn(k, d, generator=gen, dtype=torch.float64))
    return s / torch.linalg.vector_norm(s, dim=-1, keepdim=True)


def _images(b, c, h, w, gen, dtype=torch.float32) -> torch.Tensor:
    x = torch.rand(b, c, h, w, generator=gen, dtype=torch.float64)
    if b:
        x[0, :, : h // 2, : w // 2] = 0  # all-zero patches
    if b > 1:
        x[-1] = 0  # an all-zero image
    return x.to(dtype)


def _reference(x: torch.Tensor, states: torch.Tensor, spec: ConvSpec, g: torch.Tensor):
    """F, its gradients for upstream g, and the nonzero-patch mask, in float64 on the CPU."""
    xd = x.detach().cpu().double().requires_grad_(True)
    sd = states.detach().cpu().to(torch.complex128).requires_grad_(True)
    fid = plain_fidelity(xd, sd, spec)
    fid.backward(g.detach().cpu().double())
    ones = torch.ones((1, 1) + spec.kernel, dtype=torch.float64)
    norms = torch.nn.functional.conv2d(xd.detach() ** 2 if xd.shape[1] == 1 else (xd.detach() ** 2).sum(1, True),
                                       ones, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)
    return fid.detach(), xd.grad, sd.grad, norms > 0


def _rel(value: torch.Tensor, expected: torch.Tensor) -> float:
    return float((value.detach().cpu().to(expected.dtype) - expected).abs().max() / expected.abs().max())


GEOMETRIES = [  # batch, channels, kernel, stride, padding, dilation, H, W, filters
    (2, 1, 4, 1, 0, 1, 9, 8, 8),  # the paper's 4x4 filters, odd sizes
    (1, 3, (2, 3), (2, 1), (1, 0), 1, 7, 6, 3),  # channels, 18 values padded to 32, batch 1
    (2, 2, 2, 1, 1, (2, 1), 6, 7, 1),  # dilation, one filter
    (1, 1, 3, 2, 0, 1, 9, 9, 64),  # 64 filters
    (3, 1, 2, 1, 0, 1, 12, 13, 5),  # several blocks of positions
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32])  # float64: tests/test_backends.py, to EXACT
def test_maps_and_gradients_match_the_float64_reference(geometry, dtype, device, gen):
    b, c, k, s, p, d, h, w, filters = geometry
    spec = ConvSpec.make(k, s, p, d)
    x = _images(b, c, h, w, gen, dtype).to(device)
    states = _states(filters, 1 << spec.n_qubits(c), gen)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    xr = x.clone().requires_grad_(True)
    sr = states.to(device=device, dtype=cdtype).requires_grad_(True)
    fid, mask = ENGINE.maps(xr, sr, spec)
    g = torch.randn(fid.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    fid.backward(g)
    ref, gx, gs, valid = _reference(x, states, spec, g)
    tol_f, tol_g = (F64_F, F64_GRAD) if dtype == torch.float64 else (F32_F, F32_GRAD)
    assert fid.dtype == dtype and fid.shape == ref.shape and fid.device.type == device.type
    assert (fid.detach().cpu().double() - ref).abs().max() <= tol_f
    assert mask.dtype == torch.bool and torch.equal(mask.cpu(), valid)
    assert torch.all(fid.detach().cpu()[~valid.expand_as(ref)] == 0)  # all-zero patches give exactly 0
    assert _rel(xr.grad, gx) <= tol_g and _rel(sr.grad, gs) <= tol_g


@pytest.mark.parametrize("geometry", GEOMETRIES[:2])  # no padding (no bounds checks), and padding
def test_64_bit_positions_and_the_tap_loop_unrolling_give_the_same_bits(geometry, device, gen, monkeypatch):
    """The kernels' 64-bit index path (taken from ``B H' W' >= 2**31`` output positions, too large to test) and the
    forward's tap loop one tap or one kernel row at a time compute exactly the same."""
    b, c, k, s, p, d, h, w, filters = geometry
    spec = ConvSpec.make(k, s, p, d)
    x = _images(b, c, h, w, gen).to(device)
    states = _states(filters, 1 << spec.n_qubits(c), gen).to(device=device, dtype=torch.complex64)
    plan = tiles.plan
    results = []
    for wide, rows in ((False, True), (True, True), (False, False)):
        monkeypatch.setattr(ops, "idx64", lambda items, block, wide=wide: wide)
        monkeypatch.setattr(ops, "plan", lambda *a, rows=rows, **kw: dataclasses.replace(plan(*a, **kw),
                                                                                          unroll_rows=rows))
        xr, sr = x.clone().requires_grad_(True), states.clone().requires_grad_(True)
        fid = ENGINE.maps(xr, sr, spec)[0]
        fid.backward(torch.linspace(-1, 1, fid.numel(), device=device).view_as(fid))
        results.append((fid.detach(), xr.grad, sr.grad))
    assert all(torch.equal(first, other) for result in results[1:] for first, other in zip(results[0], result))


def test_strided_input_expanded_upstream_and_repeated_backward_are_exact(device, gen):
    """A non-contiguous x, the stride-0 gradient of .sum(), and a second backward giving the same bits."""
    spec = ConvSpec.make(3, padding=1)
    base = _images(2, 2, 7, 14, gen).to(device)
    x = base[..., ::2]
    assert not x.is_contiguous()
    states = _states(4, 32, gen).to(device=device, dtype=torch.complex64)
    grads = []
    for _ in range(2):
        xr, sr = x.clone().requires_grad_(True), states.clone().requires_grad_(True)
        out = ENGINE.maps(xr, sr, spec)[0]
        out.sum().backward()
        grads.append((xr.grad, sr.grad))
    _, gx, gs, _ = _reference(x, states, spec, torch.ones(out.shape, dtype=torch.float64))
    assert _rel(grads[0][0], gx) <= F32_GRAD and _rel(grads[0][1], gs) <= F32_GRAD
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])  # deterministic


@pytest.mark.parametrize("dtype, scale, tol_f, tol_g", [
    (torch.float16, 255.0, 1e-3, 3e-3),  # raw pixels: float16 is read as it is (no scaling needed)
    (torch.bfloat16, 1e30, 8e-3, 2e-2),  # squares would overflow float32 without the per-image scale
    (torch.float32, 1e-30, F32_F, F32_GRAD),  # squares would underflow float32 without it
])
def test_half_and_extreme_inputs_are_computed_in_float32(dtype, scale, tol_f, tol_g, device, gen):
    spec = ConvSpec.make(4)
    x = (_images(2, 1, 9, 9, gen) * scale).to(dtype).to(device)
    states = _states(6, 16, gen)
    xr = x.clone().requires_grad_(True)
    sr = states.to(device=device, dtype=torch.complex64).requires_grad_(True)
    fid = ENGINE.maps(xr, sr, spec)[0]
    g = torch.randn(fid.shape, generator=gen).to(device=device, dtype=dtype)
    fid.backward(g)
    ref, gx, gs, _ = _reference(x, states, spec, g)  # from the values x actually holds
    assert fid.dtype == dtype and xr.grad.dtype == dtype
    assert (fid.detach().cpu().double() - ref).abs().max() <= tol_f
    assert _rel(xr.grad, gx) <= tol_g and _rel(sr.grad, gs) <= tol_g


FAINT_CASES = [(torch.float32, 1.0), (torch.float64, 1.0), (torch.float64, 2.0**100)]


@pytest.mark.parametrize("dtype, bright", FAINT_CASES, ids=["float32", "float64", "float64-bright"])
def test_faint_patches_keep_every_digit(dtype, bright, device, gen):
    """Values 1..255 beside a band scaled by 1e-30 (float32) or 1e-200 (float64), whose squares underflow: every
    patch that is not all zero gets its fidelity to the dtype's precision (none gets 0), and so does the
    filter-state gradient; ``valid`` says which patches are not all zero."""
    spec = ConvSpec.make(2)
    x = faint_images(dtype, gen, channels=2, bright=bright)
    states = random_state(8, 3, gen)
    expected, nonzero = careful_reference(x, states, spec), valid_patches(x, spec)
    assert bool((squared_norms(prepare_input(x), spec) < torch.finfo(dtype).tiny)[nonzero].any())  # they underflow
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    sr = states.to(device=device, dtype=cdtype, copy=True).requires_grad_(True)
    fid, valid = ENGINE.maps(x.to(device), sr, spec)
    assert fid.dtype == dtype and valid.dtype == torch.bool
    assert torch.equal(fid.detach().cpu() != 0, nonzero.expand_as(expected))  # no patch that is not all zero: 0
    tol_f, tol_g = (F64_F, F64_GRAD) if dtype == torch.float64 else (F32_F, F32_GRAD)
    assert (fid.detach().cpu().double() - expected).abs().max() <= tol_f
    assert torch.equal(valid.cpu(), nonzero) and bool((~nonzero).any())
    up = torch.randn(fid.shape, dtype=torch.float64, generator=gen)
    fid.backward(up.to(device=device, dtype=dtype))
    ref = states.clone().requires_grad_(True)
    careful_reference(x, ref, spec).backward(up)
    assert _rel(sr.grad, ref.grad) <= tol_g


def test_maps_return_valid_masks_and_the_layer_counts_from_them(device, gen):
    """``fidelity_maps`` (any output dtype) and the engine's ``maps`` return ``valid``: which patches are not
    all zero; the layer's ledger counts ``K`` circuits for each of them (with padding and several channels, with
    dilation)."""
    for geometry in GEOMETRIES[1:3]:
        b, c, k, s, p, d, h, w, filters = geometry
        spec = ConvSpec.make(k, s, p, d)
        x = _images(max(b, 2), c, h, w, gen).to(device)
        states = _states(filters, 1 << spec.n_qubits(c), gen).to(device=device, dtype=torch.complex64)
        nonzero = valid_patches(x, spec)
        assert 0 < int(nonzero.sum()) < nonzero.numel()
        fid, valid = maps.fidelity_maps(x, states, spec, torch.float64)
        assert fid.dtype == torch.float64 and valid.dtype == torch.bool and torch.equal(valid, nonzero)
        assert torch.equal(ENGINE.maps(x, states, spec)[1], nonzero)
        layer = QuConv2d(c, filters, k, s, p, d, layers=1, backend=ENGINE).to(device)
        layer(x)
        assert layer.last_cost["forward"].circuits == filters * int(nonzero.sum())


def test_filter_banks_larger_than_a_program_are_split(device, gen):
    """130 filters: three chunks of 64 filters, each a program of its own, and their gradients."""
    spec = ConvSpec.make(2)
    x = _images(1, 1, 5, 5, gen).to(device)
    states = _states(130, 4, gen)
    assert tiles.plan(130, 4, False).nkc == tiles.plan(130, 4, False, interpreted=True).nkc == 3
    sr = states.to(device=device, dtype=torch.complex64).requires_grad_(True)
    fid = ENGINE.maps(x, sr, spec)[0]
    g = torch.randn(fid.shape, generator=gen).to(device)
    fid.backward(g)
    ref, _, gs, _ = _reference(x, states, spec, g)
    assert (fid.detach().cpu().double() - ref).abs().max() <= F32_F and _rel(sr.grad, gs) <= F32_GRAD


def test_empty_batches_and_patches_too_large_for_the_kernels(device, gen):
    states = _states(3, 16, gen).to(device=device, dtype=torch.complex64)
    x0 = torch.zeros(0, 1, 6, 6, device=device, requires_grad=True)
    fid, mask = ENGINE.maps(x0, states.clone().requires_grad_(True), ConvSpec.make(4))
    assert fid.shape == (0, 3, 3, 3) and mask.shape == (0, 1, 3, 3) and mask.dtype == torch.bool
    fid.sum().backward()
    assert x0.grad.shape == x0.shape
    assert ENGINE.sample(torch.zeros(0, device=device), 10).shape == (0,)
    # 17 channels x 4 x 4 = 272 values > MAX_TAPS: "triton" routes the whole call to the fused engine (and a
    # 9-qubit ansatz: the closed form)
    spec = ConvSpec.make(4)
    assert not ENGINE.holds(spec.patch_size(17)) and ENGINE.holds(tiles.MAX_TAPS)
    backend = get_backend("triton")
    assert isinstance(backend.resolve(device, 2, spec.patch_size(17)), FusedEngine)
    assert isinstance(backend.resolve(device, 2, tiles.MAX_TAPS), TritonEngine)
    x = _images(1, 17, 5, 5, gen).to(device)
    theta = torch.rand(2, 1, spec.n_qubits(17), 2, generator=gen).to(device)
    fid = quconv2d(x, theta, 4, backend=backend)
    states = FilterAnsatz(spec.n_qubits(17), 1).state(theta.cpu().double(), method="gates")
    assert (fid.cpu().double() - plain_fidelity(x.cpu().double(), states, spec)).abs().max() <= F32_F


@pytest.mark.parametrize("n, layers", [(1, 2), (2, 3), (4, 3), (6, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ansatz_states_and_angle_gradients_match_the_gate_simulation(n, layers, dtype, device, gen):
    theta = (6.3 * torch.rand(5, layers, n, 2, generator=gen, dtype=torch.float64)).to(dtype)
    ansatz = FilterAnsatz(n, layers)
    thr = theta.to(device, copy=True).requires_grad_(True)
    state = ENGINE.filter_states(thr)
    grad = torch.randn(state.shape, generator=gen, dtype=torch.float64)
    state.backward(torch.complex(grad, grad.flip(0)).to(device=device, dtype=state.dtype))
    thd = theta.double().clone().requires_grad_(True)
    expected = ansatz.state(thd, method="gates")
    expected.backward(torch.complex(grad, grad.flip(0)))
    tol = F64_F if dtype == torch.float64 else F32_F
    assert state.dtype == (torch.complex128 if dtype == torch.float64 else torch.complex64)
    assert (state.detach().cpu().to(torch.complex128) - expected.detach()).abs().max() <= tol
    assert _rel(thr.grad, thd.grad) <= (F64_GRAD if dtype == torch.float64 else F32_GRAD)


def test_double_backward_differentiates_the_plain_composition(device, gen):
    """create_graph=True: second derivatives in x and theta equal the torch backend's (float64)."""
    x = _images(2, 1, 6, 6, gen, torch.float64).to(device)
    results = []
    for backend in ("triton", FUSED):
        layer = QuConv2d(1, 3, 3, layers=2, backend=backend, generator=torch.Generator().manual_seed(4)).double()
        layer = layer.to(device)
        xr = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(layer(xr).pow(2).sum(), xr, create_graph=True)
        gx.pow(2).sum().backward()
        results.append((gx.detach().cpu(), xr.grad.cpu(), layer.theta.grad.cpu()))
    for a, b in zip(*results):
        assert _rel(a, b) <= F64_GRAD


# -- shots --------------------------------------------------------------------------------------------------
SHOT_CASES = {  # S: expectations z, with p = (1 + z) / 2 in both regimes (S q < 10: inversion; else BTRS)
    1: [-1.0, -0.5, 0.0, 0.6, 1.0],
    7: [-0.9, -0.2, 0.0, 0.5, 0.97],
    1000: [-0.9999, -0.99, -0.5, 0.0, 0.3, 0.95, 0.985],
    10**9: [-1.0 + 2e-9, -0.3, 0.5, 1.0 - 1e-7],
}


def _binomial_bounds_hold(est: torch.Tensor, z: torch.Tensor, shots: int) -> None:
    """Mean and (unbiased) variance of the rows of ``est`` within SIGMAS standard errors of the exact ones."""
    r = est.shape[0]
    p = (1 + z) / 2
    n0 = (est + 1) * shots / 2
    assert torch.all((n0 - n0.round()).abs() <= 1e-6 * shots)  # whole counts
    var = (1 - z**2) / shots
    mu4 = (2 / shots) ** 4 * shots * p * (1 - p) * (1 + 3 * (shots - 2) * p * (1 - p))  # 4th central moment
    var_of_var = mu4 / r - var**2 * (r - 3) / (r * (r - 1))
    mean_err = (est.mean(0) - z).abs()
    var_err = (est.var(0) - var).abs()
    assert torch.all(mean_err <= SIGMAS * (var / r).sqrt() + 1e-15), (shots, mean_err / (var / r).sqrt())
    assert torch.all(var_err <= SIGMAS * var_of_var.clamp_min(0).sqrt() + 1e-15), (shots, var_err)


@pytest.mark.parametrize("shots", list(SHOT_CASES))
def test_shot_estimates_have_the_binomial_mean_and_variance(shots, device):
    z = torch.tensor(SHOT_CASES[shots], dtype=torch.float64)
    est = ENGINE.sample(z.expand(2000, -1).contiguous().to(device), shots,
                        torch.Generator(device=device).manual_seed(shots % 1000))
    est = est.cpu()
    assert est.dtype == torch.float64
    if shots == 1:
        assert torch.all(est.abs() == 1)
    _binomial_bounds_hold(est, z, shots)


@pytest.mark.parametrize("p", [0.35, 0.95])  # S q = 17.5: BTRS; S q = 2.5: inversion (of 1 - p)
def test_shot_counts_follow_the_binomial_distribution_exactly(p, device):
    """Chi-square of 20,000 counts n0 ~ Binomial(50, p) against the exact probabilities (cells with >= 5
    expected, tails pooled): within SIGMAS standard deviations of its mean (the degrees of freedom)."""
    shots, draws = 50, 20000
    z = torch.full((draws,), 2 * p - 1, dtype=torch.float64, device=device)
    est = ENGINE.sample(z, shots, torch.Generator(device=device).manual_seed(5)).cpu()
    counts = torch.bincount(((est + 1) * shots / 2).round().long(), minlength=shots + 1).double()
    k = torch.arange(shots + 1, dtype=torch.float64)
    log_pmf = (torch.lgamma(torch.tensor(shots + 1.0)) - torch.lgamma(k + 1) - torch.lgamma(shots - k + 1)
               + k * math.log(p) + (shots - k) * math.log1p(-p))
    expected = draws * log_pmf.exp()
    keep = expected >= 5
    lo, hi = int(keep.nonzero().min()), int(keep.nonzero().max())
    obs = torch.cat([counts[: lo + 1].sum(0, keepdim=True), counts[lo + 1: hi], counts[hi:].sum(0, keepdim=True)])
    exp = torch.cat([expected[: lo + 1].sum(0, keepdim=True), expected[lo + 1: hi],
                     expected[hi:].sum(0, keepdim=True)])
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    assert chi2 <= dof + SIGMAS * math.sqrt(2 * dof), (chi2, dof)


def test_shot_draws_are_reproducible_and_never_reused(device):
    z = torch.linspace(-0.9, 0.9, 64, device=device)
    def draw(gen):
        return ENGINE.sample(z, 1001, gen)

    gen = torch.Generator(device=device).manual_seed(7)
    first, second = draw(gen), draw(gen)
    assert torch.equal(first, draw(torch.Generator(device=device).manual_seed(7)))  # same seed, same draws
    assert not torch.equal(first, second)  # the generator advanced: a second call draws anew
    assert not torch.equal(first, draw(torch.Generator(device=device).manual_seed(8)))
    torch.manual_seed(3)
    default = draw(None)
    torch.manual_seed(3)
    assert torch.equal(default, draw(None))  # without a generator: torch's default one


def test_sample_draws_every_value_it_is_given_and_the_launch_with_shots_zeroes_what_did_not_run(device, gen):
    """``sample(values, shots, generator)`` has no mask: every value is drawn (7 shots: an estimate is never 0);
    what is not run (outside the mask, all-zero patches) is zeroed by the fused launch of ``expectations``."""
    z = (2 * torch.rand(2, 3, 4, 4, generator=gen) - 1).to(device)
    est = ENGINE.sample(z, 7, torch.Generator(device=device).manual_seed(1))
    assert est.shape == z.shape and est.dtype == z.dtype and bool((est != 0).all())
    n0 = (est.cpu().double() + 1) * 7 / 2
    assert torch.all((n0 - n0.round()).abs() <= 1e-5) and torch.all((n0 >= 0) & (n0 <= 7))
    spec = ConvSpec.make(2)
    x = _images(2, 1, 5, 5, gen).to(device)  # an all-zero block in image 0, image 1 all zero
    mask = (torch.rand(2, 3, 4, 4, generator=gen) > 0.5).to(device)
    theta = (6.3 * torch.rand(1, 3, 1, 2, 2, generator=gen)).to(device)
    res = ENGINE.expectations(x, Filters(theta=theta), spec, mask=mask, shots=7,
                              generator=torch.Generator(device=device).manual_seed(2))
    run = mask.cpu() & valid_patches(x.cpu(), spec)
    assert 0 < int(run.sum()) < run.numel()
    assert torch.equal(res.values[0].cpu() != 0, run)


def test_fused_expectations_equal_the_torch_backend(device, gen):
    """G = 2 filter groups, upstream deltas (with zeros) and a mask: values, and which circuits run, exact."""
    x = _images(2, 1, 6, 6, gen).to(device)
    theta = (6.3 * torch.rand(2, 3, 2, 2, 2, generator=gen)).to(device)
    up = (2 * torch.rand(2, 3, 5, 5, generator=gen) - 1).to(device)
    up[1, 0] = 0
    mask = (torch.rand(2, 3, 5, 5, generator=gen) > 0.3).to(device)
    spec = ConvSpec.make(2)
    got = ENGINE.expectations(x, Filters(theta=theta), spec, upstream=up, mask=mask)
    want = FUSED.expectations(x, Filters(theta=theta), spec, upstream=up, mask=mask)
    assert got.values.shape == want.values.shape == (2, 2, 3, 5, 5)
    assert (got.values - want.values).abs().max() <= F32_F
    run = (valid_patches(x, spec) & mask & (up != 0)).cpu()  # what the caller counts
    assert 0 < int(run.sum()) < run.numel()
    assert torch.equal(got.values.cpu() != 0, run.expand(2, -1, -1, -1, -1))
    assert torch.equal(want.values.cpu() != 0, run.expand(2, -1, -1, -1, -1))


def test_fused_shots_of_the_eq15_circuit_are_binomial(device, gen):
    """One launch, 2,000 copies of an image: <Z_a> = delta F estimated from 500 shots, mean and variance."""
    copies, shots = 2000, 500
    x = _images(1, 1, 4, 4, gen)
    x[0, 0, 0, 0] = 1.0  # no all-zero patch in this image
    theta = 6.3 * torch.rand(1, 2, 1, 2, 2, generator=gen)
    up = torch.tensor([0.7, -0.4]).view(1, 2, 1, 1).expand(1, 2, 3, 3).clone()
    up[0, 1, 0] = 0  # these circuits are not run: exactly 0
    spec = ConvSpec.make(2)
    backend = ENGINE
    exact = backend.expectations(x.to(device), Filters(theta=theta.to(device)), spec, upstream=up.to(device))
    res = backend.expectations(x.repeat(copies, 1, 1, 1).to(device), Filters(theta=theta.to(device)), spec,
                               upstream=up.expand(copies, -1, -1, -1).to(device), shots=shots,
                               generator=torch.Generator(device=device).manual_seed(2))
    est = res.values[0].cpu().double().flatten(1)  # (copies, O * H' * W')
    z = exact.values[0, 0].cpu().double().flatten()
    run = up.flatten() != 0
    assert torch.all(est[:, ~run] == 0)
    _binomial_bounds_hold(est[:, run], z[run], shots)


# -- the layer, the registry, the torch backend's delegation ------------------------------------------------
@pytest.mark.parametrize("gradient", ["autograd", "entanglement"])
def test_the_layer_runs_on_the_backend_and_equals_the_torch_backend(gradient, device, gen):
    """Outputs, gradients and the ledger's forward and backward costs equal those of the fused engine."""
    x = _images(2, 1, 8, 8, gen).to(device)
    results = []
    for backend in ("triton", FUSED):
        layer = QuConv2d(1, 4, 3, stride=2, padding=1, layers=2, backend=backend, gradient=gradient,
                         generator=torch.Generator().manual_seed(1)).to(device)
        xr = x.clone().requires_grad_(True)
        out = layer(xr)
        out.backward(torch.ones_like(out))
        cost = layer.last_cost
        results.append((out.detach(), xr.grad, layer.theta.grad, cost["forward"], cost["backward"]))
    (a, ga, ta, fa, ba), (b, gb, tb, fb, bb) = results
    assert (a - b).abs().max() <= F32_F and _rel(ga, gb.cpu().double()) <= F32_GRAD
    assert _rel(ta, tb.cpu().double()) <= F32_GRAD
    patches = int(valid_patches(x, ConvSpec.make(3, 2, 1)).sum())
    assert 0 < patches < 2 * 16 and fa == fb and fa.circuits == 4 * patches
    assert ba == bb and ba.circuits == 2 * layer.theta.numel() * patches  # every upstream value is 1: all run


def test_registry_offers_the_backend_where_it_can_run(monkeypatch, device):
    assert "triton" in registry.registered_backends()
    assert "triton" in available_backends()  # here: a GPU, or the interpreter the test session asked for
    backend = get_backend("triton")
    assert isinstance(backend, TritonBackend) and backend.policy == RoutePolicy(engine="triton")
    engine = backend.resolve(device, 8, 16)
    assert isinstance(engine, TritonEngine) and backend.resolve(device, 64, 9) is engine  # made once
    assert engine.interpreted == (device.type == "cpu")
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: None)  # as without Triton
    assert "triton" not in available_backends()
    caches = (policy_module._triton_engine, policy_module._gpu_triton)
    for cache in caches:
        cache.cache_clear()  # asked anew, as on a machine without Triton
    try:
        with pytest.raises(MissingExtraError, match=r"qucnn\[gpu\]"):
            backend.resolve(device, 8, 16)
        sizes = {"chunk_elements": 1 << 19, "save_elements": 1 << 22}
        assert isinstance(RoutePolicy(**sizes).resolve(torch.device("cuda"), 8, 16), FusedEngine)  # "auto": fused
    finally:
        for cache in caches:
            cache.cache_clear()


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setattr(ops, "interpreting", lambda: False)
    for call in (lambda: ENGINE.maps(torch.rand(1, 1, 4, 4), torch.ones(2, 4) / 2, ConvSpec.make(2)),
                 lambda: ENGINE.sample(torch.zeros(3), 10), lambda: ENGINE.filter_states(torch.zeros(2, 1, 2, 2)),
                 lambda: ENGINE.expectations(torch.rand(1, 1, 4, 4), Filters(states=torch.ones(1, 2, 4) / 2),
                                             ConvSpec.make(2))):
        with pytest.raises(UsageError, match="runs on CUDA tensors, got a tensor on cpu.*TRITON_INTERPRET=1"):
            call()


def test_the_torch_backend_hands_cuda_tensors_to_the_kernels(device):
    engine = TorchBackend().resolve(device, 8, 16)
    assert isinstance(engine, TritonEngine) == (device.type == "cuda")  # the CPU path of "torch" is unchanged
    assert isinstance(engine, (TritonEngine, FusedEngine))
    assert isinstance(FUSED.resolve(device, 8, 16), FusedEngine)
    with pytest.raises(ValueError, match="engine must be one of auto, fused, triton, reference; got True"):
        RoutePolicy(engine=True)


def test_without_triton_cuda_work_is_sized_by_free_device_memory(monkeypatch):
    """Without the kernels, the fused engine on CUDA runs W4 (60,000 images, 32 filters, 2.4e9 overlaps) in one
    pass, kept for the backward: chunks follow a quarter of the free device memory, not the CPU's cache."""
    monkeypatch.setattr(policy_module, "free_bytes", lambda device: 80 * 2**30)  # an 80 GiB GPU, as if idle
    caches = (policy_module._device_budget, policy_module._resolved, policy_module._fused)
    for cache in caches:
        cache.cache_clear()
    try:
        policy = RoutePolicy(engine="fused").resolved(torch.device("cuda"))
        assert policy.chunk_elements == policy.save_elements == 80 * 2**30 // 4 // 4
        assert 60_000 * 64 * 625 <= policy.save_elements
        assert RoutePolicy(engine="fused").resolve(torch.device("cuda"), 32, 16).policy == policy
        assert RoutePolicy().resolved(torch.device("cpu")).chunk_elements == policy_module.CPU_CHUNK_ELEMENTS
    finally:
        for cache in caches:
            cache.cache_clear()


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("kind", tiles.KINDS)
def test_tiles_stay_within_the_register_budget(kind, double):
    for filters in (1, 2, 3, 8, 9, 32, 64, 65, 130, 1000):
        for taps in (2, 9, 16, 27, 64, 256):
            p = tiles.plan(filters, taps, double, kind)
            per_position, per_thread = tiles._tile(kind, p.kc, p.m_pad)
            assert p.kc * p.nkc >= filters and 8 <= p.kc <= tiles.MAX_CHUNK and p.m_pad >= max(taps, 16)
            assert all(v & (v - 1) == 0 for v in (p.kc, p.block, p.m_pad)) and p.warps in (2, 4, 8)
            if not double and p.m_pad == 16 and (kind, p.kc) in tiles.MEASURED_TILES:
                # measured: may exceed the budget
                assert (p.block, p.warps, p.unroll_rows) == tiles.MEASURED_TILES[kind, p.kc]
                continue
            assert 16 <= p.block <= tiles.MAX_BLOCK
            weight = ((4 if kind == "backward" else 2) if double else 1)
            assert p.block == 16 or per_position * p.block * weight <= per_thread * 32 * p.warps


# -- on a GPU only: a training step captured in a CUDA graph -----------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_exact_training_step_is_captured_in_a_cuda_graph(backend, device):
    """No host synchronisation in an exact forward + backward + Adam step: the graph replays it, and its
    parameters follow the eager steps."""
    assert device.type == "cuda", "a CUDA graph needs --device cuda"
    torch.manual_seed(0)
    model = nn.Sequential(QuConv2d(1, 8, 4, layers=3, backend=backend), nn.Flatten(),
                          nn.Linear(8 * 25 * 25, 10)).to(device)
    batches = [(torch.rand(64, 1, 28, 28, device=device), torch.randint(0, 10, (64,), device=device))
               for _ in range(4)]
    twin = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True)
    opt_twin = torch.optim.Adam(twin.parameters(), lr=1e-2, capturable=True)
    static_x, static_y = batches[0][0].clone(), batches[0][1].clone()

    def step(net, optimizer, xb, yb):
        optimizer.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(net(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: kernels compiled, optimizer state allocated
        for net, optimizer in ((model, opt), (twin, opt_twin)):
            step(net, optimizer, *batches[0])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(model, opt, static_x, static_y)
    for xb, yb in batches[1:]:
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
        eager_loss = step(twin, opt_twin, xb, yb)
        assert math.isclose(float(static_loss), float(eager_loss), rel_tol=1e-4, abs_tol=1e-5)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert (a - b).abs().max() <= 1e-4
