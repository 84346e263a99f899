"""The Triton kernels as PyTorch operations: tile sizes, grids, outputs, and autograd functions over them.

- :func:`fidelity_maps`: the exact maps ``F`` ``(B, K, H', W')``, one autograd node; its backward recomputes the
  overlaps (nothing but ``x`` and the states is kept) and reduces the filter gradient deterministically.
- :func:`expectations`: ``<Z_a>`` of a filter group ``(G, O)``, with upstream deltas, a mask and shots all fused
  into one launch (the no-gradient path of a layer with shots, and every gradient estimator).
- :func:`sample`: shot estimates of given expectations.
(The ansatz kernels' launches are in :mod:`qucnn.backends.triton.ansatz_ops`.)

Inputs are raw images: each image's power-of-two scale (the one :func:`~qucnn.backends.windows.prepare_input`
applies) is computed on the device and applied as the kernel loads ``x``, so ``x`` is never copied; half
precision is read as it is and accumulated in float32 (float16 needs no scale at all). Nothing here reads a
value back to the host: counts stay device tensors, and a training step can be captured in a CUDA graph.

Example (on a CUDA tensor, or on the CPU with ``TRITON_INTERPRET=1``)::

    fid, count, mask = fidelity_maps(x, states, ConvSpec.make(4), want_mask=True)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import triton.language as tl
from torch import Tensor

from ...core.geometry import ConvSpec
from ...utils.checks import UsageError
from ..reference import plain_fidelity
from ..windows import prepare_input
from . import binomial, kernels

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


def interpreting() -> bool:
    """Whether the kernels were built for Triton's interpreter (``TRITON_INTERPRET=1`` when this package was
    first imported): they then run on CPU tensors, slowly, with NumPy."""
    return type(kernels.forward_kernel).__name__ == "InterpretedFunction"


def check_device(t: Tensor) -> None:
    """``UsageError`` unless the kernels can run on ``t``'s device."""
    if t.device.type == "cuda" or (t.device.type == "cpu" and interpreting()):
        return
    raise UsageError(f"backend 'triton' runs on CUDA tensors, got a tensor on {t.device}; on the CPU it runs only in "
                     "Triton's interpreter, when TRITON_INTERPRET=1 is set before qucnn first uses the backend "
                     "(slow: meant for tests). Use backend='torch' on the CPU.")


def supports(channels: int, spec: ConvSpec) -> bool:
    """Whether the fidelity kernels hold this geometry (patches of at most :data:`MAX_TAPS` values)."""
    return spec.patch_size(channels) <= MAX_TAPS


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


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
    m_pad = max(16, _pow2(taps))
    kc = min(MAX_CHUNK, max(8, _pow2(filters)))
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


def _fit(p: Plan, items: int) -> Plan:
    """``p`` with its block no larger than the work (at least 16, the smallest product tile)."""
    block = min(p.block, max(16, _pow2(items)))
    return p if block == p.block else dataclasses.replace(p, block=block)


def _padded(spec: ConvSpec) -> bool:
    """Whether windows can reach outside the image (padding), so that the kernels must check bounds."""
    return any(spec.padding)


def _idx64(items: int, block: int) -> bool:
    """Whether the flattened output positions (rounded up to a block) need 64-bit integers."""
    return items + block >= 2**31


def _slots(items: int, device: torch.device) -> int:
    if device.type != "cuda":
        return max(1, min(items, INTERPRETER_SLOTS))
    return max(1, min(items, SLOTS_PER_SM * _sm_count(device.index)))


@functools.lru_cache(maxsize=None)
def _sm_count(index: int | None) -> int:
    return torch.cuda.get_device_properties(index if index is not None else torch.cuda.current_device()).multi_processor_count


def image_scale(x: Tensor) -> Tensor | None:
    """Per image ``2**-e`` bringing its largest magnitude into ``[0.5, 1)`` (1 for all-zero images), ``(B,)`` in
    the compute dtype; ``None`` for float16, whose squares neither overflow nor underflow in float32."""
    if x.dtype == torch.float16:
        return None
    top = x.detach().abs().amax(dim=(1, 2, 3)).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return torch.ldexp(torch.ones_like(top), -torch.frexp(top).exponent)


def _state_view(states: Tensor) -> tuple[Tensor, bool]:
    if states.is_complex():
        return torch.view_as_real(states.resolve_conj()), True
    return states, False


@functools.lru_cache(maxsize=None)
def _tails(device: torch.device) -> Tensor:
    return torch.tensor(STIRLING_TAILS, dtype=torch.float64, device=device)


def _geometry(spec: ConvSpec) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = spec.stride, spec.padding, spec.dilation
    return sh, sw, ph, pw, dh, dw


def philox_key(generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Two random int64 (the Philox key and stream of one call) drawn from ``generator`` (the device's default
    generator when ``None``) and placed on ``device`` without a host synchronisation."""
    home = generator.device if generator is not None else device
    key = torch.randint(-(2**63), 2**63 - 1, (2,), generator=generator, device=home, dtype=torch.int64)
    return key.to(device, non_blocking=True)


def _forward(x: Tensor, scale: Tensor | None, states: Tensor, spec: ConvSpec, out: Tensor, groups: int,
             valid: Tensor | None, upstream: Tensor | None = None, mask: Tensor | None = None,
             shots: int | None = None, key: Tensor | None = None, count_runs: bool = False) -> Tensor:
    """Launch :func:`kernels.forward_kernel` into ``out`` ``(G, B, O, H', W')``; returns the count (0-dim int64)."""
    b, c, h, w = x.shape
    if b == 0:
        return torch.zeros((), dtype=torch.int64, device=x.device)
    ho, wo = spec.output_size(h, w)
    k = states.shape[0]
    double = x.dtype == torch.float64
    p = _fit(plan(k, spec.patch_size(c), double, "shots" if shots is not None else "forward", interpreting()),
             b * ho * wo)
    sview, is_complex = _state_view(states)
    programs = -(-(b * ho * wo) // p.block) * p.nkc
    counts = torch.empty(programs, dtype=torch.int32, device=x.device)
    dummy = counts
    kernels.forward_kernel[(programs,)](
        x, dummy if scale is None else scale, sview, out, dummy if valid is None else valid, counts,
        dummy if upstream is None else upstream, dummy if mask is None else mask, dummy if key is None else key,
        _tails(x.device), b, k, k // groups, h, w, wo, ho * wo, p.nkc, shots or 1, *x.stride(), sview.stride(0),
        sview.stride(1),
        *_geometry(spec), KH=spec.kernel[0], KW=spec.kernel[1], M=spec.patch_size(c), M_PAD=p.m_pad, KC=p.kc,
        BLOCK=p.block, COMPLEX=is_complex, HAS_SCALE=scale is not None, WRITE_VALID=valid is not None,
        HAS_UP=upstream is not None, HAS_MASK=mask is not None, SHOTS=shots is not None, COUNT_RUNS=count_runs,
        ACC=_acc(x.dtype), PADDED=_padded(spec), IDX64=_idx64(b * ho * wo, p.block),
        UNROLL=spec.kernel[1] if p.unroll_rows else 1, num_warps=p.warps)
    return counts.sum(dtype=torch.int64)


def _empty_like_maps(x: Tensor, k: int, spec: ConvSpec, dtype: torch.dtype) -> Tensor:
    return torch.empty((x.shape[0], k) + spec.output_size(*x.shape[-2:]), dtype=dtype, device=x.device)


def _maps_nograd(x: Tensor, states: Tensor, spec: ConvSpec, want_mask: bool,
                 out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    fid = _empty_like_maps(x, states.shape[0], spec, out_dtype)
    valid = torch.empty((x.shape[0], 1) + fid.shape[-2:], dtype=torch.uint8, device=x.device) if want_mask else None
    count = _forward(x, image_scale(x), states, spec, fid, 1, valid)
    mask = valid.view(torch.bool) if want_mask else torch.empty(0, dtype=torch.bool, device=x.device)
    return fid, count, mask


def _backward(x: Tensor, scale: Tensor | None, states: Tensor, spec: ConvSpec, g: Tensor, need_x: bool,
              need_states: bool) -> tuple[Tensor | None, Tensor | None]:
    """``(dL/dx, dL/dstates)`` (each when asked) for upstream ``g`` ``(B, K, H', W')``."""
    b, c, h, w = x.shape
    if b == 0:
        return (torch.zeros_like(x) if need_x else None), (torch.zeros_like(states) if need_states else None)
    ho, wo = spec.output_size(h, w)
    k = states.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    p = plan(k, spec.patch_size(c), acc == torch.float64, "backward", interpreting())
    if need_x and not interpreting():  # it also stores A and e: half the block keeps it free of spills
        p = dataclasses.replace(p, block=max(16, p.block // 2))
    p = _fit(p, b * ho * wo)
    sview, is_complex = _state_view(states)
    slots = _slots(-(-(b * ho * wo) // p.block), x.device)
    part = torch.empty((slots * p.nkc, 2 * p.kc, p.m_pad), dtype=acc, device=x.device)
    a = torch.empty((b, 2 * k, ho * wo) if need_x else (1,), dtype=acc, device=x.device)
    e = torch.empty((p.nkc, b, ho * wo) if need_x else (1,), dtype=acc, device=x.device)
    dummy = part
    geometry = _geometry(spec)
    kernels.backward_kernel[(slots * p.nkc,)](
        x, dummy if scale is None else scale, sview, g, part, a, e, b, k, h, w, wo, ho * wo, p.nkc, slots,
        *x.stride(), sview.stride(0), sview.stride(1), *g.stride(), *geometry, KH=spec.kernel[0], KW=spec.kernel[1],
        M=spec.patch_size(c), M_PAD=p.m_pad, KC=p.kc, BLOCK=p.block, COMPLEX=is_complex,
        HAS_SCALE=scale is not None, NEED_X=need_x, ACC=_acc(x.dtype), PADDED=_padded(spec),
        IDX64=_idx64(b * ho * wo, p.block), num_warps=p.warps)
    grad_states = None
    if need_states:
        grad_states = torch.zeros_like(states)
        gview = torch.view_as_real(grad_states) if is_complex else grad_states
        # the slices' partial sums, added by torch's reduction (fixed order, no atomics: the same bits every run)
        total = part.view(slots, p.nkc * 2 * p.kc * p.m_pad).sum(0) if slots > 1 else part
        kernels.states_grad_kernel[(p.nkc,)](total, gview, k, gview.stride(0), gview.stride(1), KC=p.kc,
                                             M=spec.patch_size(c), M_PAD=p.m_pad, COMPLEX=is_complex, num_warps=4)
    grad_x = None
    if need_x:
        grad_x = torch.empty((b, c, h, w), dtype=x.dtype, device=x.device)
        rows, block, warps = _input_grad_tiles(k, h * w, acc == torch.float64)
        kernels.input_grad_kernel[(b * c * -(-(h * w) // block),)](
            x, dummy if scale is None else scale, sview, a, e, grad_x, b, c, k, h, w, ho, wo, ho * wo, p.nkc,
            *x.stride(), sview.stride(0), sview.stride(1), *geometry, KH=spec.kernel[0], KW=spec.kernel[1],
            R_PAD=rows, BLOCK=block, COMPLEX=is_complex, HAS_SCALE=scale is not None, ACC=_acc(x.dtype),
            num_warps=warps)
    return grad_x, grad_states


def _input_grad_tiles(filters: int, plane: int, double: bool) -> tuple[int, int, int]:
    """``(R_PAD, BLOCK, warps)`` of :func:`kernels.input_grad_kernel`: ``2K`` rows of ``A`` (padded) x ``BLOCK``
    values of one channel plane (``plane = H W``)."""
    rows = max(16, _pow2(2 * filters))
    if interpreting():
        return rows, max(16, min(INTERPRETER_BLOCK, _pow2(plane))), WARPS[0]
    most = INPUT_GRAD_PER_THREAD * 32 * WARPS[-1] // (2 if double else 1)
    block = max(16, min(MAX_BLOCK, most // rows, _pow2(plane)))
    return rows, block, WARPS[0] if rows * block <= most * WARPS[0] // WARPS[-1] else WARPS[-1]


class _Maps(torch.autograd.Function):
    """``(F, count, mask)`` from ``(x, states)``; the backward recomputes the overlaps from ``x``. A backward that
    must itself be differentiable (``create_graph=True``) differentiates the plain composition instead."""

    @staticmethod
    def forward(ctx, x: Tensor, states: Tensor, spec: ConvSpec, want_mask: bool, out_dtype: torch.dtype):
        scale = image_scale(x)
        fid = _empty_like_maps(x, states.shape[0], spec, out_dtype)
        valid = torch.empty((x.shape[0], 1) + fid.shape[-2:], dtype=torch.uint8, device=x.device) if want_mask else None
        count = _forward(x, scale, states, spec, fid, 1, valid)
        mask = valid.view(torch.bool) if want_mask else torch.empty(0, dtype=torch.bool, device=x.device)
        ctx.save_for_backward(x, states, scale)
        ctx.spec = spec
        ctx.mark_non_differentiable(count, mask)
        return fid, count, mask

    @staticmethod
    def backward(ctx, g: Tensor, _count_grad, _mask_grad):
        x, states, scale = ctx.saved_tensors
        need_x, need_states = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph=True
            inputs = [t for t, need in ((x, need_x), (states, need_states)) if need]
            with torch.enable_grad():
                out = plain_fidelity(prepare_input(x), states, ctx.spec)
            grads = iter(torch.autograd.grad(out, inputs, g.to(out.dtype), create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_states else None), None, None, None
        grad_x, grad_states = _backward(x, scale, states, ctx.spec, g, need_x, need_states)
        return grad_x, grad_states, None, None, None


def fidelity_maps(x: Tensor, states: Tensor, spec: ConvSpec, want_mask: bool = False,
                  out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Exact fidelity maps of images ``x`` ``(B, C, H, W)`` (float16, bfloat16, float32 or float64; not scaled
    beforehand) with filter ``states`` ``(K, d)``, ``d >= C kh kw``, differentiable in both.

    Returns ``(F, count, mask)``: ``F`` ``(B, K, H', W')`` in ``out_dtype`` (default ``x``'s dtype; computed in
    float32, or float64 for float64 input), 0 on all-zero patches; ``count`` the patches that are not all zero (a
    0-dim int64 device tensor); ``mask`` ``(B, 1, H', W')`` which they are (``None`` unless ``want_mask``).
    ``spec`` holds symmetric zero padding only (:meth:`ConvSpec.prepare` applies the rest).
    """
    check_device(x)
    if states.shape[-1] < spec.patch_size(x.shape[1]):
        raise UsageError(f"filter states of length {states.shape[-1]} cannot hold patches of "
                         f"{spec.patch_size(x.shape[1])} values")
    out_dtype = out_dtype or x.dtype
    if torch.is_grad_enabled() and (x.requires_grad or states.requires_grad):
        fid, count, mask = _Maps.apply(x, states, spec, want_mask, out_dtype)
    else:
        fid, count, mask = _maps_nograd(x.detach(), states.detach(), spec, want_mask, out_dtype)
    return fid, count, mask if want_mask else None


def expectations(x: Tensor, states: Tensor, groups: int, spec: ConvSpec, upstream: Tensor | None = None,
                 mask: Tensor | None = None, shots: int | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``<Z_a>`` of the SWAP test (or, with ``upstream`` ``(B, O, H', W')``, of the Eq. 15 circuit) of every patch
    with every filter of ``states`` ``(G*O, d)`` in ``groups`` groups: ``(values (G, B, O, H', W'), circuits run)``,
    exact or from ``shots`` shots each, in one launch. 0 where nothing runs (all-zero patch, ``delta = 0``, outside
    ``mask`` ``(B, O, H', W')``); ``circuits`` counts what ran (a 0-dim int64 device tensor)."""
    check_device(x)
    b = x.shape[0]
    o = states.shape[0] // groups
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty((groups, b, o) + spec.output_size(*x.shape[-2:]), dtype=acc, device=x.device)
    key = philox_key(generator, x.device) if shots is not None else None
    up = None if upstream is None else upstream.contiguous()
    mk = None if mask is None else mask.expand(b, o, *out.shape[-2:]).contiguous().view(torch.uint8)
    count = _forward(x.detach(), image_scale(x), states.detach(), spec, out, groups, None, up, mk, shots, key,
                     count_runs=True)
    return out, count


def sample(expectation: Tensor, valid: Tensor | None, shots: int, generator: torch.Generator | None = None) -> Tensor:
    """``S``-shot estimates ``2 n0 / S - 1``, ``n0 ~ Binomial(S, (1 + z) / 2)`` exactly, of the expectations ``z``
    (any shape), 0 where ``valid`` (the same shape, or ``(B, 1, H', W')`` for ``z`` ``(B, K, H', W')``) is false.
    Draws come from Philox keyed by ``generator``: the same seed gives the same estimates."""
    check_device(expectation)
    z = expectation.detach().contiguous()
    est = torch.empty_like(z)
    if z.numel() == 0:
        return est
    mode, vk, vp, v = 0, 1, 1, z
    if valid is not None:
        if z.dim() == 4 and valid.dim() == 4 and valid.shape[1] == 1 and valid.shape != z.shape and \
                valid.shape[0] == z.shape[0] and valid.shape[2:] == z.shape[2:]:
            mode, vk, vp, v = 2, z.shape[1], z.shape[2] * z.shape[3], valid.contiguous().view(torch.uint8)
        else:
            mode, v = 1, valid.expand(z.shape).contiguous().view(torch.uint8)
    key = philox_key(generator, z.device)
    block = INTERPRETER_SAMPLE_BLOCK if interpreting() else SAMPLE_BLOCK
    binomial.sample_kernel[(-(-z.numel() // block),)](z, v, est, key, _tails(z.device), z.numel(), shots, vk, vp,
                                                       BLOCK=block, VALID=mode, num_warps=4)
    return est


__all__ = ["ANSATZ_PER_THREAD", "KINDS", "MAX_ANSATZ_DIM", "MAX_CHUNK", "MAX_TAPS", "Plan", "WARPS", "check_device",
           "expectations", "fidelity_maps", "image_scale", "interpreting", "philox_key", "plan", "sample", "supports"]
