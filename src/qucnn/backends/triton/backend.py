"""``"triton"``: the exact simulator as fused Triton kernels (:mod:`qucnn.backends.triton.ops`).

What it runs where:

- fidelity maps and their gradients: the fused kernels, for patches of up to
  :data:`~qucnn.backends.triton.ops.MAX_TAPS` values (any channels, kernel, stride, padding, dilation), in
  float32 (float16/bfloat16 read as they are, float32 accumulation) or float64; larger patches: the torch route;
- expectations (the forward with shots, every gradient estimator): one fused launch with the shot draws;
- shot estimates of given expectations: the Philox binomial kernel;
- filter states: the ansatz kernels (one launch each way) for registers of up to
  :data:`~qucnn.backends.triton.ops.MAX_ANSATZ_DIM` amplitudes; larger ones: the closed form in torch.

CUDA tensors only, or CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``, for tests).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.geometry import ConvSpec
from ..base import Filters, Result
from ..fused_fidelity import RoutePolicy, fused_fidelity
from ..simulated import SimulatorBackend, _no_autocast
from ..windows import compute_dtype, prepare_input
from . import ops
from .ansatz_ops import ansatz_states

#: How patches larger than the kernels hold are computed.
_TORCH_ROUTE = RoutePolicy(triton=False)


class TritonBackend(SimulatorBackend):
    """``"triton"``: exact maps, their gradients, shots and filter states from fused Triton kernels.

    Example:
        >>> TritonBackend().name
        'triton'
    """

    name = "triton"

    def filter_states(self, theta: Tensor) -> Tensor:
        ops.check_device(theta)
        flat = theta.reshape((-1,) + theta.shape[-3:])
        return ansatz_states(flat).reshape(theta.shape[:-3] + (-1,))

    def state_maps(self, x: Tensor, states: Tensor, spec: ConvSpec,
                   want_mask: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        ops.check_device(x)
        with _no_autocast(x.device):
            if not ops.supports(x.shape[1], spec):
                fid, count, mask = self.maps(prepare_input(x), states, spec, want_mask)
                return fid.to(x.dtype), count, mask
            return ops.fidelity_maps(x, states, spec, want_mask)

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec,
             want_mask: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        ops.check_device(x)
        if not ops.supports(x.shape[1], spec):  # the torch route (the torch backend's own, never back here)
            return fused_fidelity(x, states, spec, _TORCH_ROUTE.resolved(x.device), want_mask)
        return ops.fidelity_maps(x, states, spec, want_mask, out_dtype=compute_dtype(x.dtype))

    def sample(self, expectation: Tensor, valid: Tensor | None, shots: int,
               generator: torch.Generator | None = None) -> Tensor:
        return ops.sample(expectation, valid, shots, generator)

    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        ops.check_device(x)
        if not ops.supports(x.shape[1], spec):
            return super().expectations(x, filters, spec, upstream=upstream, mask=mask, shots=shots,
                                        generator=generator)
        groups = filters.shape[0]
        with torch.no_grad(), _no_autocast(x.device):
            states = self._vectors(filters)
            values, circuits = ops.expectations(x, states, groups, spec, upstream, mask, shots, generator)
        return Result(values, circuits)


__all__ = ["TritonBackend"]
