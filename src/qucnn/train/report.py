"""What a training run reports: quantum cost arithmetic, learning-curve plots and a summary table.

Costs follow :meth:`qucnn.nn.QuConv2d.total_cost`: ``{"forward": {"circuits", "shots"},
"backward": {...}}`` with ``shots=None`` when some circuit's expectation was taken exactly (infinitely
many shots). Sums keep that rule: exact anywhere makes the sum's shots ``None``.

Example:
    >>> a = {"forward": {"circuits": 2, "shots": 20}, "backward": {"circuits": 0, "shots": 0}}
    >>> add_costs(a, a)["forward"]
    {'circuits': 4, 'shots': 40}
"""

from __future__ import annotations

from pathlib import Path

from ..utils.files import atomic_write
from ..utils.plotting import pyplot
from ..utils.stats import verdict

PHASES = ("forward", "backward")


def zero_cost() -> dict:
    """A quantum cost of nothing: ``{phase: {"circuits": 0, "shots": 0}}`` for every phase."""
    return {phase: {"circuits": 0, "shots": 0} for phase in PHASES}


def add_costs(a: dict, b: dict) -> dict:
    """The sum of two cost dicts (shots ``None`` if either is ``None``)."""
    out = {}
    for phase in PHASES:
        pa, pb = a[phase], b[phase]
        shots = None if pa["shots"] is None or pb["shots"] is None else pa["shots"] + pb["shots"]
        out[phase] = {"circuits": pa["circuits"] + pb["circuits"], "shots": shots}
    return out


def cost_to_vector(cost: dict) -> list[int]:
    """``[circuits, shots, exact]`` per phase, for summing over processes."""
    vec: list[int] = []
    for phase in PHASES:
        shots = cost[phase]["shots"]
        vec += [int(cost[phase]["circuits"]), int(shots or 0), int(shots is None)]
    return vec


def cost_from_vector(vec: list) -> dict:
    """The inverse of :func:`cost_to_vector`: a cost dict from its flat ``[circuits, shots, exact] * phases``."""
    out = {}
    for i, phase in enumerate(PHASES):
        circuits, shots, exact = (int(v) for v in vec[3 * i: 3 * i + 3])
        out[phase] = {"circuits": circuits, "shots": None if exact else shots}
    return out


def total_shots(cost: dict | None) -> int | None:
    """Shots over both phases (``None`` when any phase ran exactly, or for no quantum layer)."""
    if cost is None or any(cost[p]["shots"] is None for p in PHASES):
        return None
    return sum(cost[p]["shots"] for p in PHASES)


def plot_curves(runs: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """Loss (train solid, validation dashed) and validation accuracy against epoch for each named run.

    ``runs`` maps a label to its list of epoch entries (``epoch``, ``train_loss``, ``train_accuracy`` and,
    with a validation hold-out, ``validation_loss``, ``validation_accuracy``; without one the accuracy panel
    shows training accuracy). Epoch ticks are integers, also for a single epoch; the loss axis is
    logarithmic only when it spans more than a decade. Written atomically (PNG, Agg backend).
    """
    plt = pyplot()
    fig = curves_figure(runs, title)
    path = atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def curves_figure(runs: dict[str, list[dict]], title: str = ""):
    """The figure of :func:`plot_curves` (a matplotlib ``Figure``, not saved)."""
    plt = pyplot()
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    losses, last = [], 1
    validated = all(e.get("validation_accuracy") is not None for epochs in runs.values() for e in epochs)
    split = "validation" if validated else "train"
    for i, (label, epochs) in enumerate(runs.items()):
        colour = f"C{i}"
        x = [e["epoch"] for e in epochs]
        last = max(last, max(x, default=1))
        ax_loss.plot(x, [e["train_loss"] for e in epochs], "-o", color=colour, label=f"{label} train")
        losses += [e["train_loss"] for e in epochs]
        if validated:
            ax_loss.plot(x, [e["validation_loss"] for e in epochs], "--s", color=colour, mfc="none",
                         label=f"{label} validation")
            losses += [e["validation_loss"] for e in epochs]
        ax_acc.plot(x, [100 * e[f"{split}_accuracy"] for e in epochs], "-o", color=colour, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    positive = [v for v in losses if v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax_loss.set_yscale("log")
        ax_loss.yaxis.set_minor_locator(NullLocator())  # minor labels would read like 2.2x10^0
    ax_loss.yaxis.set_major_formatter(ScalarFormatter())
    ax_acc.set(xlabel="epoch", ylabel=f"{split} accuracy (%)", title=f"{split} accuracy")
    step = max(1, -(-last // 10))  # at most about 10 integer ticks
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(FixedLocator(list(range(1, last + 1, step))))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _fmt_shots(cost: dict | None) -> str:
    if cost is None:
        return "-"
    shots = total_shots(cost)
    circuits = sum(cost[p]["circuits"] for p in PHASES)
    return f"{circuits:.3g} circuits, " + ("exact" if shots is None else f"{shots:.3g} shots")


def summary_table(runs: dict[str, dict]) -> str:
    """A plain-text table of final metrics, one row per run (``runs`` maps label -> ``final`` dict)."""
    rows = [("model", "val acc", "test acc", "test loss", "train loss", "train s", "img/s", "quantum cost (train)")]
    for label, f in runs.items():
        val = f.get("validation_accuracy")
        rows.append((label, "-" if val is None else f"{100 * val:.2f}%", _pct(f["test_accuracy"]),
                     "-" if f["test_loss"] is None else f"{f['test_loss']:.4f}", f"{f['train_loss']:.4f}",
                     f"{f['seconds']:.1f}", f"{f['images_per_s']:.0f}", _fmt_shots(f.get("quantum_cost"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _pm(s: dict, scale: float = 100.0) -> str:
    if s["std"] is None:
        return f"{scale * s['mean']:.2f}"
    return f"{scale * s['mean']:.2f} +- {scale * s['std']:.2f}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def interval(row: dict, scale: float = 100.0) -> str:
    """``"+0.66 [+0.42, +0.90]"``: a difference's mean and 95 % interval in points (only the mean for n = 1)."""
    if row["ci95"] is None:
        return f"{scale * row['mean']:+.2f}"
    lo, hi = row["ci95"]
    return f"{scale * row['mean']:+.2f} [{scale * lo:+.2f}, {scale * hi:+.2f}]"


def compare_table(combined: dict) -> str:
    """Two plain-text tables of a comparison's ``metrics.json``: per (kind, head), test accuracy mean +- std over
    seeds (n), validation accuracy, trainable parameters and the settings; then every difference of
    ``differences`` with its 95 % interval, Holm-corrected p, the smallest equivalence margin and the verdict."""
    rows = [("kind", "head", "test acc % (mean +- std)", "n", "val acc %", "params (first layer / all)",
             "lr, schedule")]
    for kind, by_head in combined["compare"].items():
        for head, c in by_head.items():
            val = c["summary"]["validation"]
            m, st = c["model"], c["settings"]
            rows.append((kind, head, _pm(c["summary"]), str(c["summary"]["n"]), "-" if val is None else _pm(val),
                         f"{m['first_layer_trainable']} / {m['trainable']}", f"{st['lr']:g}, {st['schedule']}"))
    out = _table(rows)
    diffs = combined.get("differences") or []
    if diffs:
        margin = combined.get("margin_points")
        drows = [("a - b", "points [95% CI]", "p (Holm)", "TOST equivalent at", f"verdict (margin {margin:g})")]
        for d in diffs:
            p = "-" if d["p_holm"] is None else f"{d['p_holm']:.3g}"
            eq = "-" if d["equivalent_at"] is None else f"+-{100 * d['equivalent_at']:.2f}"
            drows.append((f"{d['a']} - {d['b']}", interval(d), p, eq, verdict(d)))
        out += "\n\n" + _table(drows)
    return out


def plot_compare(combined: dict, path: str | Path, title: str = "") -> Path:
    """Left: test accuracy per (kind, head), one dot per seed, mean +- std. Right: every difference of the table
    (paired by seed), mean with its 95 % t interval; the grey band is the equivalence margin, filled markers
    are resolved after Holm's correction."""
    plt = pyplot()
    arms = [(k, h, c) for k, by_head in combined["compare"].items() for h, c in by_head.items()]
    diffs = combined.get("differences") or []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, max(4.6, 0.32 * len(diffs) + 1.5)), layout="constrained",
                                 gridspec_kw={"width_ratios": [1.1, 1]})
    kinds = list(combined["compare"])
    for i, (kind, head, c) in enumerate(arms):
        acc = [100 * a for a in c["test_accuracy"]]
        colour = f"C{kinds.index(kind)}"
        ax.scatter([i + 0.06 * (j - (len(acc) - 1) / 2) for j in range(len(acc))], acc, s=16, color=colour,
                   alpha=0.5, marker="o" if head == "plain" else "s", zorder=2)
        s = c["summary"]
        ax.errorbar([i + 0.35], [100 * s["mean"]], yerr=None if s["std"] is None else [100 * s["std"]], fmt="D",
                    color=colour, ms=6, capsize=4, lw=2, zorder=3)
    ax.set_xticks(range(len(arms)), [f"{k}\n{h}" for k, h, _ in arms], rotation=60, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("test accuracy: dots = seeds, diamond = mean +- std", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    margin = combined.get("margin_points") or 0.0
    bx.axvspan(-margin, margin, color="0.85", zorder=0, label=f"equivalence margin +-{margin:g}")
    for i, d in enumerate(diffs):
        y = len(diffs) - 1 - i
        colour = f"C{kinds.index(d['a'].split('/')[0])}"
        if d["ci95"] is not None:
            lo, hi = 100 * d["ci95"][0], 100 * d["ci95"][1]
            bx.errorbar([100 * d["mean"]], [y], xerr=[[100 * d["mean"] - lo], [hi - 100 * d["mean"]]], fmt="D",
                        color=colour, mfc=colour if d.get("significant") else "white", ms=6, capsize=4, lw=1.6)
        else:
            bx.plot([100 * d["mean"]], [y], "D", color=colour)
    bx.axvline(0, color="k", ls=":", lw=1)
    bx.set_yticks(range(len(diffs)), [f"{d['a']} - {d['b']}" for d in reversed(diffs)], fontsize=8)
    bx.set_xlabel("difference a - b, accuracy points (paired by seed)")
    bx.set_title("mean and 95% t interval; filled: resolved after Holm", fontsize=10)
    bx.grid(axis="x", alpha=0.3)
    bx.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    path = atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


__all__ = ["add_costs", "compare_table", "cost_from_vector", "cost_to_vector", "curves_figure", "interval",
           "plot_compare", "plot_curves", "summary_table", "total_shots", "zero_cost"]
