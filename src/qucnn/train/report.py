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
    """Loss (train solid, test dashed) and test accuracy against epoch for each named run.

    ``runs`` maps a label to its list of epoch entries (``epoch``, ``train_loss``, ``test_loss``,
    ``test_accuracy``). Written atomically (PNG, Agg backend).
    """
    plt = pyplot()

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (label, epochs) in enumerate(runs.items()):
        colour = f"C{i}"
        x = [e["epoch"] for e in epochs]
        ax_loss.plot(x, [e["train_loss"] for e in epochs], "-o", color=colour, label=f"{label} train")
        ax_loss.plot(x, [e["test_loss"] for e in epochs], "--s", color=colour, label=f"{label} test")
        ax_acc.plot(x, [100 * e["test_accuracy"] for e in epochs], "-o", color=colour, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.set_yscale("log")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def _fmt_shots(cost: dict | None) -> str:
    if cost is None:
        return "-"
    shots = total_shots(cost)
    circuits = sum(cost[p]["circuits"] for p in PHASES)
    return f"{circuits:.3g} circuits, " + ("exact" if shots is None else f"{shots:.3g} shots")


def summary_table(runs: dict[str, dict]) -> str:
    """A plain-text table of final metrics, one row per run (``runs`` maps label -> ``final`` dict)."""
    rows = [("model", "test acc", "test loss", "train loss", "train s", "img/s", "quantum cost (train)")]
    for label, f in runs.items():
        rows.append((label, f"{100 * f['test_accuracy']:.2f}%", f"{f['test_loss']:.4f}", f"{f['train_loss']:.4f}",
                     f"{f['seconds']:.1f}", f"{f['images_per_s']:.0f}", _fmt_shots(f.get("quantum_cost"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = ["add_costs", "cost_from_vector", "cost_to_vector", "plot_curves", "summary_table", "total_shots",
           "zero_cost"]
