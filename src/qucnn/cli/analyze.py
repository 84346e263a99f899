"""``qucnn analyze``: analyses that test claims of the paper. Each analysis is a sub-subcommand
(``qucnn analyze plateau``); add one by writing ``_register_<name>`` and listing it in ``ANALYSES``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import asdict
from pathlib import Path

from ..analysis import hardware, parse_int_list, plateau_study, plot_plateau
from ..analysis import shots as shots_analysis
from ..analysis.hardware_report import hardware_table
from ..analysis import scaling
from ..analysis.scaling_report import plot_scaling, scaling_table
from ..analysis.shots_report import shots_table
from ..analysis.plateau import check_study
from ..backends import QiskitBackend
from ..datasets import load_embedded_mnist
from ..utils.checks import UsageError, positive_int
from ..utils.devices import resolve_device
from ..utils.files import atomic_write_text, check_writable_file
from ..utils.progress import show_progress
from .common import add_progress_options
from ..train.config import NAMED_HEADS
from ..utils.stats import DEFAULT_MARGIN_POINTS

QUICK = {"qubits": "2,4,6", "depths": "1-3", "samples": 256}
DEFAULTS = {"qubits": "2,4,6,8", "depths": "1-12", "samples": 2000}


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="analyses of the QuCNN layer (barren plateaus, ...)",
                              description="Analyses of the QuCNN layer. Run 'qucnn analyze ANALYSIS -h'.")
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    for add in ANALYSES:
        add(sub)
    p.set_defaults(func=lambda args: _missing(p))


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _register_plateau(sub) -> None:
    p = sub.add_parser(
        "plateau", help="variance of dF/dtheta over random angles and MNIST patches (barren plateau)",
        description="Variance, over uniform angles in [0, 2pi) and random real MNIST patches, of the exact "
                    "gradient dF/dtheta (first and last ansatz parameter) and of F = |<f(theta)|x>|^2, for "
                    "each qubit count and ansatz depth; fits Var ~ b^-n per depth and compares with a "
                    "Haar-random (2-design) filter. Writes a JSON and a PNG beside it.")
    p.add_argument("--qubits", default=None,
                   help=f"qubit counts, list or range (default {DEFAULTS['qubits']}); patch k x k with "
                        "C*k*k in (2^(n-1), 2^n]: 2->2x2, 4->4x4, 6->8x8, 8->16x16")
    p.add_argument("--depths", default=None,
                   help=f"ansatz depths (layers), e.g. 1-12 or 1,2,3 (default {DEFAULTS['depths']})")
    p.add_argument("--samples", type=int, default=None,
                   help=f"(angles, patch) pairs per cell (default {DEFAULTS['samples']})")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--channels", type=int, default=1,
                   help="channels C per patch: the same window of C independently drawn images "
                        "(n = ceil(log2(C*k*k)); default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per batched simulation (default: a whole cell at once, or the largest chunk whose "
                        "autograd graph fits in a quarter of the free memory)")
    p.add_argument("--out", default="results/plateau", help="output folder (default results/plateau)")
    p.add_argument("--json", default=None, help="JSON path (default OUT/plateau.json); the PNG goes beside it")
    p.add_argument("--quick", action="store_true",
                   help=f"a seconds-long check: qubits {QUICK['qubits']}, depths {QUICK['depths']}, "
                        f"{QUICK['samples']} samples (options given explicitly still win)")
    add_progress_options(p)
    p.set_defaults(func=run_plateau)


def _register_shots(sub) -> None:
    p = sub.add_parser(
        "shots", help="test accuracy against the total shots spent on filter gradients, per estimator",
        description="Trains the same hybrid network with each filter-gradient estimator (exact, frozen filters, "
                    "parameter shift and Eq. 17 at S shots per circuit, the sampled estimator at N shots per step) "
                    "for each seed and plots test accuracy against the gradient shots a quantum computer would have "
                    "spent. Every setting is compared with frozen filters paired by seed (two-sided 95% t intervals, "
                    "Holm-corrected); shot savings come from interval crossings, in shots and in circuits.")
    p.add_argument("--seeds", default=None,
                   help="seeds of init, data order and shots, list or range (default 0-4; at least 2 for the "
                        "intervals)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN_POINTS,
                   help=f"equivalence margin (TOST) against frozen filters, accuracy points (default "
                        f"{DEFAULT_MARGIN_POINTS})")
    p.add_argument("--epochs", type=int, default=None, help="epochs per setting (default 2; --quick 1)")
    p.add_argument("--train", type=int, default=None, help="training images (default 4000; --quick 1024)")
    p.add_argument("--out", default="results/shots", help="output folder (default results/shots)")
    p.add_argument("--json", default=None, help="JSON path (default OUT/shots.json); the PNG goes beside it")
    p.add_argument("--quick", action="store_true", help="a small network, 6 settings, seconds per seed")
    add_progress_options(p)
    p.set_defaults(func=run_shots)
    # finished runs are kept in OUT/shots.rows.json: a rerun (killed, or with more seeds) reuses them


def _register_hardware(sub) -> None:
    t = hardware.TASK
    p = sub.add_parser(
        "hardware", help="train with every circuit on a backend: exact, noiseless Aer, a noisy fake IBM device",
        description="Trains QuCNN on MNIST 0 vs 1 (pooled to 8x8, binarised; 2x2 kernel, stride 2: 5-qubit SWAP "
                    "tests) in every combination of a setting (exact, noiseless Aer shots, Aer with a fake IBM "
                    "device's noise, the same with readout mitigation) and a head (with and without BatchNorm "
                    "after the quantum layer), for each seed; every forward and parameter-shift circuit runs on the "
                    "backend, and each trained model is evaluated repeatedly with shots. Compares the arms paired by "
                    "seed (95% t intervals, Holm). Writes a JSON and a PNG beside it.")
    p.add_argument("--fake-device", default=hardware.DEFAULT_DEVICE,
                   help=f"fake IBM device of qiskit-ibm-runtime for the noisy settings (default {hardware.DEFAULT_DEVICE})")
    p.add_argument("--seeds", default=None,
                   help="seeds of weights, data order and shots, list or range (default 0-4)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN_POINTS,
                   help=f"equivalence margin (TOST), accuracy points (default {DEFAULT_MARGIN_POINTS})")
    p.add_argument("--out", default="results/hardware", help="output folder (default results/hardware)")
    p.add_argument("--json", default=None, help="JSON path (default OUT/hardware.json); the PNG goes beside it")
    p.add_argument("--quick", action="store_true",
                   help=f"a CI-sized run: {hardware.QUICK_TASK.train} training images, 1 filter of 1 layer, 1 epoch "
                        f"(default: {t.train} images, {t.filters} filters of {t.layers} layers, {t.epochs} epochs, "
                        f"{t.shots} shots per circuit, {t.eval_repeats} evaluations)")
    add_progress_options(p)
    p.set_defaults(func=run_hardware)
    # finished arms are kept in OUT/hardware.rows.json: a rerun (killed, or with more seeds) reuses them


def _register_scaling(sub) -> None:
    p = sub.add_parser(
        "scaling", help="the kind comparison at 4, 6 and 8 qubits per filter, with the gradient variance beside it",
        description="Trains quantum, fidelity-classical, frozen and classical-matched first layers (and the quantum "
                    "layer with shot-based parameter-shift gradients) at 4, 6 and 8 qubits per filter (kernels 4x4/1, "
                    "8x8/2, 16x16/4), for each seed, compares them paired by seed (95% t intervals, Holm), and "
                    "measures Var[dF/dtheta] at each size against the barren-plateau fit. Writes a JSON and a PNG.")
    p.add_argument("--qubits", default="4,6,8", help="qubits per filter, from 4, 6, 8 (default 4,6,8)")
    p.add_argument("--kinds", default=",".join(scaling.KINDS),
                   help=f"first-layer kinds trained with exact expectations (default {','.join(scaling.KINDS)})")
    p.add_argument("--seeds", default="0-4", help="evaluation seeds, list or range (default 0-4)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    p.add_argument("--limit-train", type=int, default=None, help="first N training images (default all 7,000)")
    p.add_argument("--head", default="plain", choices=sorted(NAMED_HEADS), help="head after the first layer "
                   f"({'; '.join(f'{k} = {v}' for k, v in NAMED_HEADS.items())}; default plain)")
    p.add_argument("--tuned", default=None,
                   help="a metrics.json or tuning.json of 'qucnn train --compare --tune': each kind's lr and schedule "
                        "chosen there for --head (default: lr 0.01, one-cycle for every kind)")
    p.add_argument("--gradient-shots", default="1000",
                   help="shots per parameter-shift circuit of the quantum-shots arm, or 'none' for no such arm "
                        "(default 1000)")
    p.add_argument("--samples", type=int, default=2000, help="draws per gradient-variance cell (default 2000)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN_POINTS,
                   help=f"equivalence margin (TOST), accuracy points (default {DEFAULT_MARGIN_POINTS})")
    p.add_argument("--out", default="results/scaling", help="output folder (default results/scaling)")
    p.add_argument("--json", default=None, help="JSON path (default OUT/scaling.json); the PNG goes beside it")
    p.add_argument("--quick", action="store_true",
                   help="a minute-long check: qubits 4,6, seeds 0,1, 1 epoch on 512 images, 256 samples, 100 shots")
    add_progress_options(p)
    p.set_defaults(func=run_scaling)
    # finished runs are kept in OUT/scaling.rows.json: a rerun (killed, or with more seeds) reuses them


ANALYSES = (_register_plateau, _register_shots, _register_hardware, _register_scaling)


def _output(args, default_name: str) -> Path:
    """The JSON path of an analysis (``--json``, or ``--out``/``default_name``), checked writable before any work."""
    if args.json:
        return check_writable_file(args.json, "--json")
    return check_writable_file(Path(args.out) / default_name, "--out")


def run_plateau(args) -> int:
    preset = QUICK if args.quick else DEFAULTS
    qubits = parse_int_list(args.qubits or preset["qubits"], "--qubits")
    depths = parse_int_list(args.depths or preset["depths"], "--depths")
    samples = preset["samples"] if args.samples is None else args.samples
    check_study(qubits, depths, samples, args.channels, args.batch_size)  # fail before loading anything

    device = resolve_device(args.device)
    json_path = _output(args, "plateau.json")
    png_path = json_path.with_suffix(".png")
    images = load_embedded_mnist().train_images
    result = plateau_study(images, qubits, depths, samples=samples, seed=args.seed, channels=args.channels,
                           device=device, batch_size=args.batch_size, progress=show_progress(args.progress))
    result["command"] = (f"qucnn analyze plateau --qubits {','.join(map(str, qubits))} --depths "
                         f"{','.join(map(str, depths))} --samples {samples} --seed {args.seed} "
                         f"--channels {args.channels}")
    atomic_write_text(json_path, json.dumps(result, indent=1))
    plot_plateau(result, png_path)

    print(f"decay base b of Var ~ b^-n over n = {qubits} (Haar 2-design: b = 4)")
    print(f"{'depth':>5} {'b first':>14} {'b last':>14} {'b of Var F':>11}")
    fid = {f["depth"]: f for f in result["fidelity_fits"]}
    for depth in depths:
        cells = []
        for param in ("first", "last"):
            fit = next((f for f in result["fits"] if f["depth"] == depth and f["param"] == param), None)
            se = fit and fit["decay_base_stderr"]
            cells.append("-" if fit is None else f"{fit['decay_base']:.2f}" + (f" +- {se:.2f}" if se else ""))
        b_f = f"{fid[depth]['decay_base']:.2f}" if depth in fid else "-"
        print(f"{depth:>5} {cells[0]:>14} {cells[1]:>14} {b_f:>11}")
    for shots in sorted({s["shots"] for s in result["stall"]}):
        crossing = [s["fitted_qubits"] for s in result["stall"] if s["shots"] == shots and s["fitted_qubits"]]
        if crossing:
            print(f"gradient std below the shot noise of {shots} shots from n ~ "
                  f"{min(crossing):.1f} .. {max(crossing):.1f} qubits (fitted, over depths and parameters)")
    worst = max((r for r in result["rows"]), key=lambda r: r["shots_snr1"] or 0.0)
    print(f"largest shots needed for SNR 1: {worst['shots_snr1']:.3g} (n={worst['qubits']}, "
          f"depth {worst['depth']}, {worst['param']} parameter)")
    print(f"wrote {json_path} and {png_path}")
    return 0


def run_shots(args) -> int:
    sizes = dict(shots_analysis.QUICK if args.quick else shots_analysis.FULL)
    for key in ("epochs", "train"):
        value = getattr(args, key)
        if value is not None:
            sizes[key] = positive_int(value, f"--{key}")
    seeds = shots_analysis.DEFAULT_SEEDS if args.seeds is None else tuple(parse_int_list(args.seeds, "--seeds"))
    if min(seeds) < 0:
        raise UsageError(f"--seeds must be ints >= 0, got {args.seeds}")
    json_path = _output(args, "shots.json")
    settings = shots_analysis.quick_settings() if args.quick else shots_analysis.default_settings()
    # finished runs are kept beside the JSON, so a killed study, or one with more seeds, retrains only what is new
    progress_path = json_path.with_suffix(".rows.json")
    done = shots_analysis.read_progress(progress_path, sizes)

    def save(rows: list[dict]) -> None:
        shots_analysis.write_progress(progress_path, sizes, done, rows)

    margin = _margin(args.margin)
    result = shots_analysis.shots_study(settings, load_embedded_mnist(), seeds=seeds, done=done, on_row=save,
                                        margin=margin / 100, progress=show_progress(args.progress), **sizes)
    result["command"] = (f"qucnn analyze shots --seeds {','.join(map(str, seeds))} --epochs {sizes['epochs']} "
                         f"--train {sizes['train']} --margin {margin:g}" + (" --quick" if args.quick else ""))
    atomic_write_text(json_path, json.dumps(result, indent=1))
    shots_analysis.plot_shots(result, json_path.with_suffix(".png"))
    print(shots_table(result))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


def _margin(value: float) -> float:
    """``--margin`` checked: a positive, finite number of accuracy points."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"--margin must be a positive number of accuracy points, got {value!r}")
    return float(value)


def run_hardware(args) -> int:
    json_path = _output(args, "hardware.json")
    seeds = hardware.DEFAULT_SEEDS if args.seeds is None else tuple(parse_int_list(args.seeds, "--seeds"))
    margin = _margin(args.margin)
    QiskitBackend(fake_device=args.fake_device)  # a missing extra or an unknown device fails before training
    task = hardware.QUICK_TASK if args.quick else hardware.TASK
    sizes = {**asdict(task), "fake_device": args.fake_device}
    progress_path = json_path.with_suffix(".rows.json")
    done = shots_analysis.read_progress(progress_path, sizes)

    def save(rows: list[dict]) -> None:
        shots_analysis.write_progress(progress_path, sizes, done, rows)

    result = hardware.hardware_study(task, load_embedded_mnist(), fake_device=args.fake_device, seeds=seeds,
                                     progress=show_progress(args.progress), done=done, on_row=save, margin=margin / 100)
    result["command"] = (f"qucnn analyze hardware{' --quick' if args.quick else ''} --fake-device {args.fake_device} "
                         f"--seeds {','.join(map(str, seeds))} --margin {margin:g}")
    atomic_write_text(json_path, json.dumps(result, indent=1))
    hardware.plot_hardware(result, json_path.with_suffix(".png"))
    print(hardware_table(result))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


def _tuned_settings(path: str | None, head: str) -> dict:
    """``{kind: {"lr", "schedule"}}`` chosen for ``head`` by a tuned comparison (its metrics.json or tuning.json)."""
    if path is None:
        return {}
    try:
        saved = json.loads(Path(path).read_text())
        chosen = (saved.get("tuning") or saved)["chosen"]
        return {kind: {k: v for k, v in by_head[head].items() if k in ("lr", "schedule")}
                for kind, by_head in chosen.items() if head in by_head}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"--tuned {path}: not the metrics.json or tuning.json of a tuned comparison with head "
                         f"{head!r} ({err})") from None


def run_scaling(args) -> int:
    json_path = _output(args, "scaling.json")
    shots = None if args.gradient_shots.lower() == "none" else positive_int(_int(args.gradient_shots), "--gradient-shots")
    quick = dict(qubits=(4, 6), seeds=(0, 1), epochs=1, limit_train=512, samples=256, gradient_shots=100)
    cfg = scaling.ScalingConfig(
        qubits=tuple(parse_int_list(args.qubits, "--qubits")),
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()), seeds=tuple(parse_int_list(args.seeds, "--seeds")),
        epochs=positive_int(args.epochs, "--epochs"), limit_train=args.limit_train, head=NAMED_HEADS[args.head],
        settings=_tuned_settings(args.tuned, args.head), gradient_shots=shots,
        samples=positive_int(args.samples, "--samples", 2), margin=_margin(args.margin) / 100)
    cfg = dataclasses.replace(cfg, **quick) if args.quick else cfg
    cfg.validated()
    # as JSON stores it (tuples become lists), so that a rerun recognises its own progress file
    sizes = json.loads(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("seeds", "margin")}))
    progress_path = json_path.with_suffix(".rows.json")
    done = shots_analysis.read_progress(progress_path, sizes)

    def save(rows: list[dict]) -> None:
        shots_analysis.write_progress(progress_path, sizes, done, rows)

    result = scaling.scaling_study(cfg, progress=show_progress(args.progress), done=done, on_row=save)
    result["command"] = ("qucnn analyze scaling" + (" --quick" if args.quick else
                         f" --qubits {args.qubits} --kinds {','.join(cfg.kinds)} --seeds {args.seeds}"
                         f" --epochs {cfg.epochs}"
                         + (f" --limit-train {cfg.limit_train}" if cfg.limit_train else "")
                         + f" --head {args.head}" + (f" --tuned {args.tuned}" if args.tuned else "")
                         + f" --gradient-shots {args.gradient_shots} --samples {cfg.samples}")
                         + f" --margin {100 * cfg.margin:g}")
    atomic_write_text(json_path, json.dumps(result, indent=1))
    plot_scaling(result, json_path.with_suffix(".png"))
    print(scaling_table(result))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--gradient-shots: expected an int or 'none', got {text!r}") from None
