"""``qucnn bench``: QuCNN against PennyLane, Qiskit Aer, a NumPy floor and a classical convolution, all
timed in ONE process on the same data, so that the ratios hold on a noisy machine.

Public API:
    run(workloads, quick, device, repeats, w4_images)   -> {"machine", "rows", "targets", "notes", ...}
    markdown(result), write(result, path)               the table; JSON + .md beside it
    Case, measure                                       the timing harness (interleaved medians)

Peers are optional (``pip install 'qucnn[bench]'``): a missing one gives a skipped row with a note.
``--device cuda`` adds GPU rows (:mod:`qucnn.bench.gpu`): for W3 and W4, the fused Triton kernels, the torch
backend's own CUDA route and the plain two-``conv2d`` formulation, with the device's copy bandwidth.

Example:
    result = run(["w1"], quick=True, repeats=1)
    sorted(result)
    # -> ['config', 'descriptions', 'machine', 'notes', 'references', 'rows', 'targets']
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable

import torch

from ..utils.checks import UsageError, optional_positive_int
from . import gpu as gpu_rows
from . import hardware as w5
from . import peers, scale
from . import workloads as wl
from .runner import Case, add_ratios, machine_info, markdown, measure, skipped, timing_threads, torch_threads, write

WORKLOADS = ("w1", "w2", "w3", "w4", "w5")
#: W5 sizes: images per step and shots per circuit (``quick``: fewer images).
W5_SIZES = {False: (16, 100), True: (4, 100)}
DEVICES = ("cpu", "cuda")


def _check(workloads: Iterable[str], device: str, repeats: int | None, w4_images: int | None,
           w3_batch: int | None = None) -> list[str]:
    chosen = list(workloads)
    bad = [w for w in chosen if w not in WORKLOADS]
    if bad or not chosen:
        raise UsageError(f"workloads must be a non-empty subset of {WORKLOADS}, got {chosen}")
    if device not in DEVICES:
        raise UsageError(f"device must be one of {DEVICES}, got {device!r}")
    for name, value in (("repeats", repeats), ("w4_images", w4_images), ("w3_batch", w3_batch)):
        optional_positive_int(value, name)
    return chosen


def run(workloads: Iterable[str] = WORKLOADS, quick: bool = False, device: str = "cpu",
        repeats: int | None = None, w4_images: int | None = None,
        progress: Callable[[str], None] | None = None, w3_batch: int | None = None, skip_cpu: bool = False,
        threads: int | None = None) -> dict:
    """Run the chosen workloads and return the result (rows with medians, ratios, targets, notes).

    Args:
        workloads: any of ``"w1" .. "w5"`` (W5: circuits through Qiskit Aer, :mod:`qucnn.bench.hardware`).
        quick: smaller subsets for the slow peers, fewer W4 images (seconds instead of minutes).
        device: ``"cpu"``, or ``"cuda"`` to add GPU rows (skipped with a note when there is no GPU).
        repeats: timed samples per case (default 5, 3 with ``quick``), after one warm-up.
        w4_images: images in W4 (default 60,000; 2,000 with ``quick``).
        w3_batch: images per W3 training step (default 64; at most the embedded training set).
        skip_cpu: with ``device="cuda"``, leave out the CPU cases of qucnn and torch (W3 and W4 then time only
            the GPU; W1 and W2 still time their CPU peers).
        threads: torch threads of every timed section (default: :func:`~qucnn.bench.runner.timing_threads`,
            1 for W1-W3 and W5, torch's default for W4); ``config["torch_threads"]`` records what each used.
    """

    chosen = _check(workloads, device, repeats, w4_images, w3_batch)
    optional_positive_int(threads, "threads")
    if skip_cpu and device != "cuda":
        raise UsageError("skip_cpu needs device='cuda' (there would be nothing to time)")
    repeats = repeats or (3 if quick else 5)
    devices = [] if skip_cpu else ["cpu"]
    notes: list[str] = []
    rows: list[dict] = []
    gpu = device == "cuda" and torch.cuda.is_available()
    if device == "cuda" and not gpu:
        notes.append("--device cuda: no CUDA device here; GPU rows skipped" + (
            " (and --skip-cpu leaves out the CPU rows)" if skip_cpu else ", CPU rows only"))
    if gpu:
        devices.append("cuda")
    size = wl.sizes(quick)
    if w3_batch is not None:
        size = dataclasses.replace(size, w3_batch=w3_batch)
    result = {"machine": machine_info(device), "config": {"workloads": chosen, "quick": quick, "repeats": repeats,
                                                           "device": device, "skip_cpu": skip_cpu,
                                                           "sizes": size.__dict__, "torch_threads": {}}}
    for name in chosen:
        with torch_threads(timing_threads(name, threads)) as used:
            result["config"]["torch_threads"][name] = used
            _workload(name, result, rows, notes, quick, size, repeats, devices, device, gpu, skip_cpu, w4_images,
                      progress)
    notes += [f"{r['workload']} {r['impl']}: skipped ({r['note']})" for r in rows if r.get("skipped")]
    try:
        result["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    result.update(rows=rows, targets=wl.targets(rows) + gpu_rows.targets(rows), notes=notes,
                  descriptions={**wl.DESCRIPTIONS, "w3": wl.DESCRIPTIONS["w3"].format(w3_batch=size.w3_batch),
                                "w4": scale.DESCRIPTION, "w5": w5.DESCRIPTION.format(
                                    images=W5_SIZES[quick][0], shots=W5_SIZES[quick][1])},
                  references={**wl.REFERENCES, "w4": "first-touch floor", "w5": w5.REFERENCE})
    return result


def _workload(name: str, result: dict, rows: list[dict], notes: list[str], quick: bool, size, repeats: int,
              devices: list[str], device: str, gpu: bool, skip_cpu: bool, w4_images: int | None, progress) -> None:
    """Time workload ``name``, appending its rows and notes."""
    if name == "w4":
        count = w4_images or (2000 if quick else 60_000)
        if not skip_cpu:
            w4_rows, w4_notes = scale.rows(count, "cpu", repeats, progress)
            rows += w4_rows
            notes += w4_notes
        if gpu:  # in this process: the implementations interleaved (see qucnn.bench.gpu)
            g_rows, g_notes = gpu_rows.w4_rows(count, repeats, "cuda", progress)
            rows += g_rows
            notes += g_notes
        elif device == "cuda":
            rows += gpu_rows.unavailable("w4", "no CUDA device")
        return
    if name == "w5":
        images, shots = W5_SIZES[quick]
        cases, missing_rows = w5.cases(images, shots, peers.missing)
        rows += missing_rows + measure(name, cases, repeats, progress)
        add_ratios([r for r in rows if r["workload"] == name], w5.REFERENCE)
        result["config"]["w5"] = {"images": images, "shots": shots}
        return
    cases, missing_rows = getattr(wl, name)(size, devices)
    if name == "w3" and gpu:
        cases += gpu_rows.w3_cases(size.w3_batch, "cuda")
    rows += missing_rows + measure(name, cases, repeats, progress)
    if device == "cuda" and not gpu:
        rows.append(skipped(name, "qucnn-exact", "no CUDA device", "cuda", peer=False))
        if name == "w3":
            rows += gpu_rows.unavailable("w3", "no CUDA device")
    add_ratios([r for r in rows if r["workload"] == name], wl.REFERENCES[name])


__all__ = ["run", "markdown", "write", "Case", "measure", "WORKLOADS"]
