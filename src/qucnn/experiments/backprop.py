"""Experiment 2 (Section V-B, Fig. 4): entanglement-based backpropagation against the post-processed
parameter shift, for growing shot counts.

One filter (the Fig. 1 ansatz, 4 qubits, 3 layers: 24 parameters) is SWAP-tested against one fixed data
state, and the loss is ``L = g F`` with the backpropagated value ``g`` (``--upstream``, default 0.5: our
choice, since the paper's value of ``g`` could not be recovered from its text; any ``|g| <= 1`` fits
Eq. 17 with ``c = 1``). The filter's angles are seeded and then raised by exact gradient ascent on ``F``
until ``F >= TARGET_FIDELITY`` (0.5): a half-trained filter, whose gradients (up to about 0.2 in ``L``) lie
well above the shot noise of 100 shots per circuit (about 0.035), so the figure shows estimators
converging rather than noise. At random angles (``F`` about ``1/16`` or less) most gradients are below the
noise of 1,000 shots. For each parameter ``t`` (shift ``pi/2``, Eq. 4-6):

- **parameter shift, post-processed** (Eq. 6): ``g (F+_hat - F-_hat) / 2``, each ``F_hat`` a SWAP-test
  estimate with ``S`` shots (:func:`qucnn.gradients.parameter_shift_grad`, the layer's estimator);
  standard deviation ``(|g|/2) sqrt(((1 - F+^2) + (1 - F-^2)) / S)``.
- **entanglement** (Eq. 15-17): the ancilla ``b`` carries ``delta = g / c`` with ``c = 1`` (so it
  really carries ``g = 0.5``, as in the paper); ``<Z_a> = delta F`` and the gradient is
  ``(c/2) (Z+_hat - Z-_hat)``; standard deviation ``(c/2) sqrt(((1 - delta^2 F+^2) + (1 - delta^2 F-^2)) / S)``.
- **entanglement-cmax** (extra): the layer's own :func:`qucnn.gradients.entanglement_grad`, which
  picks ``c = max_j |g_j| = |g|`` so ``delta = +-1``; with one output this has exactly the
  post-processed variance.

Beyond the paper, :func:`variance_gap` measures what Eq. 17 adds to the post-processed variance, against the
closed form ``c^2 (1 - delta^2) / (2S)`` per gradient. The gap has a simple cause: the ancilla ``b`` only
feeds a CNOT into ``a`` before ``a`` is measured, so the circuit is a SWAP test times an independent random
sign of mean ``delta``, a classical coin (docs/math.md).

The default data state is the uniform superposition ``H^n|0>`` (a 4x4 patch of ones): the paper's
"maximally-mixed state" would give ``F = 1/d`` for every filter and a zero gradient.

Example:
    metrics = run_backprop(Config(out=Path("results"), quick=True).validated())
    {r["method"] for r in metrics["rows"]} >= {"entanglement", "parameter-shift"}
    # -> True
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backends import get_backend
from ..core.ansatz import FilterAnsatz
from ..core.geometry import ConvSpec
from ..core.swap_test import swap_test_circuit
from ..nn import gradients
from .common import Config, ShotSampler, load_data, progress, pyplot, save_figure

SHOT_COUNTS = (10, 100, 1_000, 10_000, 100_000)
N_QUBITS, LAYERS, KERNEL = 4, 3, 4
#: Repeats per shot count of the torch back end, by quick.
REPEATS = {False: 500, True: 50}
#: Aer plans by (quick, noise): shot counts, repeats, parameters (None: all; k: the k largest |gradients|).
#: Aer keeps every shot as a string, and with noise every shot is a trajectory of ~200 noisy gates
#: (the SVD unitaries unrolled), so the noisy plans are small.
AER_PLAN = {(False, False): (SHOT_COUNTS, 10, None), (True, False): (SHOT_COUNTS[:4], 3, None),
            (False, True): (SHOT_COUNTS[:3], 3, 4), (True, True): (SHOT_COUNTS[:2], 3, 4)}
METHODS = ("entanglement", "parameter-shift", "entanglement-cmax")
SCALE_C = 1.0
#: The filter's angles are raised by exact gradient ascent on F until F reaches this (see the module docstring).
TARGET_FIDELITY = 0.5
ASCENT_LR, ASCENT_STEPS = 0.05, 2000


def data_patch(config: Config, device: torch.device) -> tuple[Tensor, str]:
    """The fixed data state as a one-patch image ``(1, 1, 4, 4)`` float64 and a description."""
    if config.data_state == "uniform":
        return torch.ones(1, 1, KERNEL, KERNEL, dtype=torch.float64, device=device), \
            "uniform superposition H^n|0> (4x4 patch of ones)"
    images = load_data(config).test_images[:1].double()
    cols = F.unfold(images, KERNEL)[0]  # (16, 625): the patch with the most lit pixels, then the largest norm
    score = (cols > 0).sum(0) * 1e3 + cols.norm(dim=0)
    best = int(score.argmax())
    row, col = divmod(best, images.shape[-1] - KERNEL + 1)
    patch = cols[:, best].reshape(1, 1, KERNEL, KERNEL).to(device)
    return patch, f"MNIST test image 0, 4x4 patch at row {row}, column {col}"


def theoretical_std(f_plus: Tensor, f_minus: Tensor, g: float, shots: int, method: str) -> Tensor:
    """Standard deviation ``(P,)`` of one gradient estimate with ``shots`` per circuit.

    ``entanglement``: ``(c/2) sqrt(((1 - delta^2 F+^2) + (1 - delta^2 F-^2)) / S)``, ``delta = g / c``
    (``c = 1``; ``c = |g|`` for ``entanglement-cmax``); ``parameter-shift``:
    ``(|g|/2) sqrt(((1 - F+^2) + (1 - F-^2)) / S)``.
    """
    if method == "parameter-shift":
        return abs(g) / 2 * torch.sqrt(((1 - f_plus**2) + (1 - f_minus**2)) / shots)
    c = SCALE_C if method == "entanglement" else abs(g)
    delta = g / c
    return c / 2 * torch.sqrt(((1 - delta**2 * f_plus**2) + (1 - delta**2 * f_minus**2)) / shots)


def run_backprop(config: Config) -> dict:
    """Run experiment 2 and draw Fig. 4 into ``config.out``; returns the metrics section."""

    device = config.torch_device
    gen = config.generator("backprop")
    g = float(config.upstream)
    x, description = data_patch(config, device)
    ansatz = FilterAnsatz(N_QUBITS, LAYERS)
    theta = (2 * math.pi * torch.rand((1,) + ansatz.param_shape, generator=gen, dtype=torch.float64)).to(device)
    spec = ConvSpec.make(KERNEL)
    backend = get_backend("torch")
    theta, start_fidelity, ascent_steps = raise_fidelity(backend, x, theta, spec)

    # exact references: autograd of L = g F, and the shifted fidelities F+- of every parameter
    theta_req = theta.clone().requires_grad_(True)
    fid = backend.maps(x, backend.filter_states(theta_req), spec)[0][0, 0, 0, 0]
    (exact,) = torch.autograd.grad(g * fid, theta_req)
    exact, fid = exact.reshape(-1), fid.detach()
    shifted = ansatz.state(gradients.shifted_thetas(theta)[0])  # (2, P, 1, d)
    f_shift = backend.maps(x, shifted.reshape(-1, 16), spec)[0].reshape(2, -1)
    data_state = x.reshape(1, -1) / x.norm()
    eq15 = swap_test_circuit(data_state, ansatz.state(theta), upstream=g / SCALE_C)
    checks = {
        "exact_fidelity": float(fid),
        "parameter_shift_exact_error": float(((g / 2) * (f_shift[0] - f_shift[1]) - exact).abs().max()),
        "eq15_circuit_error": float((eq15 - (g / SCALE_C) * fid).abs().max()),
    }

    shot_counts, repeats, n_params = _schedule(config)
    params = exact.abs().argsort(descending=True)[:n_params].sort().values if n_params else \
        torch.arange(exact.numel())
    draws = _draw_all(config, x, theta, shifted[:, params], f_shift[:, params], g, spec, shot_counts, repeats)
    rows, summary = [], []
    for shots in shot_counts:
        for method in METHODS if config.backend == "torch" else METHODS[:2]:
            est = draws[(shots, method)]  # (repeats, len(params))
            mean, std = est.mean(0), est.std(0)
            theory = theoretical_std(f_shift[0], f_shift[1], g, shots, method)[params]
            for i, p in enumerate(params.tolist()):
                rows.append({"shots": shots, "method": method, "parameter": p, "mean": float(mean[i]),
                             "std": float(std[i]), "exact": float(exact[p]), "theory_std": float(theory[i])})
            ratio = (std / theory) ** 2  # measured / theoretical variance, per parameter
            summary.append({
                "shots": shots, "method": method, "repeats": repeats, "parameters": len(params),
                "max_abs_error_in_se": float(((mean - exact[params]).abs() / (theory / math.sqrt(repeats))).max()),
                "variance_ratio_mean": float(ratio.mean()),
                "variance_ratio_sd": float(ratio.std()),
                "mean_theory_std": float(theory.mean()),
            })
    metrics = {
        "variance_gap": variance_gap(draws, shot_counts, f_shift[:, params], g, repeats),
        "upstream": g, "upstream_note": "g is our choice (default 0.5): the paper's value could not be recovered",
        "angles": {"start_fidelity": start_fidelity, "target_fidelity": TARGET_FIDELITY,
                   "ascent_steps": ascent_steps, "ascent": f"Adam, lr {ASCENT_LR}, exact dF/dtheta"},
        "scale_c": SCALE_C, "delta": g / SCALE_C, "data_state": config.data_state,
        "data_state_description": description, "qubits": N_QUBITS, "layers": LAYERS,
        "parameters": ansatz.n_params, "shot_counts": list(shot_counts), "repeats": repeats,
        "parameters_estimated": params,
        "theta": theta.reshape(-1), "exact_gradient": exact, "f_plus": f_shift[0], "f_minus": f_shift[1],
        "checks": checks, "summary": summary, "rows": rows,
    }
    metrics["figures"] = [_plot(config.figure("backprop", "fig4_backprop"), rows, summary, exact, config,
                                metrics["variance_gap"])]
    return metrics


def raise_fidelity(backend, x: Tensor, theta: Tensor, spec: ConvSpec,
                   target: float = TARGET_FIDELITY) -> tuple[Tensor, float, int]:
    """Exact gradient ascent (Adam) on ``F(theta)`` from ``theta`` ``(1, L, n, 2)`` until ``F >= target``.
    Returns the new angles (detached), the starting ``F`` and the steps taken; deterministic."""
    theta = theta.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=ASCENT_LR)
    start = None
    for step in range(ASCENT_STEPS + 1):
        fid = backend.maps(x, backend.filter_states(theta), spec)[0][0, 0, 0, 0]
        value = float(fid.detach())
        start = value if start is None else start
        if value >= target:
            return theta.detach(), start, step
        opt.zero_grad()
        (-fid).backward()
        opt.step()
    raise ArithmeticError(f"the filter did not reach F = {target} in {ASCENT_STEPS} ascent steps (F = {value:.3f})")


def variance_gap(draws: dict, shot_counts: tuple[int, ...], f_shift: Tensor, g: float, repeats: int) -> list[dict]:
    """Measured ``Var(entanglement) - Var(post-processed)`` per parameter and shot count against the closed
    form. Each Eq. 17 circuit has variance ``c^2 (1 - delta^2 F^2) / S`` after scaling by ``c``, the
    post-processed product ``g^2 (1 - F^2) / S = c^2 delta^2 (1 - F^2) / S``: the gap per circuit is
    ``c^2 (1 - delta^2) / S`` whatever ``F``, and a gradient (``/2`` of a shifted pair) has
    ``c^2 (1 - delta^2) / (2 S)``. ``se`` is the standard error of the mean gap over parameters, from the
    theoretical variances (``Var(s^2) = 2 sigma^4 / (repeats - 1)`` for each sample variance)."""
    out = []
    delta = g / SCALE_C
    for shots in shot_counts:
        if (shots, "entanglement") not in draws or (shots, "parameter-shift") not in draws:
            continue
        ent, pp = draws[(shots, "entanglement")].var(0), draws[(shots, "parameter-shift")].var(0)
        theory_e = theoretical_std(f_shift[0], f_shift[1], g, shots, "entanglement") ** 2
        theory_p = theoretical_std(f_shift[0], f_shift[1], g, shots, "parameter-shift") ** 2
        gap = ent - pp
        se = torch.sqrt((2 * theory_e**2 + 2 * theory_p**2) / (repeats - 1)).square().sum().sqrt() / gap.numel()
        formula = SCALE_C**2 * (1 - delta**2) / (2 * shots)
        out.append({"shots": shots, "formula": formula, "measured_mean": float(gap.mean()), "se": float(se),
                    "z": float((gap.mean() - formula) / se), "per_parameter": gap})
    return out


def _schedule(config: Config) -> tuple[tuple[int, ...], int, int | None]:
    if config.backend == "torch":
        return SHOT_COUNTS, REPEATS[config.quick], None
    return AER_PLAN[(config.quick, config.noise)]


def _draw_all(config: Config, x: Tensor, theta: Tensor, shifted: Tensor, f_shift: Tensor, g: float, spec: ConvSpec,
              shot_counts: tuple[int, ...], repeats: int) -> dict:
    """Gradient estimates ``(repeats, P)`` for every (shots, method)."""
    out: dict = {}
    upstream = torch.full((1, 1, 1, 1), g, dtype=torch.float64, device=x.device)
    if config.backend == "torch":
        gen = config.generator("backprop:shots")
        backend = get_backend("torch")
        jobs = [(s, r) for s in shot_counts for r in range(repeats)]
        for shots, _ in progress(jobs, "backprop repeats"):
            ps = gradients.parameter_shift(backend, x, theta, spec, upstream, shots, gen).grad[0]
            ent = gradients.entanglement(backend, x, theta, spec, upstream, shots, gen, scale=SCALE_C).grad[0]
            cmax = gradients.entanglement(backend, x, theta, spec, upstream, shots, gen).grad[0]
            for method, value in zip(METHODS, (ent, ps, cmax)):
                out.setdefault((shots, method), []).append(value)
        return {k: torch.stack(v) for k, v in out.items()}
    # Aer: every repeat and shift of one (shots, method) in one batched call
    sampler = ShotSampler(config, "backprop")
    p = f_shift.shape[1]
    patch = x.reshape(1, -1).expand(2 * p * repeats, -1)
    states = shifted.reshape(1, 2 * p, 16).expand(repeats, -1, -1).reshape(-1, 16)
    expect = f_shift.reshape(1, -1).expand(repeats, -1).reshape(-1)
    for shots in progress(shot_counts, "backprop shot counts (aer)"):
        delta = torch.full_like(expect, g / SCALE_C)
        z = sampler(patch, states, delta * expect, shots, upstream=delta).reshape(repeats, 2, p)
        out[(shots, "entanglement")] = SCALE_C / 2 * (z[:, 0] - z[:, 1])
        z = sampler(patch, states, expect, shots).reshape(repeats, 2, p)
        out[(shots, "parameter-shift")] = g / 2 * (z[:, 0] - z[:, 1])
    return out


#: Colours and x offsets of each method in the figure.
_COLOURS = {"entanglement": "tab:red", "parameter-shift": "tab:blue", "entanglement-cmax": "tab:green"}
_OFFSETS = {"entanglement": 0.9, "parameter-shift": 1.0, "entanglement-cmax": 1.1}


def _plot(path: Path, rows: list[dict], summary: list[dict], exact: Tensor, config: Config,
          gap: list[dict]) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(15, 11), layout="constrained")
    ax = axes.flatten()
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    _panel_estimates(ax[0], rows, exact, methods)
    _panel_spreads(ax[1], rows, methods)
    _panel_gap(ax[2], gap)
    _panel_bias(ax[3], summary, methods)
    for axis in ax:
        axis.grid(alpha=0.3)
    fig.suptitle(f"Fig. 4: Eq. 17 (entanglement, g = {config.upstream} (our choice), c = {SCALE_C}) vs post-processed "
                 f"parameter shift [{config.backend}{', noise' if config.noise else ''}]; filter raised to F >= "
                 f"{TARGET_FIDELITY}", fontsize=13)
    return save_figure(fig, path)


def _panel_estimates(ax, rows: list[dict], exact: Tensor, methods: list[str]) -> None:
    """(a) two large gradients with distinct exact values: estimates against shots."""
    estimated = {r["parameter"] for r in rows}
    top: list[int] = []
    for i in exact.abs().argsort(descending=True).tolist():
        if i in estimated and all(abs(float(exact[i] - exact[j])) > 0.005 for j in top) and len(top) < 2:
            top.append(i)
    for k, p in enumerate(top):
        for method in methods[:2]:
            sel = sorted((r for r in rows if r["parameter"] == p and r["method"] == method), key=lambda r: r["shots"])
            xs = [r["shots"] * _OFFSETS[method] ** (1 if k == 0 else -1) for r in sel]
            ax.errorbar(xs, [r["mean"] for r in sel], yerr=[r["std"] for r in sel], color=_COLOURS[method],
                        marker="os"[k], ms=5, capsize=3, lw=1.2, label=f"{method}, parameter {p}")
        ax.axhline(float(exact[p]), color="k", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("shots per circuit")
    ax.set_ylabel("dL/dtheta (mean +- std over repeats)")
    ax.set_title("(a) two large gradients: estimates against the exact value (dashes)", fontsize=11)
    ax.legend(fontsize=10)


def _panel_spreads(ax, rows: list[dict], methods: list[str]) -> None:
    """(b) measured spreads against the theoretical ones."""
    markers = {"entanglement": dict(marker="o", s=22, alpha=0.6),
               "parameter-shift": dict(marker="s", s=30, alpha=0.8),
               "entanglement-cmax": dict(marker="^", s=60, facecolors="none", linewidths=1.2)}
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        label = method + (" (the layer's c = max|g|)" if method == "entanglement-cmax" else "")
        style = dict(markers[method])
        style["edgecolors" if "facecolors" in style else "color"] = _COLOURS[method]
        ax.scatter([r["theory_std"] for r in sel], [r["std"] for r in sel], label=label, **style)
    lo, hi = min(r["theory_std"] for r in rows), max(r["theory_std"] for r in rows)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="measured = theory")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("theoretical std")
    ax.set_ylabel("measured std over repeats")
    shots = {r["shots"] for r in rows}
    ax.set_title(f"(b) spreads: {len({r['parameter'] for r in rows})} parameters x {len(shots)} shot counts",
                 fontsize=11)
    ax.legend(fontsize=10)


def _panel_gap(ax, gap: list[dict]) -> None:
    """(c) the variance Eq. 17 adds over post-processed parameter shift, per gradient."""
    if gap:
        for entry in gap:
            per = torch.as_tensor(entry["per_parameter"]) * entry["shots"]
            jitter = entry["shots"] * torch.linspace(0.85, 1.15, len(per))
            ax.scatter(jitter.numpy(), per.numpy(), s=10, color="tab:purple", alpha=0.4)
        ax.errorbar([e["shots"] for e in gap], [e["measured_mean"] * e["shots"] for e in gap],
                    yerr=[2 * e["se"] * e["shots"] for e in gap], fmt="D", color="black", ms=6, capsize=4,
                    label="mean over parameters +- 2 SE")
        ax.axhline(gap[0]["formula"] * gap[0]["shots"], color="tab:red", lw=2,
                   label=f"c^2 (1 - delta^2) / 2 = {gap[0]['formula'] * gap[0]['shots']:.3f}")
        ax.set_xscale("log")
        ax.legend(fontsize=10)
    ax.set_xlabel("shots per circuit S")
    ax.set_ylabel("S x [Var(Eq. 17) - Var(post-processed)]")
    ax.set_title("(c) the variance Eq. 17 adds, per gradient (dots: parameters)", fontsize=11)


def _panel_bias(ax, summary: list[dict], methods: list[str]) -> None:
    """(d) the largest bias over parameters, in standard errors, against shots."""
    for method in methods:
        sel = sorted((s for s in summary if s["method"] == method), key=lambda s: s["shots"])
        ax.plot([s["shots"] for s in sel], [s["max_abs_error_in_se"] for s in sel], "-", color=_COLOURS[method],
                marker={"entanglement": "o", "parameter-shift": "s", "entanglement-cmax": "^"}[method],
                mfc="none" if method == "entanglement-cmax" else _COLOURS[method], ms=7, label=method)
    ax.axhline(5, color="grey", ls=":", label="5 standard errors")
    ax.set_xscale("log")
    ax.set_xlabel("shots per circuit")
    ax.set_ylabel("max over parameters |mean - exact| / standard error")
    ax.set_title("(d) bias check", fontsize=11)
    ax.legend(fontsize=10)


__all__ = ["METHODS", "SCALE_C", "SHOT_COUNTS", "TARGET_FIDELITY", "data_patch", "raise_fidelity", "run_backprop",
           "theoretical_std", "variance_gap"]
