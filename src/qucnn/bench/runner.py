"""Timing, rows, ratios, the Markdown table and the JSON of ``qucnn bench``.

Every case of a workload is timed in the same process, interleaved repeat by repeat (A B C A B C ...), so
a burst of load from elsewhere hits all of them alike and the ratios hold on a noisy machine. One warm-up
call per case first; each sample then runs the case ``number`` times (enough calls to last
:data:`MIN_SAMPLE_S`) and the row keeps the median over samples, in wall-clock and in CPU seconds.

Each workload is timed at a set number of torch threads (:func:`timing_threads`, :func:`torch_threads`),
recorded in every row (``torch_threads``) and in the table's heading.

Example:
    >>> rows = measure("w0", [Case("noop", lambda: None, items=1, unit="call")], repeats=3)
    >>> rows[0]["median_s"] > 0
    True
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy
import torch

from ..utils.checks import UsageError
from ..utils.files import atomic_write_text
from ..utils.markdown import cell
from .peers import version

#: A sample repeats a fast case until it lasts at least this long: long against the scheduler's time
#: slices and a cold first call on a shared machine, so the medians stay stable.
MIN_SAMPLE_S = 0.1
#: ... but never more than this many calls per sample.
MAX_NUMBER = 2000
#: Torch threads of a workload's timed section when the user gives none. W1, W2, W3 and W5 are small,
#: latency-bound calls where intra-op threads cost more than they bring on a shared machine (measured in
#: benchmarks/RESULTS.md, "Threads"). W4 (throughput over thousands of images) keeps torch's default.
TIMING_THREADS = {"w1": 1, "w2": 1, "w3": 1, "w5": 1}


def timing_threads(workload: str, requested: int | None = None) -> int | None:
    """The torch threads to time ``workload`` with: ``requested`` (``--threads``) if given, else
    :data:`TIMING_THREADS` (``None``: torch's default)."""
    return requested if requested is not None else TIMING_THREADS.get(workload)


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with ``torch.set_num_threads(count)`` (``None``: as it is) and restore the setting after;
    yields the number of threads in effect."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@dataclass
class Case:
    """One implementation of a workload: ``fn()`` does one call covering ``items`` ``unit``s.

    ``check(result) -> dict`` (optional) turns the warm-up call's result into accuracy fields
    (e.g. ``{"max_abs_err": ...}``); ``sync`` (optional) waits for a device (CUDA) before the clock stops.
    ``extra`` fields are copied into the row.
    """

    impl: str
    fn: Callable[[], Any]
    items: int
    unit: str
    note: str = ""
    check: Callable[[Any], dict] | None = None
    sync: Callable[[], None] | None = None
    device: str = "cpu"
    peer: bool = False
    extra: dict = field(default_factory=dict)


def skipped(workload: str, impl: str, note: str, device: str = "cpu", peer: bool = True) -> dict:
    """A row for a case that could not run (missing peer, no GPU): a note instead of numbers."""
    return {"workload": workload, "impl": impl, "device": device, "peer": peer, "skipped": True,
            "median_s": None, "items_per_s": None, "note": note}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _timed(case: Case, number: int) -> tuple[float, float]:
    w0, c0 = _clock()
    for _ in range(number):
        case.fn()
    if case.sync is not None:
        case.sync()
    w1, c1 = _clock()
    return (w1 - w0) / number, (c1 - c0) / number


def _calls_per_sample(case: Case, first: float) -> int:
    """Calls per sample so that a sample lasts :data:`MIN_SAMPLE_S`, calibrated on doubling runs (the first,
    cold call over-estimates a fast case)."""
    if first >= MIN_SAMPLE_S:
        return 1
    calls, per_call = 1, first
    while calls < MAX_NUMBER:
        per_call = _timed(case, calls)[0]
        if per_call * calls >= MIN_SAMPLE_S / 4:
            break
        calls *= 2
    return max(1, min(MAX_NUMBER, math.ceil(MIN_SAMPLE_S / max(per_call, 1e-9))))


def measure(workload: str, cases: list[Case], repeats: int, progress=None) -> list[dict]:
    """Warm up every case, then time them interleaved ``repeats`` times; one row per case.

    A case that raises is reported as a skipped row with the error as its note (a broken peer must not
    stop the run). ``progress`` (optional) is called with a short label before each timed sample.
    """
    if repeats < 1:
        raise UsageError(f"repeats must be >= 1, got {repeats}")
    live: list[tuple[Case, int, dict]] = []
    rows: list[dict] = []
    for case in cases:
        try:
            w0 = time.perf_counter()
            result = case.fn()
            if case.sync is not None:
                case.sync()
            first = time.perf_counter() - w0
            checks = case.check(result) if case.check is not None else {}
        except Exception as err:  # noqa: BLE001 -- a failing case becomes a note, the run goes on
            rows.append(skipped(workload, case.impl, f"failed: {type(err).__name__}: {err}", case.device,
                                case.peer))
            continue
        live.append((case, _calls_per_sample(case, first), checks))
    def key(c: Case) -> str:  # one series per implementation, device and variant
        return f"{c.impl}@{c.device}@{c.extra.get('variant', '')}"

    samples: dict[str, list[tuple[float, float]]] = {key(c): [] for c, _, _ in live}
    for rep in range(repeats):
        for case, number, _ in live:
            if progress is not None:
                progress(f"{workload} {case.impl} [{rep + 1}/{repeats}]")
            samples[key(case)].append(_timed(case, number))
    for case, number, checks in live:
        wall = [w for w, _ in samples[key(case)]]
        cpu = [c for _, c in samples[key(case)]]
        med = statistics.median(wall)
        rows.append({
            "workload": workload, "impl": case.impl, "device": case.device, "peer": case.peer,
            "skipped": False, "items": case.items, "unit": case.unit, "median_s": med,
            "items_per_s": case.items / med if med > 0 else math.inf, "cpu_median_s": statistics.median(cpu),
            "min_s": min(wall), "repeats": repeats, "calls_per_sample": number, "samples_s": wall,
            "torch_threads": torch.get_num_threads(),
            **checks, **case.extra, "note": case.note,
        })
    return rows


def add_ratios(rows: list[dict], reference: str) -> None:
    """``speedup_vs``: this row's items/s over the reference row's and over the fastest peer's (same
    workload and device). ``x > 1`` means this row is faster."""
    live = [r for r in rows if not r.get("skipped")]
    for r in live:
        group = [o for o in live if o["workload"] == r["workload"] and o["device"] == r["device"]
                 and o.get("variant") == r.get("variant")]
        ratios = {}
        ref = next((o for o in group if o["impl"] == reference), None)
        if ref is not None:
            ratios[reference] = r["items_per_s"] / ref["items_per_s"]
        peers = [o for o in group if o.get("peer")]
        if peers:
            best = max(peers, key=lambda o: o["items_per_s"])
            ratios["fastest-peer"] = r["items_per_s"] / best["items_per_s"]
            ratios["fastest-peer-name"] = best["impl"]
        r["speedup_vs"] = ratios


def machine_info(device: str) -> dict:
    """The machine, as far as the run can tell: CPU, cores, load, library versions, threads, device."""

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "torch_threads": torch.get_num_threads(),
        "pennylane": version("pennylane"), "pennylane_lightning": version("pennylane_lightning"),
        "qiskit": version("qiskit"), "qiskit_aer": version("qiskit_aer"),
        "device": device, "cuda": torch.cuda.is_available(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"},
        "thread_env": {k: v for k, v in os.environ.items()
                       if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["loadavg_start"] = os.getloadavg()
        with open("/proc/meminfo") as fh:
            mem = dict(line.split(":", 1) for line in fh)
        info["mem_total_gib"] = int(mem["MemTotal"].split()[0]) / 2**20
        info["mem_available_gib"] = int(mem["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        pass
    return info


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}x" if x < 1000 else f"{x:,.0f}x"


def markdown(result: dict) -> str:
    """The rows as a Markdown table (one per workload), then the targets and the notes."""
    lines: list[str] = []
    for workload in sorted({r["workload"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["workload"] == workload]
        ref = result.get("references", {}).get(workload, "")
        threads = sorted({r["torch_threads"] for r in rows if r.get("torch_threads")})
        at = f" (torch threads: {', '.join(map(str, threads))})" if threads else ""
        lines += [f"### {workload.upper()}: {result.get('descriptions', {}).get(workload, '')}{at}", "",
                  f"| impl | device | items/call | median | CPU median | items/s | vs {ref or 'ref'} "
                  "| vs fastest peer | check | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            name = cell(r["impl"] + (f" ({r['variant']})" if r.get("variant") else ""))
            if r.get("skipped"):
                lines.append(f"| {name} | {r['device']} | - | - | - | - | - | - | - | skipped: {cell(r['note'])} |")
                continue
            sv = r.get("speedup_vs", {})
            check = ", ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in r.items() if k in CHECK_KEYS)
            lines.append(
                f"| {name} | {r['device']} | {r['items']:,} {r['unit']} | {_fmt_time(r['median_s'])} | "
                f"{_fmt_time(r.get('cpu_median_s'))} | {_fmt_rate(r['items_per_s'])} | {_fmt_ratio(sv.get(ref))} | "
                f"{_fmt_ratio(sv.get('fastest-peer'))} | {check} | {cell(r.get('note', ''))} |")
        lines.append("")
    if result.get("targets"):
        lines += ["### Targets (ratios from this run)", "", "| target | value | met |", "|---|---|---|"]
        for t in result["targets"]:
            if t["met"] is None:
                missing = t.get("missing") or []
                met = "not evaluated" + (f" (not run: {', '.join(missing)})" if missing else "")
            else:
                met = "yes" if t["met"] else "NO"
            value = "-" if t["value"] is None else f"{t['value']:.4g}"
            lines.append(f"| {cell(t['name'])} | {value} | {met} |")
        lines.append("")
    if result.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


#: Row fields shown in the table's check column.
CHECK_KEYS = ("max_abs_err", "grad_rel_err", "max_z", "forward_max_sigmas", "gradient_max_sigmas", "fraction_of_copy",
              "x_floor", "peak_rss_delta_mib", "peak_cuda_mib", "gib_per_s", "goal_met")


def write(result: dict, path: str | Path) -> tuple[Path, Path]:
    """Write ``result`` as JSON to ``path`` and the table as Markdown beside it (same stem, ``.md``), each
    atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(result, indent=1, default=_json_default) + "\n")
    md = path.with_suffix(".md")
    atomic_write_text(md, markdown(result) + "\n")
    return path, md


def _json_default(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


__all__ = ["Case", "measure", "skipped", "add_ratios", "machine_info", "markdown", "write", "MIN_SAMPLE_S",
           "TIMING_THREADS", "timing_threads", "torch_threads"]
