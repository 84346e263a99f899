"""How the ``"torch"`` and ``"triton"`` backends compute: :class:`RoutePolicy` picks the engine of a call once.

An engine is a :class:`~qucnn.backends.SimulatorBackend` that computes the fidelity maps one way:

- ``"fused"`` (:class:`~qucnn.backends.fused.FusedEngine`): fused PyTorch fast paths on any device (a
  convolution or a normalised patch matrix, one autograd node with a hand-written backward), chunked to the
  device's cache or free memory;
- ``"triton"`` (:class:`~qucnn.backends.triton.TritonEngine`): fused Triton kernels for the maps, their backward,
  the shots and the filter ansatz, on CUDA (``pip install qucnn[gpu]``);
- ``"reference"`` (:class:`~qucnn.backends.ReferenceBackend`): the plain autograd composition.

:meth:`RoutePolicy.resolve` is called once per layer call with the device, the number of filters and the patch
size; every step of that call (filter states, maps, shots, the backward's estimators) then runs on the engine it
returns. Engines are made once per policy and device and reused.

Example:
    >>> RoutePolicy(route="conv").resolve(torch.device("cpu"), filters=8, taps=16).name
    'torch'
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, replace

import torch

from ..core.simulator import free_bytes
from ..utils.checks import MissingExtraError, one_of, optional_positive_int, pip_install, positive_int
from .fused import FusedEngine
from .reference import ReferenceBackend
from .simulator import SimulatorBackend

ENGINES = ("auto", "fused", "triton", "reference")
ROUTES = ("auto", "conv", "patches")
#: CPU defaults. ``chunk_elements``: overlaps ``(b, 2K, H', W')`` computed at once when nothing is kept for a
#: backward (about 2 MB in float32: a chunk stays in cache for the elementwise passes, and its buffers are
#: reused by the allocator instead of being fresh, page-faulting memory on every call). ``save_elements``:
#: the largest overlap tensor computed in one pass and kept for the backward.
CPU_CHUNK_ELEMENTS = 1 << 19
CPU_SAVE_ELEMENTS = 1 << 22
#: On a GPU, the overlaps of one pass may take this fraction of the free device memory.
GPU_MEMORY_FRACTION = 0.25


@dataclass(frozen=True)
class RoutePolicy:
    """Which engine computes a call, and how the fused engine sizes its work. ``None`` fields take the device's
    default.

    Attributes:
        engine: ``"auto"`` (on CUDA with Triton installed, the Triton engine for calls of at most
            ``triton_max_filters`` filters on patches it holds; otherwise the fused engine), ``"fused"``,
            ``"triton"`` (the Triton engine for every patch it holds, the fused engine for larger ones) or
            ``"reference"``.
        route: the fused engine's route: ``"auto"`` (the patch matrix when ``x`` needs no gradient and a patch has
            no more values than there are overlaps, ``C*kh*kw <= 2K``; else the convolution), ``"conv"`` or
            ``"patches"``.
        chunk_elements: overlap elements computed at once when nothing is kept for a backward.
        save_elements: largest overlap tensor kept for the backward (larger inputs run in chunks both ways).
        band_max_size: images up to this many rows and columns get their window sums from two 0/1 band-matrix
            products, larger ones from ``kh + kw`` shifted adds.
        triton_max_filters: with ``engine="auto"``, calls of more filters stay on the fused engine on CUDA
            (measured: ``benchmarks/RESULTS.md``, GPU section).

    Example:
        >>> RoutePolicy(route="conv").resolved(torch.device("cpu")).chunk_elements
        524288
    """

    engine: str = "auto"
    route: str = "auto"
    chunk_elements: int | None = None
    save_elements: int | None = None
    band_max_size: int = 64
    triton_max_filters: int = 8

    def __post_init__(self) -> None:
        one_of(self.engine, ENGINES, "engine")
        one_of(self.route, ROUTES, "route")
        optional_positive_int(self.chunk_elements, "chunk_elements")
        optional_positive_int(self.save_elements, "save_elements")
        positive_int(self.band_max_size, "band_max_size", 0)
        positive_int(self.triton_max_filters, "triton_max_filters", 0)

    def resolved(self, device: torch.device) -> "RoutePolicy":
        """This policy with every ``None`` replaced by ``device``'s default."""
        if self.chunk_elements is not None and self.save_elements is not None:
            return self
        return _resolved(self, str(device))

    def resolve(self, device: torch.device, filters: int, taps: int) -> SimulatorBackend:
        """The engine of one call: ``filters`` filters on patches of ``taps`` values on ``device``."""
        if self.engine == "reference":
            return _reference()
        if self.engine == "triton" or (self.engine == "auto" and device.type == "cuda"
                                       and filters <= self.triton_max_filters and _gpu_triton()):
            triton = _triton_engine()
            if triton.holds(taps):
                return triton
        return _fused(self, str(device))


@functools.lru_cache(maxsize=64)
def _resolved(policy: RoutePolicy, device: str) -> RoutePolicy:
    if device == "cpu":
        chunk, save = CPU_CHUNK_ELEMENTS, CPU_SAVE_ELEMENTS
    else:
        chunk = save = _device_budget(device)
    return replace(policy, chunk_elements=policy.chunk_elements or chunk, save_elements=policy.save_elements or save)


@functools.lru_cache(maxsize=None)
def _device_budget(device: str) -> int:
    """Overlap elements (4 bytes each) that fit in :data:`GPU_MEMORY_FRACTION` of the device's free memory,
    read once per device."""
    return max(CPU_SAVE_ELEMENTS, int(GPU_MEMORY_FRACTION * free_bytes(torch.device(device))) // 4)


@functools.lru_cache(maxsize=64)
def _fused(policy: RoutePolicy, device: str) -> FusedEngine:
    return FusedEngine(policy.resolved(torch.device(device)))


@functools.lru_cache(maxsize=1)
def _reference() -> ReferenceBackend:
    return ReferenceBackend()


@functools.lru_cache(maxsize=1)
def _triton_engine() -> SimulatorBackend:
    if importlib.util.find_spec("triton") is None:
        raise MissingExtraError(f"the Triton engine needs Triton: {pip_install('gpu')}")
    from .triton import TritonEngine  # optional: imports Triton

    return TritonEngine()


@functools.lru_cache(maxsize=1)
def _gpu_triton() -> bool:
    """Whether Triton is installed and builds GPU kernels (not its interpreter): ``engine="auto"`` uses it."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        engine = _triton_engine()
    except ImportError:  # an installed Triton that cannot load: the fused engine keeps working
        return False
    return not engine.interpreted


__all__ = ["CPU_CHUNK_ELEMENTS", "CPU_SAVE_ELEMENTS", "ENGINES", "GPU_MEMORY_FRACTION", "ROUTES", "RoutePolicy"]
