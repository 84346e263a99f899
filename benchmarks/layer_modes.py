"""Throughput of QuConv2d in every mode: 64 MNIST images, 8 filters of 4x4, 3 ansatz layers.

    python benchmarks/layer_modes.py [--json benchmarks/layer_modes.json] [--repeats 7]

Reports median seconds and images/s of the forward and of forward+backward, for the exact and shot
forward passes and each gradient mode (exact expectations and 1,000 shots per gradient circuit).
A measurement, not a test: run it on a quiet machine (OMP_NUM_THREADS=1 on a shared one).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from qucnn import QuConv2d
from qucnn.datasets import load_embedded_mnist

MODES = [  # label, layer settings
    ("exact forward, autograd", {}),
    ("1000-shot forward, autograd", {"shots": 1000}),
    ("parameter-shift, exact", {"gradient": "parameter-shift"}),
    ("parameter-shift, 1000 shots", {"gradient": "parameter-shift", "gradient_shots": 1000}),
    ("entanglement (Eq. 17), exact", {"gradient": "entanglement"}),
    ("entanglement (Eq. 17), 1000 shots", {"gradient": "entanglement", "gradient_shots": 1000}),
    ("sampled, budget 1e5", {"gradient": "sampled", "gradient_budget": 100_000}),
]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    x = load_embedded_mnist().test_images[:64]
    rows = []
    for label, settings in MODES:
        layer = QuConv2d(1, 8, 4, layers=3, generator=torch.Generator().manual_seed(0), **settings)
        forward = median_seconds(lambda: layer(x), args.repeats)
        both = median_seconds(lambda: layer(x).sum().backward(), args.repeats)
        cost = layer.last_cost
        rows.append({"mode": label, "forward_s": forward, "forward_images_per_s": 64 / forward,
                     "forward_backward_s": both, "forward_backward_images_per_s": 64 / both,
                     "cost": {k: v.as_dict() for k, v in cost.items()}})
        print(f"{label:<36} forward {64 / forward:>9.0f} images/s   forward+backward {64 / both:>9.0f} images/s")
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                       "threads": torch.get_num_threads()}, "batch": 64, "filters": 8, "kernel": 4,
           "layers": 3, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
