"""Time the Triton kernels' tile choices on a GPU: the forward, the filter-state backward and the forward with
fused shots of W4 (60,000 MNIST images, 4x4 filters, float32), for every block, warp count and (backward)
number of programs per streaming multiprocessor in a small grid. The winners go into
``qucnn.backends.triton.ops`` (``plan``); the JSON keeps the whole grid.

    PYTHONPATH=src python benchmarks/triton_tune.py --json tune.json [--images 60000]

``triton_tune_h200.json`` is run 2 of RESULTS.md's GPU section, with the forward grid of the ``tl.dot`` forward
(blocks 64-256, 2-8 warps, no unrolling); ``triton_tune_h200_forward.json`` is run 4, this grid's forward and
shots (``--kinds forward,shots``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from qucnn import QuConv2d
from qucnn.backends.triton import ops
from qucnn.datasets import load_embedded_mnist

GRID = {
    "forward": {"block": (64, 128, 256, 512), "warps": (4, 8), "unroll_rows": (False, True)},
    "backward": {"block": (32, 64, 128, 256), "warps": (4, 8), "slots": (4, 16, 64)},
    "shots": {"block": (16, 32), "warps": (2, 4), "unroll_rows": (False, True)},
}
SHOTS = 10_000


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of ``fn`` after one warm-up call (CUDA events on a GPU; wall time in the interpreter)."""
    cuda = torch.cuda.is_available()
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="tune.json")
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--budget-s", type=float, default=200.0, help="stop starting new cases after this")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only under TRITON_INTERPRET=1 (a smoke test)")
    parser.add_argument("--kinds", default=",".join(GRID), help="the launches to time (default all)")
    args = parser.parse_args()
    started = time.time()
    base = load_embedded_mnist().train_images
    x = base.repeat(-(-args.images // len(base)), 1, 1, 1)[: args.images].to(args.device, torch.float32).contiguous()
    original = ops.plan.__wrapped__
    forced: dict[str, ops.Plan] = {}

    def plan(filters, taps, double, kind="forward", interpreted=False):
        p = original(filters, taps, double, kind, interpreted)
        return forced.get(kind, p)

    ops.plan = plan
    rows = []
    for filters in (8, 32):
        layer = QuConv2d(1, filters, 4, layers=3, backend="triton",
                         generator=torch.Generator().manual_seed(0)).to(args.device)
        default = {kind: original(filters, 16, False, kind) for kind in GRID}
        for kind, grid in GRID.items():
            if (kind == "shots" and filters != 8) or kind not in args.kinds.split(","):
                continue
            names = list(grid)
            for values in itertools.product(*grid.values()):
                if time.time() - started > args.budget_s:
                    break
                choice = dict(zip(names, values))
                d = default[kind]
                forced.clear()
                forced[kind] = ops.Plan(d.kc, d.nkc, choice["block"], d.m_pad, choice["warps"],
                                        choice.get("unroll_rows", d.unroll_rows))
                ops.SLOTS_PER_SM = choice.get("slots", 4)
                if kind == "forward":
                    def call(m=layer):
                        with torch.no_grad():
                            return m(x)
                elif kind == "shots":
                    def call(m=layer):
                        m.shots = SHOTS
                        with torch.no_grad():
                            out = m(x)
                        m.shots = None
                        return out
                else:
                    def call(m=layer):
                        m.zero_grad(set_to_none=True)
                        m(x).sum().backward()
                try:
                    seconds = timed(call)
                    error = None
                except Exception as err:  # a tile that does not compile or fit: recorded, not fatal
                    seconds, error = None, f"{type(err).__name__}: {str(err)[:200]}"
                row = {"filters": filters, "kind": kind, **choice, "seconds": seconds, "error": error,
                       "default": (choice["block"], choice["warps"], choice.get("unroll_rows", d.unroll_rows))
                       == (d.block, d.warps, d.unroll_rows) and choice.get("slots", 4) == 4}
                rows.append(row)
                print(json.dumps(row), flush=True)
    forced.clear()
    ops.SLOTS_PER_SM = 4
    best = {}
    for (filters, kind), group in itertools.groupby(rows, key=lambda r: (r["filters"], r["kind"])):
        ok = [r for r in group if r["seconds"] is not None]
        if ok:
            best[f"K={filters} {kind}"] = min(ok, key=lambda r: r["seconds"])
    print(json.dumps(best, indent=1))
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
                   "torch": torch.__version__,
                   "images": args.images, "rows": rows, "best": best}, f, indent=1)


if __name__ == "__main__":
    main()
