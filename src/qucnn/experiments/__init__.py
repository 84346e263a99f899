"""The paper's Section V, reproduced: ``qucnn reproduce [forward|backprop|learn|circuits|all]``.

Each experiment is a function ``run_<name>(config) -> dict`` (its section of metrics.json) that also
draws its figures into ``config.out``; :func:`reproduce` runs a list of them, merges their sections
into the metrics.json already in the folder and rewrites report.md from the merged metrics.

Public API:
    Config, EXPERIMENTS    the run configuration and the experiment names
    reproduce              run experiments, merge metrics.json, write report.md
    run_forward            experiment 1 (Fig. 3, Fig. 5)
    run_backprop           experiment 2 (Fig. 4)
    run_learn              experiment 3 (Fig. 6)
    run_circuits           the circuit figures (Fig. 1, 2, 5)
    build_report           report.md from a metrics dict

Example:
    from pathlib import Path
    metrics = reproduce(["backprop"], Config(out=Path("results"), quick=True).validated())
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from ..utils.checks import UsageError
from ..utils.provenance import versions
from .backprop import run_backprop
from .circuits import run_circuits
from .common import EXPERIMENTS, Config, deterministic, load_data, load_metrics, run_meta, save_metrics
from .forward import run_forward
from .learn import run_learn
from .report import build_report, write_report

RUNNERS: dict[str, Callable[[Config], dict]] = {"forward": run_forward, "backprop": run_backprop,
                                                "learn": run_learn, "circuits": run_circuits}


def _runner(name: str) -> Callable[[Config], dict]:
    if name not in RUNNERS:
        raise UsageError(f"unknown experiment {name!r}; choose from {EXPERIMENTS} or 'all'")
    return RUNNERS[name]


def reproduce(experiments: Sequence[str], config: Config, argv: Sequence[str] | None = None) -> dict:
    """Run ``experiments`` (names from :data:`EXPERIMENTS`) with ``config`` (validated) and return the
    merged metrics. Sections of other experiments already in ``config.out/metrics.json`` are kept;
    report.md is regenerated from everything there."""
    runners = [(name, _runner(name)) for name in experiments]  # unknown names fail before any work
    metrics = load_metrics(config.out)
    data = load_data(config)
    start = time.perf_counter()
    for name, run in runners:
        t0 = time.perf_counter()
        with deterministic(config.seed, config.torch_device):
            section = run(config)
        section["meta"] = run_meta(config, name, data.name, time.perf_counter() - t0)
        metrics[config.metric_key(name)] = section
        metrics["versions"] = versions()
        save_metrics(config.out, metrics)  # after each experiment: a later failure keeps the earlier ones
    metrics["last_command"] = {"argv": list(argv) if argv is not None else None, "experiments": list(experiments),
                               "config": config.describe(), "wall_time_s": round(time.perf_counter() - start, 3)}
    save_metrics(config.out, metrics)
    write_report(config.out, metrics)
    return metrics


__all__ = ["Config", "EXPERIMENTS", "RUNNERS", "build_report", "reproduce", "run_backprop", "run_circuits", "run_forward",
           "run_learn", "write_report"]
