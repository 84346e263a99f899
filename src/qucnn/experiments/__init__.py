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
    >>> from pathlib import Path
    >>> metrics = reproduce(["backprop"], Config(out=Path("results"), quick=True).validated())  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from .common import EXPERIMENTS, Config, deterministic, load_data, load_metrics, run_meta, save_metrics, versions


def _runner(name: str) -> Callable[[Config], dict]:
    # imported on demand: each module pulls in matplotlib / the simulator only when it runs
    if name == "forward":
        from .forward import run_forward as run
    elif name == "backprop":
        from .backprop import run_backprop as run
    elif name == "learn":
        from .learn import run_learn as run
    elif name == "circuits":
        from .circuits import run_circuits as run
    else:
        raise ValueError(f"unknown experiment {name!r}; choose from {EXPERIMENTS} or 'all'")
    return run


def reproduce(experiments: Sequence[str], config: Config, argv: Sequence[str] | None = None) -> dict:
    """Run ``experiments`` (names from :data:`EXPERIMENTS`) with ``config`` (validated) and return the
    merged metrics. Sections of other experiments already in ``config.out/metrics.json`` are kept;
    report.md is regenerated from everything there."""
    from .report import write_report

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


def __getattr__(name: str):
    lazy = {"run_forward": "forward", "run_backprop": "backprop", "run_learn": "learn",
            "run_circuits": "circuits", "build_report": "report", "write_report": "report"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{lazy[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Config", "EXPERIMENTS", "build_report", "reproduce", "run_backprop", "run_circuits", "run_forward",
           "run_learn", "write_report"]
