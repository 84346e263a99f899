"""Train hybrid QuCNN networks end to end: :func:`train` runs one model kind, or several kinds over several
seeds to compare (optionally tuned on validation accuracy first: :mod:`qucnn.train.compare`), on one or
several processes, and writes metrics, checkpoints and learning curves.

:func:`train` takes a :class:`~qucnn.train.config.TrainConfig` and returns the metrics dict it also writes to
``OUT/metrics.json``. Everything random is a pure function of ``seed``: the initial weights, the data order
of each epoch (:func:`~qucnn.train.config.data_order`), dropout masks and shot draws (their generators' states
go into every checkpoint). A run resumed from any checkpoint, mid-epoch included, therefore ends with the
same parameters, bit for bit on the CPU, as an uninterrupted run.

Example:
    metrics = train(TrainConfig(epochs=1, filters=2, limit_train=512, limit_test=256, progress=False))
    metrics["final"]["test_accuracy"] > 0.5
    # -> True
    metrics = train(TrainConfig(compare=True, seeds=(0, 1, 2), tune=True, out="results/compare"))
    metrics["compare"]["quantum"]["summary"]["mean"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from ..datasets import load_dataset
from ..nn.models import build_model
from ..utils.checks import MissingExtraError, MissingFileError, UsageError
from ..utils.devices import resolve_device
from ..utils.files import atomic_write_text, check_writable_dir
from ..utils.outputs import claim_output_dir
from ..utils.provenance import versions
from . import compare, report
from .config import Splits, TrainConfig, check_resume, make_splits
from .distributed import DistContext, context_from_env, init_spawned, launched_by_torchrun, shutdown, spawn
from .loop import fit


def _load_data(cfg: TrainConfig) -> Splits:
    return make_splits(load_dataset(cfg.data, cfg.classes), cfg.validation, cfg.limit_train, cfg.limit_test)


def _run_dirs(cfg: TrainConfig) -> dict[tuple[str, str, int], Path | None]:
    """Where each run of ``(kind, head, seed)`` writes: ``OUT`` for one run, ``OUT/<kind>/<head>/seed<seed>`` in a
    comparison."""
    out = Path(cfg.out) if cfg.out else None
    if not cfg.compare:
        return {(cfg.kind, compare.head_name(cfg.head), cfg.seed): out}
    return {(k, h, s): out / k / h / f"seed{s}" if out else None
            for k in cfg.run_kinds for h in compare.run_heads(cfg) for s in cfg.run_seeds}


#: What a finished run leaves in its output folder, which a new run there would replace.
RESULT_FILES = ("metrics.json", "model.pt")


def _check_outputs(cfg: TrainConfig) -> None:
    """Refuse, before anything is written, to resume from a bad checkpoint or to clobber a good one."""
    paths = {k: d / "checkpoint.pt" for k, d in _run_dirs(cfg).items() if d is not None}
    existing = {k: p for k, p in paths.items() if p.exists()}
    if cfg.resume:
        tuned = cfg.tune and cfg.out and (Path(cfg.out) / compare.TUNING_FILE).exists()
        if not existing and not tuned:
            raise MissingFileError(f"--resume: no checkpoint found ({', '.join(str(p) for p in paths.values())})")
        # a tuned comparison resumes with the settings tuning chose, which only tuning.json knows: its
        # checkpoints are checked when each run starts
        for (kind, head, seed), path in existing.items():
            if not cfg.tune:
                check_resume(dataclasses.replace(compare.settings_for(cfg, kind, head, None), seed=seed), kind, path)
    elif existing and not cfg.overwrite:
        raise UsageError(f"{', '.join(map(str, existing.values()))} already exists: pass --resume to continue "
                         "that run, --overwrite to start afresh, or choose another --out")
    elif cfg.out and not cfg.overwrite:  # a finished run keeps its results even without its checkpoint
        results = [Path(cfg.out) / name for name in RESULT_FILES if (Path(cfg.out) / name).exists()]
        if results:
            raise UsageError(f"{', '.join(map(str, results))} already exists (results of an earlier run): pass "
                             "--overwrite to replace them, or choose another --out")
    if cfg.out:
        check_writable_dir(cfg.out)
    if cfg.out and cfg.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            raise MissingExtraError("learning-curve plots need matplotlib: pip install matplotlib "
                                    "(or pass plot=False / --no-plot)") from err


def _claim(cfg: TrainConfig):
    """Hold ``cfg.out`` for the run (one run per folder; a folder created for a run that fails early is removed
    again). Under torchrun every rank runs this function: rank 0 holds the folder for all of them."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))
    if not cfg.out or rank != 0:
        return contextlib.nullcontext()
    return claim_output_dir(cfg.out, "--out")


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; return the metrics (also written to ``config.out``/metrics.json).

    Errors the user caused (bad option, missing data directory, unwritable output folder, a folder another run
    is writing into, unreadable, corrupted or foreign checkpoint, no CUDA) raise
    :class:`~qucnn.utils.checks.UsageError` before any work. A loss that becomes NaN raises
    :class:`~qucnn.train.loop.TrainingDiverged` and a full disk :class:`~qucnn.utils.checks.OutputWriteError`
    (both :class:`~qucnn.utils.checks.RunError`), keeping the last good checkpoint.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train expects a TrainConfig, got {type(config).__name__}")
    cfg = config
    if cfg.out is not None and (not isinstance(cfg.out, (str, os.PathLike)) or str(cfg.out) == ""):
        raise UsageError(f"out must be a folder path, or None to write nothing; got {cfg.out!r}")
    cfg.validate()
    if cfg.resume and cfg.overwrite:
        raise UsageError("resume and overwrite contradict each other (--resume continues OUT's checkpoint, "
                         "--overwrite starts afresh): pass one of them")
    device = resolve_device(cfg.device)
    if cfg.nproc > 1 and launched_by_torchrun():
        raise UsageError("nproc > 1 under torchrun: torchrun already starts the processes (--nproc-per-node)")
    if device.type == "cuda" and cfg.nproc > torch.cuda.device_count():
        raise UsageError(f"nproc {cfg.nproc} on CUDA needs one GPU per process; {torch.cuda.device_count()} found")
    data = _load_data(cfg)
    for spec in compare.run_heads(cfg).values() if cfg.compare else (cfg.head,):  # bad geometry or head: fail now
        build_model(cfg.run_kinds[0] if cfg.compare else cfg.kind, **{**cfg.model_options(), "head": spec},
                    input_shape=tuple(data.train_images.shape[1:]), num_classes=data.num_classes)
    with _claim(cfg):
        _check_outputs(cfg)
        return _launch(cfg, device, data)


def _launch(cfg: TrainConfig, device: torch.device, data: Splits) -> dict:
    if cfg.nproc > 1:
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "metrics.json"
            spawn(_spawn_worker, cfg.nproc, (cfg, str(result)))
            return json.loads(result.read_text())
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ours = not (dist.is_available() and dist.is_initialized())  # a caller's process group stays up
    ctx = context_from_env(device)
    finished = False
    try:
        metrics = _run(cfg, ctx, data)
        finished = True
        return metrics
    finally:
        if ours:
            shutdown(ctx, barrier=finished)


def _spawn_worker(rank: int, world: int, port: int, cfg: TrainConfig, result: str) -> None:
    ctx = init_spawned(rank, world, port, resolve_device(cfg.device))
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    finished = False
    try:
        metrics = _run(cfg, ctx, _load_data(cfg))
        if ctx.is_main:
            Path(result).write_text(json.dumps(metrics))
        finished = True
    finally:
        shutdown(ctx, barrier=finished)


def _run(cfg: TrainConfig, ctx: DistContext, data: Splits) -> dict:
    if not cfg.compare:
        return fit(cfg.kind, cfg, data, ctx, next(iter(_run_dirs(cfg).values())))
    tuning = compare.tune(cfg, ctx, data) if cfg.tune else None
    results = {}
    for (kind, head, seed), run_dir in _run_dirs(cfg).items():
        run = dataclasses.replace(compare.settings_for(cfg, kind, head, tuning), seed=seed)
        results[(kind, head, seed)] = fit(kind, run, data, ctx, run_dir)
        if "stopped_at_step" in results[(kind, head, seed)]:
            return results[(kind, head, seed)]
    combined = _combine(cfg, ctx, data, results, tuning)
    if ctx.is_main and cfg.out:
        out = Path(cfg.out)
        atomic_write_text(out / "metrics.json", json.dumps(combined, indent=2))
        if cfg.plot:
            first = cfg.run_seeds[0]
            report.plot_curves({compare.label(k, h): results[(k, h, first)]["epochs"]
                                for k in cfg.run_kinds for h in compare.run_heads(cfg)},
                               out / "learning_curve.png", _title(cfg, data) + f" (seed {first})")
            report.plot_compare(combined, out / "compare.png", _title(cfg, data) + _seeds_note(cfg, tuning))
    return combined


def _seeds_note(cfg: TrainConfig, tuning: dict | None) -> str:
    seeds = ", ".join(map(str, cfg.run_seeds))
    tuned = f"lr and schedule tuned per kind and head on validation (tuning seeds {', '.join(map(str, cfg.run_tune_seeds))})"
    return f"\nseeds {seeds}; " + (tuned if tuning else "settings as given")


def _title(cfg: TrainConfig, data) -> str:
    head = f", heads {', '.join(compare.run_heads(cfg))}"
    return (f"{data.name}: {cfg.filters} filters {cfg.kernel}x{cfg.kernel}/{cfg.stride}, {cfg.layers} ansatz layers"
            f"{head}, gradient {cfg.gradient}" + (f", {cfg.shots} shots" if cfg.shots else ""))


def _combine(cfg: TrainConfig, ctx: DistContext, data: Splits, results: dict, tuning: dict | None) -> dict:
    first = next(iter(results.values()))
    return {"config": cfg.as_dict(), "versions": versions(), "device": str(ctx.device), "world_size": ctx.world,
            "data": first["data"], "seeds": list(cfg.run_seeds), "kinds": list(cfg.run_kinds),
            "heads": compare.run_heads(cfg), "tune_seeds": list(cfg.run_tune_seeds) if tuning else None,
            **compare.combine(cfg, results, tuning), "tuning": tuning}


__all__ = ["train"]
