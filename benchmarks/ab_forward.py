"""Same-machine A/B of two source trees on the W1 forward and a small training-layer step, minimum over many
calls of single-threaded CPU time (what the shared VM's noise least disturbs):

    OMP_NUM_THREADS=1 python benchmarks/ab_forward.py SRC_A SRC_B [--rounds 2]

prints, per tree and round, the minimum and median of ``QuConv2d(1, 1, 4, layers=3)`` on the 16 W1 test images
(float64, no grad, 1,000 calls; with the minor page faults per call, which glibc's heap trimming adds to some
runs and which the CPU time includes) and of ``QuConv2d(1, 8, 4, layers=3)`` forward + backward on 64 images (300 calls).
Each measurement runs in its own process, so the two trees never share an import.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import resource, sys, time, torch
sys.path.insert(0, sys.argv[1])
import qucnn
from qucnn.datasets import load_embedded_mnist
torch.set_num_threads(1)
images = load_embedded_mnist().test_images[:16].double()
w1 = qucnn.QuConv2d(1, 1, 4, layers=3, generator=torch.Generator().manual_seed(0)).double()
x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
step = qucnn.QuConv2d(1, 8, 4, layers=3, generator=torch.Generator().manual_seed(0))
def times(fn, n):
    out = []
    for _ in range(n):
        t = time.process_time_ns(); fn(); out.append(time.process_time_ns() - t)
    return sorted(out)
with torch.no_grad():
    for _ in range(50):
        w1(images)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = times(lambda: w1(images), 1000)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 1000
b = times(lambda: step(x).sum().backward(), 300)
print(f"W1 min {a[0] / 1e3:.0f} us, median {a[len(a) // 2] / 1e3:.0f} us, {faults:.0f} page faults per call | "
      f"layer fwd+bwd 64 images min {b[0] / 1e3:.0f} us, median {b[len(b) // 2] / 1e3:.0f} us")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, help="two src/ folders (e.g. a git worktree's src and this one's)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for r in range(args.rounds):
        for tree in args.trees[::-1] if r % 2 else args.trees:  # alternate which tree runs first
            out = subprocess.run([sys.executable, "-c", CHILD, tree], capture_output=True, text=True, check=True)
            print(f"round {r + 1} {tree}: {out.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
