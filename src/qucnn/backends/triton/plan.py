"""Tile sizes of the Triton kernels: how many filters, output positions and warps one program takes.

Register budgets per kernel kind, measured without spills for sm_90 (``benchmarks/triton_compile_check.py``,
``ptxas -v``), and the tiles measured fastest on an H200 where there is a measurement (:data:`MEASURED_TILES`).
Nothing here imports Triton's language: the launches in :mod:`.ops` and :mod:`.ansatz_ops` read these numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from ...core.geometry import ConvSpec

#: Largest patch (``C * kh * kw`` values) one program holds; larger patches run on the torch route.
MAX_TAPS = 256
#: Largest filter register (amplitudes) the ansatz kernels hold as a ``d x d`` tile; larger ones use torch.
MAX_ANSATZ_DIM = 64
#: Filters per program (larger banks are split over programs, each re-reading the same patches from cache).
MAX_CHUNK = 64
#: Register budgets: elements of a program's tiles per thread (32 threads a warp), the largest that compile
#: without spills for sm_90 (``benchmarks/triton_compile_check.py``, ``ptxas -v``; float64 counts twice, four
#: times in the backward):
#: the forward holds the patches and the overlaps, ``(2 KC + M_PAD) x BLOCK``; the backward the overlaps, the
#: upstream gradient and ``A``, each ``2 KC x BLOCK``, per tile; the shot sampler about 40 float64 values per
#: output, ``KC x BLOCK``; the input gradient ``R_PAD x BLOCK``; the ansatz ``FB x D x D``.
FORWARD_PER_THREAD = 64
BACKWARD_PER_THREAD = 16
SHOTS_PER_THREAD = 2
INPUT_GRAD_PER_THREAD = 16
ANSATZ_PER_THREAD = 8
#: Largest block of output positions per program (of the budget rule; measured tiles may be larger), and warps
#: per program.
MAX_BLOCK = 256
WARPS = (4, 8)
#: Programs per streaming multiprocessor in the backward (each reduces a slice of the windows).
SLOTS_PER_SM = 4
#: Slices of the backward in Triton's interpreter (more than one, so the sum of the slices is exercised).
INTERPRETER_SLOTS = 3
#: Outputs per program of :func:`binomial.sample_kernel` (on a GPU; the interpreter, whose cost is per operation
#: rather than per element, takes larger blocks).
SAMPLE_BLOCK = 256
INTERPRETER_SAMPLE_BLOCK = 4096
#: Output positions per program in the interpreter.
INTERPRETER_BLOCK = 2048
#: ``log k! - [(k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2]`` for ``k = 0 .. 9`` (the sampler's table).
STIRLING_TAILS = tuple(math.lgamma(k + 1) - (k + 0.5) * math.log(k + 1) + (k + 1) - 0.5 * math.log(2 * math.pi)
                       for k in range(10))
#: The kinds of fidelity launch :func:`plan` sizes: the forward, the backward, the forward with the shot sampler.
KINDS = ("forward", "backward", "shots")
#: ``(block, warps, unroll_rows)`` measured fastest on an H200 for float32 4x4 patches (``M_PAD = 16``), by
#: filters per program: W4's 60,000 images, ``benchmarks/triton_tune.py`` -> ``benchmarks/triton_tune_h200.json``
#: (the backward) and ``benchmarks/triton_tune_h200_forward.json`` (the forward and the shots, after the forward
#: became a tap loop). Other shapes use the budget rule of :func:`plan`.
MEASURED_TILES = {("forward", 8): (512, 4, True), ("forward", 32): (256, 4, False), ("backward", 8): (128, 4, False),
                  ("backward", 32): (64, 4, False), ("shots", 8): (16, 4, True)}
#: The kernel paths of :mod:`.tap_kernels` (and the mixed-precision sampler) measured faster than the kernels above
#: on a GPU, for float32 4x4 patches (``M_PAD = 16``): ``(kind, filters per program of the default plan)`` ->
#: the :class:`Plan` fields to replace, e.g. ``{"kernel": "taps", "image": True, "kc": 16, "block": 256, "warps":
#: 4}``; kind ``"sample"`` (key ``("sample", 0)``) holds ``{"mixed": True}`` for :func:`sample_mixed`. Filled
#: from ``benchmarks/triton_tune.py --paths`` on a GPU (it prints the entries); empty until then, so every launch
#: takes the measured kernels.
MEASURED_PATHS: dict[tuple[str, int], dict] = {}
#: Filters per program of a forward that keeps the overlaps where the plan measured no tap-loop forward (the
#: measured kernel's 32 spill registers in the tap-loop kernel for sm_90; 16 do not: ``triton_compile_check.py``).
SAVING_MAX_CHUNK = 16
#: Most shots the mixed-precision sampler takes (above, float32 cannot decide often enough to save anything:
#: :mod:`.binomial`); larger counts draw in float64.
MIXED_MAX_SHOTS = 2**17
#: Kernel families of :attr:`Plan.kernel`: the kernels measured on an H200 (:mod:`.kernels`), the tap loops.
KERNELS = ("measured", "taps")
#: Largest saved overlaps (``2K + 1`` values per output position, in the accumulation dtype) the forward keeps
#: for the backward when the plan asks for it (:attr:`Plan.save_z`); larger calls recompute them.
SAVE_Z_MAX_BYTES = 2**32


def pow2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class Plan:
    """Tiles of one launch: ``kc`` filters per program (``nkc`` chunks), ``block`` output positions per program
    (of the flattened ``(image, row, column)`` axis), patches padded to ``m_pad`` values, ``warps`` per program;
    ``unroll_rows``: the tap loops unroll a kernel row at a time (else one tap).

    The path (:data:`MEASURED_PATHS`): ``kernel`` ``"measured"`` (:mod:`.kernels`) or ``"taps"``
    (:mod:`.tap_kernels`: filter chunks on a second grid axis, and the options below); ``image``: the taps
    forward takes one image per program, ``block`` consecutive positions of it; ``reduce_dot``: the taps
    backward adds ``A X^T`` with ``tl.dot`` (else one lane sum per tap); ``save_z``: the forward keeps the
    normalised overlaps for the backward (up to :data:`SAVE_Z_MAX_BYTES`); ``mixed``: shots drawn by the
    float32 BTRS with float64 only where float32 cannot decide (:func:`.binomial.binomial_mixed`)."""

    kc: int
    nkc: int
    block: int
    m_pad: int
    warps: int
    unroll_rows: bool = False
    kernel: str = "measured"
    image: bool = False
    reduce_dot: bool = False
    save_z: bool = False
    mixed: bool = False


def _tile(kind: str, kc: int, m_pad: int) -> tuple[int, int]:
    """``(elements per position of a block, budget per thread)`` of a launch of ``kind``."""
    if kind == "forward":
        return 2 * kc + m_pad, FORWARD_PER_THREAD
    if kind == "backward":
        return 2 * kc, BACKWARD_PER_THREAD
    return kc, SHOTS_PER_THREAD


@functools.lru_cache(maxsize=256)
def plan(filters: int, taps: int, double: bool, kind: str = "forward", interpreted: bool = False) -> Plan:
    """The tiles for ``filters`` filters and ``taps = C kh kw`` patch values in float64 (``double``) or float32,
    for a launch of ``kind`` (:data:`KINDS`: the forward, the backward, the forward with the shot sampler):
    the path measured fastest (:data:`MEASURED_PATHS`), else the tiles measured fastest
    (:data:`MEASURED_TILES`) where there is a measurement, else the largest block (at
    most :data:`MAX_BLOCK`) whose tiles fit the kind's per-thread budget with 4 warps, else with 8.
    ``interpreted``: for Triton's interpreter, whose cost is per operation: large blocks.

    Example:
        >>> def tiles(p): return p.kernel, p.kc, p.nkc, p.block, p.m_pad, p.warps, p.unroll_rows
        >>> tiles(plan(8, 16, False))
        ('measured', 8, 1, 512, 16, 4, True)
        >>> tiles(plan(32, 16, False, "backward"))
        ('measured', 32, 1, 64, 16, 4, False)
        >>> tiles(plan(8, 16, True))
        ('measured', 8, 1, 256, 16, 8, False)
    """
    m_pad = max(16, pow2(taps))
    kc = min(MAX_CHUNK, max(8, pow2(filters)))
    if interpreted:
        return Plan(kc, -(-filters // kc), INTERPRETER_BLOCK, m_pad, WARPS[0], unroll_rows=True)
    if not double and m_pad == 16 and (kind, kc) in MEASURED_PATHS:
        chosen = dict(MEASURED_PATHS[kind, kc])
        kc = chosen.pop("kc", kc)
        block, warps, unroll_rows = MEASURED_TILES.get((kind, kc), (MAX_BLOCK, WARPS[0], False))
        return dataclasses.replace(Plan(kc, -(-filters // kc), block, m_pad, warps, unroll_rows), **chosen)
    if not double and m_pad == 16 and (kind, kc) in MEASURED_TILES:
        block, warps, unroll_rows = MEASURED_TILES[kind, kc]
        return Plan(kc, -(-filters // kc), block, m_pad, warps, unroll_rows)
    per_position, per_thread = _tile(kind, kc, m_pad)
    # elements one program may hold; float64 counts twice, and four times in the backward's products
    most = per_thread * 32 * WARPS[-1] // ((4 if kind == "backward" else 2) if double else 1)
    while kc > 8 and per_position * 16 > most:
        kc //= 2
        per_position = _tile(kind, kc, m_pad)[0]
    block = MAX_BLOCK
    while block > 16 and per_position * block > most:
        block //= 2
    fits_four = per_position * block <= most * WARPS[0] // WARPS[-1]
    return Plan(kc, -(-filters // kc), block, m_pad, WARPS[0] if fits_four else WARPS[-1])


def with_chunks(p: Plan, filters: int, kc: int) -> Plan:
    """``p`` with ``kc`` filters per program (a power of two, at least 8)."""
    return dataclasses.replace(p, kc=kc, nkc=-(-filters // kc))


def sample_mixed(shots: int) -> bool:
    """Whether :func:`.maps.sample` draws ``shots`` shots with the mixed-precision sampler (measured faster:
    :data:`MEASURED_PATHS`; at most :data:`MIXED_MAX_SHOTS`)."""
    return bool(MEASURED_PATHS.get(("sample", 0), {}).get("mixed", False)) and shots <= MIXED_MAX_SHOTS


def saves_overlaps(p: Plan, outputs: int, filters: int, double: bool) -> bool:
    """Whether a forward keeps the normalised overlaps of ``outputs`` positions (``2 K + 1`` values each) for a
    backward planned as ``p``: when ``p`` asks for it and they fit :data:`SAVE_Z_MAX_BYTES`."""
    return p.kernel == "taps" and p.save_z and outputs * (2 * filters + 1) * (8 if double else 4) <= SAVE_Z_MAX_BYTES


def fit(p: Plan, items: int) -> Plan:
    """``p`` with its block no larger than the work (at least 16, the smallest product tile)."""
    block = min(p.block, max(16, pow2(items)))
    return p if block == p.block else dataclasses.replace(p, block=block)


def padded(spec: ConvSpec) -> bool:
    """Whether windows can reach outside the image (padding), so that the kernels must check bounds."""
    return any(spec.padding)


def idx64(items: int, block: int) -> bool:
    """Whether the flattened output positions (rounded up to a block) need 64-bit integers."""
    return items + block >= 2**31


def slots(items: int, device: torch.device) -> int:
    """Programs of the backward: a few per streaming multiprocessor, at most one per block of ``items``."""
    if device.type != "cuda":
        return max(1, min(items, INTERPRETER_SLOTS))
    return max(1, min(items, SLOTS_PER_SM * _sm_count(device.index)))


@functools.lru_cache(maxsize=None)
def input_grad_tiles(filters: int, plane: int, double: bool, interpreted: bool) -> tuple[int, int, int]:
    """``(R_PAD, BLOCK, warps)`` of the input-gradient kernel: ``2K`` rows of ``A`` (padded) x ``BLOCK`` values of
    one channel plane (``plane = H W``)."""
    rows = max(16, pow2(2 * filters))
    if interpreted:
        return rows, max(16, min(INTERPRETER_BLOCK, pow2(plane))), WARPS[0]
    most = INPUT_GRAD_PER_THREAD * 32 * WARPS[-1] // (2 if double else 1)
    block = max(16, min(MAX_BLOCK, most // rows, pow2(plane)))
    return rows, block, WARPS[0] if rows * block <= most * WARPS[0] // WARPS[-1] else WARPS[-1]


def _sm_count(index: int | None) -> int:
    return torch.cuda.get_device_properties(index if index is not None else torch.cuda.current_device()).multi_processor_count


__all__ = ["ANSATZ_PER_THREAD", "INTERPRETER_SAMPLE_BLOCK", "KERNELS", "KINDS", "MAX_ANSATZ_DIM", "MAX_BLOCK",
           "MAX_CHUNK", "MAX_TAPS", "MEASURED_PATHS", "MEASURED_TILES", "MIXED_MAX_SHOTS", "SAMPLE_BLOCK",
           "SAVE_Z_MAX_BYTES", "SAVING_MAX_CHUNK", "STIRLING_TAILS", "WARPS", "Plan", "fit", "idx64", "input_grad_tiles", "padded", "plan",
           "pow2", "sample_mixed", "saves_overlaps", "slots", "with_chunks"]
