"""``qucnn demo``: SWAP-test fidelities of a random filter with a few real MNIST patches."""

from __future__ import annotations

import torch

from ..datasets import load_embedded_mnist
from ..nn.layer import QuConv2d
from ..utils.checks import UsageError, check_shots, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="print fidelities of a filter with a few MNIST patches")
    p.add_argument("--images", type=int, default=2, help="test images to use (default 2)")
    p.add_argument("--shots", type=int, default=10_000, help="shots per SWAP test (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    positive_int(args.images, "--images")
    check_shots(args.shots, "--shots")
    positive_int(args.seed, "--seed", 0)
    data = load_embedded_mnist()
    if args.images > len(data.test_images):
        raise UsageError(f"--images must be at most {len(data.test_images)} (the embedded test set), got {args.images}")
    x = data.test_images[: args.images].double()
    gen = torch.Generator().manual_seed(args.seed)
    layer = QuConv2d(1, 1, 4, layers=3, generator=gen).double()
    exact = layer(x)
    layer.shots = args.shots
    noisy = layer(x)
    flat_e, flat_n = exact.flatten(), noisy.flatten()
    top = torch.argsort(flat_e, descending=True)[:8]
    print(f"filter: {layer.n_qubits}-qubit state, SWAP test on {2 * layer.n_qubits + 1} qubits")
    print(f"{'patch':>6} {'exact F':>10} {f'{args.shots} shots':>12} {'std err':>9}")
    for i in top.tolist():
        f = flat_e[i].item()
        print(f"{i:>6} {f:>10.4f} {flat_n[i].item():>12.4f} {((1 - f * f) / args.shots) ** 0.5:>9.4f}")
    print(f"cost of the shot run: {layer.last_cost['forward']}")
    return 0
