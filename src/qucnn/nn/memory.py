"""A memory estimate of one layer call, checked before anything large is allocated.

The parts of a call that cannot be split into chunks are the filter states (and, for a backward, every layer's
state the adjoint method keeps), the filter weights and the output maps; the overlaps are chunked by the engines
to fit their budget. :func:`check_memory` adds those bytes up and, when they exceed what the device has
available, raises a :class:`~qucnn.utils.checks.UsageError` that says what was asked, how much it needs and how
much there is, instead of letting the allocator fail (or the kernel's OOM killer end the process) later.

Example:
    >>> from qucnn.core.geometry import ConvSpec
    >>> call_bytes(torch.zeros(1, 1, 28, 28), torch.zeros(8, 3, 4, 2), ConvSpec.make(4)) < 2**20
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.geometry import ConvSpec
from ..core.simulator import free_bytes
from ..utils.checks import UsageError

#: Estimates below this many bytes are not checked (no query of the free memory on the hot path).
CHECK_ABOVE = 1 << 28
#: A call may take at most this fraction of the memory available.
MEMORY_FRACTION = 0.8


def call_bytes(x: Tensor, theta: Tensor, spec: ConvSpec) -> int:
    """Bytes of the unchunkable allocations of one call: filter states (every layer's, and when ``theta`` needs a
    gradient the ``n`` bit-flipped copies of each that the adjoint backward forms at once), weights, output maps and
    their validity mask."""
    real = 8 if x.dtype == torch.float64 else 4
    filters, layers, n = theta.shape[:3]
    d = 2**n
    states = (layers + 2) * filters * d * 2 * max(real, theta.element_size())
    if theta.requires_grad and torch.is_grad_enabled():  # the adjoint backward: every layer's n flipped states
        states += layers * filters * d * n * 2 * max(real, theta.element_size())
    weights = 2 * filters * spec.patch_size(x.shape[1]) * real
    ho, wo = spec.output_size(*x.shape[-2:])
    maps = x.shape[0] * (filters * real + 1) * ho * wo
    return states + weights + maps


def check_memory(x: Tensor, theta: Tensor, spec: ConvSpec) -> None:
    """``UsageError`` if one call on ``x`` with filters ``theta`` needs more than :data:`MEMORY_FRACTION` of the
    memory available on ``x``'s device."""
    need = call_bytes(x, theta, spec)
    if need < CHECK_ABOVE:
        return
    have = free_bytes(x.device)
    if need > MEMORY_FRACTION * have:
        raise UsageError(f"this QuConv2d call needs about {need / 2**30:.1f} GiB ({theta.shape[0]} filter states of "
                         f"{theta.shape[2]} qubits, input {tuple(x.shape)}) but {x.device} has "
                         f"{have / 2**30:.1f} GiB available; use fewer filters, smaller kernels or a smaller batch")


__all__ = ["CHECK_ABOVE", "MEMORY_FRACTION", "call_bytes", "check_memory"]
