"""What ``qucnn analyze scaling`` reports: a text table (arms, differences, gradient variance) and a figure.

Example:
    result = scaling_study(ScalingConfig(qubits=(4, 6), seeds=(0, 1), epochs=1, limit_train=512))
    print(scaling_table(result)); plot_scaling(result, "scaling.png")
"""

from __future__ import annotations

import math

from ..utils.files import atomic_write
from ..utils.plotting import pyplot
from ..utils.stats import verdict
from .plateau import shot_noise_variance


def _ci(mean: float, ci: list | None, sign: str = "") -> str:
    if ci is None:
        return f"{100 * mean:{sign}.2f}"
    return f"{100 * mean:{sign}.2f} [{100 * ci[0]:{sign}.2f}, {100 * ci[1]:{sign}.2f}]"


def scaling_table(result: dict) -> str:
    """Per arm: accuracy (mean [95 % CI]); the differences with Holm p and verdict; per qubit count the measured
    and predicted gradient variance and the per-circuit SNR at the shots arm's budget."""
    lines = [f"{'arm':<28} {'test accuracy % [95% CI]':>26} {'s per run':>9}"]
    for label, arm in result["arms"].items():
        s = arm["summary"]
        lines.append(f"{label:<28} {_ci(s['mean'], s['ci95']):>26} {arm['seconds']:>9.1f}")
    lines += ["", f"{'a - b':<44} {'points [95% CI]':>24} {'p Holm':>7}  verdict"]
    for d in result["differences"]:
        p = "-" if d["p_holm"] is None else f"{d['p_holm']:.3g}"
        lines.append(f"{d['a'] + ' - ' + d['b']:<44} {_ci(d['mean'], d['ci95'], '+'):>24} {p:>7}  {verdict(d)}")
    lines += ["", f"{'n':>2} {'k/stride':>8} {'Var dF/dθ first (pred.)':>26} {'last (pred.)':>24} {'SNR first/last':>15}"]
    for v in result["variance"]:
        snr = "-" if "snr_first" not in v else f"{v['snr_first']:.2f}/{v['snr_last']:.2f}"
        lines.append(f"{v['qubits']:>2} {v['kernel']:>4}/{v['stride']:<3} "
                     f"{v['var_grad_first']:>11.3g} ({v['predicted']['var_grad_first']:.3g}) "
                     f"{v['var_grad_last']:>11.3g} ({v['predicted']['var_grad_last']:.3g}) {snr:>15}")
    return "\n".join(lines)


def plot_scaling(result: dict, path) -> None:
    """(a) Test accuracy against qubits per filter, per arm (mean and 95 % t interval over seeds); (b) the paired
    differences against qubits (filled: resolved after Holm); (c) the measured ``Var[dF/dtheta]`` (first and last
    parameter, +- 2 standard errors) against the plateau fit's prediction, with the shot noise ``1/(2S)``."""
    plt = pyplot()
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(19, 5.6), layout="constrained")
    qubits = result["config"]["qubits"]
    arms = list(dict.fromkeys(label.rsplit("/", 1)[0] for label in result["arms"]))
    for i, arm in enumerate(arms):
        pts = [(n, result["arms"].get(f"{arm}/n{n}")) for n in qubits]
        pts = [(n + 0.06 * (i - len(arms) / 2), a["summary"]) for n, a in pts if a is not None]
        ax.errorbar([n for n, _ in pts], [100 * s["mean"] for _, s in pts],
                    yerr=[[100 * (s["mean"] - (s["ci95"] or [s["mean"]])[0]) for _, s in pts],
                          [100 * ((s["ci95"] or [0, s["mean"]])[1] - s["mean"]) for _, s in pts]],
                    fmt="o-", capsize=4, color=f"C{i}", label=arm)
    ax.set(xlabel="qubits per filter (kernel 4x4/1, 8x8/2, 16x16/4)", ylabel="test accuracy (%), mean and 95% CI",
           title="(a) test accuracy")
    ax.legend(fontsize=8)
    pairs = list(dict.fromkeys(f"{d['a'].rsplit('/', 1)[0]} - {d['b'].rsplit('/', 1)[0]}" for d in result["differences"]))
    for i, pair in enumerate(pairs):
        sel = [d for d in result["differences"] if f"{d['a'].rsplit('/', 1)[0]} - {d['b'].rsplit('/', 1)[0]}" == pair]
        ns = [int(d["a"].rsplit("/n", 1)[1]) + 0.06 * (i - len(pairs) / 2) for d in sel]
        for n, d in zip(ns, sel):
            lo, hi = (100 * v for v in d["ci95"])
            bx.errorbar([n], [100 * d["mean"]], yerr=[[100 * d["mean"] - lo], [hi - 100 * d["mean"]]], fmt="D",
                        color=f"C{i}", mfc=f"C{i}" if d["significant"] else "white", capsize=4)
        bx.plot(ns, [100 * d["mean"] for d in sel], "-", color=f"C{i}", label=pair)
    bx.axhline(0, color="k", ls=":", lw=1)
    bx.set(xlabel="qubits per filter", ylabel="difference a - b (points), 95% CI", title="(b) paired differences "
           "(filled: resolved after Holm)")
    bx.legend(fontsize=8)
    var = result["variance"]
    ns = [v["qubits"] for v in var]
    for j, p in enumerate(("first", "last")):
        cx.errorbar([n + 0.05 * (2 * j - 1) for n in ns], [v[f"var_grad_{p}"] for v in var],
                    yerr=[2 * v[f"var_grad_{p}_stderr"] for v in var], fmt="o", color=f"C{j}", capsize=4,
                    label=f"measured, {p} parameter (+-2 SE)")
        fit = next(f for f in result["plateau_fit"]["fits"] if f["param"] == p)
        grid = [2 + 0.1 * i for i in range(71)]
        cx.plot(grid, [math.exp(fit["log_intercept"]) * fit["decay_base"] ** -n for n in grid], "--", color=f"C{j}",
                label=f"plateau fit, {p}: b = {fit['decay_base']:.2f}")
    shots = result["config"]["gradient_shots"]
    if shots:
        cx.axhline(shot_noise_variance(shots), color="grey", lw=1.5, label=f"shot noise 1/(2S), S = {shots}")
    cx.set_yscale("log")
    cx.set(xlabel="qubits per filter", ylabel="Var[dF/dθ]", title="(c) gradient variance: measured and predicted")
    cx.legend(fontsize=8)
    for axis in (ax, bx, cx):
        axis.set_xticks(qubits)
        axis.grid(alpha=0.3)
    cfg = result["config"]
    fig.suptitle(f"QuCNN with more qubits per filter: {cfg['filters']} filters, {cfg['layers']} ansatz layers, "
                 f"{cfg['epochs']} epochs, seeds {', '.join(map(str, cfg['seeds']))}", fontsize=11)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


__all__ = ["plot_scaling", "scaling_table"]
