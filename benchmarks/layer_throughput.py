"""Before/after profile of the QuConv2d layer: every piece with ``qucnn.fastpath`` on (after) and off (the
plain reference path, i.e. before), timed interleaved in one process.

    PYTHONPATH=src python benchmarks/layer_throughput.py [--batch 64] [--filters 8] [--repeats 7] [--json PATH]

Each row is the median over ``--repeats`` samples of CPU time per call (``time.thread_time``: preemption
on a shared machine does not count) and of wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from qucnn import QuConv2d, fastpath
from qucnn.fidelity import fidelity_maps, patch_norms


def timed(fn, number: int) -> tuple[float, float]:
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(number):
        fn()
    return (time.thread_time() - c0) / number, (time.perf_counter() - w0) / number


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def cases(batch: int, filters: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=gen)
    x[:, :, :6] = 0  # MNIST-like empty margins: some all-zero patches
    y = torch.randint(0, 10, (batch,), generator=gen)
    layer = QuConv2d(1, filters, 4, layers=3, generator=gen)
    theta = layer.theta
    states = layer.filter_states().detach().requires_grad_(True)
    g = torch.randn(batch, filters, 25, 25, generator=gen)
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(filters * 625, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def state_fb():
        torch.autograd.grad(layer.ansatz.state(theta).abs().sum(), theta)

    def maps_fb():
        torch.autograd.grad(fidelity_maps(x, states, (4, 4)), states, g)

    def layer_fb():
        layer.zero_grad(set_to_none=True)
        layer(x).backward(g)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def fresh_state():  # a new angle each call: the inference cache of FilterAnsatz.state never hits
        theta.data[0, 0, 0, 0] += 1e-3
        return layer.ansatz.state(theta)

    fwd = {"ansatz.state forward (new angles)": fresh_state,
           "patch_norms": lambda: patch_norms(x, (4, 4), (1, 1), (0, 0)),
           "fidelity_maps forward": lambda: fidelity_maps(x, states, (4, 4)),
           "QuConv2d forward": lambda: layer(x)}
    out = {name: (lambda f=fn: _no_grad(f)) for name, fn in fwd.items()}
    out.update({"ansatz.state forward+backward": state_fb, "fidelity_maps forward+backward": maps_fb,
                "QuConv2d forward+backward": layer_fb, "W3 training step (conv->linear->Adam)": step})
    return out


def _mode(mode: str):
    return fastpath.disabled() if mode == "before" else contextlib.nullcontext()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--filters", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    table = cases(args.batch, args.filters)
    samples = {(name, mode): [] for name in table for mode in ("before", "after")}
    numbers = {}
    for name, fn in table.items():  # warm-up, and calls per sample for ~50 ms samples
        for mode in ("before", "after"):
            with _mode(mode):
                fn()
                numbers[name, mode] = max(1, int(0.05 / max(timed(fn, 3)[0], 1e-6)))
    for _ in range(args.repeats):
        for name, fn in table.items():
            for mode in ("before", "after"):
                with _mode(mode):
                    samples[name, mode].append(timed(fn, numbers[name, mode]))
    rows = []
    print(f"batch {args.batch}, {args.filters} filters 4x4, 3 layers, float32, torch threads "
          f"{torch.get_num_threads()}; median CPU (wall) per call over {args.repeats} samples\n")
    print("| piece | before (reference) | after (fast path) | speed-up |")
    print("|---|---|---|---|")
    for name in table:
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
