"""The Triton engine: the exact simulator as fused Triton kernels (:mod:`.maps`, :mod:`.ansatz_ops`).

What it runs, for patches of up to :data:`~.plan.MAX_TAPS` values (any channels, kernel, stride, padding,
dilation; :meth:`TritonEngine.holds`), in float32 (float16/bfloat16 read as they are, float32 accumulation) or
float64:

- fidelity maps and their gradients: the fused kernels;
- expectations (the forward with shots, every gradient estimator): one fused launch with the shot draws;
- shot estimates of given expectations: the Philox binomial kernel (above
  :data:`~qucnn.core.swap_test.EXACT_DRAW_LIMIT` shots, where its BTRS would drift: torch's summed exact draws);
- filter states: the ansatz kernels (one launch each way) for registers of up to
  :data:`~.plan.MAX_ANSATZ_DIM` amplitudes; larger ones: the closed form in torch.

CUDA tensors only, or CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``, for tests). The backends
``"torch"`` (on CUDA) and ``"triton"`` reach it through :meth:`qucnn.backends.RoutePolicy.resolve`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.geometry import ConvSpec
from ...core.swap_test import EXACT_DRAW_LIMIT, estimate_z
from ..base import Filters, Result
from ..simulator import SimulatorBackend, closed_form_circuit_maps
from . import maps, ops
from .ansatz_ops import ansatz_states
from .plan import MAX_TAPS


class TritonEngine(SimulatorBackend):
    """Exact maps, their gradients, shots and filter states from fused Triton kernels.

    Example:
        >>> TritonEngine().holds(16)
        True
    """

    name = "triton"

    @property
    def interpreted(self) -> bool:
        """Whether the kernels run in Triton's interpreter (CPU tensors, for tests) rather than on a GPU."""
        return ops.interpreting()

    @staticmethod
    def holds(taps: int) -> bool:
        """Whether the kernels hold patches of ``taps`` values (at most :data:`~.plan.MAX_TAPS`)."""
        return taps <= MAX_TAPS

    def filter_states(self, theta: Tensor) -> Tensor:
        ops.check_device(theta)
        flat = theta.reshape((-1,) + theta.shape[-3:])
        return ansatz_states(flat).reshape(theta.shape[:-3] + (-1,))

    def circuit_maps(self, patches: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
        return closed_form_circuit_maps(patches, states)  # this engine's maps are the closed form (tested)

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
        ops.check_device(x)
        prepared, spec = spec.prepare(x)
        return maps.fidelity_maps(prepared, states, spec)

    def sample(self, values: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
        ops.check_device(values)
        if shots > EXACT_DRAW_LIMIT:  # the kernel's BTRS drifts there, as torch's does: torch's summed draws
            return estimate_z(values, shots, generator)
        return maps.sample(values, shots, generator)

    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        ops.check_device(x)
        if shots is not None and shots > EXACT_DRAW_LIMIT:  # the maps, then torch's exact summed draws
            return super().expectations(x, filters, spec, upstream=upstream, mask=mask, shots=shots,
                                        generator=generator)
        prepared, spec = spec.prepare(x)
        with torch.no_grad():
            values = maps.expectations(prepared, self._vectors(filters), filters.shape[0], spec, upstream, mask,
                                       shots, generator)
        return Result(values)


__all__ = ["TritonEngine"]
