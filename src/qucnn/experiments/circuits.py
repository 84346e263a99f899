"""The circuit figures (Fig. 1, 2, 5) drawn from the same registry ops our simulator runs, with their
qubit and gate counts.

Circuits: the filter ansatz (Fig. 1, 4 qubits, 3 layers), the ideal convolutional state prepared by
the QuantumFlow SVD unitary and by Mottonen gates (Fig. 5), the convolution SWAP test (Fig. 2: data
patch by SVD unitary, filter by the ansatz) and the entanglement-based backpropagation circuit
(Eq. 17, one more ancilla). Drawn with Qiskit's matplotlib drawer when ``qucnn.qiskit`` and the
drawer's own dependency (``pylatexenc``) are there, otherwise with :func:`draw_ops`, a small
matplotlib drawing of wires, gate boxes and control dots.

Two kinds of counts: the gates *as drawn* (registry ops; a CSWAP or a state-preparation ``UNITARY`` is one
gate), and, with Qiskit installed, the CX a hardware basis needs: after the seeded transpile of
:func:`qucnn.qiskit.circuit_resources` to ``rz, sx, x, cx`` (optimisation level 2, seed 0), with all-to-all
connectivity and on a line of qubits, the same numbers ``qucnn circuits`` reports.

Example:
    >>> from qucnn.core.ansatz import FilterAnsatz
    >>> import torch
    >>> ops = FilterAnsatz(2, 1).ops(torch.zeros(1, 1, 2, 2))
    >>> count_ops(ops, 2)["cnots"]
    2
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..core.ansatz import FilterAnsatz
from ..core.encoding import mottonen_ops, svd_unitary
from ..core.gates import GATES, Op
from ..core.swap_test import data_wires, filter_wires, swap_test_ops
from .common import Config, load_data, progress, pyplot, save_figure
from .forward import KERNEL, train_classical

N_QUBITS, LAYERS = 4, 3
COLOURS = {"RX": "#cfe2f3", "RY": "#cfe2f3", "RZ": "#d9ead3", "H": "#fff2cc", "X": "#f4cccc", "Z": "#f4cccc",
           "UNITARY": "#d9d2e9"}
#: Basis of the transpiled CX counts (IBM-style hardware gates; ``qucnn.qiskit.RESOURCE_BASIS``).
HARDWARE_BASIS = ["rz", "sx", "x", "cx"]
#: How the CX counts are made: the settings of ``qucnn.qiskit.circuit_resources`` that ``qucnn circuits`` uses.
TRANSPILE = {"basis": HARDWARE_BASIS, "optimization_level": 2, "seed": 0,
             "coupling": "all-to-all (cx_all_to_all) and a line of the circuit's qubits (cx_line)"}


def layout(ops: Sequence[Op], barriers: Sequence[int] = ()) -> list[int]:
    """The column of each op: as early as possible, no two ops overlapping on the wires they span, and no op
    at or after an index in ``barriers`` left of an op before it (gates do not slide across a barrier)."""
    free: dict[int, int] = {}
    floor = 0
    cols = []
    for i, op in enumerate(ops):
        if i in barriers:
            floor = max([floor, *free.values()])
        span = range(min(op.wires), max(op.wires) + 1)
        col = max([floor, *(free.get(q, 0) for q in span)])
        for q in span:
            free[q] = col + 1
        cols.append(col)
    return cols


def barrier_columns(ops: Sequence[Op], barriers: Sequence[int]) -> list[float]:
    """Where each barrier is drawn: half a column before the first op at or after its index."""
    cols = layout(ops, barriers)
    return [cols[i] - 0.5 for i in barriers if i < len(ops)]


def ansatz_barriers(n_qubits: int, layers: int, start: int = 0) -> list[int]:
    """Op indices that begin ansatz layers 2..L (and the op after the ansatz) for ops starting at ``start``."""
    per_layer = 2 * n_qubits + (n_qubits if n_qubits > 1 else 0)
    return [start + k * per_layer for k in range(1, layers + 1)]


def count_ops(ops: Sequence[Op], n_qubits: int) -> dict:
    """Counts of the circuit as drawn: ``qubits``, ``gates`` (all ops; a CSWAP or a ``UNITARY`` is one),
    ``cnots`` (explicit CNOT gates, not those inside CSWAPs or unitaries), ``cswaps``, ``depth`` and
    ``gate_counts`` by name. The CX a hardware basis needs: :func:`transpiled_counts`."""
    by_name: dict[str, int] = {}
    for op in ops:
        by_name[op.gate] = by_name.get(op.gate, 0) + 1
    return {"qubits": n_qubits, "gates": len(ops), "cnots": by_name.get("CNOT", 0),
            "cswaps": by_name.get("CSWAP", 0), "depth": max(layout(ops), default=-1) + 1,
            "gate_counts": dict(sorted(by_name.items()))}


def _angle(op: Op) -> str:
    if op.params is None or GATES[op.gate].num_params == 0:
        return ""
    return f"{float(op.params.reshape(-1)[0]):.2f}"


def draw_ops(ops: Sequence[Op], n_qubits: int, path: Path, title: str, wire_names: Sequence[str],
             unitary_names: Sequence[str] = (), measured: Sequence[int] = (), barriers: Sequence[int] = (),
             side=None) -> str:
    """Draw ``ops`` with matplotlib: one horizontal wire per qubit, a box per gate (rotation angles
    under the name), control dots, target circles for CNOT, crosses for CSWAP, ``UNITARY`` ops as tall
    boxes named by ``unitary_names`` in order; a meter box on each ``measured`` wire; a dashed barrier before
    each op index in ``barriers``. ``side(fig, ax)`` may draw a second panel (given a second axis). Returns
    the file name."""
    plt = pyplot()
    from matplotlib.patches import Circle, Rectangle

    cols = layout(ops, barriers)
    ncols = max(cols, default=-1) + 1 + (1 if measured else 0)
    width, height = max(7.0, 0.62 * ncols + 2.5), 0.6 * n_qubits + 1.6
    if side is None:
        fig, ax = plt.subplots(figsize=(width, height))
    else:
        fig, (ax, other) = plt.subplots(1, 2, figsize=(width + 6.5, max(height, 5.5)),
                                        gridspec_kw={"width_ratios": [width, 6.5]}, layout="constrained")
        side(fig, other)
    for col in barrier_columns(ops, barriers):
        ax.plot([col, col], [0.45, -n_qubits + 0.55], color="grey", ls="--", lw=1, zorder=0)
    for q in range(n_qubits):
        ax.plot([-0.6, ncols - 0.4], [-q, -q], color="black", lw=0.8, zorder=0)
        ax.text(-0.8, -q, wire_names[q], ha="right", va="center", fontsize=11)
    names = iter(unitary_names)
    for op, col in zip(ops, cols):
        lo, hi = min(op.wires), max(op.wires)
        if op.gate == "UNITARY":
            ax.add_patch(Rectangle((col - 0.38, -hi - 0.3), 0.76, hi - lo + 0.6, fc=COLOURS["UNITARY"], ec="black"))
            ax.text(col, -(lo + hi) / 2, next(names, "U"), ha="center", va="center", fontsize=10, rotation=90)
        elif op.gate in ("CNOT", "CSWAP"):
            ax.plot([col, col], [-lo, -hi], color="black", lw=1, zorder=1)
            ax.add_patch(Circle((col, -op.wires[0]), 0.09, color="black", zorder=2))
            if op.gate == "CNOT":
                ax.add_patch(Circle((col, -op.wires[1]), 0.18, fc="white", ec="black", zorder=2))
                ax.plot([col - 0.18, col + 0.18], [-op.wires[1]] * 2, color="black", lw=1, zorder=3)
                ax.plot([col, col], [-op.wires[1] - 0.18, -op.wires[1] + 0.18], color="black", lw=1, zorder=3)
            else:
                for w in op.wires[1:]:
                    ax.plot([col], [-w], marker="x", color="black", ms=9, mew=1.5, zorder=3)
        else:
            ax.add_patch(Rectangle((col - 0.34, -lo - 0.28), 0.68, 0.56, fc=COLOURS.get(op.gate, "white"),
                                   ec="black", zorder=2))
            angle = _angle(op)
            ax.text(col, -lo + (0.08 if angle else 0), op.gate, ha="center", va="center", fontsize=8, zorder=3)
            if angle:
                ax.text(col, -lo - 0.15, angle, ha="center", va="center", fontsize=6, zorder=3)
    for q in measured:
        ax.add_patch(Rectangle((ncols - 1 - 0.34, -q - 0.28), 0.68, 0.56, fc="#eeeeee", ec="black", zorder=2))
        ax.text(ncols - 1, -q, "M", ha="center", va="center", fontsize=8, zorder=3)
    ax.set_xlim(-2.2, ncols)
    ax.set_ylim(-n_qubits + 0.4, 0.7)
    ax.set_aspect("equal")
    ax.axis("off")
    if side is None:
        ax.set_title(title, fontsize=13)
    else:
        fig.suptitle(title, fontsize=13)
    return save_figure(fig, path, bbox_inches="tight")


def _qiskit_circuit(ops: Sequence[Op], n_qubits: int, measured: Sequence[int], barriers: Sequence[int] = ()):
    """``qucnn.qiskit.ops_to_circuit`` with barriers and the measurements (ImportError if Qiskit is missing)."""
    from ..qiskit import ops_to_circuit

    cuts = [0, *sorted(b for b in barriers if 0 < b < len(ops)), len(ops)]
    circuit = ops_to_circuit(list(ops[cuts[0]:cuts[1]]), n_qubits)
    for a, b in zip(cuts[1:], cuts[2:]):
        circuit.barrier()
        circuit.compose(ops_to_circuit(list(ops[a:b]), n_qubits), inplace=True)
    if measured:
        from qiskit import ClassicalRegister

        reg = ClassicalRegister(len(measured), "m")
        circuit.add_register(reg)
        circuit.measure(list(measured), list(reg))
    return circuit


def transpiled_counts(ops: Sequence[Op], n_qubits: int) -> dict | None:
    """CX and depth after the transpile of :data:`TRANSPILE`: ``{"cx_all_to_all", "cx_line",
    "depth_all_to_all", "depth_line"}``, or None without Qiskit.

    Example:
        transpiled_counts(FilterAnsatz(4, 3).ops(theta), 4)["cx_all_to_all"]
        # -> 12
    """
    try:
        from ..qiskit import circuit_resources  # optional extra: None without Qiskit

        circuit = _qiskit_circuit(ops, n_qubits, ())
    except ImportError:
        return None
    res = circuit_resources(circuit, optimization_level=TRANSPILE["optimization_level"], seed=TRANSPILE["seed"])
    return {"cx_all_to_all": res["cx_all_to_all"], "cx_line": res["cx"],
            "depth_all_to_all": res["depth_all_to_all"], "depth_line": res["depth"]}


def draw(ops: Sequence[Op], n_qubits: int, path: Path, title: str, wire_names: Sequence[str],
         unitary_names: Sequence[str] = (), measured: Sequence[int] = (), barriers: Sequence[int] = (),
         side=None) -> tuple[str, str, dict | None]:
    """Draw with Qiskit's matplotlib drawer if it can (and no ``side(fig, ax, cx)`` panel is asked for), else
    :func:`draw_ops`. Returns ``(file name, drawer, transpiled_counts(ops) or None without Qiskit)``; ``cx``
    is the all-to-all CX count or None."""
    counts = transpiled_counts(ops, n_qubits)
    cx = counts["cx_all_to_all"] if counts else None
    if side is not None:
        given, side = side, (lambda fig, ax: given(fig, ax, cx))
    if counts is not None and side is None:
        try:
            fig = _qiskit_circuit(ops, n_qubits, measured, barriers).draw("mpl", fold=-1)
        except ImportError:  # the drawer needs pylatexenc, not a dependency of qiskit itself
            pass
        else:
            fig.suptitle(title, fontsize=13)
            return save_figure(fig, path, bbox_inches="tight"), "qiskit", counts
    return (draw_ops(ops, n_qubits, path, title, wire_names, unitary_names, measured, barriers, side),
            "matplotlib (qucnn)", counts)


def _unitary_panel(w: Tensor):
    """A side panel for :func:`draw`: the state-preparation unitary ``w`` ``(d, d)`` as a heatmap, its first
    column (``W|0>``, the prepared state) framed, and the CX count it transpiles to (all-to-all)."""

    def panel(fig, ax, cnots: int | None) -> None:
        from matplotlib.patches import Rectangle

        shown = ax.imshow(w.real.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.add_patch(Rectangle((-0.5, -0.5), 1, w.shape[0], fill=False, ec="black", lw=2))
        ax.set_xlabel("column j (input |j>); framed: column 0 = W|0> = f")
        ax.set_ylabel("row i (output |i>)")
        cost = "" if cnots is None else f"\n{cnots} CX after transpiling to {'/'.join(HARDWARE_BASIS)} (all-to-all)"
        ax.set_title(f"inside the box: W = U V^H ({w.shape[0]}x{w.shape[0]}, real orthogonal){cost}", fontsize=11)
        fig.colorbar(shown, ax=ax, shrink=0.8)

    return panel


def circuit_specs(config: Config) -> list[dict]:
    """The circuits to draw: name, figure, ops, qubit count, wire names, unitary names, measured wires,
    barriers (op indices) and an optional side panel."""

    gen = config.generator("circuits")
    theta = 2 * math.pi * torch.rand((1, LAYERS, N_QUBITS, 2), generator=gen, dtype=torch.float64)
    ansatz = FilterAnsatz(N_QUBITS, LAYERS)
    filt = train_classical(config).state[None]  # the ideal convolutional state (1, 16)
    image = load_data(config).test_images[0, 0].double()
    patch = image[12:12 + KERNEL, 12:12 + KERNEL].reshape(1, -1)  # a central, non-zero patch
    if float(patch.abs().sum()) == 0:
        patch = torch.ones(1, KERNEL * KERNEL, dtype=torch.float64)
    n = N_QUBITS
    q = [f"q{i}" for i in range(n)]
    conv = ["a"] + [f"x{i}" for i in range(n)] + [f"f{i}" for i in range(n)]
    data_prep = Op("UNITARY", data_wires(n), svd_unitary(patch))
    filt_ops = ansatz.ops(theta, filter_wires(n))
    w = svd_unitary(filt)
    layers = ansatz_barriers(n, LAYERS)  # between ansatz layers (the last one is the end of the ansatz)
    return [
        dict(name="filter_ansatz", figure="fig1_filter_ansatz.png", ops=ansatz.ops(theta), qubits=n, wires=q,
             unitaries=[], measured=[], barriers=layers,
             title=f"Fig. 1: filter ansatz, {n} qubits, {LAYERS} layers (RX, RZ on each qubit, then a CNOT "
                   "ring; dashes: layer boundaries)"),
        dict(name="state_preparation_svd", figure="fig5_state_prep_svd.png",
             ops=[Op("UNITARY", tuple(range(n)), w)], qubits=n, wires=q, unitaries=["W (SVD)"], measured=[],
             barriers=[], side=_unitary_panel(w[0]),
             title="Fig. 5: ideal convolutional state f = W|0>, QuantumFlow SVD unitary"),
        dict(name="state_preparation_gates", figure="fig5_state_prep_gates.png", ops=mottonen_ops(filt),
             qubits=n, wires=q, unitaries=[], measured=[], barriers=[],
             title="Fig. 5: the same state from Mottonen RY/CNOT gates"),
        dict(name="swap_test", figure="fig2_swap_test.png", ops=[data_prep] + filt_ops + swap_test_ops(n),
             qubits=2 * n + 1, wires=conv, unitaries=["W_x (data)"], measured=[0],
             barriers=[1 + b for b in layers],
             title="Fig. 2: convolution SWAP test (data by SVD unitary, filter by the ansatz; dashes: ansatz "
                   "layers, then the SWAP test)"),
        dict(name="entanglement_backprop", figure="fig2_entanglement_backprop.png",
             ops=[data_prep] + filt_ops + swap_test_ops(n, upstream=config.upstream), qubits=2 * n + 2,
             wires=conv + ["b"], unitaries=["W_x (data)"], measured=[0], barriers=[1 + b for b in layers],
             title=f"Eq. 17: entanglement-based backpropagation, RY(arccos {config.upstream}) on b, "
                   "CNOT(b -> a) (b is touched by nothing else: measuring it and multiplying classically is "
                   "equivalent)"),
    ]


def run_circuits(config: Config) -> dict:
    """Draw every circuit into ``config.out`` and count its gates as drawn and, with Qiskit, its CX after the
    transpile of :data:`TRANSPILE` (None without Qiskit); returns the metrics section."""
    metrics: dict = {"figures": []}
    drawers = set()
    for spec in progress(circuit_specs(config), "draw circuits"):
        counts = count_ops(spec["ops"], spec["qubits"])
        name, drawer, transpiled = draw(spec["ops"], spec["qubits"], config.out / spec["figure"], spec["title"],
                                        spec["wires"], spec["unitaries"], spec["measured"], spec["barriers"],
                                        spec.get("side"))
        counts.update(figure=name, **(transpiled or dict.fromkeys(("cx_all_to_all", "cx_line", "depth_all_to_all",
                                                                  "depth_line"))))
        drawers.add(drawer)
        metrics[spec["name"]] = counts
        metrics["figures"].append(name)
    metrics["drawer"] = ", ".join(sorted(drawers))
    metrics["transpile"] = TRANSPILE
    return metrics


__all__ = ["ansatz_barriers", "barrier_columns", "count_ops", "circuit_specs", "draw", "draw_ops", "layout",
           "run_circuits", "transpiled_counts", "TRANSPILE"]
