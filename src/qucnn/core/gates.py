"""The gate registry: one table of gates read by the simulator, the parameter-shift rule and the
Qiskit exporter.

Each gate is registered once with its arity, its number of real parameters, a batched matrix builder
and how the simulator may apply it. Matrix builders never drop the batch axis: ``params`` has shape
``(B, num_params)`` and the matrix ``(B, 2**k, 2**k)``; gates without parameters return ``(1, 2**k, 2**k)``
so that they broadcast against any batch.

Example:
    >>> import torch
    >>> GATES["RX"].matrix(torch.zeros(3, 1, dtype=torch.float64), torch.complex128).shape
    torch.Size([3, 2, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..utils.checks import UsageError

MatrixBuilder = Callable[[Tensor | None, torch.dtype, torch.device | None], Tensor]


@dataclass(frozen=True)
class Gate:
    """A registered gate.

    Attributes:
        name: registry key (``"RX"``, ``"CNOT"``...).
        num_wires: number of qubits it acts on (``None`` for the arbitrary ``UNITARY``).
        num_params: number of real parameters (``0`` for fixed gates and for ``UNITARY``, whose
            matrix is passed directly).
        matrix: ``(params (B, num_params) | None, complex dtype, device) -> (B, 2**k, 2**k)``.
        kind: how the simulator may apply it: ``"dense"``, ``"diagonal"`` (elementwise phase) or
            ``"permutation"`` (a basis permutation, applied by indexing).
        qiskit_name: the ``QuantumCircuit`` method that appends the same gate.
        shift: for rotations ``exp(-i t G / 2)`` with ``G**2 = 1``, the parameter-shift rule
            ``df/dt = [f(t + s) - f(t - s)] / (2 sin s)`` is exact; ``shift`` is the ``s`` that the gradient
            estimators of :mod:`qucnn.nn.gradients` use for this gate (``None``: not differentiable).
    """

    name: str
    num_wires: int | None
    num_params: int
    matrix: MatrixBuilder
    kind: str = "dense"
    qiskit_name: str = ""
    shift: float | None = None


def _const(rows: list[list[complex]]) -> MatrixBuilder:
    def build(params: Tensor | None, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
        return torch.tensor(rows, dtype=dtype, device=device).unsqueeze(0)

    return build


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of a complex one (``complex64 -> float32``); real dtypes map to themselves."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype of a real one (``float64 -> complex128``); complex dtypes map to themselves."""
    return {torch.float32: torch.complex64, torch.float64: torch.complex128,
            torch.float16: torch.complex64, torch.bfloat16: torch.complex64}.get(dtype, dtype)


def _angle(params: Tensor, dtype: torch.dtype) -> Tensor:
    # half angle (B,), in the real dtype that matches the complex output
    return params[:, 0].to(real_dtype(dtype)) / 2


def _rx(params: Tensor, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    h = _angle(params, dtype)
    c, s = torch.cos(h), torch.sin(h)
    zero = torch.zeros_like(c)
    cos_c, msin = torch.complex(c, zero), torch.complex(zero, -s)
    return torch.stack([torch.stack([cos_c, msin], -1), torch.stack([msin, cos_c], -1)], -2)


def _ry(params: Tensor, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    h = _angle(params, dtype)
    c, s = torch.cos(h), torch.sin(h)
    zero = torch.zeros_like(c)
    cc, ss = torch.complex(c, zero), torch.complex(s, zero)
    return torch.stack([torch.stack([cc, -ss], -1), torch.stack([ss, cc], -1)], -2)


def _rz(params: Tensor, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    h = _angle(params, dtype)
    zero = torch.zeros_like(h)
    e_minus = torch.polar(torch.ones_like(h), -h)
    e_plus = torch.polar(torch.ones_like(h), h)
    z = torch.complex(zero, zero)
    return torch.stack([torch.stack([e_minus, z], -1), torch.stack([z, e_plus], -1)], -2)


def _unitary(params: Tensor | None, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    if params is None:
        raise UsageError("the UNITARY gate needs its matrix as params, shape (B, 2**k, 2**k)")
    return params.to(dtype)


_S2 = 1 / math.sqrt(2)
_CNOT = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
_CSWAP = [[1 if (r == c and r not in (5, 6)) or (r, c) in ((5, 6), (6, 5)) else 0 for c in range(8)]
          for r in range(8)]

GATES: dict[str, Gate] = {
    g.name: g
    for g in (
        Gate("H", 1, 0, _const([[_S2, _S2], [_S2, -_S2]]), qiskit_name="h"),
        Gate("X", 1, 0, _const([[0, 1], [1, 0]]), kind="permutation", qiskit_name="x"),
        Gate("Z", 1, 0, _const([[1, 0], [0, -1]]), kind="diagonal", qiskit_name="z"),
        Gate("RX", 1, 1, _rx, qiskit_name="rx", shift=math.pi / 2),
        Gate("RY", 1, 1, _ry, qiskit_name="ry", shift=math.pi / 2),
        Gate("RZ", 1, 1, _rz, kind="diagonal", qiskit_name="rz", shift=math.pi / 2),
        Gate("CNOT", 2, 0, _const(_CNOT), kind="permutation", qiskit_name="cx"),
        Gate("CSWAP", 3, 0, _const(_CSWAP), kind="permutation", qiskit_name="cswap"),
        Gate("UNITARY", None, 0, _unitary, qiskit_name="unitary"),
    )
}


@dataclass(frozen=True)
class Op:
    """One gate application: registry ``gate`` name, target ``wires`` and its ``params``.

    ``params`` is ``(B, num_params)`` real for rotations (``B`` may be 1 to broadcast), the
    ``(B, 2**k, 2**k)`` matrix for ``UNITARY``, and ``None`` for fixed gates.
    """

    gate: str
    wires: tuple[int, ...]
    params: Tensor | None = None

    def __post_init__(self) -> None:
        spec = GATES.get(self.gate)
        if spec is None:
            raise UsageError(f"unknown gate {self.gate!r}; registered gates: {sorted(GATES)}")
        if spec.num_wires is not None and len(self.wires) != spec.num_wires:
            raise UsageError(f"gate {self.gate} acts on {spec.num_wires} wires, got wires {self.wires}")
        if len(set(self.wires)) != len(self.wires):
            raise UsageError(f"gate {self.gate} got repeated wires {self.wires}")
        if spec.num_params and (self.params is None or self.params.shape[-1] != spec.num_params):
            got = None if self.params is None else tuple(self.params.shape)
            raise UsageError(f"gate {self.gate} needs params of shape (B, {spec.num_params}), got {got}")

    @property
    def spec(self) -> Gate:
        """The registry record (:data:`GATES`) of this operation's gate."""
        return GATES[self.gate]

    def matrix(self, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
        """The batched matrix ``(B, 2**k, 2**k)`` of this operation."""
        return self.spec.matrix(self.params, dtype, device)


def rotation(gate: str, wire: int, angle: Tensor | float) -> Op:
    """A one-parameter rotation op with ``angle`` of shape ``()`` or ``(B,)``."""
    angle = torch.as_tensor(angle)
    return Op(gate, (wire,), angle.reshape(-1, 1))
