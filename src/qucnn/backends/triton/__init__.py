"""The GPU backend ``"triton"``: fused Triton kernels for the fidelity convolution, its backward, its shots and
the filter ansatz (``pip install qucnn[gpu]``).

Importing this package imports Triton; ``qucnn`` itself never does (the registry imports it on first use of
``backend="triton"``, and the torch backend when it meets a CUDA tensor). The kernels are built when it is first
imported: for the GPU, or for Triton's interpreter on CPU tensors when ``TRITON_INTERPRET=1`` is set by then.

- :mod:`.kernels`: the fidelity forward (shots fused), the filter gradient (its slices added by torch in a
  fixed order), the input gradient;
- :mod:`.binomial`: exact binomial draws (inversion, BTRS) from Philox;
- :mod:`.ansatz_kernels`: the filter states and their adjoint gradient;
- :mod:`.ops`, :mod:`.ansatz_ops`: launches and autograd functions; :mod:`.backend`: :class:`TritonBackend`.

See ``docs/gpu.md``.
"""

from .backend import TritonBackend
from .ops import interpreting

__all__ = ["TritonBackend", "interpreting"]
