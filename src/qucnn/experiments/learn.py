"""Experiment 3 (Section V-C, Fig. 6): can the shallow Fig. 1 ansatz learn the ideal filter state?

The target is the ideal convolutional state of experiment 1 (the trained classical filter as a unit
vector). For ``L = 1, 2, 3`` layers on 4 qubits, Adam minimises ``1 - F`` with
``F = |<f(theta)|target>|^2`` from several seeded random starts (all restarts in one batch: Adam is
elementwise, so this is the same as separate runs). Gradients are exact (autograd) by default; with
``--learn-shots S`` they are the layer's shot-based parameter shift
(:func:`qucnn.gradients.parameter_shift_grad` with upstream ``-1``, the derivative of ``1 - F``).
The logged fidelity is always the exact one. ``final_fidelity`` reports the **best** restart (the
question is whether the state is expressible); the median is reported beside it.

Example:
    metrics = run_learn(Config(out=Path("results"), quick=True).validated())
    sorted(metrics["final_fidelity"])
    # -> ['1', '2', '3']
"""

from __future__ import annotations

import math
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


def run_learn(config: Config) -> dict:
    """Run experiment 3 and draw Fig. 6 into ``config.out``; returns the metrics section."""
    classical = train_classical(config)
    target = classical.state.to(config.torch_device)
    iterations, restarts = SCHEDULE[config.quick]
    gen = config.generator("learn")
    histories = {}
    for layers in DEPTHS:
        histories[layers] = learn_state(target, layers, iterations, restarts, gen, config.learn_shots,
                                        desc=f"learn L={layers}")
    final = {str(L): h[-1] for L, h in histories.items()}
    metrics = {
        "target": "ideal convolutional state of experiment 1 (trained 4x4 filter / its norm)",
        "qubits": N_QUBITS, "iterations": iterations, "restarts": restarts, "optimizer": f"Adam lr {LR}",
        "gradient": "autograd (exact)" if config.learn_shots is None
        else f"parameter shift, {config.learn_shots} shots per circuit",
        "learn_shots": config.learn_shots,
        "reported": "best restart",
        "final_fidelity": {k: float(v.max()) for k, v in final.items()},
        "median_final_fidelity": {k: float(v.median()) for k, v in final.items()},
        "all_final_fidelities": {k: v for k, v in final.items()},
        "iterations_to_0.99": {str(L): _first_reaching(h, 0.99) for L, h in histories.items()},
        # restarts that end within 1e-3 of the best: all of them suggests the best is the ansatz's ceiling
        "restarts_near_best": {k: int((v >= v.max() - 1e-3).sum()) for k, v in final.items()},
        "parameters": {str(L): 2 * N_QUBITS * L for L in DEPTHS},
    }
    metrics["figures"] = [_plot(config.figure("learn", "fig6_state_learning"), histories, config)]
    return metrics


def _first_reaching(history: Tensor, level: float) -> int | None:
    """First iteration at which the best restart's fidelity reaches ``level`` (None if never)."""
    hit = (history.max(1).values >= level).nonzero()
    return int(hit[0, 0]) if len(hit) else None


def _plot(path: Path, histories: dict[int, Tensor], config: Config) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    colours = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}
    for layers, h in histories.items():
        steps = torch.arange(h.shape[0]).numpy()
        best = h[:, h[-1].argmax()]
        for axis, values in ((ax[0], h), (ax[1], 1 - h)):
            axis.fill_between(steps, values.min(1).values.numpy(), values.max(1).values.numpy(),
                              color=colours[layers], alpha=0.15)
            axis.plot(steps, values.median(1).values.numpy(), color=colours[layers], ls="--", lw=1)
        ax[0].plot(steps, best.numpy(), color=colours[layers], lw=2,
                   label=f"L = {layers} ({2 * N_QUBITS * layers} parameters): best {float(best[-1]):.4f}")
        ax[1].plot(steps, (1 - best).clamp(min=1e-16).numpy(), color=colours[layers], lw=2)
    ax[0].set_ylim(0, 1.02)
    ax[0].set_ylabel("fidelity with the ideal convolutional state")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("1 - fidelity")
    for axis in ax:
        axis.set_xlabel("iteration")
    ax[0].legend(loc="lower right")
    how = "exact gradients" if config.learn_shots is None else f"parameter shift, {config.learn_shots} shots"
    restarts = next(iter(histories.values())).shape[1]
    fig.suptitle(f"Fig. 6: state learning ({how}; solid: best of {restarts} restarts, dashes: median, "
                 "band: min-max)")
    return save_figure(fig, path)


__all__ = ["DEPTHS", "learn_state", "run_learn"]
