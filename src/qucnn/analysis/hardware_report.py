"""What ``qucnn analyze hardware`` reports: a text table of the arms and their paired differences, and a
figure (accuracy per arm over seeds, the differences with their intervals, the training loss per epoch).

Example:
    result = hardware_study(QUICK_TASK, data, seeds=(0, 1))
    print(hardware_table(result)); plot_hardware(result, "hardware.png")
"""

from __future__ import annotations

import io

from ..utils.files import atomic_write
from ..utils.plotting import pyplot
from ..utils.stats import verdict


def _ci(s: dict) -> str:
    if s["ci95"] is None:
        return f"{100 * s['mean']:.2f}"
    return f"{100 * s['mean']:.2f} [{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}]"


def hardware_table(result: dict) -> str:
    """The study as text: per arm, test accuracy (mean [95 % CI] over seeds), the mean spread of its repeated
    shot-based evaluations, the exact evaluation, training circuits and CPU seconds; then the differences."""
    lines = [f"{'arm':<22} {'accuracy % [95% CI]':>22} {'eval spread':>11} {'exact eval %':>22} {'circuits':>9} "
             f"{'CPU s':>7}"]
    for label, arm in result["arms"].items():
        rows = [r for r in result["rows"] if r["label"] == label]
        cpu = sum(r["cpu_s"] for r in rows) / len(rows)
        lines.append(f"{label:<22} {_ci(arm['summary']):>22} {100 * arm['eval_std_mean']:>11.2f} "
                     f"{_ci(arm['exact_eval']):>22} {rows[0]['circuits']:>9} {cpu:>7.1f}")
    lines.append("")
    lines.append(f"{'a - b':<46} {'points [95% CI]':>24} {'p Holm':>7} {'equivalent at':>13}  verdict")
    for d in result["differences"]:
        ci = f"{100 * d['mean']:+.2f}" + ("" if d["ci95"] is None else
                                         f" [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]")
        p = "-" if d["p_holm"] is None else f"{d['p_holm']:.3g}"
        eq = "-" if d["equivalent_at"] is None else f"+-{100 * d['equivalent_at']:.2f}"
        lines.append(f"{d['a'] + ' - ' + d['b']:<46} {ci:>24} {p:>7} {eq:>13}  {verdict(d)}")
    return "\n".join(lines)


def plot_hardware(result: dict, path) -> None:
    """(a) Test accuracy per (setting, head): dots = seeds (each the mean of the shot-based evaluations), diamond =
    mean with its 95 % t interval, cross = the exact evaluation; (b) every difference of the table, mean and 95 %
    t interval (filled: resolved after Holm; grey band: the equivalence margin); (c) training loss per epoch, mean
    over seeds."""
    plt = pyplot()
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(19, 5.6), layout="constrained",
                                     gridspec_kw={"width_ratios": [1.2, 1.2, 0.9]})
    arms = result["arms"]
    settings = list(dict.fromkeys(label.split("/")[0] for label in arms))
    for i, (label, arm) in enumerate(arms.items()):
        colour = f"C{settings.index(label.split('/')[0])}"
        acc = [100 * a for a in arm["test_accuracy"]]
        ax.scatter([i + 0.05 * (j - (len(acc) - 1) / 2) for j in range(len(acc))], acc, s=16, color=colour, alpha=0.5)
        s = arm["summary"]
        err = None if s["ci95"] is None else [[100 * (s["mean"] - s["ci95"][0])], [100 * (s["ci95"][1] - s["mean"])]]
        ax.errorbar([i + 0.3], [100 * s["mean"]], yerr=err, fmt="D", color=colour,
                    mfc=colour if label.endswith("/bn") else "white", ms=7, capsize=4, lw=2)
        ax.plot([i + 0.3], [100 * arm["exact_eval"]["mean"]], "x", color="k", ms=7)
    ax.set_xticks(range(len(arms)), list(arms), rotation=50, fontsize=8)
    ax.set_ylabel("test accuracy (%), shot-based evaluation")
    ax.set_title("(a) dots: seeds; diamond: mean, 95% t interval (filled: BatchNorm); x: exact evaluation",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    diffs = result["differences"]
    margin = 100 * result["config"]["margin"]
    bx.axvspan(-margin, margin, color="0.85", zorder=0, label=f"equivalence margin +-{margin:g}")
    for i, d in enumerate(diffs):
        y = len(diffs) - 1 - i
        if d["ci95"] is None:
            continue
        lo, hi = 100 * d["ci95"][0], 100 * d["ci95"][1]
        m = 100 * d["mean"]
        bx.errorbar([m], [y], xerr=[[m - lo], [hi - m]], fmt="D", color="C3" if d["significant"] else "C0",
                    mfc="C3" if d["significant"] else "white", ms=6, capsize=4)
    bx.axvline(0, color="k", ls=":", lw=1)
    bx.set_yticks(range(len(diffs)), [f"{d['a']} - {d['b']}" for d in reversed(diffs)], fontsize=8)
    bx.set_xlabel("difference a - b, accuracy points (paired by seed)")
    bx.set_title("(b) mean and 95% t interval; filled: resolved after Holm", fontsize=9)
    bx.grid(axis="x", alpha=0.3)
    bx.legend(fontsize=8)
    for label in arms:
        curves = [r["curve"] for r in result["rows"] if r["label"] == label]
        epochs = [c["epoch"] for c in curves[0]]
        mean = [sum(c[e]["train_loss"] for c in curves) / len(curves) for e in range(len(epochs))]
        colour = f"C{settings.index(label.split('/')[0])}"
        cx.plot(epochs, mean, "o-" if label.endswith("/bn") else "s--", color=colour, label=label)
    cx.set(xlabel="epoch", ylabel="training loss, mean over seeds", title="(c) training loss")
    cx.xaxis.get_major_locator().set_params(integer=True)
    cx.grid(alpha=0.3)
    cx.legend(fontsize=7)
    cfg = result["config"]
    fig.suptitle(f"MNIST 0 vs 1 (8x8, binarised), every circuit on its backend (noise: {result['fake_device']}); "
                 f"seeds {', '.join(map(str, cfg['seeds']))}; {cfg['task']['shots']} shots per circuit", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))


__all__ = ["hardware_table", "plot_hardware"]
