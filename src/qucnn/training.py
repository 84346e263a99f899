"""Train hybrid QuCNN networks end to end: the loop, metrics, checkpoints, resume, data parallelism.

:func:`train` takes a :class:`TrainConfig` and returns the metrics dict it also writes to
``OUT/metrics.json``. Everything random is a pure function of ``seed``: the initial weights, the data
order of each epoch (:func:`data_order`, a function of ``(seed, epoch)``), dropout masks and shot draws
(their generators' states go into every checkpoint). A run resumed from any checkpoint, mid-epoch
included, therefore ends with the same parameters, bit for bit on the CPU, as an uninterrupted run.

Example:
    >>> metrics = train(TrainConfig(epochs=1, filters=2, limit_train=512, limit_test=256,
    ...                             progress=False))  # doctest: +SKIP
    >>> metrics["final"]["test_accuracy"] > 0.5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import training_report as report
from .checkpoint import atomic_write, atomic_write_text, load_checkpoint
from .distributed import (DistContext, all_sum, context_from_env, init_spawned, launched_by_torchrun,
                          resolve_device, shard_of, shutdown, spawn)
from .layer import GRADIENT_MODES
from .models import DEFAULT_HEAD, MODEL_KINDS, build_model, derive_seed

DTYPES = {"float32": torch.float32, "float64": torch.float64}
SCHEDULES = ("onecycle", "constant")
#: Options that define the computation; ``--resume`` must repeat them (``epochs`` too, unless the
#: schedule is constant).
RUN_KEYS = ("epochs", "batch_size", "lr", "schedule", "filters", "kernel", "stride", "layers", "shots", "gradient",
            "gradient_shots", "gradient_budget", "head", "dtype", "seed", "data", "limit_train", "limit_test")
EVAL_BATCH = 500


@dataclass
class TrainConfig:
    """Everything a training run depends on (the CLI's options, one field each).

    ``kind``: ``quantum`` | ``frozen`` | ``classical``; ``compare=True`` trains all three in turn.
    ``schedule="onecycle"``: the one-cycle policy of ``torch.optim.lr_scheduler.OneCycleLR``
    (``pct_start=0.2``, peak ``lr``) as a pure function of the step; ``"constant"``: Adam at ``lr``.
    ``checkpoint_every``: also checkpoint every N optimizer steps (epochs always end with one).
    ``max_steps``: stop after N optimizer steps as if killed (no final files): for tests and drills.
    ``overwrite``: start afresh even if ``out`` holds a checkpoint (refused otherwise).
    ``threads``: ``torch.set_num_threads`` per process (default: torch's choice; spawned processes share
    the cores). On a busy machine 1 thread can be much faster than an oversubscribed 2.
    """

    kind: str = "quantum"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2
    schedule: str = "onecycle"
    filters: int = 8
    kernel: int = 4
    stride: int = 1
    layers: int = 3
    shots: int | None = None
    gradient: str = "autograd"
    gradient_shots: int | None = None
    gradient_budget: int | None = None
    head: str = DEFAULT_HEAD
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    data: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int | None = None
    compare: bool = False
    nproc: int = 1
    max_steps: int | None = None
    progress: bool = True
    plot: bool = True
    threads: int | None = None

    def validate(self) -> None:
        """Raise ValueError/TypeError naming the bad option (nothing is read or written)."""
        def whole(name: str, low: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}{' or None' if optional else ''}, got {v!r}")

        for name in ("epochs", "batch_size", "filters", "kernel", "stride", "layers", "nproc"):
            whole(name, 1)
        for name in ("shots", "gradient_shots", "gradient_budget", "limit_train", "limit_test",
                     "checkpoint_every", "max_steps", "threads"):
            whole(name, 1, optional=True)
        whole("seed", 0)
        checks = [("kind", MODEL_KINDS), ("gradient", GRADIENT_MODES), ("schedule", SCHEDULES), ("dtype", tuple(DTYPES))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.gradient == "sampled" and self.gradient_budget is None:
            raise ValueError("gradient 'sampled' needs gradient_budget (total shots per backward)")
        if self.resume and not self.out:
            raise ValueError("resume needs out (the directory holding checkpoint.pt)")
        if not isinstance(self.head, str):
            raise TypeError(f"head must be a spec string like {DEFAULT_HEAD!r}, got {type(self.head).__name__}")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = None if self.data is None else str(Path(self.data).resolve())
        return d


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled indices of epoch ``epoch`` (0-based): a pure function of ``(seed, epoch, n)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))


def one_cycle(step: int, total: int, max_lr: float, pct_start: float = 0.2) -> tuple[float, float]:
    """``(lr, beta1)`` at optimizer step ``step`` of ``total``, as ``OneCycleLR`` (cosine, div 25, final div 1e4,
    momentum 0.95 -> 0.85 -> 0.95) computes them."""
    initial, peak = max_lr / 25, max_lr
    phases = [(pct_start * total - 1, initial, peak, 0.95, 0.85), (total - 1, peak, initial / 1e4, 0.85, 0.95)]
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end > start else 1.0
            cos = math.cos(math.pi * pct) + 1
            return lr1 + (lr0 - lr1) / 2 * cos, m1 + (m0 - m1) / 2 * cos
        start = end
    raise AssertionError("unreachable")


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: DistContext = DistContext(),
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``; with several processes each takes a
    contiguous part and the sums are reduced. Returns ``(loss, accuracy)``."""
    model.eval()
    part, _ = shard_of(torch.arange(len(x)), ctx)
    loss = correct = 0.0
    with torch.no_grad():
        for i in range(0, len(part), batch_size):
            idx = part[i:i + batch_size].to(x.device)
            logits = model(x[idx])
            loss += F.cross_entropy(logits, y[idx], reduction="sum").item()
            correct += (logits.argmax(1) == y[idx]).sum().item()
    loss, correct = all_sum([loss, correct], ctx)
    return loss / len(x), correct / len(x)


def _load_data(cfg: TrainConfig):
    from .datasets import load_dataset, subset

    return subset(load_dataset(cfg.data), cfg.limit_train, cfg.limit_test)


def _run_dirs(cfg: TrainConfig) -> dict[str, Path | None]:
    out = Path(cfg.out) if cfg.out else None
    kinds = MODEL_KINDS if cfg.compare else (cfg.kind,)
    return {k: (out / k if cfg.compare else out) if out else None for k in kinds}


def check_resume(cfg: TrainConfig, kind: str, path: Path) -> dict:
    """Load ``path`` and check that it belongs to this run (ValueError naming the differing options)."""
    ckpt = load_checkpoint(path)
    saved = ckpt.get("config", {})
    keys = [k for k in RUN_KEYS if not (k == "epochs" and cfg.schedule == "constant")]
    now = cfg.as_dict()
    diffs = [f"{k} (saved {saved.get(k)!r}, now {now[k]!r})" for k in keys if saved.get(k) != now[k]]
    if ckpt.get("kind") != kind:
        diffs.insert(0, f"model kind (saved {ckpt.get('kind')!r}, now {kind!r})")
    if diffs:
        raise ValueError(f"cannot resume from {path}: it was written by a different run; differing: "
                         f"{'; '.join(diffs)}")
    return ckpt


def _check_outputs(cfg: TrainConfig) -> None:
    """Refuse, before anything is written, to resume from a bad checkpoint or to clobber a good one."""
    paths = {k: d / "checkpoint.pt" for k, d in _run_dirs(cfg).items() if d is not None}
    existing = {k: p for k, p in paths.items() if p.exists()}
    if cfg.resume:
        if not existing:
            raise FileNotFoundError(f"--resume: no checkpoint found ({', '.join(str(p) for p in paths.values())})")
        for kind, path in existing.items():
            check_resume(cfg, kind, path)
    elif existing and not cfg.overwrite:
        raise ValueError(f"{', '.join(map(str, existing.values()))} already exists: pass --resume to continue "
                         "that run, --overwrite to start afresh, or choose another --out")
    if cfg.out and cfg.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            raise ImportError("learning-curve plots need matplotlib: pip install qucnn[plots] "
                              "(or pass plot=False / --no-plot)") from err


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; return the metrics (also written to ``config.out``/metrics.json).

    Errors the user caused (bad option, missing data directory, unreadable or foreign checkpoint,
    no CUDA) raise ValueError / FileNotFoundError before anything is written.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train expects a TrainConfig, got {type(config).__name__}")
    cfg = config
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.nproc > 1 and launched_by_torchrun():
        raise ValueError("nproc > 1 under torchrun: torchrun already starts the processes (--nproc-per-node)")
    if device.type == "cuda" and cfg.nproc > torch.cuda.device_count():
        raise ValueError(f"nproc {cfg.nproc} on CUDA needs one GPU per process; {torch.cuda.device_count()} found")
    data = _load_data(cfg)
    build_model("quantum" if cfg.compare else cfg.kind, cfg.filters, cfg.kernel, cfg.stride, cfg.layers, cfg.shots,
                cfg.gradient, cfg.gradient_shots, cfg.gradient_budget, cfg.seed, cfg.head,
                tuple(data.train_images.shape[1:]), data.num_classes)  # bad geometry or head: fail now
    _check_outputs(cfg)
    if cfg.nproc > 1:
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "metrics.json"
            spawn(_spawn_worker, cfg.nproc, (cfg, str(result)))
            return json.loads(result.read_text())
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    import torch.distributed as dist

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
    from .training_loop import fit

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
    return {"config": cfg.as_dict(), "versions": report.versions(), "device": str(ctx.device), "world_size": ctx.world,
            "data": quantum["data"], "compare": compare, "epochs": quantum["epochs"], "final": quantum["final"]}


__all__ = ["DTYPES", "RUN_KEYS", "SCHEDULES", "TrainConfig", "check_resume", "data_order", "evaluate", "one_cycle",
           "train"]
