"""Train hybrid QuCNN networks end to end: :func:`train` runs one model kind, or several to compare, on one
or several processes, and writes metrics, checkpoints and learning curves.

:func:`train` takes a :class:`~qucnn.train.config.TrainConfig` and returns the metrics dict it also writes to
``OUT/metrics.json``. Everything random is a pure function of ``seed``: the initial weights, the data order
of each epoch (:func:`~qucnn.train.config.data_order`), dropout masks and shot draws (their generators' states
go into every checkpoint). A run resumed from any checkpoint, mid-epoch included, therefore ends with the
same parameters, bit for bit on the CPU, as an uninterrupted run.

Example:
    metrics = train(TrainConfig(epochs=1, filters=2, limit_train=512, limit_test=256, progress=False))
    metrics["final"]["test_accuracy"] > 0.5
    # -> True
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from ..datasets import load_dataset, subset
from ..nn.models import MODEL_KINDS, build_model
from ..utils.checks import MissingExtraError, MissingFileError, UsageError
from ..utils.devices import resolve_device
from ..utils.files import atomic_write, atomic_write_text, check_writable_dir
from ..utils.provenance import versions
from . import report
from .config import TrainConfig, check_resume
from .distributed import DistContext, context_from_env, init_spawned, launched_by_torchrun, shutdown, spawn
from .loop import fit


def _load_data(cfg: TrainConfig):
    return subset(load_dataset(cfg.data, cfg.classes), cfg.limit_train, cfg.limit_test)


def _run_dirs(cfg: TrainConfig) -> dict[str, Path | None]:
    out = Path(cfg.out) if cfg.out else None
    kinds = MODEL_KINDS if cfg.compare else (cfg.kind,)
    return {k: (out / k if cfg.compare else out) if out else None for k in kinds}


def _check_outputs(cfg: TrainConfig) -> None:
    """Refuse, before anything is written, to resume from a bad checkpoint or to clobber a good one."""
    paths = {k: d / "checkpoint.pt" for k, d in _run_dirs(cfg).items() if d is not None}
    existing = {k: p for k, p in paths.items() if p.exists()}
    if cfg.resume:
        if not existing:
            raise MissingFileError(f"--resume: no checkpoint found ({', '.join(str(p) for p in paths.values())})")
        for kind, path in existing.items():
            check_resume(cfg, kind, path)
    elif existing and not cfg.overwrite:
        raise UsageError(f"{', '.join(map(str, existing.values()))} already exists: pass --resume to continue "
                         "that run, --overwrite to start afresh, or choose another --out")
    if cfg.out:
        check_writable_dir(cfg.out)
    if cfg.out and cfg.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            raise MissingExtraError("learning-curve plots need matplotlib: pip install matplotlib "
                                    "(or pass plot=False / --no-plot)") from err


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; return the metrics (also written to ``config.out``/metrics.json).

    Errors the user caused (bad option, missing data directory, unwritable output folder, unreadable or
    foreign checkpoint, no CUDA) raise :class:`~qucnn.utils.checks.UsageError` before any work.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train expects a TrainConfig, got {type(config).__name__}")
    cfg = config
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.nproc > 1 and launched_by_torchrun():
        raise UsageError("nproc > 1 under torchrun: torchrun already starts the processes (--nproc-per-node)")
    if device.type == "cuda" and cfg.nproc > torch.cuda.device_count():
        raise UsageError(f"nproc {cfg.nproc} on CUDA needs one GPU per process; {torch.cuda.device_count()} found")
    data = _load_data(cfg)
    build_model("quantum" if cfg.compare else cfg.kind, **cfg.model_options(),
                input_shape=tuple(data.train_images.shape[1:]), num_classes=data.num_classes)  # bad geometry: fail now
    _check_outputs(cfg)
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


def _run(cfg: TrainConfig, ctx: DistContext, data) -> dict:
    results = {}
    for kind, run_dir in _run_dirs(cfg).items():
        results[kind] = fit(kind, cfg, data, ctx, run_dir)
        if "stopped_at_step" in results[kind]:
            return results[kind]
    if not cfg.compare:
        return results[cfg.kind]
    combined = _combine(cfg, ctx, results)
    if ctx.is_main and cfg.out:
        out = Path(cfg.out)
        atomic_write_text(out / "metrics.json", json.dumps(combined, indent=2))
        raw = (out / "quantum" / "model.pt").read_bytes()
        atomic_write(out / "model.pt", lambda fh: fh.write(raw))
        if cfg.plot:
            report.plot_curves({k: r["epochs"] for k, r in results.items()}, out / "learning_curve.png",
                               _title(cfg, data))
    return combined


def _title(cfg: TrainConfig, data) -> str:
    return (f"{data.name}: {cfg.filters} filters {cfg.kernel}x{cfg.kernel}/{cfg.stride}, {cfg.layers} ansatz layers, "
            f"head {cfg.head!r}, gradient {cfg.gradient}" + (f", {cfg.shots} shots" if cfg.shots else ""))


def _combine(cfg: TrainConfig, ctx: DistContext, results: dict[str, dict]) -> dict:
    compare = {k: {**r["final"], "epochs": r["epochs"], "model": r["model"]} for k, r in results.items()}
    quantum = results["quantum"]
    return {"config": cfg.as_dict(), "versions": versions(), "device": str(ctx.device), "world_size": ctx.world,
            "data": quantum["data"], "compare": compare, "epochs": quantum["epochs"], "final": quantum["final"]}


__all__ = ["train"]
