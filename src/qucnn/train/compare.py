"""Comparisons of model kinds that a referee can accept: the same tuning budget for every kind, chosen on
validation accuracy only, several seeds, the test set read once per run, and paired differences with
confidence intervals.

Protocol (``qucnn train --compare --tune --seeds 0,1,2,3,4``):

1. **Tune.** For every kind, train each point of :data:`TUNE_GRID` (learning rate x schedule x head) for
   each tuning seed, on the training images minus the validation hold-out, and score it by validation
   accuracy after the last epoch (mean over tuning seeds; ties go to the lower validation loss). The test
   set is not evaluated during tuning.
2. **Evaluate.** Every kind with its chosen point, for every seed: test accuracy once, after training.
3. **Summarise.** Mean, standard deviation, standard error and a t interval per kind; for every kind its
   paired difference from ``quantum`` (same seed: same data order and head initialisation).

Example:
    >>> len(grid_points(TUNE_GRID))
    12
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from tqdm.auto import tqdm

from ..nn.models import DEFAULT_HEAD
from ..utils.files import atomic_write, atomic_write_text
from ..utils.plotting import pyplot
from ..utils.stats import paired_difference, summarise
from .config import TrainConfig
from .distributed import DistContext
from .loop import fit

#: The tuning grid, the same for every kind: 3 x 2 x 2 = 12 runs per kind and tuning seed. The second head
#: adds the ReLU a classical convolution normally has (the fidelity is already non-linear).
TUNE_GRID = {"lr": (3e-3, 1e-2, 3e-2), "schedule": ("onecycle", "constant"),
             "head": (DEFAULT_HEAD, "bn,relu,maxpool:2,fc:128,relu")}
TUNING_FILE = "tuning.json"
REFERENCE_KIND = "quantum"


def grid_points(grid: dict) -> list[dict]:
    """Every combination of ``grid``'s values, in the order of its keys (a list of dicts)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _key(kind: str, point: dict, seed: int) -> str:
    return json.dumps({"kind": kind, **point, "seed": seed}, sort_keys=True)


def tune(cfg: TrainConfig, ctx: DistContext, data, grid: dict = TUNE_GRID) -> dict:
    """Pick each kind's settings on validation accuracy (see the module docstring); returns the ``tuning``
    section of metrics.json. With ``cfg.out``, every finished run is recorded in ``OUT/tuning.json`` at once,
    and ``cfg.resume`` reuses the runs recorded there."""
    seeds = cfg.tune_seeds or cfg.run_seeds[:1]
    points = grid_points(grid)
    path = Path(cfg.out) / TUNING_FILE if cfg.out else None
    done: dict = {}
    if cfg.resume and path is not None and path.exists():
        done = json.loads(path.read_text()).get("runs", {})
    results, chosen = {}, {}
    total = len(cfg.run_kinds) * len(points) * len(seeds)
    with tqdm(total=total, desc="tune", disable=not (cfg.progress and ctx.is_main), unit="run") as bar:
        for kind in cfg.run_kinds:
            rows = []
            for point in points:
                per_seed = []
                for seed in seeds:
                    key = _key(kind, point, seed)
                    if key not in done:
                        run = dataclasses.replace(cfg, **point, seed=seed, out=None, plot=False, progress=False,
                                                  resume=False, compare=False, seeds=None, kinds=None, tune=False,
                                                  tune_seeds=None, kind=kind)
                        final = fit(kind, run, data, ctx, None, evaluate_test=False)["final"]
                        done[key] = {"validation_accuracy": final["validation_accuracy"],
                                     "validation_loss": final["validation_loss"], "seconds": final["seconds"]}
                        if path is not None and ctx.is_main:
                            atomic_write_text(path, json.dumps({"grid": _jsonable_grid(grid), "runs": done}, indent=1))
                    per_seed.append(done[key])
                    bar.set_postfix_str(f"{kind} {point['lr']:g} {point['schedule']} {point['head']}")
                    bar.update()
                rows.append({**point, "validation_accuracy": summarise([r["validation_accuracy"] for r in per_seed])["mean"],
                             "validation_loss": summarise([r["validation_loss"] for r in per_seed])["mean"],
                             "per_seed": [{"seed": s, **r} for s, r in zip(seeds, per_seed)]})
            best = max(rows, key=lambda r: (r["validation_accuracy"], -r["validation_loss"]))
            results[kind] = rows
            chosen[kind] = {k: best[k] for k in grid}
    return {"grid": _jsonable_grid(grid), "seeds": list(seeds), "runs_per_kind": len(points) * len(seeds),
            "epochs": cfg.epochs, "criterion": "validation accuracy after the last epoch (mean over tuning seeds; "
                                               "ties: lower validation loss)",
            "results": results, "chosen": chosen}


def _jsonable_grid(grid: dict) -> dict:
    return {k: list(v) for k, v in grid.items()}


def settings_for(cfg: TrainConfig, kind: str, tuning: dict | None) -> TrainConfig:
    """``cfg`` with ``kind``'s tuned ``lr``, ``schedule`` and ``head`` (``cfg`` itself without tuning)."""
    return cfg if tuning is None else dataclasses.replace(cfg, **tuning["chosen"][kind])


def combine(cfg: TrainConfig, runs: dict[tuple[str, int], dict], tuning: dict | None) -> dict:
    """The ``compare`` and ``differences`` sections from the runs ``{(kind, seed): metrics}``.

    ``compare[kind]``: ``test_accuracy`` and ``validation_accuracy`` (lists, one per seed, in ``seeds``'
    order), ``seeds`` (one dict per seed: ``seed``, the run's ``final`` numbers and its ``epochs``),
    ``summary`` (:func:`~qucnn.utils.stats.summarise` of the test accuracies, plus ``validation`` for the
    validation ones), ``settings`` (``lr``, ``schedule``, ``head``) and ``model`` (parameter counts).
    ``differences[kind]``: the paired ``quantum - kind`` test-accuracy difference.
    """
    compare = {}
    for kind in cfg.run_kinds:
        per = [(seed, runs[(kind, seed)]) for seed in cfg.run_seeds]
        test = [r["final"]["test_accuracy"] for _, r in per]
        val = [r["final"]["validation_accuracy"] for _, r in per]
        s = settings_for(cfg, kind, tuning)
        compare[kind] = {
            "test_accuracy": test, "validation_accuracy": val,
            "seeds": [{"seed": seed, **r["final"], "epochs": r["epochs"]} for seed, r in per],
            "summary": {**summarise(test), "validation": None if None in val else summarise(val)},
            "settings": {"lr": s.lr, "schedule": s.schedule, "head": s.head},
            "model": {k: v for k, v in per[0][1]["model"].items() if k != "repr"},
        }
    differences = {}
    if REFERENCE_KIND in compare:
        ref = compare[REFERENCE_KIND]["test_accuracy"]
        for kind in compare:
            if kind != REFERENCE_KIND:
                differences[kind] = {"of": f"{REFERENCE_KIND} - {kind}",
                                     **paired_difference(ref, compare[kind]["test_accuracy"])}
    return {"compare": compare, "differences": differences}


def _pm(s: dict, scale: float = 100.0) -> str:
    if s["std"] is None:
        return f"{scale * s['mean']:.2f}"
    return f"{scale * s['mean']:.2f} +- {scale * s['std']:.2f}"


def compare_table(combined: dict) -> str:
    """A plain-text table: per kind, test accuracy mean +- std over seeds (n), validation accuracy, the paired
    difference from quantum with its 95 % interval, trainable parameters and the tuned settings."""
    rows = [("kind", "test acc % (mean +- std)", "n", "val acc %", "quantum - kind (95% CI), points",
             "params (first layer / all)", "lr, schedule, head")]
    diffs = combined.get("differences", {})
    for kind, c in combined["compare"].items():
        d = diffs.get(kind)
        if d is None:
            diff = "-"
        elif d["ci95"] is None:
            diff = f"{100 * d['mean']:+.2f}"
        else:
            diff = f"{100 * d['mean']:+.2f} [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]"
        val = c["summary"]["validation"]
        m, s = c["model"], c["settings"]
        rows.append((kind, _pm(c["summary"]), str(c["summary"]["n"]), "-" if val is None else _pm(val), diff,
                     f"{m['first_layer_trainable']} / {m['trainable']}", f"{s['lr']:g}, {s['schedule']}, {s['head']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_compare(combined: dict, path: str | Path, title: str = "") -> Path:
    """Left: test accuracy per kind, one dot per seed, mean +- std. Right: the paired difference
    ``quantum - kind`` per seed, mean with its 95 % t interval (the dotted line is no difference)."""
    plt = pyplot()
    compare, diffs = combined["compare"], combined.get("differences", {})
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    for i, (kind, c) in enumerate(compare.items()):
        acc = [100 * a for a in c["test_accuracy"]]
        jitter = [i + 0.08 * (j - (len(acc) - 1) / 2) for j in range(len(acc))]
        ax.scatter(jitter, acc, s=22, color=f"C{i}", alpha=0.6, zorder=2)
        s = c["summary"]
        ax.errorbar([i + 0.3], [100 * s["mean"]], yerr=None if s["std"] is None else [100 * s["std"]], fmt="D",
                    color=f"C{i}", ms=7, capsize=5, lw=2, zorder=3)
    ax.set_xticks(range(len(compare)), list(compare), rotation=15)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("test accuracy: dots = seeds, diamond = mean +- std", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    kinds = [k for k in compare if k in diffs]
    for i, kind in enumerate(kinds):
        d = diffs[kind]
        colour = f"C{list(compare).index(kind)}"
        per = [100 * v for v in d["per_seed"]]
        bx.scatter([i + 0.08 * (j - (len(per) - 1) / 2) for j in range(len(per))], per, s=22, color=colour, alpha=0.6)
        if d["ci95"] is not None:
            lo, hi = 100 * d["ci95"][0], 100 * d["ci95"][1]
            bx.errorbar([i + 0.3], [100 * d["mean"]], yerr=[[100 * d["mean"] - lo], [hi - 100 * d["mean"]]],
                        fmt="D", color=colour, ms=7, capsize=5, lw=2)
    bx.axhline(0, color="k", ls=":", lw=1)
    bx.set_xticks(range(len(kinds)), kinds, rotation=15)
    bx.set_ylabel("quantum minus kind (accuracy points)")
    bx.set_title("paired by seed: dots = seeds, diamond = mean with 95% t interval", fontsize=11)
    bx.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    path = atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


__all__ = ["REFERENCE_KIND", "TUNE_GRID", "TUNING_FILE", "combine", "compare_table", "grid_points", "plot_compare",
           "settings_for", "tune"]
