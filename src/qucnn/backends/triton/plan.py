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


def pow2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class Plan:
    """Tiles of one launch: ``kc`` filters per program (``nkc`` chunks), ``block`` output positions per program
    (of the flattened ``(image, row, column)`` axis), patches padded to ``m_pad`` values, ``warps`` per program;
    ``unroll_rows``: the forward's tap loop unrolls a kernel row at a time (else one tap)."""

    kc: int
    nkc: int
    block: int
    m_pad: int
    warps: int
    unroll_rows: bool = False


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
    the tiles measured fastest (:data:`MEASURED_TILES`) where there is a measurement, else the largest block (at
    most :data:`MAX_BLOCK`) whose tiles fit the kind's per-thread budget with 4 warps, else with 8.
    ``interpreted``: for Triton's interpreter, whose cost is per operation: large blocks.

    Example:
        >>> plan(8, 16, False)
        Plan(kc=8, nkc=1, block=512, m_pad=16, warps=4, unroll_rows=True)
        >>> plan(32, 16, False, "backward")
        Plan(kc=32, nkc=1, block=64, m_pad=16, warps=4, unroll_rows=False)
        >>> plan(8, 16, True)
        Plan(kc=8, nkc=1, block=256, m_pad=16, warps=8, unroll_rows=False)
    """
    m_pad = max(16, pow2(taps))
    kc = min(MAX_CHUNK, max(8, pow2(filters)))
    if interpreted:
        return Plan(kc, -(-filters // kc), INTERPRETER_BLOCK, m_pad, WARPS[0], unroll_rows=True)
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




__all__ = ["ANSATZ_PER_THREAD", "INTERPRETER_SAMPLE_BLOCK", "KINDS", "MAX_ANSATZ_DIM", "MAX_BLOCK", "MAX_CHUNK",
           "MAX_TAPS", "MEASURED_TILES", "Plan", "SAMPLE_BLOCK", "STIRLING_TAILS", "WARPS", "fit", "idx64",
           "input_grad_tiles", "padded", "plan", "pow2", "slots"]
