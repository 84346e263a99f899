"""W4 of ``qucnn bench``: fidelity maps of many 28x28 images (60,000 by default: the embedded MNIST digits
tiled), 8 and 32 filters, forward and forward + backward, with the achieved bytes/s against the machine's
copy bandwidth (a large tensor copy measured in the same run) and the peak memory.

Each (filters, mode) case runs in a fresh subprocess, so its peak memory is its own: the CPU peak is the
resident-set high-water mark (``VmHWM``, reset before the run through ``/proc/self/clear_refs``; the
``ru_maxrss`` high-water mark where that is not possible) minus the resident set before the run
(``tracemalloc`` does not see torch's allocations); on CUDA it is ``torch.cuda.max_memory_allocated``.
The child prints one JSON line.

Bytes moved (the minimum any implementation must move): the input once and the output once,
``N * 784 * 4 + N * K * 625 * 4`` bytes in float32. Two rooflines, both measured in the same run: the
copy bandwidth of a warm buffer, and the first-touch bandwidth of writing a fresh allocation (every page
mapped and zeroed by the operating system), which bounds any call that returns a new output:
``floor_s = output bytes / first-touch + input bytes / copy``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..backends.policy import CPU_CHUNK_ELEMENTS as CHUNK_ELEMENTS
from ..datasets import load_embedded_mnist
from ..nn.layer import QuConv2d
from .runner import skipped

DESCRIPTION = "scale: fidelity maps of N 28x28 images (tiled MNIST), 8 and 32 filters 4x4, 3 layers, float32"
FILTERS = (8, 32)
MODES = ("forward", "forward+backward")


def images(count: int, device: str = "cpu") -> torch.Tensor:
    """``count`` 28x28 float32 images: the embedded MNIST digits (train then test) tiled."""

    data = load_embedded_mnist()
    pool = torch.cat([data.train_images, data.test_images])
    reps = -(-count // len(pool))
    return pool.repeat(reps, 1, 1, 1)[:count].contiguous().to(device)


def copy_bandwidth(device: str = "cpu", mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s of ``dst.copy_(src)`` for a ``mib`` MiB float32 tensor (read + write counted): the roofline."""
    n = mib * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 2 * n * 4 / statistics.median(times)


def first_touch_bandwidth(device: str = "cpu", mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s of writing a FRESH ``mib`` MiB tensor (``torch.empty(...).fill_(0)``, a new allocation each
    time): what producing a new output costs where the operating system must map and zero every page."""
    n = mib * 2**20 // 4
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = torch.empty(n, device=device).fill_(0)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del out
    return n * 4 / statistics.median(times[1:])


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            line = next(line for line in fh if line.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None


def _reset_peak() -> tuple[int, bool]:
    """The memory baseline: the resident set now, with the peak (VmHWM) reset to it where Linux allows
    (``/proc/self/clear_refs``); otherwise the ``ru_maxrss`` high-water mark so far."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        rss = _status_bytes("VmRSS")
        if rss is not None:
            return rss, True
    except OSError:
        pass
    return _maxrss_bytes(), False


def _peak(reset: bool) -> int:
    hwm = _status_bytes("VmHWM") if reset else None
    return hwm if hwm is not None else _maxrss_bytes()


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def child(count: int, filters: int, mode: str, device: str, repeats: int) -> dict:
    """Run one W4 case here (meant for a fresh process) and return its numbers."""

    x = images(count, device)
    layer = QuConv2d(1, filters, 4, layers=3, generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call():
        if mode == "forward":
            with torch.no_grad():
                out = layer(x)
        else:
            layer.zero_grad(set_to_none=True)
            out = layer(x)
            out.sum().backward()  # d(sum)/d(out) is an expanded 1: no second output-sized tensor
        sync()
        return out

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    base_rss, reset = _reset_peak()
    times = []
    for rep in range(repeats + 1):  # the first is the warm-up
        t0 = time.perf_counter()
        out = call()
        dt = time.perf_counter() - t0
        del out
        if rep:
            times.append(dt)
    result = {"median_s": statistics.median(times), "min_s": min(times), "samples_s": times,
              "peak_rss_delta_bytes": _peak(reset) - base_rss, "peak_method": "VmHWM" if reset else "ru_maxrss"}
    if device == "cuda":
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated() - base_cuda
    return result


def run_case(count: int, filters: int, mode: str, device: str, repeats: int, timeout: float = 3600) -> dict:
    """:func:`child` in a fresh Python process (its peak memory is then its own)."""
    root = str(Path(__file__).resolve().parents[2])  # the directory that holds the qucnn package
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = ("import json, torch; from qucnn.bench.scale import child; "
            f"torch.set_num_threads({torch.get_num_threads()}); "
            f"print(json.dumps(child({count}, {filters}, {mode!r}, {device!r}, {repeats})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"W4 child failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def needed_bytes(count: int, filters: int) -> int:
    """Rough peak of one case: input, output and one chunk of intermediates (float32)."""

    return 4 * (count * 784 + 2 * count * filters * 625 + 4 * CHUNK_ELEMENTS)


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            mem = dict(line.split(":", 1) for line in fh)
        return int(mem["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 << 30


def rows(count: int, device: str, repeats: int, progress=None) -> tuple[list[dict], list[str]]:
    """Every W4 row (and notes): the copy roofline, then each (filters, mode) in its own process."""

    notes: list[str] = []
    bandwidth = copy_bandwidth(device)
    fresh = first_touch_bandwidth(device)
    out = [{"workload": "w4", "impl": "memcpy", "variant": "256 MiB copy", "device": device, "peer": False,
            "skipped": False, "items": 256 * 2**20 * 2, "unit": "bytes", "median_s": 256 * 2**21 / bandwidth,
            "items_per_s": bandwidth, "gib_per_s": bandwidth / 2**30, "note": "dst.copy_(src), read + write"},
           {"workload": "w4", "impl": "first-touch", "variant": "fresh 256 MiB", "device": device, "peer": False,
            "skipped": False, "items": 256 * 2**20, "unit": "bytes", "median_s": 256 * 2**20 / fresh,
            "items_per_s": fresh, "gib_per_s": fresh / 2**30,
            "note": "torch.empty(...).fill_(0) on a new allocation: the OS maps and zeroes every page"}]
    for filters in FILTERS:
        n = count
        # leave room for the other users of a shared machine: at most half of what is free
        while n > 1000 and needed_bytes(n, filters) > available_bytes() // 2:
            n //= 2
        if n != count:
            notes.append(f"W4 K={filters}: {count:,} images would need ~{needed_bytes(count, filters) / 2**30:.1f} "
                         f"GiB; ran {n:,} (half the available memory)")
        for mode in MODES:
            if progress is not None:
                progress(f"w4 k={filters} {mode} ({n:,} images, subprocess)")
            try:
                res = run_case(n, filters, mode, device, repeats)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
                out.append(skipped("w4", "qucnn-exact", f"{filters} filters {mode}: {err}", device, peer=False))
                continue
            moved = 4 * (n * 784 + n * filters * 625)
            unfolded = 4 * n * 625 * 16
            floor = 4 * n * filters * 625 / fresh + 4 * n * 784 / bandwidth  # write a new output, read x
            row = {"workload": "w4", "impl": "qucnn-exact", "variant": f"K={filters} {mode}", "device": device,
                   "peer": False, "skipped": False, "items": n, "unit": "images", "median_s": res["median_s"],
                   "items_per_s": n / res["median_s"], "min_s": res["min_s"], "samples_s": res["samples_s"],
                   "repeats": repeats, "bytes_moved": moved, "bytes_per_s": moved / res["median_s"],
                   "gib_per_s": moved / res["median_s"] / 2**30,
                   "fraction_of_copy": moved / res["median_s"] / bandwidth,
                   "floor_s": floor, "x_floor": res["median_s"] / floor,
                   "speedup_vs": {"memcpy": moved / res["median_s"] / bandwidth,
                                  "first-touch floor": floor / res["median_s"]},
                   "output_bytes": 4 * n * filters * 625, "unfolded_patch_bytes": unfolded,
                   "peak_rss_delta_bytes": res["peak_rss_delta_bytes"],
                   "peak_rss_delta_mib": res["peak_rss_delta_bytes"] / 2**20,
                   "note": (f"peak memory {res['peak_rss_delta_bytes'] / 2**20:,.0f} MiB over the input; output "
                            f"{4 * n * filters * 625 / 2**20:,.0f} MiB; unfolded patches would be "
                            f"{unfolded / 2**20:,.0f} MiB")}
            if "peak_cuda_bytes" in res:
                row["peak_cuda_mib"] = res["peak_cuda_bytes"] / 2**20
            out.append(row)
    return out, notes


__all__ = ["rows", "images", "copy_bandwidth", "child", "run_case", "DESCRIPTION"]
