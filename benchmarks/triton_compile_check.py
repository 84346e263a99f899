"""Compile every Triton kernel launch of a small workload ahead of time for a GPU target, without a GPU.

Triton's interpreter (the tests) runs the kernels' semantics on the CPU; this script checks what it cannot:
that each specialisation the library launches compiles for real hardware (types, layouts, loops) and how many
registers it needs (``ptxas -v``: registers per thread, spill stores/loads). It runs the library's own
launch code on CPU tensors with the launches intercepted, so it compiles exactly the argument types and
constexprs the library would launch: those of the current plan, then those of every candidate path
``benchmarks/triton_tune.py`` times (the tap-loop kernels, the mixed-precision sampler). Needs Triton 3.9's
offline compiler API (``ASTSource``, ``GPUTarget``).

    PYTHONPATH=src python benchmarks/triton_compile_check.py [--arch 90] [--json out.json] [--no-candidates]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TYPES = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16",
         torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8", torch.int8: "i8", torch.bool: "i1"}


def _type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for {type(value).__name__}")


def intercept(arch: int, log=print) -> dict[str, dict]:
    """Make every Triton launch compile for ``sm_<arch>`` instead of running (once per specialisation) and
    return the dict the results land in: ``{key: {kernel, constexprs, warps, registers, spill_stores, ...}}``.
    Also lets the library's launch code take CPU tensors (``ops.check_device``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    from qucnn.backends.triton import ansatz_ops, ops

    ptxas = get_ptxas(arch).path  # the assembler Triton itself uses for this architecture
    seen: dict[str, dict] = {}

    def compile_instead(self, *call_args, grid, warmup, **kwargs):
        options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        named = dict(zip(self.arg_names, call_args))
        named.update(kwargs)
        signature, constexprs = {}, {}
        for i, name in enumerate(self.arg_names):
            if i in self.constexprs:
                signature[name] = "constexpr"
                constexprs[name] = named[name]
            else:
                signature[name] = _type(named[name])
        key = f"{self.fn.__name__}[" + ",".join(f"{k}={v}" for k, v in constexprs.items()) + \
            f",{','.join(t for t in signature.values() if t != 'constexpr')},warps={options.get('num_warps', 4)}]"
        if key in seen:
            return None
        t0 = time.perf_counter()
        compiled = triton.compile(ASTSource(self, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                                  options=options)
        seconds = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            ptx = Path(tmp) / "k.ptx"
            ptx.write_text(compiled.asm["ptx"])
            target = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
            out = subprocess.run([str(ptxas), "-v", f"-arch={target}", str(ptx), "-o", str(Path(tmp) / "k.o")],
                                 capture_output=True, text=True).stderr
        regs = re.search(r"Used (\d+) registers", out)
        spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
        seen[key] = {"kernel": self.fn.__name__, "constexprs": {k: str(v) for k, v in constexprs.items()},
                     "warps": options.get("num_warps", 4), "registers": int(regs.group(1)) if regs else None,
                     "spill_stores": int(spill.group(1)) if spill else None,
                     "spill_loads": int(spill.group(2)) if spill else None, "compile_s": round(seconds, 2)}
        if log is not None:
            row = seen[key]
            log(f"{row['kernel']:20s} regs={row['registers']} spill={row['spill_stores']}/{row['spill_loads']} "
                f"warps={row['warps']} {seconds:.1f}s {constexprs}")
        return None

    JITFunction.run = compile_instead
    ops.check_device = ansatz_ops.check_device = lambda t: None
    return seen


def workload() -> None:
    """The launches of the current plan: maps and gradients in every input dtype for five geometries (1 to 130
    filters), the fused expectations with shots and with upstream deltas and a mask, sampling, and the ansatz."""
    from qucnn.backends.triton import maps
    from qucnn.backends.triton.ansatz_ops import ansatz_states
    from qucnn.core.geometry import ConvSpec

    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for k, spec, c in ((8, ConvSpec.make(4), 1), (32, ConvSpec.make(4), 1), (1, ConvSpec.make(3, padding=1), 3),
                           (64, ConvSpec.make(2, stride=2, dilation=2), 2), (130, ConvSpec.make(2), 1)):
            x = torch.rand(2, c, 28, 28, generator=gen).to(dtype)
            sdt = torch.complex128 if dtype == torch.float64 else torch.complex64
            states = torch.randn(k, 1 << spec.n_qubits(c), dtype=sdt)
            xr, sr = x.clone().requires_grad_(True), states.clone().requires_grad_(True)
            fid = maps.fidelity_maps(xr, sr, spec)[0]
            fid.backward(torch.ones_like(fid))
            if dtype in (torch.float32, torch.float64):
                maps.expectations(x, states, 1, spec, shots=1000)
                maps.expectations(x, states, 1, spec, upstream=torch.rand_like(fid), mask=fid > 0)
                maps.sample(fid.detach().float(), 1000)
    for dtype in (torch.float32, torch.float64):
        for n in (2, 4, 6):
            theta = torch.rand(8, 3, n, 2, dtype=dtype).requires_grad_(True)
            ansatz_states(theta).abs().sum().backward()


def candidate_workload() -> None:
    """The launches of every candidate path of ``triton_tune.py`` (W4's geometry: 4x4 float32 patches, K = 8 and
    32; the forward, the backward, the shots, the sampler), each key recording the path in its constexprs."""
    from triton_tune import CASES, SHOTS, candidates, replaced

    from qucnn.backends.triton import maps, ops
    from qucnn.core.geometry import ConvSpec

    original = ops.plan
    spec = ConvSpec.make(4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 28, 28, generator=gen)
    for kind, filters in CASES:
        states = torch.randn(filters, 16, dtype=torch.complex64, generator=gen)
        for choice in candidates(kind, filters):
            if kind == "sample":
                maps.sample(torch.rand(2, filters, 25, 25, generator=gen), SHOTS, mixed=choice["mixed"])
                continue
            forced = {kind: choice}
            ops.plan = lambda k, taps, double, which="forward", interpreted=False, forced=forced: (
                replaced(original(k, taps, double, which), k, forced[which]) if which in forced
                else original(k, taps, double, which))
            try:
                if kind == "shots":
                    maps.expectations(x, states, 1, spec, shots=SHOTS)
                elif kind == "forward":
                    maps.fidelity_maps(x, states, spec)
                else:
                    for need_x in (False, True):
                        xr = x.clone().requires_grad_(need_x)
                        fid = maps.fidelity_maps(xr, states.clone().requires_grad_(True), spec)[0]
                        fid.backward(torch.ones_like(fid))
            finally:
                ops.plan = original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability (90: H100/H200)")
    parser.add_argument("--json", help="write the per-kernel table here")
    parser.add_argument("--no-candidates", action="store_true",
                        help="only the launches of the current plan, not the candidate paths of triton_tune.py")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: this script compiles for the GPU")
    import triton

    seen = intercept(args.arch, log=lambda line: print(line, flush=True))
    workload()
    if not args.no_candidates:
        candidate_workload()
    spills = [v for v in seen.values() if v["spill_stores"]]
    print(f"{len(seen)} kernel specialisations compiled for sm_{args.arch}; {len(spills)} spill registers")
    if args.json:
        Path(args.json).write_text(json.dumps({"arch": args.arch, "triton": triton.__version__,
                                               "kernels": list(seen.values())}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
