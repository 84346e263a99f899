"""How exact torch.binomial is at huge shot counts, and the chunked sampler qucnn uses instead.

    OMP_NUM_THREADS=1 python benchmarks/binomial_exactness.py [--json benchmarks/binomial_exactness.json]

For each count S and success probability p, draws N binomials (seeded) and reports the mean and the variance
of the standardised draws ``(n - S p) / sqrt(S p (1 - p))``, in standard errors (the mean's is ``1/sqrt(N)``,
the variance's ``sqrt(2/N)``): an exact sampler gives both within a few standard errors. Rows:

- ``torch``: one ``torch.binomial`` draw at S (what qucnn did before; its BTRS acceptance test runs out of
  float64 precision as S grows);
- ``drift``: the mean and variance shift of ``torch`` at S against the same seeds at ``2**40``, in standard
  deviations (the rejection sampler maps the same uniforms to nearly the same standardised draws, so the
  seed's noise cancels and only the precision loss remains);
- ``qucnn``: :func:`qucnn.core.swap_test.estimate_z` (draws of at most ``EXACT_DRAW_LIMIT`` shots, summed).

A measurement, not a test (tests/test_faults.py checks ``S = 2**53`` at 5 standard errors).
"""

from __future__ import annotations

import argparse
import json
import math
import platform

import torch

from qucnn.core.swap_test import EXACT_DRAW_LIMIT, estimate_z


def standardised(n: torch.Tensor, shots: int, p: float) -> torch.Tensor:
    return (n - shots * p) / math.sqrt(shots * p * (1 - p))


def torch_draws(shots: int, p: float, draws: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    count = torch.full((draws,), float(shots), dtype=torch.float64)
    return standardised(torch.binomial(count, torch.full_like(count, p), generator=g), shots, p)


def qucnn_draws(shots: int, p: float, draws: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = estimate_z(torch.full((draws,), 2 * p - 1, dtype=torch.float64), shots, g)
    return standardised((z + 1) / 2 * shots, shots, p)


def row(kind: str, exponent: int, p: float, x: torch.Tensor) -> dict:
    n = x.numel()
    mean, var = x.mean().item(), x.var().item()
    return {"sampler": kind, "shots": f"2**{exponent}", "p": p, "draws": n, "mean_se": mean * math.sqrt(n),
            "variance_minus_1": var - 1, "variance_se": (var - 1) / math.sqrt(2 / n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--draws", type=int, default=2_000_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for p in (0.5, 0.3):
        for exponent in (40, 44, 46, 48, 50, 53):
            rows.append(row("torch", exponent, p, torch_draws(2**exponent, p, args.draws, 1)))
        base = torch_draws(2**40, p, 10 * args.draws, 2)
        for exponent in (44, 46, 48, 50):
            x = torch_draws(2**exponent, p, 10 * args.draws, 2)
            rows.append({"sampler": "drift", "shots": f"2**{exponent}", "p": p, "draws": x.numel(),
                         "mean_shift_std": (x - base).mean().item(), "variance_shift": (x.var() - base.var()).item()})
        rows.append(row("qucnn", 53, p, qucnn_draws(2**53, p, args.draws, 3)))
    for r in rows:
        print(json.dumps(r))
    if args.json:
        meta = {"command": "OMP_NUM_THREADS=1 python benchmarks/binomial_exactness.py --json "
                           "benchmarks/binomial_exactness.json", "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(), "exact_draw_limit": f"2**{EXACT_DRAW_LIMIT.bit_length() - 1}"}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    main()
