"""Experiment 3 (Section V-C, Fig. 6): can the shallow Fig. 1 ansatz learn ideal filter states?

The paper fits the ansatz to one ideal convolutional state (its trained filter as a unit vector). One filter
says little: how well a depth-``L`` ansatz fits depends on the filter (a nearly separable edge detector is
easy). So the targets are several independently trained filters (experiment 1's classical network trained
with seeds ``seed, seed + 1, ...``; the first is experiment 1's own filter), with random real and random
complex (Haar) unit vectors as references for "a generic state". For ``L = 1, 2, 3`` layers on 4 qubits,
Adam minimises ``1 - F`` with ``F = |<f(theta)|target>|^2`` from several seeded random starts (all restarts
in one batch: Adam is elementwise, so this is the same as separate runs). Gradients are exact (autograd) by
default; with ``--learn-shots S`` they are the layer's shot-based parameter shift
(:func:`qucnn.gradients.parameter_shift_grad` with upstream ``-1``, the derivative of ``1 - F``; the layer
takes real images, so the complex references are left out then). The logged
fidelity is always the exact one. Each target reports the **best** restart (is the state expressible?) and
the median restart (how often does the optimiser get there?); the summary gives min / median / max over
targets of each kind.

Example:
    metrics = run_learn(Config(out=Path("results"), quick=True).validated())
    [t["kind"] for t in metrics["filters"]]
    # -> ['trained', 'trained', 'random-real', 'random-complex']
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ..backends import get_backend
from ..core.ansatz import FilterAnsatz
from ..core.geometry import ConvSpec
from ..nn import gradients
from .common import Config, progress, pyplot, save_figure
from .forward import train_classical

DEPTHS = (1, 2, 3)
N_QUBITS = 4
#: (iterations, restarts) by quick.
SCHEDULE = {False: (500, 16), True: (120, 3)}
#: Targets by quick: trained filters (seeds seed, seed + 1, ...), random real and random complex states.
TARGETS = {False: {"trained": 8, "random-real": 5, "random-complex": 5},
           True: {"trained": 2, "random-real": 1, "random-complex": 1}}
TARGET_KINDS = ("trained", "random-real", "random-complex")
LR = 0.05


def learn_state(target: Tensor, layers: int, iterations: int, restarts: int, gen: torch.Generator,
                shots: int | None = None, desc: str = "learn") -> Tensor:
    """Fit ``restarts`` ansatz copies with ``layers`` layers to ``target`` ``(d,)``; returns the exact
    fidelity history ``(iterations + 1, restarts)`` (row 0: the random start)."""

    n = int(target.shape[-1]).bit_length() - 1
    ansatz = FilterAnsatz(n, layers)
    theta0 = 2 * math.pi * torch.rand((restarts,) + ansatz.param_shape, generator=gen, dtype=torch.float64)
    theta = theta0.to(target.device).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=LR)
    side = int(round(math.sqrt(target.shape[-1])))
    image = target.reshape(1, 1, side, side)  # the target as a one-patch "image": its encoding is itself
    spec = ConvSpec.make(side)
    minus_one = torch.full((1, restarts, 1, 1), -1.0, dtype=torch.float64, device=target.device)
    history = []
    for _ in progress(range(iterations + 1), desc):
        states = ansatz.state(theta)
        overlap = states.conj() @ target.to(states.dtype)
        fidelity = overlap.real**2 + overlap.imag**2  # (restarts,)
        history.append(fidelity.detach().cpu())
        if len(history) > iterations:
            break
        opt.zero_grad()
        if shots is None:
            (1 - fidelity).sum().backward()
        else:  # d(1 - F)/dtheta from shot-based parameter shift, the layer's estimator
            est = gradients.parameter_shift(get_backend("torch"), image, theta.detach(), spec, minus_one, shots, gen)
            theta.grad = est.grad.reshape(theta.shape)
        opt.step()
    return torch.stack(history)


def targets(config: Config) -> list[dict]:
    """The target states: ``{"kind", "name", "seed", "state" (16,) float64 or complex128, ...}``."""
    counts = TARGETS[config.quick]
    out = []
    for k in range(counts["trained"]):
        seed = config.seed + k
        trained = train_classical(replace(config, seed=seed))
        out.append({"kind": "trained", "name": f"trained filter, seed {seed}", "seed": seed,
                    "test_accuracy": trained.accuracy, "state": trained.state})
    gen = config.generator("learn:random")
    d = 2**N_QUBITS
    for kind in TARGET_KINDS[1:]:
        # the shot-based gradient is the layer's, whose input is a real image: it cannot carry a complex target
        for k in range(0 if kind == "random-complex" and config.learn_shots else counts[kind]):
            v = torch.randn(d, generator=gen, dtype=torch.float64)
            if kind == "random-complex":
                v = torch.complex(v, torch.randn(d, generator=gen, dtype=torch.float64))
            out.append({"kind": kind, "name": f"{kind} state {k}", "seed": None, "state": v / v.norm()})
    return out


def _quantiles(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    return {"min": float(t.min()), "median": float(t.quantile(0.5)), "max": float(t.max()), "n": len(values)}


def run_learn(config: Config) -> dict:
    """Run experiment 3 and draw Fig. 6 into ``config.out``; returns the metrics section."""
    iterations, restarts = SCHEDULE[config.quick]
    gen = config.generator("learn")
    rows, curves = [], []
    for target in targets(config):
        histories = {L: learn_state(target["state"].to(config.torch_device), L, iterations, restarts, gen, config.learn_shots,
                                    desc=f"learn {target['name']}, L={L}") for L in DEPTHS}
        final = {str(L): h[-1] for L, h in histories.items()}
        state = target["state"]
        rows.append({
            **{k: v for k, v in target.items() if k != "state"},
            "state": {"real": state.real, "imag": state.imag} if state.is_complex() else {"real": state, "imag": None},
            "final_fidelity": {k: float(v.max()) for k, v in final.items()},
            "median_final_fidelity": {k: float(v.quantile(0.5)) for k, v in final.items()},
            "all_final_fidelities": final,
            # restarts ending within 1e-3 of the best: all of them suggests the best is the ansatz's ceiling
            "restarts_near_best": {k: int((v >= v.max() - 1e-3).sum()) for k, v in final.items()},
            "iterations_to_0.99": {str(L): _first_reaching(h, 0.99) for L, h in histories.items()},
        })
        curves.append(histories)
    summary = {kind: {str(L): _quantiles([r["final_fidelity"][str(L)] for r in rows if r["kind"] == kind])
                      for L in DEPTHS} for kind in TARGET_KINDS if any(r["kind"] == kind for r in rows)}
    median_summary = {kind: {str(L): _quantiles([r["median_final_fidelity"][str(L)] for r in rows
                                                 if r["kind"] == kind]) for L in DEPTHS} for kind in summary}
    metrics = {
        "targets": {kind: sum(r["kind"] == kind for r in rows) for kind in TARGET_KINDS},
        "target_description": "trained: experiment 1's classical 4x4 filter trained with seeds seed, seed+1, ... "
                              "(the first is experiment 1's filter), as a unit vector; random-real / random-complex: "
                              "Gaussian vectors normalised (uniform on the real / complex unit sphere)",
        "qubits": N_QUBITS, "iterations": iterations, "restarts": restarts, "optimizer": f"Adam lr {LR}",
        "gradient": "autograd (exact)" if config.learn_shots is None
        else f"parameter shift, {config.learn_shots} shots per circuit",
        "learn_shots": config.learn_shots,
        "reported": "per target: best restart and median restart; summary: min / median / max over targets",
        "filters": rows,
        "summary": summary,
        "summary_median_restart": median_summary,
        "parameters": {str(L): 2 * N_QUBITS * L for L in DEPTHS},
    }
    metrics["figures"] = [_plot(config.figure("learn", "fig6_state_learning"), rows, curves, config)]
    return metrics


def _first_reaching(history: Tensor, level: float) -> int | None:
    """First iteration at which the best restart's fidelity reaches ``level`` (None if never)."""
    hit = (history.max(1).values >= level).nonzero()
    return int(hit[0, 0]) if len(hit) else None


STYLE = {"trained": ("tab:blue", "o", "trained filters"), "random-real": ("tab:orange", "s", "random real states"),
         "random-complex": ("tab:green", "^", "random complex states")}


def _plot(path: Path, rows: list[dict], curves: list[dict[int, Tensor]], config: Config) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(17, 5.2), layout="constrained")
    offsets = {"trained": -0.15, "random-real": 0.0, "random-complex": 0.15}
    for key, axis, what in (("final_fidelity", ax[0], "best of restarts"),
                            ("median_final_fidelity", ax[1], "median restart")):
        for kind, (colour, marker, label) in STYLE.items():
            sel = [r for r in rows if r["kind"] == kind]
            if not sel:
                continue
            for r in sel:  # one faint line per target across depths
                axis.plot([L + offsets[kind] for L in DEPTHS], [r[key][str(L)] for L in DEPTHS], color=colour,
                          alpha=0.25, lw=0.8)
            for L in DEPTHS:
                vals = torch.tensor([r[key][str(L)] for r in sel])
                axis.scatter([L + offsets[kind]] * len(vals), vals.numpy(), color=colour, marker=marker, s=28,
                             alpha=0.75, label=f"{label} ({len(sel)})" if L == DEPTHS[0] else None, zorder=3)
                axis.plot([L + offsets[kind] - 0.06, L + offsets[kind] + 0.06], [float(vals.quantile(0.5))] * 2,
                          color="black", lw=2, zorder=4)
        axis.set_xticks(DEPTHS, [f"L = {L}\n({2 * N_QUBITS * L} angles)" for L in DEPTHS])
        axis.set_ylim(0, 1.02)
        axis.set_ylabel(f"final fidelity, {what}")
        axis.set_title(f"{what} per target (black bar: median over targets)", fontsize=11)
        axis.grid(axis="y", alpha=0.3)
    ax[0].legend(loc="lower right", fontsize=10)
    colours = {1: "tab:purple", 2: "tab:red", 3: "tab:cyan"}
    trained = [c for c, r in zip(curves, rows) if r["kind"] == "trained"]
    for L in DEPTHS:
        best = torch.stack([h[:, h[-1].argmax()] for h in (c[L] for c in trained)], 1)  # (iterations+1, targets)
        gap = (1 - best).clamp(min=1e-16)
        steps = torch.arange(gap.shape[0]).numpy()
        ax[2].fill_between(steps, gap.min(1).values.numpy(), gap.max(1).values.numpy(), color=colours[L], alpha=0.15)
        ax[2].plot(steps, gap.quantile(0.5, dim=1).numpy(), color=colours[L], lw=2, label=f"L = {L}")
    ax[2].set_yscale("log")
    ax[2].set_xlabel("iteration")
    ax[2].set_ylabel("1 - fidelity of the best restart")
    ax[2].set_title(f"trained filters ({len(trained)}): median over targets, band min-max", fontsize=11)
    ax[2].legend(fontsize=10)
    how = "exact gradients" if config.learn_shots is None else f"parameter shift, {config.learn_shots} shots"
    restarts = rows[0]["all_final_fidelities"]["1"].numel()
    fig.suptitle(f"Fig. 6: learning filter states with the Fig. 1 ansatz on {N_QUBITS} qubits ({how}, "
                 f"{restarts} restarts per target and depth)", fontsize=12)
    return save_figure(fig, path)


__all__ = ["DEPTHS", "TARGETS", "learn_state", "run_learn", "targets"]
