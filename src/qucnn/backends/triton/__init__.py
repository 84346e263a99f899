"""The Triton engine: fused Triton kernels for the fidelity convolution, its backward, its shots and the filter
ansatz (``pip install qucnn[gpu]``).

Importing this package imports Triton; ``qucnn`` itself never does (:class:`qucnn.backends.RoutePolicy` imports
it when a call is routed here). The kernels are built when it is first imported: for the GPU, or for Triton's
interpreter on CPU tensors when ``TRITON_INTERPRET=1`` is set by then.

- :mod:`.kernels`: the fidelity forward (shots fused), the filter gradient (its slices added by torch in a
  fixed order), the input gradient; :mod:`.tap_kernels`: tap-loop forward and backward beside them, chosen
  where a GPU measured them faster (:data:`.plan.MEASURED_PATHS`); :mod:`.binomial`: exact binomial draws
  (inversion, BTRS) from Philox, in float64 or in float32 where that decides the same;
  :mod:`.ansatz_kernels`: the filter states and their adjoint gradient;
- :mod:`.plan`: tile sizes and paths; :mod:`.ops`, :mod:`.maps`, :mod:`.ansatz_ops`: launches and autograd functions;
  :mod:`.engine`: :class:`TritonEngine`.

See ``docs/gpu.md``.
"""

from .engine import TritonEngine

__all__ = ["TritonEngine"]
