"""Every kernel path of the Triton engine against the float64 reference: the measured kernels and the tap-loop
kernels beside them (chosen by ``plan.MEASURED_PATHS`` where a GPU measured them faster), and the mixed-precision
binomial sampler against the float64 one (the same draws, bit for bit) and the binomial distribution.

On the CPU the kernels run in Triton's interpreter (``conftest.py``); ``--device cuda`` runs the same tests
compiled on a GPU. A path is forced by replacing fields of the plan ``ops`` launches with.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import EXACT, SIGMAS, SINGLE

from qucnn.backends.reference import plain_fidelity
from qucnn.backends.triton import maps, ops, plan
from qucnn.core.geometry import ConvSpec

#: The paths (``Plan`` fields replaced); ``None``: the plan as it is (the measured kernels).
PATHS = {
    "measured": None,
    "taps": {"kernel": "taps"},
    "taps-image": {"kernel": "taps", "image": True, "block": 32},
    "taps-dot": {"kernel": "taps", "reduce_dot": True, "unroll_rows": False},
    "taps-saved": {"kernel": "taps", "image": True, "block": 64, "save_z": True},
    "taps-chunks": {"kernel": "taps", "image": True, "block": 16, "kc": 8},
}


def _force(monkeypatch, fields: dict | None, kinds: tuple[str, ...] = plan.KINDS) -> None:
    """Make ``ops`` launch ``kinds`` with ``fields`` replaced in their plan (``kc``: filters per program)."""
    if fields is None:
        return
    original = ops.plan

    def forced(filters, taps, double, kind="forward", interpreted=False):
        p = original(filters, taps, double, kind, interpreted)
        if kind not in kinds:
            return p
        p = plan.with_chunks(p, filters, fields["kc"]) if "kc" in fields else p
        return dataclasses.replace(p, **{k: v for k, v in fields.items() if k != "kc"})

    monkeypatch.setattr(ops, "plan", forced)


def _inputs(b, c, h, w, filters, spec, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=gen, dtype=torch.float64)
    x[0, :, : h // 2 + 1] = 0  # all-zero patches
    x[-1, :, -1, -1] = 1e-30  # a faint patch next to ordinary ones
    d = 1 << spec.n_qubits(c)
    states = torch.complex(torch.randn(filters, d, generator=gen, dtype=torch.float64),
                           torch.randn(filters, d, generator=gen, dtype=torch.float64))
    states = states / torch.linalg.vector_norm(states, dim=-1, keepdim=True)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    upstream = torch.randn((b, filters) + spec.output_size(h, w), generator=gen, dtype=torch.float64)
    return x.to(device, dtype), states.to(device, cdtype), upstream.to(device, dtype)


def _maps_and_grads(x, states, spec, upstream):
    xr, sr = x.clone().requires_grad_(True), states.clone().requires_grad_(True)
    fid, valid = maps.fidelity_maps(xr, sr, spec)
    saved = len(fid.grad_fn.saved_tensors)
    fid.backward(upstream)
    return fid.detach(), valid, xr.grad, sr.grad, saved


def _reference(x, states, spec, upstream):
    xd = x.detach().cpu().double().requires_grad_(True)
    sd = states.detach().cpu().to(torch.complex128).requires_grad_(True)
    fid = plain_fidelity(xd, sd, spec)
    fid.backward(upstream.cpu().double())
    return fid.detach(), xd.grad, sd.grad


def _rel(value, expected) -> float:
    return float((value.detach().cpu().to(expected.dtype) - expected).abs().max() / expected.abs().max())


GEOMETRIES = {  # batch, channels, H, W, filters, ConvSpec.make arguments
    "4x4": (2, 1, 9, 8, 10, {"kernel_size": 4}),  # 10 filters: two chunks of 8 (taps-chunks)
    "padded": (2, 2, 7, 6, 3, {"kernel_size": (2, 3), "stride": (2, 1), "padding": 1,
                                "dilation": (1, 2)}),
}
CASES = [(g, p) for p in PATHS for g in ("4x4",)] + [("padded", "taps-saved"),  # taps-saved: image layout too
                                                       ("padded", "taps-dot")]


@pytest.mark.parametrize("geometry,path", CASES)
def test_every_path_gives_the_float64_reference(geometry, path, device, monkeypatch):
    """Maps, valid patches and both gradients of each path, in float64, to the reference's EXACT tolerance; the
    saved-overlaps path keeps them (5 tensors for the backward instead of 3)."""
    b, c, h, w, filters, args = GEOMETRIES[geometry]
    spec = ConvSpec.make(**args)
    x, states, up = _inputs(b, c, h, w, filters, spec, device, torch.float64)
    _force(monkeypatch, PATHS[path])
    fid, valid, gx, gs, saved = _maps_and_grads(x, states, spec, up)
    ref, rgx, rgs = _reference(x, states, spec, up)
    norms = torch.nn.functional.conv2d((x.cpu() ** 2).sum(1, keepdim=True), torch.ones((1, 1) + spec.kernel,
                                       dtype=torch.float64), stride=spec.stride, padding=spec.padding,
                                       dilation=spec.dilation)
    assert (fid.cpu() - ref).abs().max() <= EXACT
    assert torch.equal(valid.cpu(), norms > 0) and not valid.all()
    assert torch.all(fid.cpu()[~valid.expand_as(fid).cpu()] == 0)
    assert _rel(gx, rgx) <= EXACT and _rel(gs, rgs) <= EXACT
    assert saved == (5 if path == "taps-saved" else 3)


def test_float32_paths_agree_with_the_measured_kernels(device, monkeypatch):
    """float32: the paths' maps within SINGLE of the reference, and within float32 rounding of the measured
    kernels' gradients; the forwards, whose tap loops add in the same order, give the same bits (in the
    interpreter; compiled, within SINGLE)."""
    spec = ConvSpec.make(4)
    x, states, up = _inputs(2, 1, 9, 8, 5, spec, device, torch.float32, seed=1)
    ref = _reference(x, states, spec, up)[0]
    results = {}
    for name in ("measured", "taps", "taps-image", "taps-dot"):  # the others: float64 above
        fields = PATHS[name]
        with monkeypatch.context() as patch:
            _force(patch, fields)
            results[name] = _maps_and_grads(x, states, spec, up)
    base = results["measured"]
    for name, (fid, valid, gx, gs, _) in results.items():
        assert (fid.cpu().double() - ref).abs().max() <= SINGLE, name
        assert torch.equal(valid, base[1]) and (fid - base[0]).abs().max() <= (0 if ops.interpreting() else SINGLE)
        assert _rel(gx, base[2].cpu().double()) <= SINGLE and _rel(gs, base[3].cpu().to(torch.complex128)) <= SINGLE


@pytest.mark.parametrize("fields", [{"kernel": "taps", "image": True, "block": 16},  # 16 positions: no partial tile
                                    {"kernel": "taps", "idx64": True},  # 64-bit flat positions
                                    {"kernel": "taps", "idx64": True, "reduce_dot": True}])
def test_whole_tiles_and_64_bit_positions_give_the_same_bits(fields, device, monkeypatch):
    """The image layout without a partial tile (no lane masked) and the 64-bit index path (taken from
    ``B H' W' >= 2**31`` output positions, too large to test) compute what the measured kernels compute; the
    taps backward twice gives the same bits (no atomics)."""
    spec = ConvSpec.make(4)
    x, states, up = _inputs(2, 1, 7, 7, 3, spec, device, torch.float32, seed=2)
    base = _maps_and_grads(x, states, spec, up)
    fields = dict(fields)
    if fields.pop("idx64", False):
        monkeypatch.setattr(ops, "idx64", lambda items, block: True)
    _force(monkeypatch, fields)
    first, second = _maps_and_grads(x, states, spec, up), _maps_and_grads(x, states, spec, up)
    assert all(torch.equal(a, b) for a, b in zip(first[:4], second[:4]))
    tol = 0 if ops.interpreting() else SINGLE
    assert torch.equal(first[1], base[1]) and (first[0] - base[0]).abs().max() <= tol
    assert _rel(first[2], base[2].cpu()) <= SINGLE and _rel(first[3], base[3].cpu()) <= SINGLE


@pytest.mark.parametrize("fields", [{"kernel": "taps"}, {"kernel": "taps", "image": True, "block": 16}])
def test_fused_expectations_with_groups_upstream_and_mask_equal_the_measured_kernel(fields, device, monkeypatch):
    spec = ConvSpec.make(2)
    x, states, _ = _inputs(2, 1, 6, 6, 6, spec, device, torch.float32, seed=3)
    gen = torch.Generator().manual_seed(4)
    up = (2 * torch.rand(2, 3, 5, 5, generator=gen) - 1).to(device)
    up[1, 0] = 0
    mask = (torch.rand(2, 3, 5, 5, generator=gen) > 0.3).to(device)
    want = maps.expectations(x, states, 2, spec, upstream=up, mask=mask)
    _force(monkeypatch, fields)
    got = maps.expectations(x, states, 2, spec, upstream=up, mask=mask)
    assert got.shape == (2, 2, 3, 5, 5) and (want != 0).any() and torch.all(got[:, 1, 0] == 0)
    assert (got - want).abs().max() <= (0 if ops.interpreting() else SINGLE)


def test_saved_overlaps_follow_the_plan_and_the_size_limit(device, monkeypatch):
    """Only the backward's plan asks: the measured forward's 32 filters per program (the interpreter's plan)
    become chunks of 16 in the tap-loop forward that saves them."""
    spec = ConvSpec.make(4)
    x, states, up = _inputs(1, 1, 6, 6, 20, spec, device, torch.float64)
    _force(monkeypatch, {"kernel": "taps", "save_z": True}, kinds=("backward",))
    fid, _, gx, gs, saved = _maps_and_grads(x, states, spec, up)
    ref, rgx, rgs = _reference(x, states, spec, up)
    assert saved == 5 and (fid.cpu() - ref).abs().max() <= EXACT
    assert _rel(gx, rgx) <= EXACT and _rel(gs, rgs) <= EXACT
    outputs = 9  # 3 x 3 positions, 41 values each (2K + 1), float64
    monkeypatch.setattr(plan, "SAVE_Z_MAX_BYTES", outputs * 41 * 8 - 1)
    assert _maps_and_grads(x, states, spec, up)[-1] == 3  # one byte too many: recomputed
    assert not plan.saves_overlaps(plan.Plan(8, 1, 16, 16, 4, save_z=True), 10, 3, False)  # measured kernel: never


def test_the_plan_takes_new_paths_only_from_the_measured_table(monkeypatch):
    for kind in plan.KINDS:
        assert plan.plan(8, 16, False, kind).kernel == "measured" and not plan.plan(8, 16, False, kind).mixed
    assert not plan.sample_mixed(100)
    monkeypatch.setattr(plan, "MEASURED_PATHS", {("forward", 32): {"kernel": "taps", "kc": 16, "image": True,
                                                                   "block": 256, "warps": 8},
                                                 ("sample", 0): {"mixed": True}})
    plan.plan.cache_clear()
    try:
        p = plan.plan(32, 16, False)
        assert (p.kernel, p.kc, p.nkc, p.image, p.block, p.warps) == ("taps", 16, 2, True, 256, 8)
        assert plan.plan(32, 16, True).kernel == "measured"  # float64: not what was measured
        assert plan.plan(8, 16, False).kernel == "measured"
        assert plan.sample_mixed(10_000) and not plan.sample_mixed(plan.MIXED_MAX_SHOTS + 1)
    finally:
        plan.plan.cache_clear()


# -- shots ----------------------------------------------------------------------------------------------------
SHOT_CASES = {  # S: expectations z (S q < 10: inversion; else BTRS; up to 2**44, where float32 rarely decides)
    1: [-1.0, -0.5, 0.0, 1.0],
    7: [-0.9, 0.0, 0.97],
    1000: [-0.9999, -0.5, 0.0, 0.3, 0.985],
    10**4: [0.1, 0.5, 0.999],
    10**9: [-1.0 + 2e-9, -0.3, 1.0 - 1e-7],
    2**44: [0.2, -0.7],
}


def test_the_mixed_sampler_draws_the_float64_samplers_numbers(device):
    for shots, values in SHOT_CASES.items():
        z = torch.tensor(values, dtype=torch.float64, device=device).repeat(500)
        draws = [maps.sample(z, shots, torch.Generator(device=device).manual_seed(shots % 997), mixed=mixed)
                 for mixed in (False, True)]
        assert torch.equal(*draws), shots


def test_fused_mixed_shots_equal_the_float64_samplers(device, monkeypatch):
    """The tap-loop forward with shots draws the same numbers with either sampler (same key, same counters)."""
    spec = ConvSpec.make(2)
    x, states, _ = _inputs(2, 1, 6, 6, 3, spec, device, torch.float32)
    out = []
    for mixed in (False, True):
        with monkeypatch.context() as patch:
            _force(patch, {"kernel": "taps", "mixed": mixed, "image": True, "block": 16})
            out.append(maps.expectations(x, states, 1, spec, shots=700,
                                         generator=torch.Generator(device=device).manual_seed(3)))
    assert torch.equal(out[0], out[1])
    counts = (out[0].double() + 1) * 700 / 2
    assert (out[0] != 0).any() and torch.all((counts - counts.round()).abs() <= 1e-3)  # whole counts of 700


def test_mixed_shot_estimates_have_the_binomial_mean_and_variance(device):
    z = torch.tensor([-0.99, -0.3, 0.0, 0.6, 0.995], dtype=torch.float64)
    rows = 2000
    for shots in (1000, 10**4):
        est = maps.sample(z.repeat(rows, 1).to(device), shots, torch.Generator(device=device).manual_seed(11),
                          mixed=True).cpu()
        p = (1 + z) / 2
        var = (1 - z**2) / shots
        mu4 = (2 / shots) ** 4 * shots * p * (1 - p) * (1 + 3 * (shots - 2) * p * (1 - p))
        var_of_var = mu4 / rows - var**2 * (rows - 3) / (rows * (rows - 1))
        assert torch.all((est.mean(0) - z).abs() <= SIGMAS * (var / rows).sqrt())
        assert torch.all((est.var(0) - var).abs() <= SIGMAS * var_of_var.sqrt())


@pytest.mark.parametrize("p", [0.35, 0.95])  # S q = 17.5: BTRS; S q = 2.5: inversion (of 1 - p)
def test_mixed_shot_counts_follow_the_binomial_distribution(p, device):
    """Chi-square of 20,000 counts ~ Binomial(50, p) against the exact probabilities (cells with >= 5 expected,
    tails pooled): within SIGMAS standard deviations of its mean."""
    shots, draws = 50, 20000
    z = torch.full((draws,), 2 * p - 1, dtype=torch.float64, device=device)
    est = maps.sample(z, shots, torch.Generator(device=device).manual_seed(5), mixed=True).cpu()
    counts = torch.bincount(((est + 1) * shots / 2).round().long(), minlength=shots + 1).double()
    k = torch.arange(shots + 1, dtype=torch.float64)
    log_pmf = (math.lgamma(shots + 1) - torch.lgamma(k + 1) - torch.lgamma(shots - k + 1) + k * math.log(p)
               + (shots - k) * math.log1p(-p))
    expected = draws * log_pmf.exp()
    keep = expected >= 5
    lo, hi = int(keep.nonzero().min()), int(keep.nonzero().max())
    obs = torch.cat([counts[: lo + 1].sum(0, keepdim=True), counts[lo + 1: hi], counts[hi:].sum(0, keepdim=True)])
    exp = torch.cat([expected[: lo + 1].sum(0, keepdim=True), expected[lo + 1: hi],
                     expected[hi:].sum(0, keepdim=True)])
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    assert chi2 <= dof + SIGMAS * math.sqrt(2 * dof), (chi2, dof)


# -- the prepared GPU measurement ------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_tuning_script_times_every_kind_against_the_default(monkeypatch, tmp_path):
    """benchmarks/triton_tune.py's paths mode on 2 images in the interpreter, one candidate per kind: every
    candidate runs (no error), each next to the default, and the table holds only candidates it timed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import triton_tune
    finally:
        sys.path.pop(0)
    first = triton_tune.candidates
    monkeypatch.setattr(triton_tune, "candidates", lambda kind, filters: first(kind, filters)[:1])
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rows, table = triton_tune.paths(x, ["forward", "backward", "shots", "sample"], 1e6, time.time())
    assert all(r["error"] is None and r["seconds"] > 0 for r in rows)
    timed = {(r["kind"], r["filters"]) for r in rows if r["choice"]}
    assert timed == set(triton_tune.CASES)
    assert len([r for r in rows if not r["choice"]]) == len(timed)
    assert all(choice in [r["choice"] for r in rows] for choice in table.values())


# -- qucnn bench --device cuda: the W3 extras on the CPU code paths --------------------------------------------
def test_bench_w3_captured_step_and_epochs_run_their_code_paths_on_the_cpu(monkeypatch):
    """The epoch rows (warm median, first epoch beside) and the captured step (eager without CUDA, from the same
    seeded start as the eager step: the same first loss), and the targets they feed."""
    from qucnn.bench import gpu, runner

    monkeypatch.setattr(runner, "MIN_SAMPLE_S", 0.0)
    cases = {c.impl: c for c in gpu.w3_cases(2, "cpu", extras=True, epoch_images=2)}
    assert list(cases) == ["qucnn-triton-epoch", "torch-conv2d-epoch", "qucnn-triton", "qucnn-torch",
                           "torch-two-conv", "qucnn-triton-graph"]
    assert gpu.w3_cases(2, "cpu")[-1].impl == "torch-two-conv"  # no extras off CUDA by default
    assert float(cases["qucnn-triton-graph"].fn()) == pytest.approx(float(cases["qucnn-triton"].fn()), abs=1e-6)
    rows = runner.measure("w3", [cases[k] for k in ("qucnn-triton-epoch", "torch-conv2d-epoch",
                                                    "qucnn-triton-graph")], repeats=1)
    assert [r["impl"] for r in rows if not r["skipped"]] == ["qucnn-triton-epoch", "torch-conv2d-epoch",
                                                            "qucnn-triton-graph"]
    for r in rows[:2]:
        assert r["items"] == 2 and r["first_epoch_s"] > 0 and "first epoch of this process took" in r["note"]
    assert "eager" in rows[2]["note"]
    fake = [{"workload": "w3", "device": "cuda", "impl": impl, "median_s": s}
            for impl, s in (("torch-conv2d", 1.0), ("qucnn-triton", 1.2), ("qucnn-triton-graph", 1.4),
                            ("torch-conv2d-epoch", 2.0), ("qucnn-triton-epoch", 2.4))]
    met = {t["name"].split(" over ")[0]: (t["value"], t["met"]) for t in gpu.targets(fake)}
    assert met == {"W3 qucnn-triton step": (pytest.approx(1.2), True),
                   "W3 qucnn-triton step captured in a CUDA graph": (pytest.approx(1.4), False),
                   "W3 qucnn-triton epoch after warm-up": (pytest.approx(1.2), True)}
