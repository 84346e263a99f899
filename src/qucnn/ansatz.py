"""The filter ansatz of Fig. 1: ``L`` layers of RX then RZ on every qubit, then a ring of CNOTs.

Parameters ``theta`` have shape ``(..., layers, n_qubits, 2)``: ``theta[..., l, q, 0]`` is the RX angle
and ``theta[..., l, q, 1]`` the RZ angle of qubit ``q`` in layer ``l``. The CNOTs of a layer run
``q -> (q + 1) mod n`` for ``q = 0 .. n-1`` in that order (none when ``n = 1``; one, ``0 -> 1``, when
``n = 2``, since the ring's second CNOT ``1 -> 0`` is distinct and kept).

Example:
    >>> ansatz = FilterAnsatz(n_qubits=4, layers=3)
    >>> ansatz.n_params
    24
    >>> ansatz.state(torch.zeros(5, 3, 4, 2)).shape
    torch.Size([5, 16])
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gates import Op, complex_dtype
from .simulator import simulate, zero_state


def ring_pairs(n_qubits: int) -> list[tuple[int, int]]:
    """The (control, target) pairs of one layer's CNOT ring."""
    return [] if n_qubits == 1 else [(q, (q + 1) % n_qubits) for q in range(n_qubits)]


class FilterAnsatz:
    """The Fig. 1 ansatz on ``n_qubits`` qubits with ``layers`` layers (``2 * n_qubits * layers`` angles)."""

    def __init__(self, n_qubits: int, layers: int) -> None:
        for name, value in (("n_qubits", n_qubits), ("layers", layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.n_qubits = n_qubits
        self.layers = layers

    @property
    def n_params(self) -> int:
        return 2 * self.n_qubits * self.layers

    @property
    def param_shape(self) -> tuple[int, int, int]:
        return (self.layers, self.n_qubits, 2)

    def __repr__(self) -> str:
        return f"FilterAnsatz(n_qubits={self.n_qubits}, layers={self.layers})"

    def _check(self, theta: Tensor) -> Tensor:
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if tuple(theta.shape[-3:]) != self.param_shape or theta.dim() < 3:
            raise ValueError(f"theta must have shape (..., {self.layers}, {self.n_qubits}, 2), "
                             f"got {tuple(theta.shape)}")
        if not theta.is_floating_point():
            raise TypeError(f"theta must be a real floating tensor, got {theta.dtype}")
        return theta.reshape((-1,) + self.param_shape)

    def ops(self, theta: Tensor, wires: tuple[int, ...] | None = None) -> list[Op]:
        """The circuit as registry ops; rotation angles are batched ``(B, 1)`` over filters."""
        flat = self._check(theta)
        wires = tuple(range(self.n_qubits)) if wires is None else tuple(wires)
        ops: list[Op] = []
        for layer in range(self.layers):
            for q in range(self.n_qubits):
                ops.append(Op("RX", (wires[q],), flat[:, layer, q, 0:1]))
                ops.append(Op("RZ", (wires[q],), flat[:, layer, q, 1:2]))
            ops.extend(Op("CNOT", (wires[c], wires[t])) for c, t in ring_pairs(self.n_qubits))
        return ops

    def state(self, theta: Tensor) -> Tensor:
        """The filter states ``U(theta)|0>``: complex ``(..., 2**n_qubits)``, differentiable in ``theta``.

        Computed in closed form by :func:`qucnn.fastpath.ansatz_state`; inside
        :func:`qucnn.fastpath.disabled`, by simulating :meth:`ops` gate by gate (the reference). On the
        CPU, without a gradient to record, the last result is reused while ``theta`` holds the same
        values (compared exactly), so repeated inference calls prepare the filters once.
        """
        from . import fastpath  # imported here: fastpath reads ring_pairs from this module
        from .simulator import check_register

        flat = self._check(theta)
        if not fastpath.enabled():
            init = zero_state(self.n_qubits, flat.shape[0], complex_dtype(flat.dtype), flat.device)
            out = simulate(self.ops(flat), state=init)
            return out.reshape(theta.shape[:-3] + (2**self.n_qubits,))
        # a GPU would have to synchronise to compare, and big batches of angles are rarely repeated
        cacheable = (theta.device.type == "cpu" and theta.numel() <= 1 << 16
                     and not (torch.is_grad_enabled() and theta.requires_grad))
        cached = getattr(self, "_last_state", None) if cacheable else None
        if (cached is not None and cached[0].shape == theta.shape and cached[0].dtype == theta.dtype
                and torch.equal(cached[0], theta)):
            return cached[1].clone()  # a copy: the caller may modify it in place
        if flat.shape[0] << self.n_qubits > 1 << 20:  # the memory check costs a system call
            check_register(self.n_qubits, flat.shape[0], complex_dtype(flat.dtype), flat.device)
        out = fastpath.ansatz_state(flat).reshape(theta.shape[:-3] + (2**self.n_qubits,))
        if cacheable:
            self._last_state = (theta.detach().clone(), out.detach().clone())
        return out
