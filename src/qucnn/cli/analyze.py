"""``qucnn analyze``: analyses that test claims of the paper. Each analysis is a sub-subcommand
(``qucnn analyze plateau``); add one by writing ``_register_<name>`` and listing it in ``ANALYSES``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..analysis import hardware, parse_int_list, plateau_study, plot_plateau
from ..analysis import shots as shots_analysis
from ..analysis.plateau import check_study
from ..backends import QiskitBackend
from ..datasets import load_embedded_mnist
from ..utils.checks import UsageError, positive_int
from ..utils.devices import resolve_device
from ..utils.files import atomic_write_text, check_writable_file
from ..utils.progress import show_progress
from .common import add_progress_options

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
                    "spent. A shot saving is reported only where the sampled estimator beats frozen filters "
                    "(one-sided paired t test over seeds, 95%).")
    p.add_argument("--seeds", default=None,
                   help="seeds of init, data order and shots, list or range (default 0,1,2; at least 2 for the "
                        "significance test)")
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
                    "tests) four ways, every forward and parameter-shift circuit executed by the backend: exact "
                    "(torch), shots (noiseless Aer), noisy (Aer with a fake IBM device's noise, circuits transpiled "
                    "for it) and noisy-mitigated (readout mitigation). Writes a JSON and a PNG beside it.")
    p.add_argument("--fake-device", default=hardware.DEFAULT_DEVICE,
                   help=f"fake IBM device of qiskit-ibm-runtime for the noisy settings (default {hardware.DEFAULT_DEVICE})")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and shots (default 0)")
    p.add_argument("--out", default="results/hardware", help="output folder (default results/hardware)")
    p.add_argument("--json", default=None, help="JSON path (default OUT/hardware.json); the PNG goes beside it")
    p.add_argument("--quick", action="store_true",
                   help=f"a CI-sized run: {hardware.QUICK_TASK.train} training images, 1 filter of 1 layer, 1 epoch "
                        f"(default: {t.train} images, {t.filters} filters of {t.layers} layers, {t.epochs} epochs, "
                        f"{t.shots} shots per circuit)")
    add_progress_options(p)
    p.set_defaults(func=run_hardware)


ANALYSES = (_register_plateau, _register_shots, _register_hardware)


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

    result = shots_analysis.shots_study(settings, load_embedded_mnist(), seeds=seeds, done=done, on_row=save,
                                        progress=show_progress(args.progress), **sizes)
    result["command"] = (f"qucnn analyze shots --seeds {','.join(map(str, seeds))} --epochs {sizes['epochs']} "
                         f"--train {sizes['train']}" + (" --quick" if args.quick else ""))
    atomic_write_text(json_path, json.dumps(result, indent=1))
    shots_analysis.plot_shots(result, json_path.with_suffix(".png"))
    print(f"{'setting':<26} {'accuracy % (mean +- std)':>25} {'minus frozen (lower 95%)':>26} {'gradient shots':>15}")
    for s in result["settings"]:
        m, sd = 100 * s["summary"]["mean"], 100 * (s["summary"]["std"] or 0.0)
        vs = s["vs_frozen"]
        diff = "-" if vs is None else f"{100 * vs['mean']:+.2f} ({_pct(vs['lower95'])})"
        shots = "exact" if s["method"] == "autograd" else "0" if s["method"] == "frozen" else f"{s['gradient_shots']:.3g}"
        print(f"{s['label']:<26} {f'{m:.2f} +- {sd:.2f}':>25} {diff:>26} {shots:>15}")
    for point in (result["saving"] or {}).get("points", []):
        head = f"{point['label']} ({point['shots']:.3g} shots, {100 * point['test_accuracy']:.2f}%)"
        if not point["above_frozen"]:
            print(f"{head}: not above frozen filters, no saving claimed")
            continue
        parts = []
        for method, need in point["dense"].items():
            if need["central"]["orders_of_magnitude"] is None:
                parts.append(f"{method}: never reached")
            else:
                parts.append(f"{method}: {_fmt(need['central'])} orders [{_fmt(need['low'])}, {_fmt(need['high'])}]")
        print(f"{head} vs " + "; ".join(parts))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f}"


def _fmt(need: dict) -> str:
    """Orders of magnitude saved; ``<=`` where the dense curve starts above the accuracy (an upper bound)."""
    orders = need["orders_of_magnitude"]
    if orders is None:
        return "beyond the curve"
    return ("" if need["interpolated"] else "<= ") + f"{orders:+.1f}"


def run_hardware(args) -> int:
    json_path = _output(args, "hardware.json")
    positive_int(args.seed, "--seed", 0)
    QiskitBackend(fake_device=args.fake_device)  # a missing extra or an unknown device fails before training
    task = hardware.QUICK_TASK if args.quick else hardware.TASK
    result = hardware.hardware_study(task, load_embedded_mnist(), fake_device=args.fake_device, seed=args.seed,
                                     progress=show_progress(args.progress))
    result["details"]["command"] = (f"qucnn analyze hardware{' --quick' if args.quick else ''} "
                                    f"--fake-device {args.fake_device} --seed {args.seed}")
    atomic_write_text(json_path, json.dumps(result, indent=1))
    hardware.plot_hardware(result, json_path.with_suffix(".png"))
    print(f"{'setting':<16} {'test acc':>8} {'circuits':>9} {'shots':>10} {'wall s':>7}")
    for row in result["rows"]:
        shots = "exact" if row["shots"] is None else f"{row['shots']:.3g}"
        print(f"{row['setting']:<16} {row['test_accuracy']:>8.3f} {row['circuits']:>9} {shots:>10} {row['wall_s']:>7.1f}")
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0
