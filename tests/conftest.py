"""Shared tolerances and fixtures. Every random draw in the tests is seeded from here."""

from __future__ import annotations

import os

import pytest
import torch

from qucnn.core.geometry import ConvSpec, unfold_patches
from qucnn.testing import reference_maps

#: float64 agreement of two exact computations of the same quantity.
EXACT = 1e-10
#: float64 agreement where an SVD or a long gate sequence sits in between.
NEAR = 1e-8
#: float32 agreement of two exact computations.
SINGLE = 1e-5
#: statistical tests: bounds of this many standard errors.
SIGMAS = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu",
                     help="torch device for tests/test_device.py (default cpu; e.g. cuda on a GPU machine)")


def pytest_configure(config: pytest.Config) -> None:
    # Backend "triton" runs its kernels on CPU tensors in Triton's interpreter, which is chosen when the kernels
    # are first built: set it before any test imports them. With --device cuda they compile for the GPU.
    if config.getoption("--device") == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    # Under pytest-xdist each worker is one of several processes on the machine's cores: one OpenMP thread each
    # (and in the processes the tests start), or every parallel region waits for a descheduled thread.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    name = request.config.getoption("--device")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name}: CUDA is not available on this machine")
    return dev


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def random_state(d: int, batch: int, gen: torch.Generator, complex_: bool = True) -> torch.Tensor:
    """Haar-like random unit vectors ``(batch, d)`` in float64/complex128."""
    re = torch.randn(batch, d, generator=gen, dtype=torch.float64)
    if complex_:
        re = torch.complex(re, torch.randn(batch, d, generator=gen, dtype=torch.float64))
    return re / torch.linalg.vector_norm(re, dim=-1, keepdim=True)


#: Per dtype, the factor of the faint band of :func:`faint_images`: after the per-image scaling its squares
#: underflow the dtype (float32 below 1.4e-45, float64 below 4.9e-324).
FAINT_SCALES = {torch.float32: 1e-30, torch.float64: 1e-200}


def faint_images(dtype: torch.dtype, gen: torch.Generator, channels: int = 1, bright: float = 1.0) -> torch.Tensor:
    """``(2, channels, 8, 9)`` whole values 1..255 (times ``bright``) in ``dtype``: rows 0-3 of image 0 scaled by
    :data:`FAINT_SCALES` (patches there are faint, patches across row 4 mix both scales), and an all-zero block in
    image 1 (its patches give 0)."""
    x = torch.randint(1, 256, (2, channels, 8, 9), generator=gen).double() * bright
    x[0, :, :4] *= FAINT_SCALES[dtype] / bright
    x[1, :, 4:, :5] = 0
    return x.to(dtype)


def careful_reference(x: torch.Tensor, states: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """:func:`qucnn.testing.reference_maps` of every patch of ``x`` on its own, scaled by the power of two that
    brings its largest magnitude into ``[0.5, 1)`` (F does not depend on a patch's scale): float64 fidelities
    ``(B, K, H', W')`` that keep every digit however faint a patch is. Differentiable in ``states``."""
    patches = unfold_patches(x.detach().double(), spec)  # (B, L, m)
    top = patches.abs().amax(-1, keepdim=True)
    patches = patches * torch.ldexp(torch.ones_like(top), -torch.frexp(top).exponent)
    (b, length), (kh, kw) = patches.shape[:2], spec.kernel
    # the patches side by side in one image, each a window of a kernel-strided spec
    row = patches.reshape(b * length, x.shape[1], kh, kw).permute(1, 2, 0, 3).reshape(1, x.shape[1], kh, -1)
    fid = reference_maps(row, states, ConvSpec.make(spec.kernel, spec.kernel))  # (1, K, 1, B L)
    ho, wo = spec.output_size(*x.shape[-2:])
    return fid.reshape(-1, b, ho, wo).transpose(0, 1)
