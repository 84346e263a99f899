"""Amplitude encoding (Section IV-A) and two ways to prepare the encoded state from ``|0>``:
the QuantumFlow SVD unitary and a gate-level (Mottonen) preparation made of RY and CNOT gates.

Example:
    >>> import torch
    >>> amplitude_encode(torch.tensor([3.0, 4.0, 0.0]))
    tensor([0.6000, 0.8000, 0.0000, 0.0000])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils.checks import UsageError, check_finite
from .gates import Op, rotation


def num_qubits_for(m: int) -> int:
    """Qubits needed to amplitude-encode ``m`` values: ``ceil(log2 m)``."""
    if m < 1:
        raise UsageError(f"cannot encode {m} values; need at least 1")
    return max(0, math.ceil(math.log2(m)))


def amplitude_encode(x: Tensor) -> Tensor:
    """Zero-pad the last axis of ``x`` ``(..., m)`` to ``d = 2**ceil(log2 m)`` and normalise it.

    Returns ``(..., d)``: unit-norm vectors, or the zero vector for an all-zero input (which has no
    quantum state; :class:`qucnn.QuConv2d` gives such patches fidelity 0). Real input stays real;
    integer input is converted to the default float dtype.

    Example:
        >>> amplitude_encode(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        tensor([[0.7071, 0.7071],
                [0.0000, 0.0000]])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"amplitude_encode expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise UsageError("amplitude_encode expects a tensor of shape (..., m), got a scalar")
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.get_default_dtype())
    check_finite(x, "amplitude_encode input")
    m = x.shape[-1]
    d = 2 ** num_qubits_for(m)
    padded = torch.nn.functional.pad(x, (0, d - m)) if d > m else x
    norm = torch.linalg.vector_norm(padded, dim=-1, keepdim=True)
    return torch.where(norm > 0, padded / torch.where(norm > 0, norm, torch.ones_like(norm)),
                       torch.zeros_like(padded))


def _nonzero_states(x: Tensor) -> Tensor:
    if x.dim() != 2:
        raise UsageError(f"expected states of shape (B, d), got {tuple(x.shape)}")
    d = x.shape[-1]
    if d < 2 or d & (d - 1):
        raise UsageError(f"state length must be a power of two >= 2, got {d}")
    check_finite(x, "state")
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise UsageError("an all-zero vector has no quantum state; drop all-zero patches first")
    return x / norm


def svd_unitary(x: Tensor) -> Tensor:
    """QuantumFlow's state-preparation unitary: ``W`` ``(B, d, d)`` with ``W[:, :, 0] = x / ||x||``.

    ``M = x e0^T = U S V^H`` and ``W = U V^H`` is unitary with ``W|0> = +-|x>``; the first column's
    phase is then fixed so that ``W|0> = |x>`` exactly. Real input gives a real orthogonal ``W``.
    """
    x = _nonzero_states(x)
    d = x.shape[-1]
    m = torch.zeros(x.shape + (d,), dtype=x.dtype, device=x.device)
    m[..., 0] = x
    u, _, vh = torch.linalg.svd(m)
    w = u @ vh
    overlap = (x.conj() * w[..., 0]).sum(-1)  # <x|W|0>, a unit-modulus phase
    phase = overlap / overlap.abs()
    return w * phase.conj()[:, None, None]


def _gray_code_thetas(alpha: Tensor) -> Tensor:
    """Angles of the CNOT/RY ladder that realises a uniformly controlled RY with angles ``alpha``.

    ``alpha`` ``(B, 2**k)`` is indexed by the control pattern (first control = most significant bit).
    The ladder applies ``RY(theta_i)`` then a CNOT whose control is the bit that changes between Gray
    codes ``g_i`` and ``g_{i+1}``; pattern ``c`` then sees ``sum_i (-1)**popcount(c & g_i) theta_i``,
    a Walsh-Hadamard system ``alpha = M theta`` with ``M^T M = 2**k I``.
    """
    size = alpha.shape[-1]
    gray = [i ^ (i >> 1) for i in range(size)]
    signs = torch.tensor([[(-1) ** bin(c & g).count("1") for g in gray] for c in range(size)],
                         dtype=alpha.dtype, device=alpha.device)
    return alpha @ signs / size


def mottonen_ops(x: Tensor, wires: tuple[int, ...] | None = None) -> list[Op]:
    """Gate-level preparation of the real states ``x`` ``(B, d)`` (normalised here) from ``|0>``.

    Uniformly controlled RY rotations (Mottonen et al., 2004), each compiled to RY and CNOT gates
    with a Gray-code ladder: ``2**n - 1`` RY and ``2**n - n - 1`` CNOT gates (up to ladder overhead).
    Signs are carried by the last level's signed half-angles, so real states need no RZ. Returns
    ops whose rotation angles are batched ``(B, 1)``: one circuit structure for the whole batch.
    """
    if x.is_complex():
        raise TypeError("mottonen_ops prepares real states (amplitude-encoded data); got a complex tensor")
    x = _nonzero_states(x)
    n = x.shape[-1].bit_length() - 1
    wires = tuple(range(n)) if wires is None else tuple(wires)
    if len(wires) != n:
        raise UsageError(f"{n} qubits need {n} wires, got {wires}")
    ops: list[Op] = []
    for q in range(n):
        blocks = x.reshape(x.shape[0], 2**q, 2, -1)  # (B, prefix, next bit, rest)
        if q == n - 1:
            alpha = 2 * torch.atan2(blocks[..., 1, 0], blocks[..., 0, 0])
        else:
            norms = torch.linalg.vector_norm(blocks, dim=-1)
            alpha = 2 * torch.atan2(norms[..., 1], norms[..., 0])
        if q == 0:
            ops.append(rotation("RY", wires[0], alpha[:, 0]))
            continue
        thetas = _gray_code_thetas(alpha)
        size = 2**q
        for i in range(size):
            ops.append(rotation("RY", wires[q], thetas[:, i]))
            flipped = (i ^ (i >> 1)) ^ (((i + 1) % size) ^ (((i + 1) % size) >> 1))
            control = wires[q - 1 - (flipped.bit_length() - 1)]
            ops.append(Op("CNOT", (control, wires[q])))
    return ops


def state_preparation_ops(x: Tensor, wires: tuple[int, ...] | None = None,
                          method: str = "gates") -> list[Op]:
    """Ops preparing ``x / ||x||`` ``(B, d)`` from ``|0>``: ``"gates"`` (Mottonen) or ``"unitary"`` (SVD)."""
    if method == "gates":
        return mottonen_ops(x, wires)
    if method == "unitary":
        w = svd_unitary(x)
        n = x.shape[-1].bit_length() - 1
        return [Op("UNITARY", tuple(range(n)) if wires is None else tuple(wires), w)]
    raise UsageError(f"method must be 'gates' or 'unitary', got {method!r}")
