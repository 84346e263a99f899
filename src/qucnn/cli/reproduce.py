"""``qucnn reproduce``: the paper's Section V (forward pass, backpropagation, state learning, circuit
figures) on real MNIST, with PNGs, metrics.json and a report.md that sets our numbers beside the paper's."""

from __future__ import annotations

import time
from pathlib import Path

from ..experiments import reproduce
from ..experiments.common import EXPERIMENTS, Config, aer_hook
from ..utils.checks import UsageError
from ..utils.files import check_writable_dir
from .common import add_progress_options

EXPERIMENT_CHOICES = ("forward", "backprop", "learn", "circuits", "all")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="reproduce the paper's Section V: figures, metrics.json and report.md",
        description="Reproduce Section V of the QuCNN paper: 'forward' (Fig. 3, 5: a trained classical 4x4 "
                    "filter as a quantum state, SWAP-tested against 16 MNIST images with 10,000 shots), "
                    "'backprop' (Fig. 4: entanglement-based vs post-processed parameter-shift gradients for "
                    "10..100,000 shots), 'learn' (Fig. 6: the ansatz with 1-3 layers learning the ideal filter "
                    "state), 'circuits' (Fig. 1, 2, 5 drawn, with gate counts), or 'all'. Running one "
                    "experiment merges its results into an existing OUT/metrics.json and rewrites report.md.")
    p.add_argument("experiment", nargs="?", default="all", metavar="EXPERIMENT",
                   help=f"one of {', '.join(EXPERIMENT_CHOICES)} (default all)")
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--quick", action="store_true",
                   help="CI preset, under a minute: fewer repeats, restarts and iterations; Aer subsampled")
    p.add_argument("--data", default=None,
                   help="folder of IDX files (MNIST layout) instead of the embedded 10k MNIST digits")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N) for the tensor work (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--upstream", type=float, default=0.5,
                   help="backpropagated value g in [-1, 1] for 'backprop' (default 0.5; c = 1, so the "
                        "ancilla carries delta = g)")
    p.add_argument("--data-state", default="uniform",
                   help="'backprop' data state: uniform (H^n|0>, default) or mnist (a real MNIST patch)")
    p.add_argument("--learn-shots", type=int, default=None,
                   help="'learn' with a shot-based parameter-shift gradient, S shots per circuit "
                        "(default: exact autograd)")
    p.add_argument("--backend", default="torch",
                   help="shot draws of 'forward' and 'backprop': torch (binomial from the exact fidelity, "
                        "default) or aer (the circuits in Qiskit Aer; needs qucnn[qiskit])")
    p.add_argument("--noise", action="store_true",
                   help="with --backend aer: run under qucnn.qiskit.default_noise_model()")
    add_progress_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.experiment not in EXPERIMENT_CHOICES:
        raise UsageError(f"unknown experiment {args.experiment!r}; choose one of {', '.join(EXPERIMENT_CHOICES)}")
    config = Config(out=Path(args.out), quick=args.quick, data=args.data, device=args.device, seed=args.seed,
                    upstream=args.upstream, data_state=args.data_state, learn_shots=args.learn_shots,
                    backend=args.backend, noise=args.noise).validated()
    check_writable_dir(config.out, "--out")  # fail before any experiment, not when the first one saves
    if config.backend == "aer":
        aer_hook()  # fail now, not after the first experiment, if Qiskit is missing
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    start = time.perf_counter()
    metrics = reproduce(names, config, argv=_command(args.experiment, config))
    _print_summary(metrics, names, config)
    print(f"wrote {config.out / 'metrics.json'}, {config.out / 'report.md'} and the figures "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _command(experiment: str, config) -> list[str]:
    """The arguments that repeat this run (recorded in metrics.json and report.md)."""
    argv = [experiment, "--out", str(config.out), "--seed", str(config.seed)]
    argv += ["--quick"] if config.quick else []
    argv += ["--data", str(config.data)] if config.data else []
    argv += ["--device", config.device] if config.device != "cpu" else []
    argv += ["--upstream", str(config.upstream)] if config.upstream != 0.5 else []
    argv += ["--data-state", config.data_state] if config.data_state != "uniform" else []
    argv += ["--learn-shots", str(config.learn_shots)] if config.learn_shots else []
    argv += ["--backend", config.backend] if config.backend != "torch" else []
    argv += ["--noise"] if config.noise else []
    return argv


def _print_summary(metrics: dict, names: list[str], config) -> None:
    if "forward" in names:
        f = metrics[config.metric_key("forward")]
        print(f"forward: classical test accuracy {f['classical_test_accuracy']:.4f}; {f['circuits_run']} SWAP tests "
              f"x {f['shots']} shots: max error {f['max_sigma_error']:.2f} standard errors, "
              f"{100 * f['within_3_sigma_fraction']:.2f}% within 3; correlation with the squared normalised "
              f"classical map {f['correlation']['quantum_vs_classical_squared_normalised']:.4f}")
    if "backprop" in names:
        b = metrics[config.metric_key("backprop")]
        top = max(b["shot_counts"])
        worst = {s["method"]: s["max_abs_error_in_se"] for s in b["summary"] if s["shots"] == top}
        print(f"backprop: {b['repeats']} repeats per shot count; at {top} shots max |mean - exact| = "
              + ", ".join(f"{m} {v:.2f} SE" for m, v in worst.items()))
    if "learn" in names:
        for kind, depths in metrics["state_learning"]["summary"].items():
            print(f"learn, {kind} targets (best restart; min / median / max over {depths['1']['n']}): " + ", ".join(
                f"L={L} {q['min']:.3f} / {q['median']:.3f} / {q['max']:.3f}" for L, q in sorted(depths.items())))
    if "circuits" in names:
        c = metrics["circuits"]
        counts = [f"{k} {v['qubits']} qubits, {v.get('cx_all_to_all', '-')} CX all-to-all / {v.get('cx_line', '-')} "
                  "on a line" for k, v in c.items() if isinstance(v, dict) and "qubits" in v]
        print("circuits (CX after transpiling to rz/sx/x/cx at level 2, as qucnn circuits counts them): "
              + "; ".join(counts) + f" (drawer: {c['drawer']})")
