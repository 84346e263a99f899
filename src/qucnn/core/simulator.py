"""A batched statevector simulator in PyTorch.

States are tensors of shape ``(B, 2, ..., 2)``: a leading batch axis, then one axis per qubit.
Qubit 0 is the most significant bit of a flat amplitude index (``p = sum_q bit_q * 2**(n-1-q)``),
so ``state.reshape(B, -1)`` gives the usual amplitude vectors. Kernels are pure functions that
return a new state; dtype and device follow the inputs. One general kernel (:func:`apply_matrix`)
handles every gate; permutation and diagonal gates take tested fast paths.

Example:
    >>> from qucnn.core.gates import Op
    >>> psi = simulate([Op("H", (0,)), Op("CNOT", (0, 1))], n_qubits=2)
    >>> probabilities(psi, (0, 1))
    tensor([[0.5000, 0.0000, 0.0000, 0.5000]])
"""

from __future__ import annotations

import functools
import os
from typing import Iterable, Sequence

import torch
from torch import Tensor

from ..utils.checks import UsageError
from .gates import GATES, Op, real_dtype

#: Refuse registers whose statevector would take more than this fraction of the free memory.
MEMORY_FRACTION = 0.5


def free_bytes(device: torch.device) -> int:
    """Memory on ``device`` a new allocation can take, in bytes: CUDA's free device memory; on the CPU Linux's
    ``MemAvailable`` (free memory plus what the page cache would give back), else the free pages, else 8 GiB."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform exposes sysconf
        return 8 << 30


def check_register(n_qubits: int, batch: int = 1, dtype: torch.dtype = torch.complex64,
                   device: torch.device | str | None = None) -> None:
    """Raise ``ValueError`` if ``batch`` states of ``n_qubits`` would not fit in memory."""
    if not isinstance(n_qubits, int) or n_qubits < 1:
        raise UsageError(f"n_qubits must be a positive int, got {n_qubits!r}")
    device = torch.device(device or "cpu")
    need = batch * (2**n_qubits) * torch.empty((), dtype=dtype).element_size()
    free = free_bytes(device)
    if need > MEMORY_FRACTION * free:
        raise UsageError(
            f"a register of {n_qubits} qubits x batch {batch} in {dtype} needs {need / 2**30:.3g} GiB, "
            f"more than {MEMORY_FRACTION:.0%} of the {free / 2**30:.3g} GiB free on {device}; "
            "use fewer qubits or a smaller batch"
        )


def zero_state(n_qubits: int, batch: int = 1, dtype: torch.dtype = torch.complex64,
               device: torch.device | str | None = None) -> Tensor:
    """``|0...0>`` repeated ``batch`` times: shape ``(batch, 2, ..., 2)``."""
    check_register(n_qubits, batch, dtype, device)
    state = torch.zeros((batch,) + (2,) * n_qubits, dtype=dtype, device=device)
    state.view(batch, -1)[:, 0] = 1
    return state


def as_state(amplitudes: Tensor) -> Tensor:
    """Reshape flat amplitudes ``(B, 2**n)`` to a state ``(B, 2, ..., 2)`` (a view, no copy)."""
    d = amplitudes.shape[-1]
    n = d.bit_length() - 1
    if amplitudes.dim() != 2 or d != 2**n or n < 1:
        raise UsageError(f"expected amplitudes of shape (B, 2**n) with n >= 1, got {tuple(amplitudes.shape)}")
    return amplitudes.reshape((amplitudes.shape[0],) + (2,) * n)


def product_state(*parts: Tensor) -> Tensor:
    """The tensor product of batched flat states ``(B, d_i)``, earlier parts on lower qubits."""
    out = parts[0]
    for part in parts[1:]:
        out = (out[:, :, None] * part[:, None, :]).flatten(1)
    return as_state(out)


def _to_back(state: Tensor, wires: Sequence[int]) -> Tensor:
    """Move qubit axes ``wires`` (in order) to the end and flatten them: ``(B, rest..., 2**k)``."""
    axes = [w + 1 for w in wires]
    moved = state.movedim(axes, list(range(state.dim() - len(axes), state.dim())))
    return moved.reshape(moved.shape[: state.dim() - len(axes)] + (2 ** len(axes),))


def _from_back(flat: Tensor, wires: Sequence[int]) -> Tensor:
    k = len(wires)
    unflat = flat.reshape(flat.shape[:-1] + (2,) * k)
    axes = [w + 1 for w in wires]
    return unflat.movedim(list(range(unflat.dim() - k, unflat.dim())), axes)


def _broadcast_batch(state: Tensor, batch: int) -> Tensor:
    if state.shape[0] == batch or batch == 1:
        return state
    if state.shape[0] != 1:
        raise UsageError(f"state batch {state.shape[0]} and gate batch {batch} do not broadcast")
    return state.expand((batch,) + state.shape[1:])


def apply_matrix(state: Tensor, matrix: Tensor, wires: Sequence[int]) -> Tensor:
    """The general kernel: apply ``matrix`` ``(Bm, 2**k, 2**k)`` to qubits ``wires`` of ``state``.

    ``Bm`` is 1 (one matrix for every state) or the state's batch (one matrix per state); a state
    batch of 1 broadcasts against ``Bm`` matrices.
    """
    state = _broadcast_batch(state, matrix.shape[0])
    flat = _to_back(state, wires)  # (B, rest..., K)
    lead = flat.shape
    flat = flat.reshape(lead[0], -1, lead[-1])
    out = torch.matmul(flat, matrix.to(state.dtype).transpose(-1, -2))
    return _from_back(out.reshape(out.shape[:1] + lead[1:]), wires)


def apply_diagonal(state: Tensor, diagonal: Tensor, wires: Sequence[int]) -> Tensor:
    """Fast path for diagonal gates: ``diagonal`` ``(Bm, 2**k)`` multiplies the amplitudes."""
    state = _broadcast_batch(state, diagonal.shape[0])
    flat = _to_back(state, wires)
    shape = (diagonal.shape[0],) + (1,) * (flat.dim() - 2) + (diagonal.shape[1],)
    return _from_back(flat * diagonal.to(state.dtype).reshape(shape), wires)


def apply_permutation(state: Tensor, source: Tensor, wires: Sequence[int]) -> Tensor:
    """Fast path for basis permutations: new amplitude ``i`` is old amplitude ``source[i]``."""
    flat = _to_back(state, wires)
    return _from_back(flat.index_select(-1, source.to(state.device)), wires)


@functools.lru_cache(maxsize=None)
def _permutation_source(gate: str) -> Tensor:
    matrix = GATES[gate].matrix(None, torch.complex64, None)[0]
    # column j holds a single 1 in row perm(j); new[i] = old[j] with perm(j) = i
    return matrix.abs().argmax(dim=1)


def apply_op(state: Tensor, op: Op) -> Tensor:
    """Apply one registered operation, taking the gate's fast path where it has one."""
    kind = op.spec.kind
    if kind == "permutation":
        return apply_permutation(state, _permutation_source(op.gate), op.wires)
    matrix = op.matrix(state.dtype, state.device)
    if kind == "diagonal":
        return apply_diagonal(state, torch.diagonal(matrix, dim1=-2, dim2=-1), op.wires)
    return apply_matrix(state, matrix, op.wires)


def simulate(ops: Iterable[Op], n_qubits: int | None = None, state: Tensor | None = None,
             dtype: torch.dtype = torch.complex64, device: torch.device | str | None = None) -> Tensor:
    """Run ``ops`` in order from ``state`` (default ``|0...0>`` on ``n_qubits``); returns the state."""
    if state is None:
        if n_qubits is None:
            raise UsageError("simulate needs n_qubits or an initial state")
        state = zero_state(n_qubits, 1, dtype, device)
    n = state.dim() - 1
    for op in ops:
        if max(op.wires) >= n or min(op.wires) < 0:
            raise UsageError(f"op {op.gate} on wires {op.wires} does not fit a {n}-qubit state")
        state = apply_op(state, op)
    return state


def probabilities(state: Tensor, wires: Sequence[int]) -> Tensor:
    """Probabilities ``(B, 2**k)`` of measuring qubits ``wires`` (first wire = most significant bit)."""
    probs = state.real**2 + state.imag**2 if state.is_complex() else state**2
    return _to_back(probs, wires).reshape(probs.shape[0], -1, 2 ** len(wires)).sum(1)


def expval_z(state: Tensor, wire: int) -> Tensor:
    """``<Z>`` on one qubit, shape ``(B,)``."""
    p = probabilities(state, (wire,))
    return p[:, 0] - p[:, 1]


def sample_counts(probs: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``shots`` measurements per row of ``probs`` ``(B, K)``; returns counts ``(B, K)``.

    Exact multinomial sampling as a chain of binomials (``n_k ~ Bin(remaining, p_k / rest)``), so the
    cost does not grow with ``shots``.
    """
    if not isinstance(shots, int) or isinstance(shots, bool) or shots <= 0:
        raise UsageError(f"shots must be a positive int, got {shots!r}")
    probs = probs.to(real_dtype(probs.dtype)).clamp_min(0)
    probs = probs / probs.sum(-1, keepdim=True)
    remaining = torch.full(probs.shape[:-1], float(shots), dtype=probs.dtype, device=probs.device)
    rest = torch.ones_like(remaining)
    counts = []
    for k in range(probs.shape[-1] - 1):
        p = (probs[..., k] / rest.clamp_min(torch.finfo(probs.dtype).tiny)).clamp(0, 1)
        n_k = torch.binomial(remaining, p, generator=generator)
        counts.append(n_k)
        remaining = remaining - n_k
        rest = rest - probs[..., k]
    counts.append(remaining)
    return torch.stack(counts, -1).round().long()
