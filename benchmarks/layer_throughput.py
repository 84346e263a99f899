"""Piece-by-piece profile of the QuConv2d layer: each piece on the fused PyTorch engine of the ``"torch"``
backend (after) and on the plain reference path (before: the ``"reference"`` backend, the gate-by-gate ansatz,
explicitly unfolded patches), timed interleaved in one process.

    PYTHONPATH=src python benchmarks/layer_throughput.py [--batch 64] [--filters 8] [--repeats 7] [--json PATH]

Each row is the median over ``--repeats`` samples of CPU time per call (``time.thread_time``: preemption
on a shared machine does not count) and of wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qucnn import QuConv2d
from qucnn.backends import get_backend
from qucnn.core.geometry import ConvSpec
from qucnn.core.windows import squared_norms

MODES = ("before", "after")


def timed(fn, number: int) -> tuple[float, float]:
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(number):
        fn()
    return (time.thread_time() - c0) / number, (time.perf_counter() - w0) / number


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def cases(batch: int, filters: int, mode: str) -> dict:
    """The pieces for one mode: ``"after"`` the torch backend's fused engine, ``"before"`` the reference path."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=gen)
    x[:, :, :6] = 0  # MNIST-like empty margins: some all-zero patches
    y = torch.randint(0, 10, (batch,), generator=gen)
    backend = "torch" if mode == "after" else "reference"
    method = "closed" if mode == "after" else "gates"
    layer = QuConv2d(1, filters, 4, layers=3, generator=gen, backend=backend)
    spec = ConvSpec.make(4)
    engine = get_backend(backend).resolve(x.device, filters, 16)
    theta = layer.theta
    states = layer.ansatz.state(theta.detach(), method=method).requires_grad_(True)
    g = torch.randn(batch, filters, 25, 25, generator=gen)
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(filters * 625, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    norms = (lambda: squared_norms(x, spec)) if mode == "after" else (lambda: F.unfold(x, 4).pow(2).sum(1))

    def state_fb():
        torch.autograd.grad(layer.ansatz.state(theta, method=method).abs().sum(), theta)

    def maps_fb():
        torch.autograd.grad(engine.maps(x, states, spec)[0], states, g)

    def layer_fb():
        layer.zero_grad(set_to_none=True)
        layer(x).backward(g)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def fresh_state():  # a new angle each call: no cache can hit
        theta.data[0, 0, 0, 0] += 1e-3
        return layer.ansatz.state(theta, method=method)

    fwd = {"ansatz state forward (new angles)": fresh_state,
           "patch norms": norms,
           "fidelity maps forward": lambda: engine.maps(x, states, spec),
           "QuConv2d forward": lambda: layer(x)}
    out = {name: (lambda f=fn: _no_grad(f)) for name, fn in fwd.items()}
    out.update({"ansatz state forward+backward": state_fb, "fidelity maps forward+backward": maps_fb,
                "QuConv2d forward+backward": layer_fb, "W3 training step (conv->linear->Adam)": step})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--filters", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    tables = {mode: cases(args.batch, args.filters, mode) for mode in MODES}
    names = list(tables["after"])
    samples = {(name, mode): [] for name in names for mode in MODES}
    numbers = {}
    for name in names:  # warm-up, and calls per sample for ~50 ms samples
        for mode in MODES:
            fn = tables[mode][name]
            fn()
            numbers[name, mode] = max(1, int(0.05 / max(timed(fn, 3)[0], 1e-6)))
    for _ in range(args.repeats):
        for name in names:
            for mode in MODES:
                samples[name, mode].append(timed(tables[mode][name], numbers[name, mode]))
    rows = []
    print(f"batch {args.batch}, {args.filters} filters 4x4, 3 layers, float32, torch threads "
          f"{torch.get_num_threads()}; median CPU (wall) per call over {args.repeats} samples\n")
    print("| piece | before (reference path) | after (fused engine) | speed-up |")
    print("|---|---|---|---|")
    for name in names:
        b = statistics.median(c for c, _ in samples[name, "before"])
        a = statistics.median(c for c, _ in samples[name, "after"])
        bw = statistics.median(w for _, w in samples[name, "before"])
        aw = statistics.median(w for _, w in samples[name, "after"])
        rows.append({"piece": name, "before_cpu_s": b, "after_cpu_s": a, "before_wall_s": bw, "after_wall_s": aw})
        print(f"| {name} | {b * 1e3:.3f} ms ({bw * 1e3:.3f}) | {a * 1e3:.3f} ms ({aw * 1e3:.3f}) | {b / a:.1f}x |")
    if args.json is not None:
        args.json.write_text(json.dumps({"batch": args.batch, "filters": args.filters, "repeats": args.repeats,
                                         "torch_threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
