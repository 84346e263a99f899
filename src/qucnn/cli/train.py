"""``qucnn train``: train a network whose first layer is QuCNN (or its baselines) end to end.

Writes OUT/metrics.json, OUT/learning_curve.png, OUT/model.pt (state dict) and OUT/checkpoint.pt
(with --compare: OUT/<kind>/seed<S>/ per run plus the combined metrics, curves and OUT/compare.png; with
--tune also OUT/tuning.json). Also runs under ``torchrun --nproc-per-node N -m qucnn train ...``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path

from ..nn.functional import GRADIENT_MODES
from ..nn.models import DEFAULT_HEAD, HEAD_TOKENS, MODEL_KINDS
from ..train import TrainConfig, train
from ..train.compare import HEADS, TUNE_GRID, compare_table
from ..train.config import DEFAULT_VALIDATION, TRAIN_BACKENDS
from ..train.report import summary_table
from ..utils.progress import show_progress
from .common import add_progress_options
from ..utils.stats import DEFAULT_MARGIN_POINTS


def _optional_int(text: str) -> int | None:
    if text.lower() in ("none", "exact", "inf"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int (or 'none'), got {text!r}") from None


def _int_list(text: str) -> tuple[int, ...]:
    """``0,1,2`` or ``0-4`` (inclusive) as a tuple of ints."""
    try:
        if "-" in text.strip("-"):
            lo, hi = (int(v) for v in text.split("-"))
            return tuple(range(lo, hi + 1))
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a list of ints like 0,1,2 or a range like 0-4, got {text!r}") \
            from None


def _kind_list(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in MODEL_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"expected kinds from {', '.join(MODEL_KINDS)}, got {text!r}")
    return kinds


def _head_list(text: str) -> tuple[str, ...]:
    """``plain,relu`` as a tuple of names (checked by TrainConfig, whose error names --heads)."""
    return tuple(h.strip() for h in text.split(",") if h.strip())


def register(subparsers) -> None:
    """Add ``qucnn train`` and its options to ``subparsers``."""
    p = subparsers.add_parser(
        "train", help="train a hybrid QuCNN network (and its frozen / classical twins with --compare)",
        description="Train QuConv2d + a small classical head on MNIST-like data. Defaults: the embedded MNIST "
                    "(8,000 train / 2,000 test), 8 filters 4x4, 3 ansatz layers, exact autograd gradients, "
                    "Adam with a one-cycle schedule, 5 epochs. Checkpoints atomically after every epoch "
                    "(and every --checkpoint-every steps); --resume continues bit for bit.")
    _model_options(p.add_argument_group("model"))
    _quantum_options(p.add_argument_group("quantum execution"))
    _optimisation_options(p.add_argument_group("optimisation"))
    _data_options(p.add_argument_group("data and devices"))
    _output_options(p.add_argument_group("output"))
    p.set_defaults(func=run, resume_hint=resume_hint)


def _model_options(g) -> None:
    g.add_argument("--kind", default="quantum", choices=MODEL_KINDS,
                   help="quantum (trained filters), frozen (random filters, fixed), classical (nn.Conv2d), "
                        "fidelity-classical (the fidelity map with free unit-norm complex filters), "
                        "classical-matched (bias-free nn.Conv2d with as many weights as the quantum layer has "
                        "angles); default quantum")
    g.add_argument("--filters", type=int, default=8, help="filters (output channels), default 8")
    g.add_argument("--kernel", type=int, default=4, help="kernel size k (k x k patches), default 4")
    g.add_argument("--stride", type=int, default=1, help="stride, default 1")
    g.add_argument("--layers", type=int, default=3, help="ansatz layers per filter, default 3")
    g.add_argument("--head", default=DEFAULT_HEAD,
                   help=f"classical head, comma-separated tokens {', '.join(HEAD_TOKENS)}; a final linear layer "
                        f"to the classes is always added (default {DEFAULT_HEAD!r})")


def _quantum_options(q) -> None:
    q.add_argument("--shots", type=_optional_int, default=None,
                   help="shots per SWAP test in the forward pass (default: exact expectations)")
    q.add_argument("--gradient", default="autograd",
                   help=f"filter gradients: {', '.join(GRADIENT_MODES)} (default autograd)")
    q.add_argument("--gradient-shots", type=_optional_int, default=None,
                   help="shots per gradient circuit (parameter-shift / entanglement; default exact)")
    q.add_argument("--gradient-budget", type=_optional_int, default=None,
                   help="total shots per backward for --gradient sampled")
    q.add_argument("--backend", default="torch", choices=TRAIN_BACKENDS,
                   help="where the circuits run: torch (simulated, default), aer (Qiskit Aer sampler), pennylane "
                        "(default.qubit); aer and pennylane need --shots")
    q.add_argument("--fake-device", default=None,
                   help="with --backend aer: a fake IBM device of qiskit-ibm-runtime (e.g. fake_torino): its noise, "
                        "basis gates and coupling map")
    q.add_argument("--mitigate-readout", action="store_true",
                   help="with --backend aer: correct the measured ancilla's readout error (calibration circuits)")


def _optimisation_options(t) -> None:
    t.add_argument("--epochs", type=int, default=5, help="default 5")
    t.add_argument("--batch-size", type=int, default=64, help="global batch size (split across processes); default 64")
    t.add_argument("--lr", type=float, default=1e-2, help="peak learning rate of Adam, default 1e-2")
    t.add_argument("--schedule", default="onecycle", help="onecycle (default) or constant")
    t.add_argument("--seed", type=int, default=0, help="seeds weights, data order, dropout and shots; default 0")
    t.add_argument("--dtype", default="float32", help="float32 (default) or float64")


def _data_options(d) -> None:
    d.add_argument("--data", default=None,
                   help="directory of IDX files (MNIST / Fashion-MNIST layout); default the embedded MNIST")
    d.add_argument("--classes", type=int, default=None,
                   help="number of classes; labels must lie in 0..N-1 (default: from the labels, which must then "
                        "be 0..K-1 without gaps)")
    d.add_argument("--limit-train", type=int, default=None, help="use the first N training images")
    d.add_argument("--limit-test", type=int, default=None, help="use the first N test images")
    d.add_argument("--validation", type=int, default=DEFAULT_VALIDATION,
                   help="hold out the last N training images for validation (reported every epoch; the test "
                        f"set is evaluated once, at the end); default {DEFAULT_VALIDATION}, 0 for none")
    d.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N); default cpu")
    d.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes (DDP; gloo on CPU, nccl on CUDA); default 1")
    d.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: torch's choice, or the cores shared out with --nproc)")


def _output_options(o) -> None:
    o.add_argument("--out", default="results/train", help="output directory (default results/train)")
    o.add_argument("--compare", action="store_true",
                   help=f"train every model kind ({', '.join(MODEL_KINDS)}) with the same data and seeds; the "
                        "table gives mean +- std over seeds and each kind's paired difference from quantum")
    o.add_argument("--kinds", type=_kind_list, default=None, help="with --compare: the kinds to train (default all)")
    o.add_argument("--seeds", type=_int_list, default=None,
                   help="with --compare: evaluation seeds to run each kind with, e.g. 0-9 (default: 5 seeds from "
                        "--seed)")
    o.add_argument("--heads", type=_head_list, default=None,
                   help=f"with --compare: train every kind with each of these heads ({', '.join(HEADS)}: "
                        f"{'; '.join(f'{k} = {v}' for k, v in HEADS.items())}); default --head")
    o.add_argument("--margin", type=float, default=DEFAULT_MARGIN_POINTS,
                   help="with --compare: equivalence margin of the TOST behind every 'no difference', in accuracy "
                        f"points (default {DEFAULT_MARGIN_POINTS})")
    grid = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in TUNE_GRID.items())
    o.add_argument("--tune", action="store_true",
                   help=f"with --compare: first pick each kind and head's lr and schedule on validation accuracy "
                        f"from the grid ({grid}), the same budget for every kind and head")
    o.add_argument("--tune-seeds", type=_int_list, default=None,
                   help="seeds of the tuning runs, validation accuracy averaged over them; must be disjoint from "
                        "--seeds (default: the two seeds after the largest of --seeds)")
    fresh = o.add_mutually_exclusive_group()
    fresh.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    fresh.add_argument("--overwrite", action="store_true", help="start afresh even if OUT holds a checkpoint")
    o.add_argument("--checkpoint-every", type=int, default=None,
                   help="also checkpoint every N optimizer steps (always at the end of each epoch)")
    o.add_argument("--max-steps", type=int, default=None,
                   help="stop after N optimizer steps as if killed, without final files (for resume drills)")
    add_progress_options(o)
    o.add_argument("--no-plot", action="store_true", help="no learning-curve PNG")


def resume_hint(args) -> str:
    """After Ctrl-C: the command that continues from this run's last checkpoint, or that there is none yet."""
    out = Path(args.out)
    dirs = sorted(p.parent for p in out.glob("*/*/seed*/checkpoint.pt")) if args.compare else [out]
    started = getattr(args, "started", float("inf"))
    # A checkpoint is this run's if the run resumed from it or wrote it (an --overwrite run finds an old one).
    ours = [d for d in dirs if (d / "checkpoint.pt").exists()
            and (args.resume or (d / "checkpoint.pt").stat().st_mtime >= started)]
    if not ours:
        return f"no checkpoint written yet in {out}; run the same command again to start over"
    argv = [a for a in args.argv if a not in ("--overwrite", "--resume")] + ["--resume"]
    return "continue with: qucnn " + shlex.join(argv)


def run(args) -> int:
    args.started = time.time()
    cfg = TrainConfig(
        kind=args.kind, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
        filters=args.filters, kernel=args.kernel, stride=args.stride, layers=args.layers, shots=args.shots,
        gradient=args.gradient, gradient_shots=args.gradient_shots, gradient_budget=args.gradient_budget,
        head=args.head, device=args.device, dtype=args.dtype, seed=args.seed, data=args.data,
        limit_train=args.limit_train, limit_test=args.limit_test, out=args.out, resume=args.resume,
        overwrite=args.overwrite, checkpoint_every=args.checkpoint_every, compare=args.compare, nproc=args.nproc,
        max_steps=args.max_steps, threads=args.threads, progress=show_progress(args.progress), plot=not args.no_plot,
        classes=args.classes, backend=args.backend, fake_device=args.fake_device,
        mitigate_readout=args.mitigate_readout, validation=args.validation, seeds=args.seeds, kinds=args.kinds,
        tune=args.tune, tune_seeds=args.tune_seeds, heads=args.heads, margin=args.margin)
    metrics = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if "stopped_at_step" in metrics:
        print(f"stopped after {metrics['stopped_at_step']} steps (--max-steps); continue with --resume")
        return 0
    data = metrics["data"]
    print(f"data: {data['name']} ({data['train']} train / {data['validation']} validation / {data['test']} test), "
          f"{metrics['world_size']} process(es) on {metrics['device']}")
    plots = [] if args.no_plot else ["learning_curve.png"]
    if "compare" in metrics:
        print(compare_table(metrics))
        written = ["metrics.json"] + plots + ([] if args.no_plot else ["compare.png"]) + (
            ["tuning.json"] if metrics.get("tuning") else [])
        print(f"wrote {args.out}/{', '.join(written)} and <kind>/<head>/seed<S>/ per run")
    else:
        print(summary_table({metrics["kind"]: metrics["final"]}))
        print(f"wrote {args.out}/{', '.join(['metrics.json'] + plots + ['model.pt', 'checkpoint.pt'])}")
    return 0
