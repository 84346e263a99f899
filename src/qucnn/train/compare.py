"""Comparisons of model kinds that a referee can accept: the same tuning budget for every kind and head,
chosen on validation accuracy only with tuning seeds disjoint from the evaluation seeds, several seeds, the
test set read once per run, and paired differences with two-sided 95 % intervals, Holm-corrected p-values
and equivalence tests.

Protocol (``qucnn train --compare --heads plain,relu --tune --seeds 0-9``):

1. **Heads are a factor, not a tuned choice.** Every kind is trained with every head of ``--heads``
   (:data:`HEADS`: ``plain`` = ``bn,maxpool:2,fc:128,relu``, ``relu`` = ``bn,relu,maxpool:2,fc:128,relu``),
   so a comparison can hold the head fixed.
2. **Tune.** For every (kind, head), train each point of :data:`TUNE_GRID` (learning rate x schedule) for
   each tuning seed and score it by validation accuracy after the last epoch (mean over tuning seeds; ties go
   to the lower validation loss). The test set is not evaluated during tuning.
3. **Evaluate.** Every (kind, head) with its chosen point, for every evaluation seed: test accuracy once.
4. **Compare.** The comparisons of :func:`default_pairs`, paired by seed (:func:`qucnn.utils.stats.compare_pairs`).

Example:
    >>> len(grid_points(TUNE_GRID))
    6
    >>> head_name("bn,maxpool:2,fc:128,relu")
    'plain'
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from tqdm.auto import tqdm

from ..utils.files import atomic_write_text
from ..utils.stats import compare_pairs, summarise
from .config import NAMED_HEADS, TrainConfig
from .distributed import DistContext
from .loop import fit
from .report import compare_table, plot_compare

#: The named heads ``--heads`` chooses from; the second adds the ReLU a classical convolution usually has
#: (the fidelity map is itself non-linear: a squared overlap).
HEADS = NAMED_HEADS
#: The tuning grid, the same for every kind and head: 3 x 2 = 6 runs per (kind, head) and tuning seed.
TUNE_GRID = {"lr": (3e-3, 1e-2, 3e-2), "schedule": ("onecycle", "constant")}
TUNING_FILE = "tuning.json"
REFERENCE_KIND = "quantum"
#: The comparisons of one table, each answering one question (docs/training.md): per head, quantum against
#: each twin, and the free fidelity map against the convolution; across heads, each kind's ReLU effect.
SAME_HEAD_PAIRS = (("quantum", "frozen"), ("quantum", "fidelity-classical"), ("quantum", "classical"),
                   ("quantum", "classical-matched"), ("fidelity-classical", "classical"))


def head_name(spec: str) -> str:
    """The :data:`HEADS` name of a head spec, or ``"custom"`` for any other spec."""
    return next((name for name, s in HEADS.items() if s == spec), "custom")


def run_heads(cfg: TrainConfig) -> dict[str, str]:
    """``{name: spec}`` of the heads a comparison trains: ``cfg.heads`` from :data:`HEADS`, else ``cfg.head``."""
    if cfg.heads is not None:
        return {name: HEADS[name] for name in cfg.heads}
    return {head_name(cfg.head): cfg.head}


def label(kind: str, head: str) -> str:
    """The name of one arm in tables and in ``differences``: ``"kind/head"``."""
    return f"{kind}/{head}"


def grid_points(grid: dict) -> list[dict]:
    """Every combination of ``grid``'s values, in the order of its keys (a list of dicts)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _key(kind: str, head: str, point: dict, seed: int) -> str:
    return json.dumps({"kind": kind, "head": head, **point, "seed": seed}, sort_keys=True)


def _tuning_run(cfg: TrainConfig, kind: str, spec: str, point: dict, seed: int, ctx: DistContext, data) -> dict:
    run = dataclasses.replace(cfg, **point, head=spec, seed=seed, out=None, plot=False, progress=False,
                              resume=False, compare=False, seeds=None, kinds=None, heads=None, tune=False,
                              tune_seeds=None, kind=kind)
    final = fit(kind, run, data, ctx, None, evaluate_test=False)["final"]
    return {"validation_accuracy": final["validation_accuracy"], "validation_loss": final["validation_loss"],
            "seconds": final["seconds"]}


def tune(cfg: TrainConfig, ctx: DistContext, data, grid: dict = TUNE_GRID) -> dict:
    """Pick each (kind, head)'s settings on validation accuracy (see the module docstring); returns the
    ``tuning`` section of metrics.json, with ``results[kind][head]`` (one row per grid point) and
    ``chosen[kind][head]``. With ``cfg.out``, every finished run is recorded in ``OUT/tuning.json`` at once, and
    ``cfg.resume`` reuses the runs recorded there."""
    seeds, heads, points = cfg.run_tune_seeds, run_heads(cfg), grid_points(grid)
    path = Path(cfg.out) / TUNING_FILE if cfg.out else None
    done: dict = {}
    if cfg.resume and path is not None and path.exists():
        done = json.loads(path.read_text()).get("runs", {})
    results: dict = {kind: {} for kind in cfg.run_kinds}
    chosen: dict = {kind: {} for kind in cfg.run_kinds}
    total = len(cfg.run_kinds) * len(heads) * len(points) * len(seeds)
    with tqdm(total=total, desc="tune", disable=not (cfg.progress and ctx.is_main), unit="run") as bar:
        for kind, (name, spec) in itertools.product(cfg.run_kinds, heads.items()):
            rows = []
            for point in points:
                per_seed = []
                for seed in seeds:
                    key = _key(kind, spec, point, seed)
                    if key not in done:
                        done[key] = _tuning_run(cfg, kind, spec, point, seed, ctx, data)
                        if path is not None and ctx.is_main:
                            atomic_write_text(path, json.dumps({"grid": _jsonable(grid), "runs": done}, indent=1))
                    per_seed.append(done[key])
                    bar.set_postfix_str(f"{kind}/{name} " + " ".join(str(v) for v in point.values()))
                    bar.update()
                rows.append({**point, "validation_accuracy": summarise([r["validation_accuracy"] for r in per_seed])["mean"],
                             "validation_loss": summarise([r["validation_loss"] for r in per_seed])["mean"],
                             "per_seed": [{"seed": s, **r} for s, r in zip(seeds, per_seed)]})
            best = max(rows, key=lambda r: (r["validation_accuracy"], -r["validation_loss"]))
            results[kind][name] = rows
            chosen[kind][name] = {k: best[k] for k in grid}
    return {"grid": _jsonable(grid), "heads": heads, "seeds": list(seeds), "runs_per_arm": len(points) * len(seeds),
            "epochs": cfg.epochs, "criterion": "validation accuracy after the last epoch (mean over tuning seeds; "
                                               "ties: lower validation loss)",
            "results": results, "chosen": chosen}


def _jsonable(grid: dict) -> dict:
    return {k: list(v) for k, v in grid.items()}


def settings_for(cfg: TrainConfig, kind: str, head: str, tuning: dict | None) -> TrainConfig:
    """``cfg`` with ``head``'s spec and, after tuning, ``(kind, head)``'s tuned ``lr`` and ``schedule``."""
    spec = run_heads(cfg)[head]
    chosen = {} if tuning is None else tuning["chosen"][kind][head]
    return dataclasses.replace(cfg, head=spec, **chosen)


def default_pairs(kinds: tuple[str, ...], heads: tuple[str, ...]) -> list[tuple[str, str]]:
    """The comparisons of a table, as ``(a, b)`` labels: :data:`SAME_HEAD_PAIRS` within every head (those whose
    kinds were trained), then every other head against the first, kind by kind (the head's own effect)."""
    pairs = [(label(a, h), label(b, h)) for h in heads for a, b in SAME_HEAD_PAIRS if a in kinds and b in kinds]
    pairs += [(label(k, h), label(k, heads[0])) for k in kinds for h in heads[1:]]
    return pairs


def combine(cfg: TrainConfig, runs: dict[tuple[str, str, int], dict], tuning: dict | None) -> dict:
    """The ``compare`` and ``differences`` sections from the runs ``{(kind, head, seed): metrics}``.

    ``compare[kind][head]``: ``test_accuracy`` and ``validation_accuracy`` (lists, one per seed, in ``seeds``'
    order), ``seeds`` (one dict per seed: ``seed``, the run's ``final`` numbers and its ``epochs``),
    ``summary`` (:func:`~qucnn.utils.stats.summarise` of the test accuracies, plus ``validation``),
    ``settings`` (``lr``, ``schedule``, ``head``) and ``model`` (parameter counts).
    ``differences``: a list, one entry per comparison of :func:`default_pairs`, ``{"a", "b", "mean", "ci95",
    "p_holm", "equivalent_at", ...}`` (:func:`~qucnn.utils.stats.compare_pairs`; accuracy fractions, the margin
    ``cfg.margin`` points).
    """
    heads = run_heads(cfg)
    compare: dict = {}
    values = {}
    for kind, head in itertools.product(cfg.run_kinds, heads):
        per = [(seed, runs[(kind, head, seed)]) for seed in cfg.run_seeds]
        test = [r["final"]["test_accuracy"] for _, r in per]
        val = [r["final"]["validation_accuracy"] for _, r in per]
        s = settings_for(cfg, kind, head, tuning)
        compare.setdefault(kind, {})[head] = {
            "test_accuracy": test, "validation_accuracy": val,
            "seeds": [{"seed": seed, **r["final"], "epochs": r["epochs"]} for seed, r in per],
            "summary": {**summarise(test), "validation": None if None in val else summarise(val)},
            "settings": {"lr": s.lr, "schedule": s.schedule, "head": s.head},
            "model": {k: v for k, v in per[0][1]["model"].items() if k != "repr"},
        }
        values[label(kind, head)] = test
    pairs = default_pairs(cfg.run_kinds, tuple(heads))
    differences = compare_pairs(values, pairs, cfg.margin / 100) if len(cfg.run_seeds) > 1 else []
    return {"compare": compare, "differences": differences, "margin_points": cfg.margin,
            "units": "accuracy as a fraction (0.974 = 97.4 %); differences a - b in the same units"}


__all__ = ["HEADS", "REFERENCE_KIND", "SAME_HEAD_PAIRS", "TUNE_GRID", "TUNING_FILE", "combine", "compare_table",
           "default_pairs", "grid_points", "head_name", "label", "plot_compare", "run_heads", "settings_for",
           "tune"]
