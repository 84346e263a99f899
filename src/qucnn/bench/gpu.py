"""GPU rows of ``qucnn bench --device cuda``: the fused Triton kernels against the torch routes, in ONE process.

For W3 (a training step) and W4 (maps of N images), three implementations of the same maps, timed interleaved:

- ``qucnn-triton``: ``QuConv2d(..., backend="triton")``, the fused kernels (what ``"torch"`` runs on CUDA);
- ``qucnn-torch``: the torch backend's own CUDA route, ``TorchBackend(RoutePolicy(engine="fused"))``: a convolution
  or patch-matrix product sized by the free device memory;
- ``torch-two-conv``: the plain formulation, one ``conv2d`` for the real and imaginary overlaps and one for the
  window norms, differentiated by autograd (:func:`qucnn.backends.reference.plain_fidelity`): the in-run anchor.

W3's rows are built in :mod:`qucnn.bench.gpu_steps` (re-exported here): the step, the ``qucnn-triton`` step
captured in a CUDA graph (``qucnn-triton-graph``) and an epoch of :data:`EPOCH_IMAGES` images of the quantum
model and its classical twin, timed warm; their first epoch (with the first-use compilation) is reported beside
(``first_epoch_s``).

W4 adds the shot path (``K = 8``, 10,000 shots on every output; anchor: ``torch.binomial`` on the exact maps) and
the copy bandwidth of the device (``memcpy``), from which each row's bytes floor (input read once, output written
once) is taken. Every row holds its accuracy against a float64 reference on a slice of the images and its peak
device memory. The functions take any device, so their code paths are tested on the CPU (in Triton's interpreter).
:func:`targets` judges both workloads' rows against the goals.

Example::

    rows, notes = w4_rows(60_000, repeats=5, device="cuda")
"""

from __future__ import annotations

import torch

from ..backends.policy import RoutePolicy
from ..backends.reference import plain_fidelity
from ..backends.registry import available_backends
from ..backends.torch_backend import TorchBackend
from ..core.ansatz import ansatz_state
from ..core.geometry import ConvSpec
from ..core.swap_test import estimate_z
from ..nn.layer import QuConv2d
from .gpu_steps import (EPOCH_IMAGES, SEED, TwoConv, captured_step, device_sync, epoch_case, implementations,
                        w3_cases)
from .runner import Case, add_ratios, measure, skipped
from .scale import copy_bandwidth, images

SHOTS = 10_000
#: The goals of the GPU work (one H200, 60,000 images for W4): seconds per call, and W3's ratios to
#: ``nn.Conv2d`` (a step; an epoch after warm-up).
W4_GOALS_S = {"K=8 forward": 1e-3, "K=8 forward+backward": 3e-3, "K=32 forward": 5e-3,
              "K=32 forward+backward": 15e-3, f"K=8 {SHOTS:,} shots": 4e-3}
W3_GOAL_RATIO = 1.3
#: Images whose maps are checked against the float64 reference.
CHECK_IMAGES = 64
#: W4's variants: (name, filters, mode).
VARIANTS = tuple((f"K={k} {mode}", k, mode) for k in (8, 32) for mode in ("forward", "forward+backward")) + (
    (f"K=8 {SHOTS:,} shots", 8, "shots"),)


def _peak(fn, device: str) -> float | None:
    """Peak device memory (MiB) of one call of ``fn`` above what was allocated before it (CUDA only)."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_row(device: str, mib: int = 256) -> dict:
    """The roofline: bytes/s of ``dst.copy_(src)`` on ``device`` (read + write counted)."""
    bandwidth = copy_bandwidth(device, mib)
    return {"workload": "w4", "impl": "memcpy", "variant": f"{mib} MiB copy", "device": device, "peer": False,
            "skipped": False, "items": mib * 2**21, "unit": "bytes", "median_s": mib * 2**21 / bandwidth,
            "items_per_s": bandwidth, "gib_per_s": bandwidth / 2**30, "note": "dst.copy_(src), read + write"}


def _w4_cases(x: torch.Tensor, filters: int, mode: str, device: str, reference: dict) -> list[Case]:
    layers = implementations(filters, device)
    sync = device_sync(device)
    cases = []
    for impl, module in layers.items():
        if mode == "forward":
            def call(m=module):
                with torch.no_grad():
                    return m(x)

            def check(out, k=filters):
                return {"max_abs_err": float((out[:CHECK_IMAGES].double().cpu() - reference[k]).abs().max())}
        else:
            def call(m=module):
                m.zero_grad(set_to_none=True)
                m(x).sum().backward()  # d(sum)/d(out) is an expanded 1: no second output-sized tensor
                return m.theta.grad

            def check(grad, impl=impl):
                ref = reference[f"grad{filters}"]
                return {"grad_rel_err": float((grad.double().cpu() - ref).abs().max() / ref.abs().max())}
        cases.append(Case(impl, call, x.shape[0], "images", "", check=check, sync=sync, device=device))
    return cases


def _shot_cases(x: torch.Tensor, device: str, reference: dict) -> list[Case]:
    sync = device_sync(device)
    layers = implementations(8, device, shots=SHOTS)
    cases = []
    for impl in [name for name in ("qucnn-triton", "qucnn-torch") if name in layers]:
        layer = layers[impl]
        layer.generator = torch.Generator(device=device).manual_seed(SEED)

        def call(m=layer):
            with torch.no_grad():
                return m(x)

        def check(out):
            diff = out[:CHECK_IMAGES].double().cpu() - reference[8]
            sd = ((1 - reference[8] ** 2).clamp_min(1e-12) / SHOTS).sqrt()
            return {"max_abs_err": float(diff.abs().max()), "max_z": float((diff / sd).abs().max())}

        cases.append(Case(impl, call, x.shape[0], "images", "fused Philox binomial draws" if impl == "qucnn-triton"
                          else "torch.binomial on the exact maps", check=check, sync=sync, device=device))
    gen = torch.Generator(device=device).manual_seed(SEED)
    with torch.no_grad():
        maps = QuConv2d(1, 8, 4, layers=3, backend=TorchBackend(RoutePolicy(engine="fused")))
        maps.load_state_dict(layers["qucnn-torch"].state_dict())
        fid = maps.to(device)(x)
    cases.append(Case("torch-binomial", lambda: estimate_z(fid, SHOTS, gen), x.shape[0], "images",
                      "torch.binomial alone, on maps computed beforehand (the sampling step only)", sync=sync,
                      device=device))
    return cases


#: Images per float64 pass of the reference gradient (bounds its memory).
REFERENCE_CHUNK = 4096


def _reference(x: torch.Tensor) -> dict:
    """Float64 references of the plain composition: the maps of the first :data:`CHECK_IMAGES` images (on the CPU)
    and the angle gradient of ``sum(F)`` over all images (on ``x``'s device, in chunks), for K = 8 and 32."""
    ref = {}
    spec = ConvSpec.make(4)
    for filters in (8, 32):
        theta = implementations(filters, "cpu")["qucnn-torch"].theta.detach().double()
        with torch.no_grad():
            ref[filters] = plain_fidelity(x[:CHECK_IMAGES].double().cpu(), ansatz_state(theta), spec)
        th = theta.to(x.device).requires_grad_(True)
        grad = torch.zeros_like(th)
        for i in range(0, x.shape[0], REFERENCE_CHUNK):
            grad += torch.autograd.grad(plain_fidelity(x[i:i + REFERENCE_CHUNK].double(), ansatz_state(th),
                                                       spec).sum(), th)[0]
        ref[f"grad{filters}"] = grad.cpu()
    return ref


def w4_rows(count: int, repeats: int, device: str = "cuda", progress=None) -> tuple[list[dict], list[str]]:
    """W4 on ``device`` in this process: the copy roofline, then for each variant (K = 8 and 32, forward and
    forward + backward, and K = 8 with shots) the implementations timed interleaved. Each row has the bytes
    floor (input read once, output written once, at the copy bandwidth), its multiple ``x_floor``, the peak
    device memory of one call, and its accuracy; ``goal_s`` and ``goal_met`` where the GPU issue set a goal."""
    x = images(count, device)
    notes = [f"W4 GPU rows: {count:,} images on {device} "
             f"({torch.cuda.get_device_name(x.device) if device.startswith('cuda') else 'cpu'}), one process"]
    if "triton" not in available_backends():
        notes.append("backend 'triton' is not available here (pip install 'qucnn[gpu]'): no qucnn-triton rows")
    memcpy = copy_row(device)
    rows = [memcpy]
    bandwidth = memcpy["items_per_s"]
    reference = _reference(x)
    for variant, filters, mode in VARIANTS:
        cases = _shot_cases(x, device, reference) if mode == "shots" else _w4_cases(x, filters, mode, device,
                                                                                   reference)
        for case in cases:
            case.extra["peak_cuda_mib"] = _peak(case.fn, device)
        measured = measure("w4", cases, repeats, progress)
        moved = 4 * count * 784 + 4 * count * filters * 625
        for row in measured:
            row["variant"] = variant
            if row.get("skipped"):
                continue
            row.update(bytes_moved=moved, floor_s=moved / bandwidth, x_floor=row["median_s"] * bandwidth / moved,
                       gib_per_s=moved / row["median_s"] / 2**30, fraction_of_copy=moved / row["median_s"] / bandwidth)
            if variant in W4_GOALS_S and row["impl"] == "qucnn-triton":
                row.update(goal_s=W4_GOALS_S[variant], goal_met=row["median_s"] <= W4_GOALS_S[variant])
        add_ratios(measured, "torch-two-conv" if mode != "shots" else "torch-binomial")
        rows += measured
    return rows, notes


def targets(rows: list[dict]) -> list[dict]:
    """The GPU issue's goals, as met or not by this run's rows (absolute times are for 60,000 images on an
    H200; on another GPU or image count they are reported, not judged)."""
    out = []
    for r in rows:
        if r.get("goal_s") is not None:
            out.append({"name": f"W4 {r['variant']}, qucnn-triton, {r['items']:,} images (<= {r['goal_s'] * 1e3:g} ms)",
                        "value": r["median_s"] * 1e3, "threshold": r["goal_s"] * 1e3,
                        "met": r["goal_met"] if r["items"] == 60_000 else None})
    step = {r["impl"]: r for r in rows if r["workload"] == "w3" and r["device"].startswith("cuda")
            and not r.get("skipped")}
    for impl, reference, what in (("qucnn-triton", "torch-conv2d", "step"),
                                  ("qucnn-triton-graph", "torch-conv2d", "step captured in a CUDA graph"),
                                  ("qucnn-triton-epoch", "torch-conv2d-epoch", "epoch after warm-up")):
        if impl in step and reference in step:
            ratio = step[impl]["median_s"] / step[reference]["median_s"]
            out.append({"name": f"W3 qucnn-triton {what} over {reference}, GPU (<= {W3_GOAL_RATIO:g})",
                        "value": ratio, "threshold": W3_GOAL_RATIO, "met": ratio <= W3_GOAL_RATIO})
    return out


def unavailable(workload: str, why: str) -> list[dict]:
    """Skipped rows saying why the GPU rows did not run."""
    return [skipped(workload, impl, why, "cuda", peer=False) for impl in ("qucnn-triton", "qucnn-torch",
                                                                          "torch-two-conv")]


__all__ = ["EPOCH_IMAGES", "SHOTS", "TwoConv", "W3_GOAL_RATIO", "W4_GOALS_S", "captured_step", "copy_row",
           "epoch_case", "targets", "unavailable", "w3_cases", "w4_rows"]
