"""The ansatz kernels as a PyTorch operation: the filter states ``U(theta)|0>`` of angles ``(F, L, n, 2)``, one
launch forward (:func:`ansatz_kernels.ansatz_kernel`) and one backward (the adjoint sweep,
:func:`ansatz_kernels.ansatz_grad_kernel`); registers above
:data:`~qucnn.backends.triton.plan.MAX_ANSATZ_DIM` amplitudes use the closed form in torch.

Example (on a CUDA tensor, or on the CPU with ``TRITON_INTERPRET=1``)::

    states = ansatz_states(theta)  # (F, 2**n) complex
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.ansatz import ansatz_state, device_tables
from . import ansatz_kernels
from .ops import acc_type, check_device, interpreting
from .plan import ANSATZ_PER_THREAD, MAX_ANSATZ_DIM, WARPS, pow2


def _filter_block(filters: int, d: int, double: bool) -> tuple[int, int]:
    """``(FB, warps)`` of the ansatz kernels: ``FB`` filters per program, ``(FB, d, d)`` tiles within the
    per-thread budget (the interpreter: as many filters as there are, up to 256)."""
    if interpreting():
        return max(1, min(256, pow2(filters))), WARPS[0]
    most = ANSATZ_PER_THREAD * 32 * WARPS[-1] // (2 if double else 1)
    fb = max(1, min(pow2(filters), most // (d * d)))
    return fb, WARPS[0] if fb * d * d <= most * WARPS[0] // WARPS[-1] else WARPS[-1]


def _ansatz_launch(theta: Tensor, save: bool) -> tuple[Tensor, Tensor | None]:
    f, layers, n, _ = theta.shape
    d = 1 << n
    fb, warps = _filter_block(f, d, theta.dtype == torch.float64)
    src = device_tables(n, theta.device, theta.dtype)[0].to(torch.int32)
    cdtype = torch.complex128 if theta.dtype == torch.float64 else torch.complex64
    out = torch.empty((f, d), dtype=cdtype, device=theta.device)
    psis = torch.empty((f, layers + 1, d, 2), dtype=theta.dtype, device=theta.device) if save else None
    ansatz_kernels.ansatz_kernel[(-(-f // fb),)](theta, src, torch.view_as_real(out), torch.view_as_real(out)
                                                 if psis is None else psis, f, layers, N=n, N_PAD=pow2(n), D=d,
                                                 FB=fb, SAVE=save,
                                                 ACC=acc_type(theta.dtype), num_warps=warps)
    return out, psis


class _Ansatz(torch.autograd.Function):
    """Filter states from angles ``(F, L, n, 2)``; the backward is the adjoint sweep in one launch."""

    @staticmethod
    def forward(ctx, theta: Tensor) -> Tensor:
        out, psis = _ansatz_launch(theta, save=True)
        ctx.save_for_backward(theta, psis)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        theta, psis = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the closed form
            with torch.enable_grad():
                state = ansatz_state(theta)
            return torch.autograd.grad(state, theta, grad, create_graph=True)[0]
        f, layers, n, _ = theta.shape
        signs = device_tables(n, theta.device, theta.dtype)[3].contiguous()
        src = device_tables(n, theta.device, theta.dtype)[0].to(torch.int32)
        out = torch.empty_like(theta)
        cdtype = torch.complex128 if theta.dtype == torch.float64 else torch.complex64
        g = torch.view_as_real(grad.to(cdtype).resolve_conj().contiguous())
        fb, warps = _filter_block(f, 1 << n, theta.dtype == torch.float64)
        ansatz_kernels.ansatz_grad_kernel[(-(-f // fb),)](theta, src, signs, psis, g, out, f, layers, N=n,
                                                          N_PAD=pow2(n), D=1 << n, FB=fb, ACC=acc_type(theta.dtype),
                                                          num_warps=warps)
        return out


def ansatz_states(theta: Tensor) -> Tensor:
    """``U(theta)|0>`` of angles ``theta`` ``(F, L, n, 2)`` (float32 or float64; half precision computes in
    float32): complex ``(F, 2**n)``, differentiable (adjoint method). Registers above :data:`MAX_ANSATZ_DIM`
    amplitudes use the closed form in torch."""
    check_device(theta)
    theta = theta if theta.dtype in (torch.float32, torch.float64) else theta.float()
    if (1 << theta.shape[2]) > MAX_ANSATZ_DIM or theta.shape[0] == 0:
        return ansatz_state(theta)
    theta = theta.contiguous()
    if torch.is_grad_enabled() and theta.requires_grad:
        return _Ansatz.apply(theta)
    return _ansatz_launch(theta, save=False)[0]


__all__ = ["ansatz_states"]
