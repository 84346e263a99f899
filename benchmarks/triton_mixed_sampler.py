"""How often the mixed-precision binomial sampler needs float64, and whether it ever decides differently from
float64 (counts, not times: Triton's interpreter on the CPU, or compiled on a GPU).

For each ``(S, q)``, ``2**18`` BTRS proposals from Philox: the share where float32 cannot decide within its
error bound (``binomial._btrs_try_mixed``'s ``unsure``: float64 takes those proposals again) and the number it
decided otherwise than float64 where it was sure (must be 0).

    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/triton_mixed_sampler.py --json benchmarks/triton_mixed_sampler.json
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl

from qucnn.backends.triton import binomial, ops

CASES = ((1e3, 0.3), (1e4, 0.45), (1e4, 0.01), (1e5, 0.5), (2.0**17, 0.5), (1e6, 0.5), (1e9, 0.3), (2.0**44, 0.5))


@triton.jit
def _probe(unsure_ptr, wrong_ptr, n, q, tail_ptr, key_ptr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    c = i.to(tl.uint32)
    r0, r1, _, _ = tl.philox(tl.load(key_ptr), c, c * 0, c * 0, c * 0)
    nn = tl.zeros((BLOCK,), tl.float64) + n
    nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0 = binomial._btrs_constants(nn, nn * 0 + q, nn > 0, tail_ptr)
    k, ok, unsure = binomial._btrs_try_mixed(r0, r1, nb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
    k64, ok64 = binomial._btrs_try(r0, r1, nb, qb, aa, bb, cc, vr, alpha, rr, mode, bound0, tail_ptr)
    tl.store(unsure_ptr + i, unsure.to(tl.int32))
    tl.store(wrong_ptr + i, (~unsure & ((ok != ok64) | (k != k64))).to(tl.int32))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="triton_mixed_sampler.json")
    parser.add_argument("--proposals", type=int, default=2**18)
    parser.add_argument("--device", default="cpu", help="cpu (TRITON_INTERPRET=1) or cuda")
    args = parser.parse_args()
    rows = []
    block = 4096
    for n, q in CASES:
        unsure = torch.empty(args.proposals, dtype=torch.int32, device=args.device)
        wrong = torch.empty_like(unsure)
        key = torch.tensor([12345, 678], dtype=torch.int64, device=args.device)
        _probe[(args.proposals // block,)](unsure, wrong, float(n), q, ops.tails(unsure.device), key, BLOCK=block)
        rows.append({"shots": n, "q": q, "proposals": args.proposals, "unsure": float(unsure.double().mean()),
                     "decided_otherwise": int(wrong.sum())})
        print(json.dumps(rows[-1]), flush=True)
    with open(args.json, "w") as f:
        json.dump({"device": args.device, "interpreted": ops.interpreting(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
