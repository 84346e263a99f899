"""The SWAP test three ways: the closed form ``|<a|b>|^2`` (Eq. 2), the full circuit on ``2n+1``
qubits, and the entanglement-based backpropagation circuit on ``2n+2`` qubits (Eq. 7-15).

Qubit layout of the circuits (also used by the Qiskit exporter):
    0            the SWAP-test ancilla ``a`` (measured)
    1 .. n       the data register ``|x>``
    n+1 .. 2n    the filter register ``|f>``
    2n+1         the backpropagation ancilla ``b`` (entanglement circuit only)

Example:
    >>> import torch
    >>> a = torch.tensor([1.0, 0.0]); b = torch.tensor([0.6, 0.8])
    >>> swap_test(a, b)
    tensor(0.3600)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils.checks import UsageError, check_finite, check_shots
from .gates import Op, real_dtype, rotation
from .simulator import expval_z, product_state, simulate

SWAP_ANCILLA = 0


def data_wires(n: int) -> tuple[int, ...]:
    """The data register ``1..n`` of an ``n``-qubit SWAP test (0 is the ancilla)."""
    return tuple(range(1, n + 1))


def filter_wires(n: int) -> tuple[int, ...]:
    """The filter register ``n+1..2n`` of an ``n``-qubit SWAP test."""
    return tuple(range(n + 1, 2 * n + 1))


def backprop_ancilla(n: int) -> int:
    """The extra ancilla ``b = 2n+1`` of the entanglement (Eq. 15) circuit."""
    return 2 * n + 1


#: The largest count one ``torch.binomial`` draw takes. torch's BTRS sampler loses float64 precision in its
#: acceptance test as the count grows (its variance and mean drift measurably above this count:
#: ``benchmarks/binomial_exactness.py`` and its JSON). Larger ``S`` are drawn as a sum of binomials of at most this
#: many shots (independent ``Binomial(S_i, p)`` add up to ``Binomial(sum S_i, p)``).
EXACT_DRAW_LIMIT = 2**44


def estimate_z(expectation: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
    """Shot estimate of a ``+-1`` observable with mean ``expectation``: ``2 n0 / S - 1`` with
    ``n0 ~ Binomial(S, (1 + <Z>) / 2)``; unbiased with variance ``(1 - <Z>^2) / S``.

    The draws are exact binomials for every ``S`` up to ``2**53`` (:data:`qucnn.utils.checks.MAX_SHOTS`; larger
    ``S`` raise ``UsageError``): counts above ``2**24``, which float32 cannot hold exactly, are drawn in
    float64, and counts above :data:`EXACT_DRAW_LIMIT` as a sum of draws below it. With ``S = 1`` every
    estimate is exactly ``+1`` or ``-1``.

    Example:
        >>> estimate_z(torch.tensor([1.0, -1.0]), 10)
        tensor([ 1., -1.])
    """
    shots = check_shots(shots)
    exact = expectation.detach()
    work = torch.float64 if shots > 1 << 24 or exact.dtype == torch.float64 else torch.float32
    p0 = ((1 + exact.to(work)) / 2).clamp(0, 1)
    # draw where the generator lives (a CPU generator with a CUDA layer still gives seeded draws)
    home = p0.device if generator is None else generator.device
    p0 = p0.to(home)
    n0 = None
    left = shots
    while left:  # one draw up to EXACT_DRAW_LIMIT, summed draws of at most that above it (sums stay exact)
        part = min(left, EXACT_DRAW_LIMIT)
        draw = torch.binomial(torch.full(p0.shape, float(part), dtype=work, device=home), p0, generator=generator)
        n0 = draw if n0 is None else n0.add_(draw)
        left -= part
    return (2 * n0 / shots - 1).to(device=exact.device, dtype=exact.dtype)


def swap_test(a: Tensor, b: Tensor, shots: int | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """SWAP-test fidelity ``|<a|b>|^2`` of states ``a`` and ``b`` ``(..., d)`` (broadcast): shape ``(...)``.

    Exact when ``shots`` is None; otherwise the estimate ``2 n0 / S - 1`` of running the circuit
    ``S`` times (the same distribution as sampling the ancilla). ``a`` and ``b`` should be unit
    vectors (see :func:`qucnn.amplitude_encode`); a zero vector gives fidelity 0.

    Example:
        >>> swap_test(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        tensor(0.)
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"swap_test: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise UsageError(f"swap_test: {name} must have shape (..., d), got a scalar")
        check_finite(t, f"swap_test: {name}")
    if a.shape[-1] != b.shape[-1]:
        raise UsageError(f"swap_test: states must have the same length, got {a.shape[-1]} and {b.shape[-1]}")
    shots = check_shots(shots)
    overlap = (a.conj() * b).sum(-1) if a.is_complex() else (a * b).sum(-1)
    fidelity = overlap.real**2 + overlap.imag**2 if overlap.is_complex() else overlap**2
    fidelity = fidelity.to(real_dtype(fidelity.dtype))
    if shots is None:
        return fidelity
    return estimate_z(fidelity, shots, generator)


def upstream_angle(delta: Tensor) -> Tensor:
    """``beta = arccos(delta)`` in ``[0, pi]`` (Eq. 17), the angle of ``RY(beta)`` on the backpropagation
    ancilla ``b``, so that ``cos(beta) = delta`` and ``<Z_a> = delta F`` (Eq. 15)."""
    return torch.arccos(delta.clamp(-1, 1))


def swap_test_ops(n: int, upstream: Tensor | float | None = None) -> list[Op]:
    """The SWAP-test circuit on ``2n+1`` qubits or, with ``upstream`` (``delta`` in ``[-1, 1]``, shape
    ``()`` or ``(B,)``), the entanglement-based backpropagation circuit on ``2n+2`` qubits:
    ``RY(arccos delta)`` on ``b``, ``H(a)``, ``CSWAP(a; x_q, f_q)``, ``H(a)``, ``CNOT(b -> a)``."""
    ops: list[Op] = []
    if upstream is not None:
        delta = torch.as_tensor(upstream, dtype=torch.float64)
        if bool(((delta < -1) | (delta > 1)).any()):
            raise UsageError(f"upstream delta must lie in [-1, 1], got {delta}")
        ops.append(rotation("RY", backprop_ancilla(n), upstream_angle(delta)))
    ops.append(Op("H", (SWAP_ANCILLA,)))
    ops.extend(Op("CSWAP", (SWAP_ANCILLA, xq, fq)) for xq, fq in zip(data_wires(n), filter_wires(n)))
    ops.append(Op("H", (SWAP_ANCILLA,)))
    if upstream is not None:
        ops.append(Op("CNOT", (backprop_ancilla(n), SWAP_ANCILLA)))
    return ops


def swap_test_circuit_state(x: Tensor, f: Tensor, upstream: Tensor | float | None = None) -> Tensor:
    """Simulate the full circuit gate by gate from ``|0>_a |x> |f> (|0>_b)``; returns the final state.

    ``x`` and ``f`` are unit states ``(B, 2**n)`` (``B`` may be 1 on either side to broadcast).
    """
    if x.shape[-1] != f.shape[-1] or x.dim() != 2 or f.dim() != 2:
        raise UsageError(f"expected x and f of shape (B, d), got {tuple(x.shape)} and {tuple(f.shape)}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, f.dtype), torch.complex64)
    n = x.shape[-1].bit_length() - 1
    zero = torch.tensor([[1.0, 0.0]], dtype=dtype, device=x.device)
    parts = [zero, x.to(dtype), f.to(dtype)] + ([zero] if upstream is not None else [])
    return simulate(swap_test_ops(n, upstream), state=product_state(*parts))


def swap_test_circuit(x: Tensor, f: Tensor, upstream: Tensor | float | None = None) -> Tensor:
    """``<Z_a>`` of the simulated circuit, shape ``(B,)``: ``|<f|x>|^2``, or ``delta |<f|x>|^2`` (Eq. 15)."""
    return expval_z(swap_test_circuit_state(x, f, upstream), SWAP_ANCILLA)


__all__ = ["swap_test", "swap_test_ops", "swap_test_circuit", "swap_test_circuit_state", "estimate_z",
           "upstream_angle", "SWAP_ANCILLA", "EXACT_DRAW_LIMIT", "data_wires", "filter_wires",
           "backprop_ancilla"]
