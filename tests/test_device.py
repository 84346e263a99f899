"""The fast paths on one device, in float32 and (on a GPU) TF32, against the float64 reference on the CPU.

``python -m pytest tests/test_device.py`` runs them on the CPU (the default suite does too);
``python -m pytest tests/test_device.py --device cuda`` on a GPU machine. Tolerances (docs/precision.md):

- float32: measured on the CPU, errors ~2e-7 in ``F`` and ~7e-7 (relative to the largest entry) in the
  gradients; the tests allow :data:`F32_F` and :data:`F32_GRAD`.
- TF32 (tensor-core inputs rounded to 10 mantissa bits, unit roundoff ``u = 2**-11``): every overlap
  ``z = w . x_hat`` of unit vectors is off by at most ``2u``, so ``|dF| <= 4 u (|Re| + |Im|) <= 4 sqrt(2) u
  = 2.8e-3`` (:data:`TF32_F`); gradients are allowed :data:`TF32_GRAD` (60 u). Derived, not yet measured
  on a GPU: no GPU was lent to the task that wrote them.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import SIGMAS

from qucnn import QuConv2d
from qucnn.backends import RoutePolicy, TorchBackend
from qucnn.core.swap_test import estimate_z
from qucnn.core.windows import valid_patches

F32_F, F32_GRAD = 1e-5, 1e-4
TF32_F, TF32_GRAD = 3e-3, 3e-2


@contextlib.contextmanager
def tf32(allowed: bool):
    """TF32 for matmuls and cuDNN convolutions on or off (no effect on the CPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _data(gen, batch=6, channels=1, size=13):
    x = torch.rand(batch, channels, size, size, generator=gen)
    x[0, :, :5] = 0  # all-zero patches
    x[1] = 0  # an all-zero image
    return x


def _reference(layer: QuConv2d, x: torch.Tensor, g: torch.Tensor, x_grad: bool):
    """Outputs and gradients in float64 on the CPU on the reference backend."""
    ref = QuConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                   layers=layer.layers, backend="reference")
    ref.load_state_dict({k: v.cpu() for k, v in layer.state_dict().items()})
    ref = ref.double()
    xr = x.double().cpu().requires_grad_(x_grad)
    out = ref(xr)
    out.backward(g.double().cpu())
    return out.detach(), ref.theta.grad, xr.grad


def _close(value: torch.Tensor, expected: torch.Tensor, rel: float) -> bool:
    return bool(((value.double().cpu() - expected).abs().max() <= rel * expected.abs().max()).item())


@pytest.mark.parametrize("geometry", [(1, 4, 1, 0), (2, 3, 2, 1)])  # (channels, kernel, stride, padding)
@pytest.mark.parametrize("x_grad", [False, True])
@pytest.mark.parametrize("allow_tf32", [False, True])
def test_layer_on_device_matches_the_float64_reference(geometry, x_grad, allow_tf32, device, gen):
    channels, kernel, stride, padding = geometry
    layer = QuConv2d(channels, 8, kernel, stride=stride, padding=padding, layers=3, generator=gen)
    x = _data(gen, channels=channels)
    g = torch.randn(layer(x).shape, generator=gen)
    expected, theta_grad, x_grad_ref = _reference(layer, x, g, x_grad)
    nonzero_patches = int(valid_patches(x.double(), layer.spec).sum())
    tol_f, tol_g = (TF32_F, TF32_GRAD) if allow_tf32 else (F32_F, F32_GRAD)
    # on a GPU: the Triton engine ("torch" resolves CUDA calls of up to 8 filters to it), then the fused engine in
    # one pass and in chunks of one image recomputed in the backward (on the CPU all three are the fused engine)
    for backend in (TorchBackend(), TorchBackend(RoutePolicy(engine="fused")),
                    TorchBackend(RoutePolicy(engine="fused", chunk_elements=1, save_elements=1))):
        layer.backend = backend
        dev_layer = layer.to(device)
        dev_layer.zero_grad()
        xd = x.detach().to(device, copy=True).requires_grad_(x_grad)
        with tf32(allow_tf32):
            out = dev_layer(xd)
            out.backward(g.to(device))
        assert out.device.type == device.type and out.dtype == torch.float32
        assert (out.detach().double().cpu() - expected).abs().max() <= tol_f
        assert torch.equal(out.detach()[1].cpu(), torch.zeros_like(out[1].cpu()))  # all-zero image: exactly 0
        assert _close(dev_layer.theta.grad, theta_grad, tol_g)
        if x_grad:
            assert _close(xd.grad, x_grad_ref, tol_g)
        assert dev_layer.last_cost["forward"].circuits == 8 * nonzero_patches
        layer = dev_layer.cpu()


def test_ansatz_state_on_device_matches_the_float64_simulator(device, gen):
    theta = 6.3 * torch.rand(5, 3, 4, 2, generator=gen)
    expected = QuConv2d(1, 5, 4, layers=3).ansatz.state(theta.double(), method="gates")
    got = QuConv2d(1, 5, 4, layers=3).ansatz.state(theta.to(device))
    assert got.device.type == device.type and got.dtype == torch.complex64
    assert (got.cpu().to(torch.complex128) - expected).abs().max() <= F32_F


def test_shot_draws_on_device_are_unbiased_with_the_binomial_variance(device):
    shots, draws = 1000, 20000
    z = torch.tensor([-0.9, -0.2, 0.0, 0.5, 0.97], device=device)
    generator = torch.Generator(device=device).manual_seed(7)
    est = estimate_z(z.expand(draws, -1).contiguous(), shots, generator)
    assert est.device.type == device.type
    var = (1 - z.double().cpu() ** 2) / shots
    mean_err = (est.double().cpu().mean(0) - z.double().cpu()).abs()
    assert torch.all(mean_err <= SIGMAS * (var / draws).sqrt())
    ratio = est.double().cpu().var(0) / var
    assert torch.all((ratio - 1).abs() <= SIGMAS * (2 / (draws - 1)) ** 0.5 + 0.02)
