"""Time the Triton kernel paths on a GPU, the measured kernels against the tap-loop kernels beside them, and print
the entries of ``qucnn.backends.triton.plan.MEASURED_PATHS`` the run supports.

W4's workload (60,000 MNIST images, 4x4 filters, float32), through ``QuConv2d(..., backend="triton")``, for each
launch kind: the forward (K = 8 and 32), the forward + backward (K = 8 and 32; the backward's plan varied), the
forward with 10,000 fused shots (K = 8), and the sampling of given maps (K = 8, 10,000 shots). Each case is the
default plan (what the library runs now) or a candidate of :func:`candidates` (``Plan`` fields replaced), timed
interleaved with the default (median of 5 after a warm-up; CUDA-synchronised). A candidate enters the table only
where it beats the default by more than :data:`MARGIN`; the JSON keeps every row.

    PYTHONPATH=src python benchmarks/triton_tune.py --json benchmarks/triton_tune_paths.json   # the paths
    PYTHONPATH=src python benchmarks/triton_tune.py --mode tiles --json tune.json               # the tile grid

``triton_tune_h200.json`` is the tile grid of run 2 of RESULTS.md's GPU section, with the forward grid of the
``tl.dot`` forward (blocks 64-256, 2-8 warps, no unrolling); ``triton_tune_h200_forward.json`` is run 4, the
tile grid's forward and shots (``--mode tiles --kinds forward,shots``). ``benchmarks/triton_compile_check.py``
compiles every candidate here for sm_90 and records its registers and spills.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time

import torch

#: The old tile grid (``--mode tiles``): the measured kernels' block, warps and unrolling (backward: slots).
GRID = {
    "forward": {"block": (64, 128, 256, 512), "warps": (4, 8), "unroll_rows": (False, True)},
    "backward": {"block": (32, 64, 128, 256), "warps": (4, 8), "slots": (4, 16, 64)},
    "shots": {"block": (16, 32), "warps": (2, 4), "unroll_rows": (False, True)},
}
SHOTS = 10_000
#: A candidate must beat the default by this fraction to enter the table (run-to-run noise of the medians).
MARGIN = 0.03
#: ``(kind, filters)`` the paths mode times.
CASES = (("forward", 8), ("forward", 32), ("backward", 8), ("backward", 32), ("shots", 8), ("sample", 8))


def candidates(kind: str, filters: int) -> list[dict]:
    """The ``Plan`` replacements timed against the default for a launch of ``kind`` with ``filters`` filters
    (``"kc"``: filters per program; the rest are :class:`~qucnn.backends.triton.plan.Plan` fields), the ones
    expected to win first."""
    taps = {"kernel": "taps", "unroll_rows": True}
    kc = 8 if filters == 8 else 16
    if kind == "forward":  # 16 filters x 1024 positions (and 512 without the image layout) spill for sm_90
        out = [{**taps, "kc": kc, "image": True, "block": b, "warps": w} for b in (128, 256, 512) for w in (4, 8)]
        out += [{**taps, "kc": kc, "image": True, "block": 1024, "warps": 8}] if kc == 8 else []
        out += [{**taps, "kc": kc, "image": True, "block": b, "warps": 4, "unroll_rows": False} for b in (256, 512)]
        out += [{**taps, "kc": kc, "block": b, "warps": 4} for b in ((256, 512) if kc == 8 else (256,))]
        return out + ([{**taps, "kc": 8, "image": True, "block": 512, "warps": 4}] if filters > 8 else [])
    if kind == "backward":
        out = [{**taps, "kc": kc, "block": b, "warps": 4, "reduce_dot": dot} for b in (64, 128, 256)
               for dot in (False, True)]
        out += [{**taps, "kc": kc, "block": 128, "warps": 8, "reduce_dot": dot} for dot in (False, True)]
        out += [{**taps, "kc": kc, "block": 128, "warps": 4, "reduce_dot": False, "save_z": True}]
        return out + ([{**taps, "kc": 8, "block": 128, "warps": 4, "reduce_dot": False}] if filters > 8 else [])
    if kind == "shots":  # the tiles of the mixed sampler that compile without (large) spills for sm_90
        out = [{**taps, "mixed": True, "block": b, "warps": w} for b, w in ((16, 4), (16, 2), (32, 4), (32, 8))]
        return out + [{**taps, "mixed": True, "image": True, "block": 32, "warps": 8},
                      {**taps, "mixed": False, "block": 16, "warps": 4}]
    return [{"mixed": True}] if kind == "sample" else []


def replaced(p, filters: int, choice: dict):
    """Plan ``p`` with the fields of ``choice`` (``"kc"``: filters per program)."""
    from qucnn.backends.triton.plan import with_chunks

    fields = {k: v for k, v in choice.items() if k != "kc"}
    p = with_chunks(p, filters, choice["kc"]) if "kc" in choice else p
    return dataclasses.replace(p, **fields)


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of ``fn`` after one warm-up call (CUDA-synchronised on a GPU; wall time in the interpreter)."""
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


def _call(kind: str, layer, x: torch.Tensor, maps: torch.Tensor | None, mixed: bool | None):
    """The timed call of ``kind``."""
    from qucnn.backends.triton import maps as triton_maps

    if kind == "forward":
        def call():
            with torch.no_grad():
                return layer(x)
    elif kind == "shots":
        def call():
            layer.shots = SHOTS
            with torch.no_grad():
                out = layer(x)
            layer.shots = None
            return out
    elif kind == "sample":
        gen = torch.Generator(device=x.device).manual_seed(0)

        def call():
            return triton_maps.sample(maps, SHOTS, gen, mixed=mixed)
    else:
        def call():
            layer.zero_grad(set_to_none=True)
            layer(x).sum().backward()
    return call


def _row(filters: int, kind: str, choice: dict, fn) -> dict:
    try:
        seconds, error = timed(fn), None
    except Exception as err:  # a candidate that does not compile or fit: recorded, not fatal
        seconds, error = None, f"{type(err).__name__}: {str(err)[:200]}"
    row = {"filters": filters, "kind": kind, "choice": choice, "seconds": seconds, "error": error}
    print(json.dumps(row), flush=True)
    return row


def paths(x: torch.Tensor, kinds: list[str], budget_s: float, started: float) -> tuple[list[dict], dict]:
    """Time every candidate against the default (interleaved: default, candidate, default, ...); returns the rows
    and the ``MEASURED_PATHS`` entries they support (key: ``(kind, default filters per program)``)."""
    from qucnn import QuConv2d
    from qucnn.backends.triton import ops

    original = ops.plan
    forced: dict = {}

    def plan(filters, taps, double, kind="forward", interpreted=False):
        p = original(filters, taps, double, kind, interpreted)
        return replaced(p, filters, forced[kind]) if kind in forced else p

    ops.plan = plan
    rows, table = [], {}
    try:
        chosen = [(kind, filters) for kind, filters in CASES if kind in kinds]
        for i, (kind, filters) in enumerate(chosen):
            deadline = started + budget_s * (i + 1) / len(chosen)  # each case its share of the budget
            layer = QuConv2d(1, filters, 4, layers=3, backend="triton",
                             generator=torch.Generator().manual_seed(0)).to(x.device)
            with torch.no_grad():
                maps = layer(x) if kind == "sample" else None
            plan_kind = "forward" if kind == "sample" else kind
            base = []
            for choice in candidates(kind, filters):
                if time.time() > deadline:
                    break
                forced.clear()
                base.append(_row(filters, kind, {}, _call(kind, layer, x, maps, False)))
                if kind != "sample":
                    forced[plan_kind] = choice
                rows.append(_row(filters, kind, choice, _call(kind, layer, x, maps, choice.get("mixed"))))
                forced.clear()
            times = [r["seconds"] for r in base if r["seconds"] is not None]
            default = statistics.median(times) if times else None
            rows += base
            ok = [r for r in rows if r["kind"] == kind and r["filters"] == filters and r["choice"]
                  and r["seconds"] is not None]
            if ok and default is not None:
                best = min(ok, key=lambda r: r["seconds"])
                if best["seconds"] < default * (1 - MARGIN):
                    key = ("sample", 0) if kind == "sample" else (plan_kind, original(filters, 16, False, plan_kind).kc)
                    table[key] = best["choice"]
                print(json.dumps({"kind": kind, "filters": filters, "default_s": default, "best": best}), flush=True)
    finally:
        ops.plan = original
    return rows, table


def tiles(x: torch.Tensor, kinds: list[str], budget_s: float, started: float) -> list[dict]:
    """The old grid of the measured kernels' tiles (block, warps, unrolling; the backward's slots per SM)."""
    from qucnn import QuConv2d
    from qucnn.backends.triton import ops, plan as plan_module

    original = ops.plan
    forced: dict = {}
    ops.plan = lambda filters, taps, double, kind="forward", interpreted=False: forced.get(
        kind, original(filters, taps, double, kind, interpreted))
    rows = []
    try:
        for filters in (8, 32):
            layer = QuConv2d(1, filters, 4, layers=3, backend="triton",
                             generator=torch.Generator().manual_seed(0)).to(x.device)
            for kind, grid in GRID.items():
                if (kind == "shots" and filters != 8) or kind not in kinds:
                    continue
                d = original(filters, 16, False, kind)
                for values in itertools.product(*grid.values()):
                    if time.time() - started > budget_s:
                        break
                    choice = dict(zip(grid, values))
                    forced.clear()
                    forced[kind] = dataclasses.replace(d, block=choice["block"], warps=choice["warps"],
                                                       unroll_rows=choice.get("unroll_rows", d.unroll_rows))
                    plan_module.SLOTS_PER_SM = choice.get("slots", 4)
                    rows.append(_row(filters, kind, choice, _call(kind, layer, x, None, None)))
    finally:
        ops.plan = original
        plan_module.SLOTS_PER_SM = 4
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="tune.json")
    parser.add_argument("--mode", choices=("paths", "tiles"), default="paths")
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="stop starting new cases after this (paths: each kind its share)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only under TRITON_INTERPRET=1 (a smoke test)")
    parser.add_argument("--kinds", default=",".join(k for k, _ in CASES[::2]) + ",sample",
                        help="the launches to time (default all)")
    args = parser.parse_args()
    from qucnn.datasets import load_embedded_mnist

    started = time.time()
    base = load_embedded_mnist().train_images
    x = base.repeat(-(-args.images // len(base)), 1, 1, 1)[: args.images].to(args.device, torch.float32).contiguous()
    kinds = args.kinds.split(",")
    table = {}
    if args.mode == "paths":
        rows, table = paths(x, kinds, args.budget_s, started)
        print("MEASURED_PATHS = " + repr(table), flush=True)
    else:
        rows = tiles(x, kinds, args.budget_s, started)
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
                   "torch": torch.__version__, "images": args.images, "mode": args.mode, "rows": rows,
                   "measured_paths": {f"{k[0]},{k[1]}": v for k, v in table.items()},
                   "seconds": time.time() - started}, f, indent=1)


if __name__ == "__main__":
    main()
