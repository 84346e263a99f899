"""The training loop of one model (:func:`fit`), with its checkpoints and their restoration.

A step: this rank's shard of the global batch (the epoch's :func:`~qucnn.train.config.data_order` sliced by
batch), the learning rate of that global step, forward, ``sum loss * world / B`` (DDP averages, giving
the global-batch mean's gradient), backward, Adam. A checkpoint every ``checkpoint_every`` steps and at
the end of every epoch holds the model, Adam, the position ``(epoch, batch, step)``, the epoch's partial
sums, the quantum cost so far, and every generator state of every rank. A resume rebuilds the model,
loads all of that, and skips the batches already done.

Each epoch ends with an evaluation on the validation hold-out (when there is one); the test set is
evaluated once, after the last epoch, so nothing chosen during training can have seen it.

A run that writes files stops with :class:`TrainingDiverged` as soon as its loss, its weights or its Adam
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
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..nn.layer import QuConv2d
from ..nn.models import HybridNet, build_model, dropout_generators, set_shard
from ..utils.checks import RunError
from ..utils.devices import reads_back_freely
from ..utils.files import atomic_save, atomic_write_text
from ..utils.provenance import versions
from ..utils.seeds import derive_seed
from . import report
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, non_finite_entries, save_checkpoint
from .config import DTYPES, EVAL_BATCH, Splits, TrainConfig, check_resume, data_order, one_cycle
from .distributed import DistContext, all_sum, gather_objects, shard_of, wrap_ddp


class TrainingDiverged(RunError):
    """The loss, the weights or the optimizer state of a run became NaN or infinite; the message says when
    and which checkpoint was kept (the CLI exits with status 1)."""


@dataclass
class _State:
    """Where the run is, and the sums of the epoch under way (this rank's part, plus the restored part on rank 0)."""

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
        self.epoch, self.batch = self.epoch + 1, 0
        self.loss_sum, self.correct, self.seen, self.seconds = 0.0, 0, 0, 0.0
        self.cost = report.zero_cost()


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


def _global_cost(layer: QuConv2d | None, offset: dict, ctx: DistContext) -> dict | None:
    """The cost since the layer's last reset plus ``offset``, summed over ranks."""
    if layer is None:
        return None
    local = report.add_costs(offset, layer.total_cost())
    return report.cost_from_vector(all_sum(report.cost_to_vector(local), ctx, torch.int64))


def _global_partials(st: _State, layer: QuConv2d | None, ctx: DistContext) -> dict:
    loss_sum, correct, seen = all_sum([st.loss_sum, st.correct, st.seen], ctx)
    return {"loss_sum": loss_sum, "correct": int(correct), "seen": int(seen), "seconds": st.seconds,
            "cost": _global_cost(layer, st.cost, ctx)}


def _circuits_done(cfg: TrainConfig, layer: QuConv2d | None, st: _State) -> dict:
    """Circuits and shots run so far this epoch, for the progress bar of a circuit backend."""
    if layer is None or cfg.backend == "torch":
        return {}
    done = report.add_costs(st.cost, layer.total_cost())
    return {"circuits": sum(c["circuits"] for c in done.values()), "shots": report.total_shots(done)}


def _diverged(kind: str, cfg: TrainConfig, st: _State, path: Path, what: str) -> TrainingDiverged:
    kept = (f"the last finite checkpoint, step {st.saved_step}, is kept in {path}" if st.saved_step is not None
            else "no checkpoint had been written yet")
    seed = f", seed {cfg.seed}" if cfg.compare else ""
    epoch = st.epoch + 1 if st.batch else st.epoch  # batch 0: the epoch just completed
    return TrainingDiverged(f"training diverged ({kind}{seed}): {what} by step {st.step} (epoch {epoch}); "
                            f"{kept}. Try a lower --lr")


def _check_finite(kind: str, cfg: TrainConfig, st: _State, path: Path | None, loss_sum: float,
                  model: HybridNet | None = None, opt=None) -> None:
    """Raise :class:`TrainingDiverged` when the loss sum (and, given ``model``, the weights or the Adam state)
    is not finite. Every rank gets the same answer: the loss sum is reduced over ranks, the weights agree."""
    if path is None:  # a tuning run writes nothing: a diverged setting just scores badly
        return
    if not math.isfinite(loss_sum):
        raise _diverged(kind, cfg, st, path, f"the training loss became {loss_sum}")
    if model is not None:
        bad = non_finite_entries({"model": model.state_dict(), "optimizer": opt.state_dict()})
        if bad:
            raise _diverged(kind, cfg, st, path, f"{bad[0]} became non-finite")


def _save_checkpoint(path: Path | None, kind: str, cfg: TrainConfig, model: HybridNet, opt, st: _State,
                     ctx: DistContext) -> None:
    """All ranks call this (it gathers their generator states); rank 0 writes ``path`` atomically, after
    checking that everything in it is finite."""
    if path is None:
        return
    layer = model.quantum_layer
    partial = _global_partials(st, layer, ctx)
    _check_finite(kind, cfg, st, path, partial["loss_sum"], model, opt)
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


def _restore(path: Path, kind: str, cfg: TrainConfig, model: HybridNet, opt, st: _State, ctx: DistContext) -> None:
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
        st = _State()
        ckpt_path = None if run_dir is None else run_dir / "checkpoint.pt"
        if cfg.resume and ckpt_path is not None and ckpt_path.exists():
            _restore(ckpt_path, kind, cfg, model, opt, st, ctx)
        return _loop(kind, cfg, data, ctx, run_dir, model, opt, st, evaluate_test)


def _loop(kind, cfg: TrainConfig, data: Splits, ctx: DistContext, run_dir, model: HybridNet, opt, st: _State,
          evaluate_test: bool) -> dict:
    dtype, dev = DTYPES[cfg.dtype], ctx.device
    layer = model.quantum_layer
    x_tr, y_tr = data.train_images.to(dev, dtype), data.train_labels.to(dev)
    x_va, y_va = data.validation_images.to(dev, dtype), data.validation_labels.to(dev)
    n, bs = len(x_tr), cfg.batch_size
    per_epoch = math.ceil(n / bs)
    total = cfg.epochs * per_epoch
    ckpt_path = None if run_dir is None else run_dir / "checkpoint.pt"
    net = wrap_ddp(model, ctx)
    show = cfg.progress and ctx.is_main
    every_step = not ctx.enabled and reads_back_freely(dev)
    while st.epoch < cfg.epochs:
        order = data_order(cfg.seed, st.epoch, n)
        if layer is not None:
            layer.reset_cost()
        net.train()
        bar = tqdm(total=per_epoch, initial=st.batch, disable=not show, leave=False, file=sys.stderr,
                   desc=f"{kind} epoch {st.epoch + 1}/{cfg.epochs}", unit="batch")
        loss_acc = torch.zeros(2, dtype=torch.float64, device=dev)  # this leg's loss sum and correct count
        tic = time.perf_counter()
        for b in range(st.batch, per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            local, offset = shard_of(idx, ctx)
            lr, beta1 = one_cycle(st.step, total, cfg.lr) if cfg.schedule == "onecycle" else (cfg.lr, None)
            for group in opt.param_groups:
                group["lr"] = lr
                if beta1 is not None:
                    group["betas"] = (beta1, group["betas"][1])
            set_shard(model, offset, len(idx))
            local = local.to(dev)
            logits = net(x_tr[local])
            loss_sum = F.cross_entropy(logits, y_tr[local], reduction="sum")
            opt.zero_grad(set_to_none=True)
            (loss_sum * (ctx.world / len(idx))).backward()
            opt.step()
            hits = (logits.argmax(1) == y_tr[local]).sum()
            loss_acc += torch.stack([loss_sum.detach().to(torch.float64), hits.to(torch.float64)])
            st.seen += len(local)
            st.step, st.batch = st.step + 1, b + 1
            if every_step:  # one CPU process reads the loss for free: stop at the first bad step
                _check_finite(kind, cfg, st, ckpt_path, float(loss_sum.detach()))
            bar.update()
            if show and (b % 10 == 0 or b == per_epoch - 1):
                lsum, corr = loss_acc.tolist()
                done = max(st.seen, 1)
                bar.set_postfix(loss=f"{(st.loss_sum + lsum) / done:.4f}",
                                acc=f"{(st.correct + corr) / done:.3f}", lr=f"{lr:.2g}", **_circuits_done(cfg, layer, st))
            stop = cfg.max_steps is not None and st.step >= cfg.max_steps
            if (cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and st.batch < per_epoch) or stop:
                st.seconds += time.perf_counter() - tic
                lsum, corr = loss_acc.tolist()
                st.loss_sum, st.correct = st.loss_sum + lsum, st.correct + int(corr)
                loss_acc.zero_()
                if not stop:
                    _save_checkpoint(ckpt_path, kind, cfg, model, opt, st, ctx)
                tic = time.perf_counter()
            if stop:
                bar.close()
                return {"kind": kind, "stopped_at_step": st.step, "epochs": st.history}
        st.seconds += time.perf_counter() - tic
        bar.close()
        lsum, corr = loss_acc.tolist()
        st.loss_sum, st.correct = st.loss_sum + lsum, st.correct + int(corr)
        partial = _global_partials(st, layer, ctx)
        _check_finite(kind, cfg, st, ckpt_path, partial["loss_sum"])
        if layer is not None:
            layer.reset_cost()
        tic = time.perf_counter()
        val_loss, val_acc = evaluate(model, x_va, y_va, ctx) if len(x_va) else (None, None)
        eval_seconds = time.perf_counter() - tic
        entry = {"epoch": st.epoch + 1, "train_loss": partial["loss_sum"] / partial["seen"],
                 "train_accuracy": partial["correct"] / partial["seen"], "validation_loss": val_loss,
                 "validation_accuracy": val_acc, "seconds": st.seconds, "eval_seconds": eval_seconds,
                 "images": partial["seen"], "images_per_s": partial["seen"] / st.seconds if st.seconds > 0 else None,
                 "steps": st.step, "lr": opt.param_groups[0]["lr"], "quantum_cost": partial["cost"],
                 "eval_quantum_cost": _global_cost(layer, report.zero_cost(), ctx)}
        st.history.append(entry)
        if show or (ctx.is_main and run_dir is not None):  # a line per epoch also in a log without bars
            val = "" if val_acc is None else f"validation loss {val_loss:.4f}, validation acc {100 * val_acc:.2f}%, "
            tqdm.write(f"{kind} epoch {entry['epoch']}/{cfg.epochs}: train loss {entry['train_loss']:.4f}, {val}"
                       f"{st.seconds:.1f} s ({entry['images_per_s']:.0f} img/s)", file=sys.stderr)
        st.new_epoch()
        _save_checkpoint(ckpt_path, kind, cfg, model, opt, st, ctx)
    test = None
    if evaluate_test:  # once, after training: nothing above could look at it
        if layer is not None:
            layer.reset_cost()
        test = (*evaluate(model, data.test_images.to(dev, dtype), data.test_labels.to(dev), ctx),
                _global_cost(layer, report.zero_cost(), ctx))
    metrics = _metrics(kind, cfg, ctx, data, model, st.history, test)
    if ctx.is_main and run_dir is not None:
        _write_outputs(run_dir, metrics, model, cfg, f"{data.name}: {kind}, {cfg.filters} filters "
                       f"{cfg.kernel}x{cfg.kernel}, head {cfg.head!r}, gradient {cfg.gradient}")
    return metrics


__all__ = ["TrainingDiverged", "evaluate", "fit"]
