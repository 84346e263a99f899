"""The training loop of one model (:func:`fit`), with its checkpoints and their restoration.

A step: this rank's shard of the global batch (the epoch's :func:`~qucnn.train.config.data_order` sliced by
batch), the learning rate of that global step, forward, ``sum loss * world / B`` (DDP averages, giving
the global-batch mean's gradient), backward, Adam. A checkpoint every ``checkpoint_every`` steps and at
the end of every epoch holds the model, Adam, the position ``(epoch, batch, step)``, the epoch's partial
sums, the quantum cost so far, and every generator state of every rank (:mod:`qucnn.train.state`). A resume
rebuilds the model, loads all of that, and skips the batches already done.

Each epoch ends with an evaluation on the validation hold-out (when there is one); the test set is
evaluated once, after the last epoch, so nothing chosen during training can have seen it.

A run that writes files stops with :class:`~qucnn.train.state.TrainingDiverged` as soon as its loss, its weights or its Adam
state stop being finite (checked every step on one CPU process; at every checkpoint and epoch end
otherwise, over all ranks), before any non-finite checkpoint or model is written: the last checkpoint on
disk stays the last finite one.

Example:
    from qucnn.train import TrainConfig, make_splits
    fit("quantum", TrainConfig(epochs=1), make_splits(data), DistContext(), None)["final"]["test_accuracy"]
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..nn.layer import QuConv2d
from ..nn.models import HybridNet, build_model, set_shard
from ..utils.devices import reads_back_freely
from ..utils.files import atomic_save, atomic_write_text
from ..utils.provenance import versions
from ..utils.seeds import derive_seed
from . import report
from .config import DTYPES, EVAL_BATCH, Splits, TrainConfig, data_order, one_cycle
from .distributed import DistContext, all_sum, shard_of, wrap_ddp
from .state import (RunState, TrainingDiverged, check_finite, global_cost, global_partials, restore_run_checkpoint,
                    save_run_checkpoint)


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


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _circuits_done(cfg: TrainConfig, layer: QuConv2d | None, st: RunState) -> dict:
    """Circuits and shots run so far this epoch, for the progress bar of a circuit backend."""
    if layer is None or cfg.backend == "torch":
        return {}
    done = report.add_costs(st.cost, layer.total_cost())
    return {"circuits": sum(c["circuits"] for c in done.values()), "shots": report.total_shots(done)}


def _write_outputs(run_dir: Path, metrics: dict, model: HybridNet, cfg: TrainConfig, title: str) -> None:
    atomic_save(model.state_dict(), run_dir / "model.pt")
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    if cfg.plot:
        report.plot_curves({metrics["kind"]: metrics["epochs"]}, run_dir / "learning_curve.png", title)


def _metrics(kind: str, cfg: TrainConfig, ctx: DistContext, data, model: HybridNet, history: list,
             test: tuple[float, float, dict | None] | None) -> dict:
    layer = model.quantum_layer
    last = history[-1]
    seconds = sum(e["seconds"] for e in history)
    cost = eval_cost = None
    if layer is not None:
        cost, eval_cost = report.zero_cost(), report.zero_cost()
        for e in history:
            cost, eval_cost = report.add_costs(cost, e["quantum_cost"]), report.add_costs(eval_cost, e["eval_quantum_cost"])
    final = {"test_accuracy": None if test is None else test[1], "test_loss": None if test is None else test[0],
             "validation_accuracy": last.get("validation_accuracy"), "validation_loss": last.get("validation_loss"),
             "train_loss": last["train_loss"], "train_accuracy": last["train_accuracy"],
             "epochs": len(history), "seconds": seconds,
             "images_per_s": sum(e["images"] for e in history) / seconds if seconds > 0 else None,
             "quantum_cost": cost, "eval_quantum_cost": eval_cost,
             "test_quantum_cost": None if test is None else test[2],
             "total_circuits": None if cost is None else sum(c["circuits"] for c in cost.values()),
             "total_shots": report.total_shots(cost)}
    params = list(model.parameters())
    first = list(model.first.parameters())
    model_info = {"kind": kind, "parameters": sum(p.numel() for p in params),
                  "trainable": sum(p.numel() for p in params if p.requires_grad),
                  "first_layer_parameters": sum(p.numel() for p in first),
                  "first_layer_trainable": sum(p.numel() for p in first if p.requires_grad),
                  "quantum_parameters": 0 if layer is None else layer.theta.numel(),
                  "n_qubits": None if layer is None else layer.n_qubits,
                  "swap_test_qubits": None if layer is None else 2 * layer.n_qubits + 1, "repr": repr(model)}
    return {"kind": kind, "config": cfg.as_dict(), "versions": versions(), "device": str(ctx.device),
            "world_size": ctx.world, "threads": torch.get_num_threads(),
            "data": {"name": data.name, "train": len(data.train_images), "validation": len(data.validation_images),
                     "test": None if test is None else len(data.test_images), "classes": data.num_classes},
            "model": model_info, "epochs": history, "final": final}


def fit(kind: str, cfg: TrainConfig, data: Splits, ctx: DistContext, run_dir: Path | None,
        evaluate_test: bool = True) -> dict:
    """Train one model of ``kind`` on ``data`` (:func:`~qucnn.train.config.make_splits`); write
    ``run_dir``/{checkpoint.pt, model.pt, metrics.json, PNG} on rank 0. The test set is evaluated once, at the
    end, unless ``evaluate_test`` is false (tuning runs): then ``final["test_accuracy"]`` is ``None``.

    Returns its metrics, or ``{"stopped_at_step": N, ...}`` when ``cfg.max_steps`` cut it short.
    """
    dtype, dev = DTYPES[cfg.dtype], ctx.device
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        torch.manual_seed(derive_seed(cfg.seed, "torch", ctx.rank))
        model = build_model(kind, **cfg.model_options(), input_shape=tuple(data.train_images.shape[1:]),
                            num_classes=data.num_classes).to(device=dev, dtype=dtype)
        layer = model.quantum_layer
        if layer is not None:  # shot draws: one independent stream per rank (rank 0's = the 1-process stream)
            layer.generator = _generator(dev, derive_seed(cfg.seed, "shots", ctx.rank))
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        st = RunState()
        ckpt_path = None if run_dir is None else run_dir / "checkpoint.pt"
        if cfg.resume and ckpt_path is not None and ckpt_path.exists():
            restore_run_checkpoint(ckpt_path, kind, cfg, model, opt, st, ctx)
        return _loop(kind, cfg, data, ctx, run_dir, model, opt, st, evaluate_test)


@dataclass
class _Run:
    """What the steps and epochs of one run share: the model, its optimizer, the data on the device, the run's
    sizes and where it writes."""

    kind: str
    cfg: TrainConfig
    ctx: DistContext
    model: HybridNet
    net: torch.nn.Module  # the model, wrapped for DDP when several processes train it
    opt: torch.optim.Optimizer
    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_va: torch.Tensor
    y_va: torch.Tensor
    run_dir: Path | None
    per_epoch: int  # global batches per epoch
    total: int  # optimizer steps of the whole run: the length of the one-cycle schedule
    show: bool  # progress bars and their postfix (rank 0, when asked for)
    every_step: bool  # one process that reads the loss for free: check it after every step

    @property
    def layer(self) -> QuConv2d | None:
        """The model's quantum layer, ``None`` for a classical model."""
        return self.model.quantum_layer

    @property
    def ckpt_path(self) -> Path | None:
        """Where the run's checkpoint goes, ``None`` for a run that writes nothing (tuning)."""
        return None if self.run_dir is None else self.run_dir / "checkpoint.pt"


def _loop(kind: str, cfg: TrainConfig, data: Splits, ctx: DistContext, run_dir: Path | None, model: HybridNet,
          opt: torch.optim.Optimizer, st: RunState, evaluate_test: bool) -> dict:
    """Train from ``st`` to the last epoch, then evaluate on the test set once and write the outputs."""
    dtype, dev = DTYPES[cfg.dtype], ctx.device
    x_tr, y_tr = data.train_images.to(dev, dtype), data.train_labels.to(dev)
    x_va, y_va = data.validation_images.to(dev, dtype), data.validation_labels.to(dev)
    per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    run = _Run(kind, cfg, ctx, model, wrap_ddp(model, ctx), opt, x_tr, y_tr, x_va, y_va, run_dir, per_epoch,
               cfg.epochs * per_epoch, cfg.progress and ctx.is_main, not ctx.enabled and reads_back_freely(dev))
    while st.epoch < cfg.epochs:
        if not _train_epoch(run, st):
            return {"kind": kind, "stopped_at_step": st.step, "epochs": st.history}
        _end_epoch(run, st)
    return _finish(run, st, data, evaluate_test)


def _train_epoch(run: _Run, st: RunState) -> bool:
    """Train the batches of epoch ``st.epoch`` not done yet, checkpointing every ``cfg.checkpoint_every`` steps
    within it. Returns False when ``cfg.max_steps`` stopped the run (as if killed: its last steps unsaved)."""
    cfg, bs = run.cfg, run.cfg.batch_size
    order = data_order(cfg.seed, st.epoch, len(run.x_tr))
    if run.layer is not None:
        run.layer.reset_cost()
    run.net.train()
    bar = tqdm(total=run.per_epoch, initial=st.batch, disable=not run.show, leave=False, file=sys.stderr,
               desc=f"{run.kind} epoch {st.epoch + 1}/{cfg.epochs}", unit="batch")
    sums = torch.zeros(2, dtype=torch.float64, device=run.ctx.device)  # this leg's loss sum and correct count
    tic = time.perf_counter()
    for b in range(st.batch, run.per_epoch):
        loss_sum, lr = _step(run, st, order[b * bs:(b + 1) * bs], sums)
        st.step, st.batch = st.step + 1, b + 1
        if run.every_step:  # one CPU process reads the loss for free: stop at the first bad step
            check_finite(run.kind, cfg, st, run.ckpt_path, float(loss_sum))
        bar.update()
        if run.show and (b % 10 == 0 or b == run.per_epoch - 1):
            _show_progress(run, st, bar, sums, lr)
        stop = cfg.max_steps is not None and st.step >= cfg.max_steps
        if (cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and st.batch < run.per_epoch) or stop:
            st.seconds += time.perf_counter() - tic
            _fold_sums(st, sums)
            if not stop:
                save_run_checkpoint(run.ckpt_path, run.kind, cfg, run.model, run.opt, st, run.ctx)
            tic = time.perf_counter()
        if stop:
            bar.close()
            return False
    st.seconds += time.perf_counter() - tic
    bar.close()
    _fold_sums(st, sums)
    return True


def _step(run: _Run, st: RunState, idx: torch.Tensor, sums: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One optimizer step, at the learning rate of step ``st.step``, on this rank's shard of the global batch
    ``idx`` (training-set indices, ``(B,)``): adds the shard's loss sum and correct count to ``sums`` and its
    size to ``st.seen``. Returns the shard's loss sum (detached) and the learning rate."""
    ctx, opt = run.ctx, run.opt
    local, offset = shard_of(idx, ctx)
    lr = _set_learning_rate(run, st.step)
    set_shard(run.model, offset, len(idx))
    local = local.to(ctx.device)
    logits = run.net(run.x_tr[local])
    loss_sum = F.cross_entropy(logits, run.y_tr[local], reduction="sum")
    opt.zero_grad(set_to_none=True)
    (loss_sum * (ctx.world / len(idx))).backward()  # DDP averages: the global-batch mean's gradient
    opt.step()
    hits = (logits.argmax(1) == run.y_tr[local]).sum()
    sums += torch.stack([loss_sum.detach().to(torch.float64), hits.to(torch.float64)])
    st.seen += len(local)
    return loss_sum.detach(), lr


def _set_learning_rate(run: _Run, step: int) -> float:
    """Set the optimizer's learning rate (and, one-cycle, Adam's beta1) to those of global step ``step``."""
    cfg = run.cfg
    lr, beta1 = one_cycle(step, run.total, cfg.lr) if cfg.schedule == "onecycle" else (cfg.lr, None)
    for group in run.opt.param_groups:
        group["lr"] = lr
        if beta1 is not None:
            group["betas"] = (beta1, group["betas"][1])
    return lr


def _fold_sums(st: RunState, sums: torch.Tensor) -> None:
    """Move the loss sum and correct count accumulated on the device since the last read into ``st``."""
    lsum, corr = sums.tolist()
    st.loss_sum, st.correct = st.loss_sum + lsum, st.correct + int(corr)
    sums.zero_()


def _show_progress(run: _Run, st: RunState, bar: tqdm, sums: torch.Tensor, lr: float) -> None:
    lsum, corr = sums.tolist()
    done = max(st.seen, 1)
    bar.set_postfix(loss=f"{(st.loss_sum + lsum) / done:.4f}", acc=f"{(st.correct + corr) / done:.3f}",
                    lr=f"{lr:.2g}", **_circuits_done(run.cfg, run.layer, st))


def _end_epoch(run: _Run, st: RunState) -> None:
    """Close epoch ``st.epoch``: reduce its sums over ranks and check them finite, evaluate on the validation
    hold-out, append its history entry, print its line, and checkpoint at the start of the next epoch."""
    layer, ctx = run.layer, run.ctx
    partial = global_partials(st, layer, ctx)
    check_finite(run.kind, run.cfg, st, run.ckpt_path, partial["loss_sum"])
    if layer is not None:
        layer.reset_cost()
    tic = time.perf_counter()
    val_loss, val_acc = evaluate(run.model, run.x_va, run.y_va, ctx) if len(run.x_va) else (None, None)
    eval_seconds = time.perf_counter() - tic
    entry = {"epoch": st.epoch + 1, "train_loss": partial["loss_sum"] / partial["seen"],
             "train_accuracy": partial["correct"] / partial["seen"], "validation_loss": val_loss,
             "validation_accuracy": val_acc, "seconds": st.seconds, "eval_seconds": eval_seconds,
             "images": partial["seen"], "images_per_s": partial["seen"] / st.seconds if st.seconds > 0 else None,
             "steps": st.step, "lr": run.opt.param_groups[0]["lr"], "quantum_cost": partial["cost"],
             "eval_quantum_cost": global_cost(layer, report.zero_cost(), ctx)}
    st.history.append(entry)
    if run.show or (ctx.is_main and run.run_dir is not None):  # a line per epoch also in a log without bars
        _print_epoch(run, entry)
    st.new_epoch()
    save_run_checkpoint(run.ckpt_path, run.kind, run.cfg, run.model, run.opt, st, ctx)


def _print_epoch(run: _Run, entry: dict) -> None:
    val_loss, val_acc = entry["validation_loss"], entry["validation_accuracy"]
    val = "" if val_acc is None else f"validation loss {val_loss:.4f}, validation acc {100 * val_acc:.2f}%, "
    tqdm.write(f"{run.kind} epoch {entry['epoch']}/{run.cfg.epochs}: train loss {entry['train_loss']:.4f}, {val}"
               f"{entry['seconds']:.1f} s ({entry['images_per_s']:.0f} img/s)", file=sys.stderr)


def _finish(run: _Run, st: RunState, data: Splits, evaluate_test: bool) -> dict:
    """Evaluate on the test set once, after training (nothing above could look at it), unless ``evaluate_test``
    is false; write the outputs on rank 0. Returns the run's metrics."""
    layer, ctx, cfg = run.layer, run.ctx, run.cfg
    test = None
    if evaluate_test:
        if layer is not None:
            layer.reset_cost()
        test = (*evaluate(run.model, data.test_images.to(ctx.device, DTYPES[cfg.dtype]),
                          data.test_labels.to(ctx.device), ctx), global_cost(layer, report.zero_cost(), ctx))
    metrics = _metrics(run.kind, cfg, ctx, data, run.model, st.history, test)
    if ctx.is_main and run.run_dir is not None:
        _write_outputs(run.run_dir, metrics, run.model, cfg, f"{data.name}: {run.kind}, {cfg.filters} filters "
                       f"{cfg.kernel}x{cfg.kernel}, head {cfg.head!r}, gradient {cfg.gradient}")
    return metrics


__all__ = ["TrainingDiverged", "evaluate", "fit"]
