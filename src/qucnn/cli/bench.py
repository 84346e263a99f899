"""``qucnn bench``: QuCNN against PennyLane, Qiskit Aer, NumPy and a classical convolution in one run."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..bench import markdown, write
from ..bench import run as run_bench
from ..bench.runner import TIMING_THREADS
from ..utils.checks import UsageError
from ..utils.files import check_writable_file
from ..utils.progress import show_progress
from .common import add_progress_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark QuCNN against PennyLane, Qiskit Aer, NumPy and nn.Conv2d (one process)",
        description="Time every implementation of each workload in one process, interleaved, on the same "
                    "data; print a Markdown table (and write JSON + .md with --json). Missing peers "
                    "(pip install 'qucnn[bench]') give skipped rows with a note.")
    p.add_argument("--workload", choices=["w1", "w2", "w3", "w4", "w5", "all"], default="all",
                   help="w1 forward (Fig. 3), w2 gradient, w3 training step, w4 scale, w5 a training step's "
                        "circuits through Qiskit Aer (default all)")
    p.add_argument("--quick", action="store_true", help="small peer subsets and W4 sizes (seconds, for CI)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON here, and the table beside it (.md)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda adds GPU rows (skipped with a note without a GPU)")
    p.add_argument("--skip-cpu", action="store_true",
                   help="with --device cuda: leave out the CPU cases (W3, W4: GPU rows only; for a GPU session's budget)")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per case (default 5, quick 3)")
    small = ", ".join(w.upper() for w in TIMING_THREADS)
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch threads of every timed section (default: 1 for {small}, whose small calls lose more "
                        "to thread start-up than they gain; torch's choice for W4); the JSON records what each "
                        "workload used")
    p.add_argument("--w4-images", type=int, default=None, help="images in W4 (default 60000, quick 2000)")
    p.add_argument("--w3-batch", type=int, default=None, help="images per W3 training step (default 64)")
    add_progress_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.json:
        check_writable_file(args.json, "--json")
    workloads = ["w1", "w2", "w3", "w4", "w5"] if args.workload == "all" else [args.workload]
    bar = tqdm(desc="qucnn bench", unit="sample", file=sys.stderr, leave=False,
               disable=not show_progress(args.progress))

    def progress(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    try:
        result = run_bench(workloads, quick=args.quick, device=args.device, repeats=args.repeats,
                           w4_images=args.w4_images, progress=progress, w3_batch=args.w3_batch,
                           skip_cpu=args.skip_cpu, threads=args.threads)
    finally:
        bar.close()
    flags = [f"--workload {args.workload}"] + (["--quick"] if args.quick else []) + (
        ["--skip-cpu"] if args.skip_cpu else []) + [
        f"--{name.replace('_', '-')} {value}" for name, value in
        (("device", args.device), ("repeats", args.repeats), ("threads", args.threads),
         ("w4_images", args.w4_images), ("w3_batch", args.w3_batch), ("json", args.json)) if value is not None]
    result["command"] = " ".join(["qucnn bench"] + flags)
    print(markdown(result))
    if args.json:
        path, md = write(result, args.json)
        print(f"wrote {path} and {md}")
    return 0
