"""``qucnn circuits``: every QuCNN circuit kind as OpenQASM 3, plus their transpiled resources."""

from __future__ import annotations

import json
import math

import torch

from ..core.encoding import num_qubits_for
from ..datasets import load_embedded_mnist
from ..utils.checks import UsageError
from ..utils.files import atomic_write_text, check_writable_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "circuits", help="export the circuits as OpenQASM 3 and count their CNOTs and depth",
        description="Builds each circuit kind (filter ansatz, both state preparations, SWAP test, SWAP test "
                    "with SVD unitaries, entanglement circuit, Bell-basis variants) for a seeded n-qubit "
                    "filter and a real MNIST patch, writes KIND.qasm (OpenQASM 3) into --qasm and "
                    "resources.json (CNOTs and depth after a seeded transpile to rz/sx/x/cx on a line of "
                    "qubits, and all-to-all) into --out. Needs pip install 'qucnn[qiskit]'.")
    p.add_argument("--qasm", required=True, metavar="DIR", help="folder for the .qasm files")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for resources.json (default: --qasm)")
    p.add_argument("--seed", type=int, default=0, help="seed of the filter angles and the transpiler (default 0)")
    p.add_argument("--layers", type=int, default=3, help="ansatz layers (default 3)")
    p.add_argument("--kernel", type=int, default=4,
                   help="k x k MNIST patch: n = ceil(log2 k^2) qubits (default 4)")
    p.add_argument("--upstream", type=float, default=0.5, help="delta of the entanglement circuit (default 0.5)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.layers < 1 or args.kernel < 2 or args.kernel > 28:
        raise UsageError(f"--layers must be >= 1 and --kernel in [2, 28], got {args.layers} and {args.kernel}")
    if not -1 <= args.upstream <= 1:
        raise UsageError(f"--upstream must lie in [-1, 1], got {args.upstream}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    from ..qiskit import circuit_resources, example_circuits, to_qasm3  # MissingExtraError naming qucnn[qiskit]

    qasm_dir = check_writable_dir(args.qasm, "--qasm")
    out_dir = check_writable_dir(args.out, "--out") if args.out else qasm_dir

    gen = torch.Generator().manual_seed(args.seed)
    n = num_qubits_for(args.kernel**2)
    theta = 2 * math.pi * torch.rand(args.layers, n, 2, generator=gen, dtype=torch.float64)
    image = load_embedded_mnist().test_images[0, 0].double()
    k = args.kernel
    patches = torch.nn.functional.unfold(image[None, None], k).transpose(1, 2)[0]  # (L, k*k)
    where = int(patches.norm(dim=1).argmax())  # the patch with the most ink
    patch = patches[where]
    table = {}
    print(f"{'circuit':<20} {'qubits':>6} {'cx line':>8} {'depth line':>10} {'cx all':>7} {'depth all':>9}")
    for kind, circuit in example_circuits(patch, theta, upstream=args.upstream).items():
        atomic_write_text(qasm_dir / f"{kind}.qasm", to_qasm3(circuit) + "\n")
        table[kind] = res = circuit_resources(circuit, seed=args.seed)
        print(f"{kind:<20} {res['qubits']:>6} {res['cx']:>8} {res['depth']:>10} {res['cx_all_to_all']:>7} "
              f"{res['depth_all_to_all']:>9}")
    meta = {"n_qubits": n, "layers": args.layers, "seed": args.seed, "upstream": args.upstream,
            "patch": {"image": "embedded MNIST test image 0", "kernel": k, "row": where // (28 - k + 1),
                      "col": where % (28 - k + 1)},
            "basis": ["rz", "sx", "x", "cx"], "coupling": "line of `qubits` qubits (and all-to-all)",
            "optimization_level": 2, "theta": theta.tolist()}
    path = out_dir / "resources.json"
    atomic_write_text(path, json.dumps({"meta": meta, "circuits": table}, indent=1) + "\n")
    print(f"wrote {len(table)} .qasm files to {qasm_dir} and {path}")
    return 0
