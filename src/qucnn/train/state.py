"""Where a training run stands (:class:`RunState`), saved to a checkpoint, restored from one, and checked
finite before it is saved.

A checkpoint holds the model, Adam, the position ``(epoch, batch, step)``, the epoch's partial sums reduced
over ranks, the quantum cost so far, and every generator state of every rank: :func:`restore_run_checkpoint`
rebuilds exactly what :func:`save_run_checkpoint` saw, so a resumed run repeats the uninterrupted one bit for
bit. A run that writes files stops with :class:`TrainingDiverged` (:func:`check_finite`) before any non-finite
checkpoint is written: the last checkpoint on disk stays the last finite one.

Example:
    st = RunState()
    restore_run_checkpoint(Path("out/checkpoint.pt"), "quantum", cfg, model, opt, st, DistContext())
    (st.epoch, st.batch, st.step)
    # -> (1, 40, 165)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..nn.layer import QuConv2d
from ..nn.models import HybridNet, dropout_generators
from ..utils.checks import RunError
from . import report
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, non_finite_entries, save_checkpoint
from .config import TrainConfig, check_resume
from .distributed import DistContext, all_sum, gather_objects


class TrainingDiverged(RunError):
    """The loss, the weights or the optimizer state of a run became NaN or infinite; the message says when
    and which checkpoint was kept (the CLI exits with status 1)."""


@dataclass
class RunState:
    """Where the run is, and the sums of the epoch under way (this rank's part, plus the restored part on rank 0).

    Example:
        >>> st = RunState(epoch=0, batch=7, step=7)
        >>> st.new_epoch()
        >>> (st.epoch, st.batch, st.step)
        (1, 0, 7)
    """

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimizer steps completed
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    cost: dict = field(default_factory=report.zero_cost)  # restored quantum cost of the epoch under way
    history: list = field(default_factory=list)
    saved_step: int | None = None  # the step of the last checkpoint on disk

    def new_epoch(self) -> None:
        """Count the epoch under way as completed and start the next one's sums at zero."""
        self.epoch, self.batch = self.epoch + 1, 0
        self.loss_sum, self.correct, self.seen, self.seconds = 0.0, 0, 0, 0.0
        self.cost = report.zero_cost()


def global_cost(layer: QuConv2d | None, offset: dict, ctx: DistContext) -> dict | None:
    """The quantum cost since the layer's last reset plus ``offset`` (a cost dict), summed over ranks; ``None``
    for a model without a quantum layer.

    Example:
        global_cost(model.quantum_layer, report.zero_cost(), DistContext())["forward"]["circuits"]
        # -> 37472
    """
    if layer is None:
        return None
    local = report.add_costs(offset, layer.total_cost())
    return report.cost_from_vector(all_sum(report.cost_to_vector(local), ctx, torch.int64))


def global_partials(st: RunState, layer: QuConv2d | None, ctx: DistContext) -> dict:
    """The epoch's sums so far over all ranks: ``{"loss_sum", "correct", "seen", "seconds", "cost"}`` (the
    seconds are this rank's).

    Example:
        global_partials(RunState(), None, DistContext())
        # -> {'loss_sum': 0.0, 'correct': 0, 'seen': 0, 'seconds': 0.0, 'cost': None}
    """
    loss_sum, correct, seen = all_sum([st.loss_sum, st.correct, st.seen], ctx)
    return {"loss_sum": loss_sum, "correct": int(correct), "seen": int(seen), "seconds": st.seconds,
            "cost": global_cost(layer, st.cost, ctx)}


def _diverged(kind: str, cfg: TrainConfig, st: RunState, path: Path, what: str) -> TrainingDiverged:
    kept = (f"the last finite checkpoint, step {st.saved_step}, is kept in {path}" if st.saved_step is not None
            else "no checkpoint had been written yet")
    seed = f", seed {cfg.seed}" if cfg.compare else ""
    epoch = st.epoch + 1 if st.batch else st.epoch  # batch 0: the epoch just completed
    return TrainingDiverged(f"training diverged ({kind}{seed}): {what} by step {st.step} (epoch {epoch}); "
                            f"{kept}. Try a lower --lr")


def check_finite(kind: str, cfg: TrainConfig, st: RunState, path: Path | None, loss_sum: float,
                 model: HybridNet | None = None, opt: torch.optim.Optimizer | None = None) -> None:
    """Raise :class:`TrainingDiverged` when the loss sum (and, given ``model``, the weights or the Adam state)
    is not finite. Every rank gets the same answer: the loss sum is reduced over ranks, the weights agree.
    A run that writes nothing (``path`` is ``None``: tuning) is never stopped: a diverged setting scores badly.

    Example:
        check_finite("quantum", cfg, st, Path("out/checkpoint.pt"), float("nan"))
        # -> TrainingDiverged: training diverged (quantum): the training loss became nan by step 2 (epoch 1); ...
    """
    if path is None:
        return
    if not math.isfinite(loss_sum):
        raise _diverged(kind, cfg, st, path, f"the training loss became {loss_sum}")
    if model is not None:
        bad = non_finite_entries({"model": model.state_dict(), "optimizer": opt.state_dict()})
        if bad:
            raise _diverged(kind, cfg, st, path, f"{bad[0]} became non-finite")


def save_run_checkpoint(path: Path | None, kind: str, cfg: TrainConfig, model: HybridNet,
                        opt: torch.optim.Optimizer, st: RunState, ctx: DistContext) -> None:
    """Checkpoint the run at ``st`` to ``path`` (nothing when ``None``). All ranks call this (it gathers their
    generator states); rank 0 writes ``path`` atomically, after checking that everything in it is finite.

    Example:
        save_run_checkpoint(Path("out/checkpoint.pt"), "quantum", cfg, model, opt, st, DistContext())
    """
    if path is None:
        return
    layer = model.quantum_layer
    partial = global_partials(st, layer, ctx)
    check_finite(kind, cfg, st, path, partial["loss_sum"], model, opt)
    rngs = gather_objects({"torch": torch.get_rng_state(),
                           "layer": None if layer is None else layer.generator.get_state().cpu()}, ctx)
    if not ctx.is_main:
        st.saved_step = st.step
        return
    save_checkpoint({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": kind, "config": cfg.as_dict(),
        "world_size": ctx.world, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "epoch": st.epoch, "batch": st.batch, "step": st.step, "partial": partial, "history": st.history,
        "rng": {"torch": [r["torch"] for r in rngs], "layer": [r["layer"] for r in rngs],
                "dropout": [g.get_state() for g in dropout_generators(model)]},
    }, path)
    st.saved_step = st.step


def restore_run_checkpoint(path: Path, kind: str, cfg: TrainConfig, model: HybridNet, opt: torch.optim.Optimizer,
                           st: RunState, ctx: DistContext) -> None:
    """Load the checkpoint at ``path`` (checked against ``cfg`` and ``kind``) into ``model``, ``opt``, ``st``
    and this rank's generators: the global torch one, the layer's shot stream and the dropout generators.

    Example:
        restore_run_checkpoint(Path("out/checkpoint.pt"), "quantum", cfg, model, opt, st, DistContext())
    """
    ckpt = check_resume(cfg, kind, path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    st.epoch, st.batch, st.step, st.history = ckpt["epoch"], ckpt["batch"], ckpt["step"], ckpt["history"]
    st.saved_step = st.step
    if ctx.is_main:  # the epoch's sums so far were reduced over ranks when saved: count them once
        p = ckpt["partial"]
        st.loss_sum, st.correct, st.seen, st.seconds = p["loss_sum"], p["correct"], p["seen"], p["seconds"]
        st.cost = p["cost"] or report.zero_cost()
    rng = ckpt["rng"]
    # a different process count keeps the fresh per-rank streams of ranks the checkpoint did not have
    if ctx.rank < len(rng["torch"]):
        torch.set_rng_state(rng["torch"][ctx.rank])
    layer = model.quantum_layer
    if layer is not None and ctx.rank < len(rng["layer"]) and rng["layer"][ctx.rank] is not None:
        layer.generator.set_state(rng["layer"][ctx.rank])
    for gen, state in zip(dropout_generators(model), rng["dropout"]):
        gen.set_state(state)


__all__ = ["RunState", "TrainingDiverged", "check_finite", "global_cost", "global_partials",
           "restore_run_checkpoint", "save_run_checkpoint"]
