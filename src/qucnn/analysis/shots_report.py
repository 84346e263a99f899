"""What the shots study may claim: each setting against frozen filters (paired by seed, two-sided 95 % t
intervals, Holm-corrected across the table, TOST with a stated margin), and shot savings computed from
interval crossings, in shots and in circuits.

**Savings from interval crossings.** For a sampled setting ``s`` (cost ``C_s``: its gradient shots, or
circuits) and a dense estimator ``D`` measured at budgets ``b_1 < b_2 < ...``, the paired difference
``acc(D, b_k) - acc(s)`` has, at each budget, a mean and a two-sided 95 % t interval ``[lo_k, hi_k]``. Along
``log(cost)`` (linear interpolation between budgets):

- ``low``: where ``hi`` first reaches 0. Below it ``D`` is significantly worse than ``s``, so ``D`` needs at
  least this much to match ``s``;
- ``central``: where the mean difference first reaches 0;
- ``high``: where ``lo`` first reaches 0 (from there on ``D`` is significantly better).

The saving in orders of magnitude is ``log10(cost / C_s)`` at each of the three. A saving is **claimed**
only when ``low`` is an interpolated crossing (not at or below ``D``'s first budget, where the data cannot
bound it) and lies above ``C_s``, and only for a sampled setting resolved above frozen filters; the intervals
are pointwise 95 %.

Example:
    crossing([(1e6, -0.02), (1e8, 0.02)])          # -> 1e7: the difference reaches 0 half way in log cost
"""

from __future__ import annotations

import math

from ..utils.files import atomic_write
from ..utils.plotting import pyplot
from ..utils.stats import compare_pairs, summarise, verdict

DENSE = ("parameter-shift", "entanglement")
COSTS = {"shots": "gradient_shots", "circuits": "gradient_circuits"}


def aggregate(rows: list[dict], margin: float = 0.005) -> list[dict]:
    """One entry per setting (in first-seen order): its accuracies per seed with :func:`summarise`, the mean
    gradient shots and circuits, and ``vs_frozen``: the paired difference ``setting - frozen`` over the seeds
    both ran (:func:`qucnn.utils.stats.compare_pairs`, Holm across all settings; ``None`` for frozen itself or
    without a frozen run). ``margin``: the TOST margin as an accuracy fraction."""
    out: dict[str, dict] = {}
    for r in rows:
        entry = out.setdefault(r["label"], {k: r[k] for k in ("label", "method", "shots", "budget")} |
                               {"seeds": [], "test_accuracy": [], "gradient_shots_per_seed": [],
                                "gradient_circuits_per_seed": []})
        entry["seeds"].append(r["seed"])
        entry["test_accuracy"].append(r["test_accuracy"])
        entry["gradient_shots_per_seed"].append(r["gradient_shots"])
        entry["gradient_circuits_per_seed"].append(r.get("gradient_circuits"))
    for entry in out.values():
        entry["summary"] = summarise(entry["test_accuracy"])
        for cost, key in COSTS.items():
            per = entry[f"{key}_per_seed"]
            entry[key] = None if None in per else sum(per) / len(per)
        entry["vs_frozen"] = None
    frozen = out.get("frozen")
    if frozen is None:
        return list(out.values())
    by_seed = {s: a for s, a in zip(frozen["seeds"], frozen["test_accuracy"])}
    values, pairs = {}, []
    for entry in out.values():
        common = [(a, by_seed[s]) for s, a in zip(entry["seeds"], entry["test_accuracy"]) if s in by_seed]
        if entry["method"] != "frozen" and len(common) > 1:
            values[entry["label"]] = [a for a, _ in common]
            values[f"frozen|{entry['label']}"] = [b for _, b in common]
            pairs.append((entry["label"], f"frozen|{entry['label']}"))
    for row in compare_pairs(values, pairs, margin) if pairs else []:
        out[row["a"]]["vs_frozen"] = {**row, "b": "frozen"}
    return list(out.values())


def crossing(curve: list[tuple[float, float]]) -> dict:
    """Where ``value`` first reaches 0 along ``curve`` (``(cost, value)`` points, sorted by cost), interpolated
    linearly in ``log10(cost)``. ``{"cost", "where"}``: ``where`` is ``"interpolated"``, ``"at or below first"``
    (the first point is already >= 0: ``cost`` is an upper bound) or ``"beyond"`` (never: ``cost`` ``None``)."""
    for i, (cost, value) in enumerate(curve):
        if value >= 0:
            if i == 0:
                return {"cost": cost, "where": "at or below first"}
            c0, v0 = curve[i - 1]
            frac = -v0 / (value - v0)
            log_cost = math.log10(c0) + frac * (math.log10(cost) - math.log10(c0))
            return {"cost": 10 ** log_cost, "where": "interpolated"}
    return {"cost": None, "where": "beyond"}


def _orders(cross: dict, own: float) -> float | None:
    return None if cross["cost"] is None else math.log10(cross["cost"] / own)


def saving_against(sampled: dict, dense: list[dict], cost: str) -> dict:
    """The saving of one sampled setting against one dense estimator's settings (:func:`aggregate` entries,
    with ``test_accuracy`` per seed in the same seed order), in ``cost`` (``"shots"`` or ``"circuits"``): the
    ``low`` / ``central`` / ``high`` crossings (see the module docstring), their orders of magnitude and
    ``claimed``."""
    key = COSTS[cost]
    own = sampled[key]
    seeds = sampled["seeds"]
    points = []
    for d in sorted(dense, key=lambda d: (d[key], d["gradient_shots"])):
        acc = dict(zip(d["seeds"], d["test_accuracy"]))
        common = [s for s in seeds if s in acc]
        diff = summarise([acc[s] - a for s, a in zip(seeds, sampled["test_accuracy"]) if s in acc])
        lo, hi = diff["ci95"] if diff["ci95"] is not None else (diff["mean"], diff["mean"])
        points.append({"label": d["label"], "cost": d[key], "mean": diff["mean"], "ci95": [lo, hi],
                       "n": len(common)})
    out = {"own_cost": own, "points": points}
    for name, pick in (("low", lambda p: p["ci95"][1]), ("central", lambda p: p["mean"]),
                       ("high", lambda p: p["ci95"][0])):
        cross = crossing([(p["cost"], pick(p)) for p in points])
        out[name] = {**cross, "orders_of_magnitude": _orders(cross, own)}
    low = out["low"]
    out["claimed"] = low["where"] == "interpolated" and low["orders_of_magnitude"] > 0
    return out


def shots_saving(settings: list[dict]) -> dict | None:
    """For each sampled setting, its saving against each dense estimator in shots and in circuits
    (:func:`saving_against`), and whether it is above frozen filters (Holm-corrected); a saving is claimed only
    for a setting that is (a gradient no better than none saves nothing). ``best``: the claimed saving in shots
    with the largest lower end (``low``), or ``None``."""
    sampled = sorted((s for s in settings if s["method"] == "sampled" and s["gradient_shots"]),
                     key=lambda s: s["gradient_shots"])
    dense = {m: [s for s in settings if s["method"] == m and s["gradient_shots"]] for m in DENSE}
    if not sampled or not any(dense.values()):
        return None
    points, best = [], None
    for s in sampled:
        vs = s["vs_frozen"] or {}
        entry = {"label": s["label"], "shots": s["gradient_shots"], "circuits": s["gradient_circuits"],
                 "test_accuracy": s["summary"]["mean"], "above_frozen": vs.get("significant"), "against": {}}
        for method, curve in dense.items():
            if curve:
                entry["against"][method] = {cost: saving_against(s, curve, cost) for cost in COSTS}
                for saving in entry["against"][method].values():  # no gradient at all would do as well
                    saving["claimed"] = bool(saving["claimed"] and entry["above_frozen"])
                shots = entry["against"][method]["shots"]
                if shots["claimed"] and (best is None or shots["low"]["orders_of_magnitude"] > best["orders_low"]):
                    best = {"label": s["label"], "against": method, "orders_low": shots["low"]["orders_of_magnitude"],
                            "orders_central": shots["central"]["orders_of_magnitude"]}
        points.append(entry)
    return {"points": points, "best": best,
            "rule": "paired differences dense(budget) - sampled over seeds, two-sided 95 % t intervals; a saving is "
                    "claimed only where the upper interval end crosses 0 (interpolated in log cost) above the "
                    "sampled setting's own cost, and only for a sampled setting resolved above frozen filters"}


def plot_shots(result: dict, path) -> None:
    """(a) test accuracy against total gradient shots and (b) against gradient circuits (log x; mean with the
    95 % t interval of the mean over seeds; exact gradients and frozen filters as bands); (c) the paired
    difference from frozen filters with its 95 % t interval (filled: resolved after Holm)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(20, 6), layout="constrained")
    styles = {"parameter-shift": ("tab:blue", "o", "parameter shift, post-processed", 0.92),
              "entanglement": ("tab:red", "s", "Eq. 17 (entanglement)", 1.08), "sampled": ("tab:green", "^", "sampled", 1.0)}
    bands = {"autograd": ("black", "exact gradients"), "frozen": ("tab:grey", "frozen filters (no gradient)")}
    for s in result["settings"]:
        if s["method"] not in bands:
            continue
        colour, name = bands[s["method"]]
        m = 100 * s["summary"]["mean"]
        lo, hi = (100 * v for v in s["summary"]["ci95"]) if s["summary"]["ci95"] else (m, m)
        for ax in axes[:2]:
            ax.axhline(m, color=colour, ls="--", lw=1.5, label=f"{name}: {m:.2f} [{lo:.2f}, {hi:.2f}] %")
            ax.axhspan(lo, hi, color=colour, alpha=0.12)
        if s["vs_frozen"] is not None:
            axes[2].axhline(100 * s["vs_frozen"]["mean"], color=colour, ls="--", lw=1.5,
                            label=f"{name}: {100 * s['vs_frozen']['mean']:+.2f} points")
    axes[2].axhline(0, color="tab:grey", lw=1.5, label="frozen filters")
    for method, (colour, marker, name, nudge) in styles.items():
        pts = sorted((s for s in result["settings"] if s["method"] == method and s["gradient_shots"]),
                     key=lambda s: s["gradient_shots"])
        for ax, key in ((axes[0], "gradient_shots"), (axes[1], "gradient_circuits"), (axes[2], "gradient_shots")):
            xs = [s[key] * nudge for s in pts]  # nudged apart where estimators share a cost
            vals = [s["summary"] if ax is not axes[2] else s["vs_frozen"] for s in pts]
            if not pts or None in vals:
                continue
            ax.plot(xs, [100 * v["mean"] for v in vals], color=colour, lw=1.2)
            for i, (x, v) in enumerate(zip(xs, vals)):
                filled = ax is not axes[2] or bool(v.get("significant"))
                err = [[0.0], [0.0]] if v["ci95"] is None else [[100 * (v["mean"] - v["ci95"][0])],
                                                                [100 * (v["ci95"][1] - v["mean"])]]
                ax.errorbar([x], [100 * v["mean"]], yerr=err, color=colour, marker=marker, ms=7, capsize=3,
                            mfc=colour if filled else "white", label=name if i == 0 else None)
    titles = ("(a) accuracy against gradient shots", "(b) accuracy against gradient circuits",
              "(c) minus frozen filters, same seed (filled: resolved after Holm)")
    xlabels = ("total shots spent on filter gradients", "gradient circuits run (a circuit: one setting, any shots)",
               "total shots spent on filter gradients")
    for ax, title, xlabel in zip(axes, titles, xlabels):
        ax.set_xscale("log")
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("test accuracy (%), mean and 95% t interval over seeds")
    axes[2].set_ylabel("accuracy minus frozen filters (points), 95% t interval")
    cfg = result["config"]
    fig.suptitle(f"{cfg['data']}: {cfg['filters']} filters {cfg['kernel']}x{cfg['kernel']}, {cfg['layers']} layers, "
                 f"{cfg['epochs']} epoch(s), {cfg['train']} images, seeds {', '.join(map(str, cfg['seeds']))}",
                 fontsize=12)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def _orders_text(point: dict) -> str:
    orders = point["orders_of_magnitude"]
    if orders is None:
        return "never"
    return ("<= " if point["where"] == "at or below first" else "") + f"{orders:+.1f}"


def shots_table(result: dict) -> str:
    """The study as text: per setting, accuracy (mean [95 % CI]), the difference from frozen filters with its
    interval, Holm p and verdict, gradient shots and circuits; then each sampled setting's saving (orders of
    magnitude at the low / central / high crossing; ``claimed`` or not) in shots and circuits."""
    lines = [f"{'setting':<24} {'accuracy % [95% CI]':>22} {'minus frozen, points [95% CI]':>30} {'p Holm':>7} "
             f"{'verdict':>22} {'grad shots':>10} {'circuits':>9}"]
    for s in result["settings"]:
        m = s["summary"]
        acc = f"{100 * m['mean']:.2f}" + ("" if m["ci95"] is None else
                                          f" [{100 * m['ci95'][0]:.2f}, {100 * m['ci95'][1]:.2f}]")
        vs = s["vs_frozen"]
        diff = "-" if vs is None else f"{100 * vs['mean']:+.2f}" + (
            "" if vs["ci95"] is None else f" [{100 * vs['ci95'][0]:+.2f}, {100 * vs['ci95'][1]:+.2f}]")
        p = "-" if vs is None or vs["p_holm"] is None else f"{vs['p_holm']:.3g}"
        word = "-" if vs is None else verdict(vs)
        shots = "exact" if s["gradient_shots"] is None else f"{s['gradient_shots']:.3g}"
        circuits = "-" if s["gradient_circuits"] is None else f"{s['gradient_circuits']:.3g}"
        lines.append(f"{s['label']:<24} {acc:>22} {diff:>30} {p:>7} {word:>22} {shots:>10} {circuits:>9}")
    for point in (result["saving"] or {}).get("points", []):
        for method, by_cost in point["against"].items():
            parts = []
            for cost, sv in by_cost.items():
                ends = "/".join(_orders_text(sv[k]) for k in ("low", "central", "high"))
                parts.append(f"{cost}: {ends} orders ({'claimed' if sv['claimed'] else 'not claimed'})")
            lines.append(f"saving of {point['label']} against {method} (low/central/high): " + "; ".join(parts))
    return "\n".join(lines)


__all__ = ["COSTS", "DENSE", "aggregate", "crossing", "plot_shots", "saving_against", "shots_saving", "shots_table"]
