"""Shared tolerances and fixtures. Every random draw in the tests is seeded from here."""

from __future__ import annotations

import os

import pytest
import torch

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
