"""``qucnn noise``: how gate and readout noise bias the forward fidelities and the Fig. 4 gradients
(Qiskit Aer; needs ``pip install 'qucnn[qiskit]'`` and matplotlib)."""

from __future__ import annotations

from pathlib import Path

from ..experiments.noise import run_noise
from ..utils.files import check_writable_dir
from .common import add_progress_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "noise", help="noise bias of SWAP-test fidelities and Fig. 4 gradients on Qiskit Aer",
        description="Runs SWAP tests (a sweep of known fidelities and real MNIST patches against an MNIST "
                    "filter) and the Fig. 4 gradients (4-qubit 3-layer filter vs H^n|0>, upstream 0.5, "
                    "parameter shift and entanglement circuit) on Aer, noiseless and under "
                    "qucnn.qiskit.default_noise_model; writes noise.json and noise.png into --out.")
    p.add_argument("--out", default="results/noise", help="output folder (default results/noise)")
    p.add_argument("--quick", action="store_true", help="fewer circuits (under a minute)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--shots", type=int, default=None,
                   help="shots per circuit, forward and gradients (default 10000 / 100000; quick 4000 / 20000)")
    p.add_argument("--p1", type=float, default=1e-3, help="1-qubit depolarizing probability (default 1e-3)")
    p.add_argument("--p2", type=float, default=1e-2, help="2-qubit (cx) depolarizing probability (default 1e-2)")
    p.add_argument("--readout", type=float, default=2e-2, help="readout bit-flip probability (default 2e-2)")
    add_progress_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    check_writable_dir(args.out, "--out")
    result = run_noise(Path(args.out), quick=args.quick, seed=args.seed, p1=args.p1, p2=args.p2,
                       readout=args.readout, shots=args.shots)
    noise = result["noise_model"]
    print(f"noise: p1={noise['p1']} p2={noise['p2']} readout={noise['readout']}  "
          f"(readout alone would scale <Z_a> by {noise['readout_only_factor']:.3f})")
    print(f"{'part':<10} {'configuration':<34} {'slope':>7} {'intercept':>10} {'mean |err|':>11} {'s':>6}")
    for part in ("forward", "gradients"):
        for label, run_ in result[part]["runs"].items():
            fit = run_["fit"]
            print(f"{part:<10} {label:<34} {fit['slope']:>7.3f} {fit['intercept']:>10.4f} "
                  f"{fit['mean_abs_error']:>11.4f} {run_['seconds']:>6.1f}")
    print("CNOTs (all-to-all):", ", ".join(f"{k} {v}" for k, v in result["cx_all_to_all"].items()))
    out = Path(args.out)
    print(f"wrote {out / 'noise.json'} and {out / result['figure']} in {result['wall_time_s']} s")
    return 0
